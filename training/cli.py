"""`cezsar train` and `cezsar eval`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cezsar.errors import CezsarError


def _defaults(data: Path) -> dict:
    from cezsar.data.formats import read_dataset_defaults

    return read_dataset_defaults(data)


def train_cmd(
    data: Path = typer.Option(..., "--data", help="Dataset folder with captions.jsonl."),
    out: Path = typer.Option(..., "--out", help="Model folder to write (config.json + model.safetensors)."),
    backbone: str = typer.Option("tiny", help="tiny, torchvision:NAME, timm:NAME or a bare model name."),
    pretrained: bool = typer.Option(False, help="Load the backbone library's pretrained weights (its own cache)."),
    backbone_checkpoint: Path | None = typer.Option(None, help="Local backbone weights (.safetensors or .pt)."),
    mode: str = typer.Option("auto", help="auto | frozen (cached features, heads only) | end2end."),
    loss: str = typer.Option("triplet", help="triplet (paper) | infonce."),
    negatives: str = typer.Option("auto", help="auto (cosine-distance window, paper) | random."),
    neg_count: int = typer.Option(10, help="Negatives sampled per positive."),
    neg_min: float | None = typer.Option(None, help="Lower bound of the negatives' cosine distance window."),
    neg_max: float | None = typer.Option(None, help="Upper bound of the negatives' cosine distance window."),
    epochs: int | None = typer.Option(None, help="Maximum epochs (early stopping on validation loss)."),
    frames: int | None = typer.Option(None, help="Frames per clip T (default: dataset.json, else 16)."),
    fps: float | None = typer.Option(None, help="Sampling rate (default: dataset.json, else 1.0)."),
    image_size: int | None = typer.Option(None, help="Crop size (default: dataset.json, else 224)."),
    resize: int | None = typer.Option(
        None, help="Shorter-side resize before the crop (default: dataset.json, else 256)."
    ),
    batch_size: int = typer.Option(32, help="Clips per training batch."),
    lr: float | None = typer.Option(None, help="AdamW learning rate (default: dataset.json, else 1e-4)."),
    patience: int = typer.Option(6, help="Early-stopping patience in epochs."),
    seed: int = typer.Option(0, help="Random seed (initialisation, shuffling, augmentation)."),
    text_model: str = typer.Option(
        "sentence-transformers/all-MiniLM-L6-v2", help="sentence-transformers name or path."
    ),
    threads: int | None = typer.Option(None, help="torch CPU threads."),
    device: str = typer.Option("cpu", help="cpu or cuda (under torchrun: each process its LOCAL_RANK GPU)."),
    workers: int = typer.Option(0, help="DataLoader worker processes decoding videos (frozen-mode extraction)."),
    feature_cache: Path | None = typer.Option(None, help="Feature store folder (default: $CEZSAR_CACHE)."),
    resume: bool = typer.Option(False, help="Resume an interrupted run in --out."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Train the contrastive model on captioned clips."""
    import time

    from rich.console import Console

    from cezsar.data.formats import read_captions
    from training.negatives import NegativeConfig
    from training.train import TrainConfig, train

    read_captions(data)  # bad data fails here, before anything is printed or created
    d = _defaults(data)
    if negatives not in ("auto", "random"):
        raise CezsarError(f"--negatives {negatives!r}: expected auto or random")
    if loss not in ("triplet", "infonce"):
        raise CezsarError(f"--loss {loss!r}: expected triplet or infonce")
    neg = NegativeConfig(
        mode=negatives,
        count=neg_count,
        min_distance=neg_min if neg_min is not None else float(d.get("neg_min", 0.0)),
        max_distance=neg_max if neg_max is not None else float(d.get("neg_max", 0.8)),
        seed=seed,
    )
    cfg = TrainConfig(
        backbone=backbone,
        pretrained=pretrained,
        backbone_checkpoint=str(backbone_checkpoint) if backbone_checkpoint else None,
        mode=mode,
        loss=loss,
        negatives=neg,
        epochs=epochs or int(d.get("epochs", 40)),
        frames=frames or int(d.get("frames", 16)),
        fps=fps or float(d.get("fps", 1.0)),
        image_size=image_size or int(d.get("image_size", 224)),
        resize=resize or int(d.get("resize", 256)),
        batch_size=batch_size,
        lr=lr or float(d.get("lr", 1e-4)),
        patience=patience,
        seed=seed,
        text_model=text_model,
        threads=threads,
        workers=workers,
        device=device,
        feature_cache=str(feature_cache) if feature_cache else None,
    )
    import os

    console = Console(stderr=True, quiet=os.environ.get("RANK", "0") != "0")  # torchrun: rank 0 reports
    console.print(
        f"training {cfg.backbone} ({cfg.resolved_mode()}), loss {cfg.loss}, negatives {neg.mode} "
        f"[{neg.min_distance}, {neg.max_distance}], T={cfg.frames} @ {cfg.fps} fps, {cfg.image_size}px, lr {cfg.lr}"
    )
    t0 = time.time()
    res = train(data, out, cfg, resume=resume)
    summary = {
        "out": str(out),
        "best_epoch": res.best_epoch,
        "best_val_loss": round(res.best_val_loss, 5),
        "epochs_run": res.epochs_run,
        "seconds": round(time.time() - t0, 1),
        "skipped_videos": res.skipped,
    }
    console.print(
        f"wrote {out}/config.json, model.safetensors, log.jsonl — best epoch {res.best_epoch}, "
        f"val loss {res.best_val_loss:.4f}, {summary['seconds']} s"
    )
    for b in res.skipped:
        console.print(f"skipped {b['video']} ({b['captions']} captions): {b['error']}", highlight=False)
    if json_out and not console.quiet:
        print(json.dumps(summary))


def eval_cmd(
    model: Path = typer.Option(..., "--model", help="Model folder."),
    data: Path = typer.Option(..., "--data", help="Folder with videos.jsonl and classes/, or a folder per class."),
    split: str | None = typer.Option(
        None,
        "--split",
        help="Split JSON {training, testing} (evaluate on testing), or a shared split name: truze, truze2, "
        "ucf101-hard, kinetics400 (from shared/data/zsar_splits).",
    ),
    descriptions: Path | None = typer.Option(
        None, help="Class-folder datasets: JSON {class: [descriptions]} (default: sentences from the class name)."
    ),
    runs: int = typer.Option(1, help="Random runs R."),
    classes_per_run: int | None = typer.Option(None, help="Classes N per random run (default: all)."),
    seed: int = typer.Option(0, help="Seed of the random runs (which classes each run draws)."),
    confusion: Path | None = typer.Option(None, help="Confusion-matrix PNG (default: MODEL/confusion.png)."),
    json_out: bool = typer.Option(False, "--json", help="Print the JSON report on stdout."),
) -> None:
    """Zero-shot evaluation: nearest class description, top-1 over splits."""
    from rich.console import Console

    from training.evaluate import confusion_png, evaluate

    rep = evaluate(
        model, data, split=split, runs=runs, classes_per_run=classes_per_run, seed=seed, descriptions=descriptions
    )
    png = confusion or (model / "confusion.png")
    confusion_png(rep, png)
    out = {**rep.to_dict(), "confusion_png": str(png)}
    console = Console(stderr=True)
    console.print(
        f"top-1 {rep.top1:.3f} ± {rep.top1_std:.3f} over {rep.runs} run(s) of {rep.n_classes} classes "
        f"(chance {rep.chance:.3f}, {rep.n_videos} videos); confusion matrix: {png}"
    )
    if json_out:
        print(json.dumps(out))


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("eval")(eval_cmd)
