"""``python -m training train|eval ...``: the training verbs without the rest of the CLI, so that
``torchrun --nproc_per_node N -m training train --data D --out M`` starts one training per process."""

from __future__ import annotations

import logging
import os
import sys

import typer

from cezsar.errors import CezsarError
from training.cli import register

app = typer.Typer(name="training", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
register(app)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s")
    try:
        app()
    except CezsarError as e:
        print(f"error (rank {rank}): {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
