"""`cezsar train` and `cezsar eval`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cezsar.errors import CezsarError


def _defaults(data: Path) -> dict:
    from training.data import read_dataset_defaults

    return read_dataset_defaults(data)


def train_cmd(
    data: Path = typer.Option(..., "--data", help="Dataset folder with captions.jsonl."),
    out: Path = typer.Option(..., "--out", help="Model folder to write (config.json + model.safetensors)."),
    backbone: str = typer.Option("tiny", help="tiny, torchvision:NAME, timm:NAME or a bare model name."),
    pretrained: bool = typer.Option(False, help="Load the backbone library's pretrained weights (its own cache)."),
    backbone_checkpoint: Path | None = typer.Option(None, help="Local backbone weights (.safetensors or .pt)."),
    mode: str = typer.Option("auto", help="auto | frozen (cached features, heads only) | end2end."),
    recipe: str = typer.Option(
        "default",
        help="default (InfoNCE: in-batch + one automatic negative per positive, identical captions masked) | "
        "paper (triplet, margin 1.0, 10 automatic negatives at 0 < d < 0.8, as published). Flags override it.",
    ),
    loss: str | None = typer.Option(None, help="infonce | triplet (default: the recipe's)."),
    negatives: str | None = typer.Option(None, help="auto (cosine-distance window) | random (default: auto)."),
    neg_count: int = typer.Option(10, help="Negatives sampled per positive."),
    fn_distance: float | None = typer.Option(
        None,
        help="False-negative filter: captions closer than this cosine distance to the positive are treated as "
        "paraphrases, never negatives (default 0: off; only identical captions are masked).",
    ),
    extra_negatives: int | None = typer.Option(
        None, help="InfoNCE with --per-video-negatives: sampled negatives per video added to its denominator."
    ),
    margin: float | None = typer.Option(None, help="Triplet margin (default 1.0, the paper's)."),
    share_negatives: bool | None = typer.Option(
        None,
        "--share-negatives/--per-video-negatives",
        help="InfoNCE: one sampled negative per positive shared by the whole batch (default recipe), or "
        "--extra-negatives of them per video, in that video's denominator only.",
    ),
    neg_min: float | None = typer.Option(None, help="Lower bound of the negatives' cosine distance window."),
    neg_max: float | None = typer.Option(None, help="Upper bound of the negatives' cosine distance window."),
    epochs: int | None = typer.Option(None, help="Maximum epochs (early stopping on validation loss)."),
    frames: int | None = typer.Option(
        None, help="Frames per clip T (default: dataset.json, else chosen from the probed clips)."
    ),
    fps: float | None = typer.Option(None, help="Sampling rate (default: dataset.json, else probed)."),
    image_size: int | None = typer.Option(None, help="Crop size (default: dataset.json, else probed)."),
    resize: int | None = typer.Option(
        None, help="Shorter-side resize before the crop (default: dataset.json, else probed)."
    ),
    batch_size: int = typer.Option(32),
    lr: float | None = typer.Option(None, help="AdamW learning rate (default: dataset.json, else 1e-4)."),
    patience: int = typer.Option(6, help="Early-stopping patience in epochs (constant schedule)."),
    schedule: str | None = typer.Option(
        None,
        help="constant (early stopping on validation loss; paper) | cosine (1-epoch warm-up, cosine decay to 0 "
        "over --epochs, keeps the last epoch). Default: the recipe's.",
    ),
    seed: int = typer.Option(0),
    text_model: str = typer.Option(
        "sentence-transformers/all-MiniLM-L6-v2", help="sentence-transformers name or path."
    ),
    threads: int | None = typer.Option(None, help="torch CPU threads."),
    resume: bool = typer.Option(False, help="Resume an interrupted run in --out."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Train the contrastive model on captioned clips."""
    import time

    from rich.console import Console

    from training.data import read_captions
    from training.negatives import NegativeConfig
    from training.train import TrainConfig, recipe_settings, train

    console = Console(stderr=True)
    records = read_captions(data)  # bad data fails here, before anything is printed or created
    d = _defaults(data)
    given = {"frames": frames, "fps": fps, "image_size": image_size, "resize": resize}
    if any(v is None and k not in d for k, v in given.items()):
        from training.probe import probe_clips

        found = probe_clips([(r.video, r.start, r.end) for r in records], seed=seed)
        filled = {k: v for k, v in found.defaults().items() if given[k] is None and k not in d}
        d = {**found.defaults(), **d}
        console.print(f"no dataset.json sampling settings; {found.describe()} (using {filled}; flags override)")
    rs = recipe_settings(recipe)
    rneg = rs.pop("negatives")
    negatives = negatives or rneg["mode"]
    loss = loss or rs["loss"]
    if negatives not in ("auto", "random"):
        raise CezsarError(f"--negatives {negatives!r}: expected auto or random")
    if loss not in ("triplet", "infonce"):
        raise CezsarError(f"--loss {loss!r}: expected triplet or infonce")
    neg = NegativeConfig(
        mode=negatives,
        count=neg_count,
        min_distance=neg_min if neg_min is not None else float(d.get("neg_min", rneg.get("min_distance", 0.0))),
        max_distance=neg_max if neg_max is not None else float(d.get("neg_max", rneg.get("max_distance", 0.8))),
        seed=seed,
        fn_distance=fn_distance if fn_distance is not None else float(rneg["fn_distance"]),
    )
    cfg = TrainConfig(
        backbone=backbone,
        pretrained=pretrained,
        backbone_checkpoint=str(backbone_checkpoint) if backbone_checkpoint else None,
        mode=mode,
        loss=loss,
        negatives=neg,
        extra_negatives=extra_negatives if extra_negatives is not None else int(rs.get("extra_negatives", 1)),
        margin=margin if margin is not None else float(rs.get("margin", 1.0)),
        share_negatives=share_negatives if share_negatives is not None else bool(rs.get("share_negatives", False)),
        schedule=schedule or str(rs.get("schedule", "constant")),
        epochs=epochs or int(d.get("epochs", 40)),
        frames=frames or int(d["frames"]),
        fps=fps or float(d["fps"]),
        image_size=image_size or int(d["image_size"]),
        resize=resize or int(d["resize"]),
        batch_size=batch_size,
        lr=lr or float(d.get("lr", 1e-4)),
        patience=patience,
        seed=seed,
        text_model=text_model,
        threads=threads,
    )
    console.print(
        f"training {cfg.backbone} ({cfg.resolved_mode()}), recipe {recipe}: loss {cfg.loss}, negatives {neg.mode} "
        f"({neg.min_distance}, {neg.max_distance}) x{neg.count}, false-negative filter d < {neg.fn_distance}, "
        f"T={cfg.frames} @ {cfg.fps} fps, {cfg.image_size}px, lr {cfg.lr} ({cfg.schedule}), {cfg.epochs} epochs"
    )
    t0 = time.time()
    res = train(data, out, cfg, resume=resume)
    summary = {
        "out": str(out),
        "best_epoch": res.best_epoch,
        "best_val_loss": round(res.best_val_loss, 5),
        "epochs_run": res.epochs_run,
        "seconds": round(time.time() - t0, 1),
    }
    console.print(
        f"wrote {out}/config.json, model.safetensors, log.jsonl — best epoch {res.best_epoch}, "
        f"val loss {res.best_val_loss:.4f}, {summary['seconds']} s"
    )
    if json_out:
        print(json.dumps(summary))


def eval_cmd(
    model: Path = typer.Option(..., "--model", help="Model folder."),
    data: Path = typer.Option(..., "--data", help="Folder with videos.jsonl and classes/."),
    split: Path | None = typer.Option(None, "--split", help="Split JSON {training, testing}: evaluate on testing."),
    runs: int = typer.Option(1, help="Random runs R."),
    classes_per_run: int | None = typer.Option(None, help="Classes N per random run (default: all)."),
    seed: int = typer.Option(0),
    confusion: Path | None = typer.Option(None, help="Confusion-matrix PNG (default: MODEL/confusion.png)."),
    json_out: bool = typer.Option(False, "--json", help="Print the JSON report on stdout."),
) -> None:
    """Zero-shot evaluation: nearest class description, top-1 over splits."""
    from rich.console import Console

    from training.evaluate import confusion_png, evaluate

    rep = evaluate(model, data, split=split, runs=runs, classes_per_run=classes_per_run, seed=seed)
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
