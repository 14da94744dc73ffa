"""`cezsar train` and `cezsar eval`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

# the flags of `cezsar train` that are training settings (training.recipe.resolve decides which value wins)
_O = typer.Option
BACKBONE = _O("tiny", help="tiny, hf-clip:REF, hf-siglip:REF, st-clip:REF, torchvision:NAME, timm:NAME or a bare name.")
PRETRAINED = _O(False, help="Load the backbone library's pretrained weights (its own cache).")
CHECKPOINT = _O(None, help="Local backbone weights (.safetensors or .pt).")
MODE = _O("auto", help="auto | frozen (cached features, heads only) | end2end.")
RECIPE = _O(
    "default",
    help="default (InfoNCE: in-batch + one automatic negative per positive, identical captions masked) | "
    "paper (triplet, margin 1.0, 10 automatic negatives at 0 < d < 0.8, as published). Flags override it.",
)
LOSS = _O(None, help="infonce | triplet (default: the recipe's).")
NEGATIVES = _O(None, help="auto (cosine-distance window) | random (default: auto).")
NEG_COUNT = _O(None, help="Negatives sampled per positive (default: 10).")
FN_DISTANCE = _O(
    None,
    help="False-negative filter: captions closer than this cosine distance to the positive are treated as "
    "paraphrases, never negatives (default 0: off; only identical captions are masked).",
)
EXTRA_NEGATIVES = _O(
    None, help="InfoNCE with --per-video-negatives: sampled negatives per video added to its denominator."
)
MARGIN = _O(None, help="Triplet margin (default 1.0, the paper's).")
SHARE_NEGATIVES = _O(
    None,
    "--share-negatives/--per-video-negatives",
    help="InfoNCE: one sampled negative per positive shared by the whole batch (default recipe), or "
    "--extra-negatives of them per video, in that video's denominator only.",
)
NEG_MIN = _O(None, help="Lower bound of the negatives' cosine distance window.")
NEG_MAX = _O(None, help="Upper bound of the negatives' cosine distance window.")
EPOCHS = _O(None, help="Maximum epochs (early stopping on validation loss).")
FRAMES = _O(None, help="Frames per clip T (default: dataset.json, else chosen from the probed clips).")
FPS = _O(None, help="Sampling rate (default: dataset.json, else probed).")
IMAGE_SIZE = _O(None, help="Crop size (default: dataset.json, else probed).")
RESIZE = _O(None, help="Shorter-side resize before the crop (default: dataset.json, else probed).")
BATCH_SIZE = _O(32, help="Clips per training batch.")
LR = _O(None, help="AdamW learning rate (default: dataset.json, else 1e-4).")
BACKBONE_LR = _O(
    None, help="end2end: the frame encoder's learning rate (default: --lr); lower it to fine-tune pretrained."
)
WEIGHT_DECAY = _O(1e-5, help="AdamW weight decay (every trained parameter).")
IDLE_FRACTION = _O(
    None,
    "--idle-fraction",
    help="Still and straddling windows added to each batch, as a fraction of it (default: the recipe's, 0.2; "
    "0: captioned clips only).",
)
AUGMENT_SHIFT = _O(
    None,
    help="end2end: translate each training clip at random by up to this fraction of the crop (every frame "
    "alike, so motion is kept; edges repeat). 0: off. Frozen mode ignores it. Default: the recipe's "
    "(default: 0.1; paper: 0).",
)
PATIENCE = _O(6, help="Early-stopping patience in epochs (constant schedule).")
SCHEDULE = _O(
    None,
    help="constant (early stopping on validation loss; paper) | cosine (1-epoch warm-up, cosine decay to 0 "
    "over --epochs, keeps the last epoch). Default: the recipe's.",
)
SEED = _O(0, help="Random seed (initialisation, shuffling, augmentation).")
TEXT_MODEL = _O("sentence-transformers/all-MiniLM-L6-v2", help="sentence-transformers name or path.")
TEXT_INPUT = _O(
    None,
    help="What the text head reads: tokens (the sentence model's word-embedding states, a per-token MLP, "
    "then a mean), pooled (the sentence embedding, as in the paper) or auto (tokens for "
    "sentence-transformers models, pooled for image-text towers). Default: the recipe's (default: auto; "
    "paper: pooled). Ignored with --init.",
)
TEMPORAL = _O(
    None,
    help="The temporal head (from-scratch models): joint (frame features and their changes through one "
    "transformer) or factored (an appearance part plus a motion part, summed). Default: the recipe's. "
    "Ignored with --init.",
)
THREADS = _O(None, help="torch CPU threads.")
DEVICE = _O("cpu", help="cpu or cuda (under torchrun: each process its LOCAL_RANK GPU).")
WORKERS = _O(0, help="DataLoader worker processes decoding videos (frozen-mode extraction).")
FEATURE_CACHE = _O(None, help="Feature store folder (default: $CEZSAR_CACHE).")
INIT = _O(
    None,
    "--init",
    help="Fine-tune this model folder (from `cezsar init` or training): its towers, heads, "
    "preprocessing and text model; --backbone/--text-model/--image-size/--resize are then ignored.",
)


def train_cmd(
    data: Path = typer.Option(..., "--data", help="Dataset folder with captions.jsonl."),
    out: Path = typer.Option(..., "--out", help="Model folder to write (config.json + model.safetensors)."),
    backbone: str = BACKBONE,
    pretrained: bool = PRETRAINED,
    backbone_checkpoint: Path | None = CHECKPOINT,
    mode: str = MODE,
    recipe: str = RECIPE,
    loss: str | None = LOSS,
    negatives: str | None = NEGATIVES,
    neg_count: int | None = NEG_COUNT,
    fn_distance: float | None = FN_DISTANCE,
    extra_negatives: int | None = EXTRA_NEGATIVES,
    margin: float | None = MARGIN,
    share_negatives: bool | None = SHARE_NEGATIVES,
    neg_min: float | None = NEG_MIN,
    neg_max: float | None = NEG_MAX,
    epochs: int | None = EPOCHS,
    frames: int | None = FRAMES,
    fps: float | None = FPS,
    image_size: int | None = IMAGE_SIZE,
    resize: int | None = RESIZE,
    batch_size: int = BATCH_SIZE,
    lr: float | None = LR,
    backbone_lr: float | None = BACKBONE_LR,
    weight_decay: float = WEIGHT_DECAY,
    augment_shift: float | None = AUGMENT_SHIFT,
    patience: int = PATIENCE,
    schedule: str | None = SCHEDULE,
    seed: int = SEED,
    text_model: str = TEXT_MODEL,
    text_input: str | None = TEXT_INPUT,
    temporal: str | None = TEMPORAL,
    threads: int | None = THREADS,
    device: str = DEVICE,
    workers: int = WORKERS,
    feature_cache: Path | None = FEATURE_CACHE,
    init: Path | None = INIT,
    idle_fraction: float | None = IDLE_FRACTION,
    resume: bool = typer.Option(False, help="Resume an interrupted run in --out."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Train the contrastive model on captioned clips."""
    overrides = {k: v for k, v in locals().items() if k not in ("data", "out", "recipe", "resume", "json_out")}
    import os
    import time

    from rich.console import Console

    from training.recipe import resolve
    from training.train import train

    console = Console(stderr=True, quiet=os.environ.get("RANK", "0") != "0")  # torchrun: rank 0 reports
    cfg = resolve(data, recipe, overrides, report=console.print)  # bad data and values fail here, first
    m, neg = cfg.model, cfg.negatives
    console.print(
        f"training {m.backbone} ({cfg.resolved_mode()}), recipe {recipe}: loss {cfg.loss}, negatives {neg.mode} "
        f"({neg.min_distance}, {neg.max_distance}) x{neg.count}, false-negative filter d < {neg.fn_distance}, "
        f"T={m.frames} @ {m.fps} fps, {m.pre.size}px, lr {cfg.lr} ({cfg.schedule}), {cfg.epochs} epochs, "
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
    calibrate: bool = typer.Option(True, "--calibrate/--no-calibrate", help="Fit the score calibration."),
    calib_data: Path | None = typer.Option(
        None, "--calib-data", help="Calibrate on this dataset's seen classes (default: rendered synthetic streams)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """A usable model from pretrained towers, no training: video embedding = normalised mean of frame embeddings."""
    from rich.console import Console

    from training.init import init_model

    res = init_model(
        frame_encoder,
        out,
        text_tower=text_tower,
        frames=frames,
        fps=fps,
        layers=layers,
        heads=heads,
        seed=seed,
        calibrate=calibrate,
        calib_data=calib_data,
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
