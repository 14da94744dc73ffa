"""The ``cezsar`` command. Each stage registers its own verbs; heavy imports happen inside the verbs,
so ``cezsar --help`` and the edge verbs start without torch."""

from __future__ import annotations

import logging
import os
import sys

import typer

from cezsar.errors import CezsarError

app = typer.Typer(
    name="cezsar",
    help="Zero-shot action recognition on live video from text descriptions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings and errors only."),
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _register() -> None:
    import importlib

    for mod in ("training.cli", "training.cli_data", "converter.cli", "calibration.cli", "edge.cli", "edge.config_cli"):
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod:
                continue
            raise
        module.register(app)


_register()


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        app()
    except CezsarError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
