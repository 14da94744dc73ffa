#!/usr/bin/env python
"""Ablation on the synthetic world: triplet + automatic negatives (the paper), triplet + random
negatives, and InfoNCE, each trained with 3 seeds; unseen-class top-1 as mean and std.

    .venv/bin/python scripts/ablation.py --out /tmp/ablation [--seeds 0 1 2] [--world /tmp/world]

Prints the JSON report on stdout and a Markdown table on stderr (docs/ablation.md holds one run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    "triplet + automatic negatives (paper)": ["--loss", "triplet", "--negatives", "auto"],
    "triplet + random negatives": ["--loss", "triplet", "--negatives", "random"],
    "InfoNCE (in-batch)": ["--loss", "infonce"],
}


def cezsar(*args: str) -> str:
    cmd = [sys.executable, "-m", "cezsar", *args]
    return subprocess.run(
        cmd, check=True, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    ).stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("/tmp/cezsar-ablation"))
    ap.add_argument("--world", type=Path, default=None, help="existing synthetic world (default: OUT/world, seed 0)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    world = args.world or args.out / "world"
    if not (world / "captions.jsonl").is_file():
        cezsar("synth", str(world), "--seed", "0")
    results: dict[str, dict] = {}
    for name, flags in VARIANTS.items():
        runs = []
        for seed in args.seeds:
            model = args.out / f"{flags[1]}-{flags[3] if len(flags) > 3 else 'inbatch'}-{seed}"
            t0 = time.time()
            cezsar("train", "--data", str(world), "--out", str(model), "--seed", str(seed), *flags)
            secs = time.time() - t0
            rep = json.loads(
                cezsar(
                    "eval", "--model", str(model), "--data", str(world), "--split", str(world / "split.json"), "--json"
                )
                .strip()
                .splitlines()[-1]
            )
            runs.append({"seed": seed, "top1": rep["top1"], "train_seconds": round(secs, 1)})
            print(f"{name} seed {seed}: top1 {rep['top1']:.3f} ({secs:.0f} s)", file=sys.stderr)
        tops = [r["top1"] for r in runs]
        results[name] = {
            "top1_mean": round(statistics.mean(tops), 4),
            "top1_std": round(statistics.pstdev(tops), 4),
            "runs": runs,
            "chance": rep["chance"],
            "n_classes": rep["n_classes"],
            "n_videos": rep["n_videos"],
        }
    print(json.dumps({"world": str(world), "seeds": args.seeds, "results": results}, indent=2))
    print("\n| variant | unseen top-1 (mean ± std, 3 seeds) | per seed | train s/run |", file=sys.stderr)
    print("| --- | --- | --- | --- |", file=sys.stderr)
    for name, r in results.items():
        per = ", ".join(f"{x['top1']:.3f}" for x in r["runs"])
        secs = statistics.mean(x["train_seconds"] for x in r["runs"])
        print(f"| {name} | {r['top1_mean']:.3f} ± {r['top1_std']:.3f} | {per} | {secs:.0f} |", file=sys.stderr)


if __name__ == "__main__":
    main()
