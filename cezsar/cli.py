"""The ``cezsar`` command (also ``python -m cezsar``, and ``torchrun ... -m cezsar train`` for several
processes). The verbs live in cezsar/commands, one module per stage; heavy imports happen inside the
verbs, so ``cezsar --help`` and the edge verbs start without torch."""

from __future__ import annotations

import logging
import os
import sys

import typer

from cezsar import extras
from cezsar.errors import CezsarError
from cezsar.redact import install_log_filter

app = typer.Typer(
    name="cezsar",
    help="Zero-shot action recognition on live video from text descriptions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cezsar")
    except PackageNotFoundError:
        return "unknown (not installed; running from a source tree)"


def _print_version(value: bool) -> None:
    if value:
        print(f"cezsar {_version()}")
        raise typer.Exit()


def missing_extra(e: ModuleNotFoundError) -> str | None:
    """One line naming the extra that installs the missing module, or None when no extra does. The answer comes
    from the declarations (:mod:`cezsar.extras`) of the stage packages and the backends, loaded here first."""
    import importlib

    from cezsar.backends.registry import discover

    for package in ("training", "converter", "edge"):  # their __init__ declares their extras, imports nothing else
        importlib.import_module(package)
    discover()  # each backend class declares the modules it needs
    return extras.missing_extra(e)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit.", metavar=""
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.", metavar=""),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings and errors only.", metavar=""),
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    rank = os.environ.get("RANK")  # under torchrun (`torchrun ... -m cezsar train ...`): which process logs
    who = f" rank{rank}" if rank is not None else ""
    logging.basicConfig(level=level, format=f"%(asctime)s{who} %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    install_log_filter()  # camera passwords and tokens never reach the log (cezsar/redact.py)


from cezsar.commands import register_all  # noqa: E402 - after the app they register on

register_all(app)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        app()
    except CezsarError as e:
        rank = os.environ.get("RANK")
        print(f"error{f' (rank {rank})' if rank is not None else ''}: {e}", file=sys.stderr)
        sys.exit(2)
    except ModuleNotFoundError as e:
        line = missing_extra(e)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
