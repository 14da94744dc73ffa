"""`cezsar eval-stream`: event quality of a deploy folder on continuous streams with known segments
(edge/streameval.py); `cezsar calibrate-scores`: a model folder's score calibration
(training/calibrate_scores.py)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def eval_stream_cmd(
    deploy: Path = typer.Option(..., "--deploy", help="Deploy folder (cezsar export)."),
    streams: Path = typer.Option(
        ..., "--streams", help="Folder of videos with truth.jsonl (e.g. WORLD/streams/unseen), or one video."
    ),
    actions: Path = typer.Option(None, "--actions", help="Actions file (default: actions.yaml of the streams folder)."),
    truth: Path = typer.Option(None, "--truth", help="Truth file (default: STREAMS/truth.jsonl or VIDEO.truth.jsonl)."),
    out: Path = typer.Option(None, "--out", help="Write report.json, sweep.json and pr_curve.png into this folder."),
    backend: str = typer.Option("auto", "--backend", help="auto|tensorrt|onnxruntime|torch (see docs/edge.md)."),
    precision: str = typer.Option("auto", "--precision", help="auto|fp32|fp16|int8."),
    hop: int = typer.Option(2, "--hop", help="Frames between windows (as `cezsar run --hop`)."),
    threads: int = typer.Option(None, "--threads", help="CPU threads of the inference sessions."),
    min_iou: float = typer.Option(0.3, "--min-iou", help="Temporal IoU an event needs to match a segment."),
    json_out: bool = typer.Option(False, "--json", help="Print the whole report as JSON on stdout."),
) -> None:
    """Run the runtime's Recognizer over videos as fast as the CPU allows and score its events."""
    from edge.streameval import evaluate_streams, summary_lines

    rep = evaluate_streams(deploy, streams, actions, truth, out, backend, precision, hop, threads, min_iou)
    if json_out:
        print(json.dumps(rep, ensure_ascii=False))
    else:
        print("\n".join(summary_lines(rep)))


def calibrate_scores_cmd(
    model: Path = typer.Option(..., "--model", help="Model folder (cezsar train / cezsar init)."),
    data: Path = typer.Option(
        None,
        "--data",
        help="A synthetic world (its streams/seen) or a labelled dataset with split.json: its seen classes "
        "(default: rendered synthetic streams).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the validation streams."),
) -> None:
    """Fit the score calibration of a model folder (calibration.json): raw margins -> probabilities,
    default thresholds chosen on validation streams of seen classes. Re-export the model afterwards."""
    from training.calibrate_scores import calibrate

    print(f"wrote {calibrate(model, data, seed=seed)}")


def register(app: typer.Typer) -> None:
    app.command("eval-stream")(eval_stream_cmd)
    app.command("calibrate-scores")(calibrate_scores_cmd)
