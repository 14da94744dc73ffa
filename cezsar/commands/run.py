"""`cezsar run`: recognise actions on live streams (edge/runtime).

Its options are generated from the settings model (edge/settings): every flag is an override of one
site-file key, with that key's help and default. The verb turns the flags it was given into
``load_settings(config, flags)`` and runs the runtime; it holds no logic of its own.
"""

from __future__ import annotations

import inspect
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

log = logging.getLogger("cezsar.edge")


def _install_signals(stop: Callable[[str], None]) -> None:
    """First Ctrl-C/SIGTERM: clean stop (open events ended, final status). Second: hard interrupt."""

    def handler(signum: int, frame: Any) -> None:
        stop(signal.Signals(signum).name)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def run(config: Path | None, flags: dict[str, Any], from_env: set[str]) -> int:
    """Settings from the site file and the flags -> a running runtime, until it stops; its exit code."""
    from edge.runtime import Runtime
    from edge.settings import load_settings
    from edge.sources import quiet_opencv

    if not log.isEnabledFor(logging.DEBUG):
        quiet_opencv()
    rt = Runtime(load_settings(config, flags, from_env).require())
    for line in rt.summary():
        log.info("%s", line)
    _install_signals(rt.stop)
    return rt.run()


def _help(o: Any) -> str:
    """The key's help and its default in words: rich would take ``[default: x]`` for markup."""
    shown = o.default
    if isinstance(shown, bool):
        shown = "on" if shown else "off"
    tail = f" (default: {shown})" if shown not in (None, "") else ""
    text = o.help if not o.help or o.help.endswith((".", ")")) else o.help + "."
    return text + tail


def _parameter(o: Any) -> inspect.Parameter:
    decls = [f"{o.flag}/--no-{o.flag[2:]}"] if o.kind is bool else [o.flag]
    if o.flag == "--source":
        decls.append("-s")
    if o.flag == "--actions":
        decls.append("-a")
    annotation: Any = list[str] if o.kind is list else (o.kind | None)
    default = typer.Option(
        None,
        *decls,
        help=_help(o),
        metavar="" if o.kind is bool else o.metavar,  # a flag takes no value: no <bool>
        envvar=o.env,
        show_envvar=o.env is not None,
        show_default=False,
    )
    return inspect.Parameter(o.param, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _build() -> Callable[..., None]:
    from edge.settings import OPTIONS

    def run_cmd(ctx: typer.Context, **kwargs: Any) -> None:
        """Recognise actions described in words on live video streams; publish events over ZeroMQ, MQTT,
        HTTP and more. Every option is a key of the site file (--config); a flag given overrides it."""
        config = kwargs.pop("config")
        from_env = {k for k in kwargs if getattr(ctx.get_parameter_source(k), "name", "") == "ENVIRONMENT"}
        raise typer.Exit(run(config, kwargs, from_env))

    config = inspect.Parameter(
        "config",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(
            None, "--config", help="Site file (site.yaml: every option below, and zones); flags given override it."
        ),
        annotation=Path | None,
    )
    context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    params = [context, config, *(_parameter(o) for o in OPTIONS.values())]
    run_cmd.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    run_cmd.__annotations__ = {p.name: p.annotation for p in params}
    return run_cmd


def register(app: typer.Typer) -> None:
    app.command("run")(_build())
