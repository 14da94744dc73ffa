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
    batch_size: int = typer.Option(32, help="Clips per training batch."),
    lr: float | None = typer.Option(None, help="AdamW learning rate (default: dataset.json, else 1e-4)."),
    backbone_lr: float | None = typer.Option(
        None, help="end2end: the frame encoder's learning rate (default: --lr); lower it to fine-tune pretrained."
    ),
    weight_decay: float = typer.Option(1e-5, help="AdamW weight decay (every trained parameter)."),
    augment_shift: float = typer.Option(
        0.0,
        help="end2end: translate each training clip at random by up to this fraction of the crop (every frame "
        "alike, so motion is kept; edges repeat). 0: off. Frozen mode ignores it.",
    ),
    patience: int = typer.Option(6, help="Early-stopping patience in epochs (constant schedule)."),
    schedule: str | None = typer.Option(
        None,
        help="constant (early stopping on validation loss; paper) | cosine (1-epoch warm-up, cosine decay to 0 "
        "over --epochs, keeps the last epoch). Default: the recipe's.",
    ),
    seed: int = typer.Option(0, help="Random seed (initialisation, shuffling, augmentation)."),
    text_model: str = typer.Option(
        "sentence-transformers/all-MiniLM-L6-v2", help="sentence-transformers name or path."
    ),
    text_input: str | None = typer.Option(
        None,
        help="What the text head reads: tokens (the sentence model's word-embedding states, a per-token MLP, "
        "then a mean), pooled (the sentence embedding, as in the paper) or auto (tokens for "
        "sentence-transformers models, pooled for image-text towers). Default: the recipe's (default: auto; "
        "paper: pooled). Ignored with --init.",
    ),
    threads: int | None = typer.Option(None, help="torch CPU threads."),
    device: str = typer.Option("cpu", help="cpu or cuda (under torchrun: each process its LOCAL_RANK GPU)."),
    workers: int = typer.Option(0, help="DataLoader worker processes decoding videos (frozen-mode extraction)."),
    feature_cache: Path | None = typer.Option(None, help="Feature store folder (default: $CEZSAR_CACHE)."),
    resume: bool = typer.Option(False, help="Resume an interrupted run in --out."),
    init: Path | None = typer.Option(
        None,
        "--init",
        help="Fine-tune this model folder (from `cezsar init` or training): its towers, heads, "
        "preprocessing and text model; --backbone/--text-model/--image-size/--resize are then ignored.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Train the contrastive model on captioned clips."""
    import os
    import time

    from rich.console import Console

    from cezsar.data.formats import read_captions
    from training.negatives import NegativeConfig
    from training.train import TrainConfig, recipe_settings, train

    console = Console(stderr=True, quiet=os.environ.get("RANK", "0") != "0")  # torchrun: rank 0 reports
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
        backbone_lr=backbone_lr,
        weight_decay=weight_decay,
        augment_shift=augment_shift,
        patience=patience,
        seed=seed,
        text_model=text_model,
        text_input=text_input or str(rs.get("text_input", "auto")),
        threads=threads,
        workers=workers,
        device=device,
        feature_cache=str(feature_cache) if feature_cache else None,
    )
    cfg.check_end2end()  # bad values fail before anything is loaded or printed
    if init is not None:
        from training.model import read_config

        icfg = read_config(init)  # a bad folder fails here, before training starts
        cfg.init = str(init)
        cfg.backbone, cfg.text_model = icfg.backbone, icfg.text_model
        cfg.image_size, cfg.resize = icfg.pre.size, icfg.pre.resize
    console.print(
        f"training {cfg.backbone} ({cfg.resolved_mode()}), recipe {recipe}: loss {cfg.loss}, negatives {neg.mode} "
        f"({neg.min_distance}, {neg.max_distance}) x{neg.count}, false-negative filter d < {neg.fn_distance}, "
        f"T={cfg.frames} @ {cfg.fps} fps, {cfg.image_size}px, lr {cfg.lr} ({cfg.schedule}), {cfg.epochs} epochs, "
        f"text input {'of ' + str(init) if init else cfg.resolved_text_input()}"
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


def init_cmd(
    frame_encoder: str = typer.Option(
        ...,
        "--frame-encoder",
        help="hf-clip:REF, hf-siglip:REF, st-clip:REF (REF: hub name or local folder), or another backbone name.",
    ),
    out: Path = typer.Option(..., "--out", help="Model folder to write (config.json + model.safetensors)."),
    text_tower: str | None = typer.Option(
        None,
        "--text-tower",
        help="Default: the frame encoder checkpoint's own text tower (one space); "
        "or a sentence-transformers name/folder, or hf-clip:/hf-siglip:/st-clip: REF.",
    ),
    frames: int = typer.Option(16, help="Frames per window T."),
    fps: float = typer.Option(1.0, help="Sampling rate of the window."),
    layers: int = typer.Option(1, help="Transformer layers of the temporal head (residual branches start at zero)."),
    heads: int | None = typer.Option(None, help="Attention heads (default: 8, 4, 2 or 1, whichever divides D)."),
    seed: int = typer.Option(0, help="Seed of the heads' random parts (the identity start itself is exact)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """A usable model from pretrained towers, no training: video embedding = normalised mean of frame embeddings."""
    from rich.console import Console

    from training.init import init_model

    res = init_model(
        frame_encoder, out, text_tower=text_tower, frames=frames, fps=fps, layers=layers, heads=heads, seed=seed
    )
    pre = res.preprocess
    Console(stderr=True).print(
        f"wrote {out}/config.json, model.safetensors — D={res.feature_dim}, text {res.text_dim} dims, "
        f"{'one space (zero-shot ready)' if res.shared_space else 'text projection random: train before use'}, "
        f"{pre['size']}px {pre['resize_mode']}/{pre['interpolation']}"
    )
    if json_out:
        print(
            json.dumps(
                {
                    "out": str(out),
                    "feature_dim": res.feature_dim,
                    "text_dim": res.text_dim,
                    "shared_space": res.shared_space,
                    "preprocess": pre,
                }
            )
        )


def register(app: typer.Typer) -> None:
    app.command("init")(init_cmd)
    app.command("train")(train_cmd)
    app.command("eval")(eval_cmd)
