"""`cezsar demo`: the whole edge pipeline on a rendered synthetic stream (cezsar/app/demo.py)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def demo_cmd(
    model: Path = typer.Option(None, "--model", help="Trained model folder (default: the bundled demo model)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the rendered stream."),
    backend: str = typer.Option("auto", "--backend", help="auto|tensorrt|onnxruntime|torch (see docs/edge.md)."),
    precision: str = typer.Option("auto", "--precision", help="auto|fp32|fp16|int8."),
    realtime: bool = typer.Option(False, "--realtime/--no-realtime", help="Play the stream in real time (~90 s)."),
    keep: Path = typer.Option(None, "--keep", help="Keep the rendered video, actions file and events log here."),
    output: Path = typer.Option(None, "--output", help="Also write the annotated video."),
) -> None:
    """Run the whole edge pipeline on a rendered synthetic stream and score its events (F1)."""
    from cezsar.app.demo import run_demo

    result = run_demo(
        model=model, seed=seed, backend=backend, precision=precision, realtime=realtime, keep=keep, output=output
    )
    print(json.dumps(result["summary"], ensure_ascii=False))


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
