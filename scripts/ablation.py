#!/usr/bin/env python
"""Ablation on synthetic worlds: recipe x negatives x loss, unseen-class top-1 as mean ± std over
world seeds x training seeds, and the automatic negative sampler's false-negative rate per world.

    .venv/bin/python scripts/ablation.py --out /tmp/ablation [--worlds 0 1 2 3 4] [--seeds 0 1] [--jobs 2]
        [--variants default paper ...] [--train-clips 20] [--epochs 12]

The default protocol (5 worlds x 2 training seeds x 2 variants, default and paper = 20 runs) uses
smaller worlds than `cezsar synth` (20 training clips per class instead of 40) and at most 12 epochs,
two runs at a time with one torch thread each: 741 s on 2 free CPU cores, but it under-trains (default
0.50, paper 0.47), so it ranks variants rather than giving the figures. ``--variants`` adds the other
rows of the table; ``--train-clips 40 --epochs 0 --variants default`` (0: the world's own dataset.json,
30 epochs) is the full-size protocol of docs/ablation.md's first row (about 25 minutes).

Prints the JSON report on stdout and a Markdown table on stderr (docs/ablation.md holds the runs).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

# name -> (recipe, loss, negatives, training settings over the recipe: `cezsar train` flags by their Python names)
PER_VIDEO: dict[str, Any] = {"share_negatives": False, "extra_negatives": 10}
VARIANTS: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "default": ("default", "InfoNCE", "in-batch + 1 automatic per positive, shared by the batch", {}),
    "infonce-per-video": ("default", "InfoNCE", "in-batch + 10 automatic per video", PER_VIDEO),
    "infonce-per-video-filtered": (
        "default",
        "InfoNCE",
        "in-batch + 10 automatic per video, filtered (d >= 0.4)",
        {**PER_VIDEO, "fn_distance": 0.4},
    ),
    "default-constant": ("default", "InfoNCE, early stopping (constant lr)", "as default", {"schedule": "constant"}),
    "default-pooled": ("default", "InfoNCE, pooled text input", "as default", {"text_input": "pooled"}),
    "paper-tokens": (
        "paper",
        "triplet (margin 1.0), per-token text input",
        "10 automatic (0 < d < 0.8)",
        {"text_input": "tokens"},
    ),
    "paper": ("paper", "triplet (margin 1.0)", "10 automatic (0 < d < 0.8)", {}),
    "paper-filtered": (
        "paper",
        "triplet (margin 1.0)",
        "10 automatic (0 < d < 0.8), filtered (d >= 0.4)",
        {"fn_distance": 0.4},
    ),
    "paper-random": ("paper", "triplet (margin 1.0)", "10 random", {"negatives": "random"}),
}
DEFAULT_VARIANTS = ["default", "paper"]


def one(job: tuple[str, Path, int, int, int, Path]) -> dict[str, Any]:
    """Train one variant on one world with one seed and measure its unseen top-1 (in a worker process:
    training seeds torch's process-wide generator)."""
    from training.evaluate import evaluate
    from training.recipe import resolve
    from training.train import train

    name, world, w, seed, epochs, models = job
    recipe, settings = VARIANTS[name][0], VARIANTS[name][3]
    model = models / f"{name}-w{w}-s{seed}"
    t0 = time.time()
    cfg = resolve(world, recipe, {**settings, "seed": seed, "threads": 1, "epochs": epochs or None})
    res = train(world, model, cfg, progress=False)
    secs = time.time() - t0
    rep = evaluate(model, world, split=world / "split.json", progress=False)
    print(f"{name} world {w} seed {seed}: top-1 {rep.top1:.3f} ({secs:.0f} s, {res.epochs_run} epochs)",
          file=sys.stderr)  # fmt: skip
    return {"variant": name, "world": w, "seed": seed, "top1": rep.top1, "chance": rep.chance,
            "train_seconds": round(secs, 1), "epochs": res.epochs_run}  # fmt: skip


def false_negative_rates(world: Path) -> dict[str, float]:
    """The automatic sampler's false-negative rate on a synthetic world, without and with the filter."""
    from training.model import DEFAULT_TEXT_MODEL, SentenceEncoder
    from training.negatives import NegativeConfig, false_negative_rate, sample_negatives

    recs = [json.loads(line) for line in (world / "captions.jsonl").read_text().splitlines() if line.strip()]
    labels = [re.sub(r"_\d+\.mp4$", "", Path(r["video"]).name) for r in recs]  # videos/train/<class>_NNN.mp4
    sent = SentenceEncoder(DEFAULT_TEXT_MODEL).encode([r["caption"] for r in recs])
    out = {}
    for key, cfg in {
        "auto": NegativeConfig(),  # the paper's window, unfiltered
        "auto_filtered": NegativeConfig(fn_distance=0.4),  # the filter the ablation's "filtered" rows use
        "random": NegativeConfig(mode="random"),
        "random_filtered": NegativeConfig(mode="random", fn_distance=0.4),
    }.items():
        out[key] = round(false_negative_rate(sample_negatives(sent, cfg), labels), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/cezsar-ablation"))
    ap.add_argument("--worlds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="world seeds")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds")
    ap.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    ap.add_argument("--train-clips", type=int, default=20, help="training clips per class of each world")
    ap.add_argument("--epochs", type=int, default=12, help="maximum epochs (0: the world's dataset.json)")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    t_start = time.time()

    from cezsar.data.synthset import synthesize

    worlds = {}
    for w in args.worlds:
        path = args.out / f"world-{w}-{args.train_clips}"
        if not (path / "captions.jsonl").is_file():
            synthesize(path, seed=w, train_clips_per_class=args.train_clips)
        worlds[w] = path
    fn_rates = {w: false_negative_rates(p) for w, p in worlds.items()}

    jobs = [(n, worlds[w], w, s, args.epochs, args.out / "models") for s in args.seeds for w in args.worlds
            for n in args.variants]  # fmt: skip
    os.environ["OMP_NUM_THREADS"] = "1"  # the workers: one torch thread each
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = list(pool.map(one, jobs))

    results = {}
    for name in args.variants:
        rs = [r for r in runs if r["variant"] == name]
        tops = [r["top1"] for r in rs]
        world_means = [statistics.mean(r["top1"] for r in rs if r["world"] == w) for w in args.worlds]
        recipe, loss, negatives, settings = VARIANTS[name]
        results[name] = {
            "recipe": recipe,
            "loss": loss,
            "negatives": negatives,
            "settings": settings,
            "top1_mean": round(statistics.mean(tops), 4),
            "top1_std": round(statistics.pstdev(tops), 4),
            "world_mean_std": round(statistics.pstdev(world_means), 4),
            "train_seconds_mean": round(statistics.mean(r["train_seconds"] for r in rs), 1),
            "runs": rs,
        }
    report = {
        "protocol": {
            "worlds": args.worlds,
            "seeds": args.seeds,
            "train_clips_per_class": args.train_clips,
            "max_epochs": args.epochs or "dataset.json",
            "jobs": args.jobs,
        },  # fmt: skip
        "false_negative_rate": fn_rates,
        "results": results,
        "wall_seconds": round(time.time() - t_start, 1),
    }
    print(json.dumps(report, indent=2))
    n = len(args.worlds) * len(args.seeds)
    print(f"\n| recipe | loss | negatives | unseen top-1, mean ± std ({n} runs) | train s/run |", file=sys.stderr)
    print("| --- | --- | --- | --- | --- |", file=sys.stderr)
    for r in results.values():
        print(f"| {r['recipe']} | {r['loss']} | {r['negatives']} | {r['top1_mean']:.3f} ± {r['top1_std']:.3f} "
              f"| {r['train_seconds_mean']:.0f} |", file=sys.stderr)  # fmt: skip
    print(f"\nfalse-negative rate per world: {fn_rates}; wall {report['wall_seconds']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
