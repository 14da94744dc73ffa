#!/usr/bin/env python
"""Fine-tuning from `cezsar init` on the synthetic world: unseen-class top-1 before and after training.

For each seed: a tiny CLIP checkpoint with RANDOM weights (training/random_checkpoints.py; nothing is
pretrained, so every gain comes from learning), then the library calls behind `cezsar init` from it,
`cezsar eval` of the untrained init, `cezsar train --init` (by default ``--mode end2end``: the ViT trains
with the heads; training.recipe.resolve decides the settings as the command does) and `cezsar eval`
again. Reports mean ± std over the seeds of both top-1s and of the gain.

    nice -n 5 .venv/bin/python scripts/finetune_check.py --out /tmp/finetune [--seeds 0 1 2] [--world W]
        [--text-tower sentence-transformers/all-MiniLM-L6-v2] [--loss infonce] [--mode frozen]
        [--patch 16] [--width 64] [--layers 2] [--init-factor 1] [--lr X] [--backbone-lr Y]

Prints the JSON report on stdout and a one-line summary on stderr. docs/finetune_check.json holds the
runs of ``--seeds 0 1 2 3 4 5`` and ``--seeds 6 7 8`` of

    nice -n 5 .venv/bin/python scripts/finetune_check.py --out /tmp/ft \
        --text-tower sentence-transformers/all-MiniLM-L6-v2

(defaults: 60 epochs; the tiny ViT 64 px, patch 16, width 64, 2 layers, the library's init scale);
docs/models.md gives the variants' commands and figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


def top1(model: Path, world: Path) -> float:
    from training.evaluate import evaluate

    return float(evaluate(model, world, split=world / "split.json", progress=False).top1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/cezsar-finetune"))
    ap.add_argument("--world", type=Path, default=None, help="existing synthetic world (default: OUT/world, seed 0)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--text-tower", default=None, help="default: the CLIP checkpoint's own text tower")
    ap.add_argument("--loss", default=None, help="default: the default recipe's (InfoNCE)")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--mode", default="end2end", help="end2end | frozen | auto (frozen for image-text towers)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--init-factor", type=float, default=1.0, help="random init scale of the tiny CLIP (see make_clip)")
    ap.add_argument("--patch", type=int, default=16, help="tiny CLIP ViT patch size (pixels)")
    ap.add_argument("--width", type=int, default=64, help="tiny CLIP ViT width (and projection size)")
    ap.add_argument("--layers", type=int, default=2, help="tiny CLIP ViT layers")
    ap.add_argument("--lr", type=float, default=None, help="default: the world's (dataset.json)")
    ap.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (default: train's)")
    ap.add_argument("--augment-shift", type=float, default=None, help="train --augment-shift (default: train's)")
    ap.add_argument("--backbone-lr", type=float, default=None, help="end2end: the ViT's learning rate (default: --lr)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from cezsar.data.synthset import synthesize
    from training.init import init_model
    from training.random_checkpoints import make_clip
    from training.recipe import resolve
    from training.train import train

    t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    world = args.world or args.out / "world"
    if not (world / "split.json").is_file():
        synthesize(world, seed=0)
    ds = json.loads((world / "dataset.json").read_text())
    runs = []
    for seed in args.seeds:
        d = args.out / f"seed{seed}"
        ck = make_clip(d / "clip", image_size=int(ds["image_size"]), patch=args.patch, hidden=args.width,
                       layers=args.layers, heads=4, projection_dim=args.width, seed=seed,
                       initializer_factor=args.init_factor)  # fmt: skip
        init = d / "init"
        if not (init / "config.json").is_file():
            init_model(f"hf-clip:{ck}", init, text_tower=args.text_tower, frames=int(ds["frames"]),
                       fps=float(ds["fps"]), seed=seed)  # fmt: skip
        before = top1(init, world)
        tuned = d / "tuned"
        settings = {"init": init, "seed": seed, "loss": args.loss, "lr": args.lr, "backbone_lr": args.backbone_lr,
                    "weight_decay": args.weight_decay, "augment_shift": args.augment_shift, "mode": args.mode,
                    "epochs": args.epochs, "threads": args.threads}  # fmt: skip
        train(world, tuned, resolve(world, "default", settings), progress=False)
        after = top1(tuned, world)
        runs.append({"seed": seed, "init_top1": before, "tuned_top1": after, "gain": after - before})
        print(f"seed {seed}: init {before:.3f} -> tuned {after:.3f}", file=sys.stderr)

    def ms(key: str) -> dict[str, float]:
        xs = [r[key] for r in runs]
        return {"mean": statistics.mean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0}

    report = {
        "what": "unseen-class top-1 on the synthetic world, tiny random-weight CLIP, cezsar init vs train --init",
        "text_tower": args.text_tower or "the CLIP checkpoint's text tower",
        "loss": args.loss or "the default recipe's",
        "mode": args.mode,
        "init_factor": args.init_factor,
        "vit": {"patch": args.patch, "width": args.width, "layers": args.layers},
        "lr": args.lr,
        "backbone_lr": args.backbone_lr,
        "weight_decay": args.weight_decay,
        "augment_shift": args.augment_shift,
        "seeds": args.seeds,
        "runs": runs,
        "init_top1": ms("init_top1"),
        "tuned_top1": ms("tuned_top1"),
        "gain": ms("gain"),
        "chance": 1 / 8,
        "seconds": round(time.time() - t0, 1),
    }
    g = report["gain"]
    print(f"gain {g['mean']:.3f} ± {g['std']:.3f} over {len(runs)} seeds", file=sys.stderr)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
