#!/usr/bin/env python3
"""The training data path at scale: seek cost, extraction memory, pipeline throughput, DDP equivalence.

    nice .venv/bin/python scripts/bench_data.py --json > data.json

On generated videos (H.264 through PyAV, a keyframe every ``--gop`` frames; written once into
``--work`` and reused by later runs):

- seek: one ``--minutes``-long 640x360 video at 30 fps and one clip of 16 frames at the model's
  rate (``--clip-fps``, 1 fps: the paper's sampling) ending at the end of the video. Decoding every
  frame from the start (``cezsar.data.decode.decode_from_start``) vs the seeking reader
  (``VideoReader``); both return the same frames (checked). Ratio ``seek_speedup`` = from-start
  seconds / seek seconds (target >= 20).
- memory: peak RSS of a fresh process running frozen-mode feature extraction (the ``tiny``
  backbone, sharded store) on 1x and 10x the clips (10 segments per video, 1x = 2 videos, 10x = 20;
  the videos are links to one 1-minute file, so the decoding work is real but the disk stays small).
  Ratio ``extract_memory_10x_over_1x`` (target <= 1.2).
- throughput: clips/s of the streamed end2end loader (``training.stream.ClipBatches``, batches of 8
  clips of 16 frames at 1 fps, 112 px crops) with 0, 1 and 2 DataLoader workers.
- distributed equivalence: ``torchrun`` 2 gloo processes with per-rank batch B against 1 process with
  batch 2B, same seed, frozen mode, InfoNCE with all-gathered negatives, dropout 0, on the synthetic
  world; the per-step losses of the first ``--steps`` steps. Ratio ``ddp_max_rel_loss_diff`` = the
  largest |2-process - 1-process| / 1-process loss over those steps (target <= 0.02).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.app import bench as bc

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cezsar-bench-data")
    p.add_argument("--minutes", type=float, default=10.0, help="Length of the seek-test video.")
    p.add_argument("--gop", type=int, default=250, help="Keyframe interval of the generated videos.")
    p.add_argument("--clip-fps", type=float, default=1.0)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3, help="Timed repeats of the seek (best of).")
    p.add_argument("--memory-seconds", type=float, default=60.0, help="Length of the memory/throughput video.")
    p.add_argument("--throughput-clips", type=int, default=48)
    p.add_argument("--steps", type=int, default=50, help="Training steps compared (distributed equivalence).")
    p.add_argument("--batch", type=int, default=4, help="Per-rank batch B of the 2-process run.")
    p.add_argument("--skip", default="", help="Comma list of parts to skip: seek,memory,throughput,ddp.")
    p.add_argument("--json", action="store_true")
    # internal: one extraction in a fresh process (memory)
    p.add_argument("--extract-worker", nargs=4, metavar=("VIDEO", "SECONDS", "COPIES", "CACHE"), help=argparse.SUPPRESS)
    # internal: one training run (distributed equivalence), under torchrun or alone
    p.add_argument("--train-worker", nargs=4, metavar=("DATA", "OUT", "BATCH", "STEPLOG"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def make_video(path: Path, seconds: float, gop: int, fps: int = 30, size: tuple[int, int] = (640, 360)) -> Path:
    """H.264 (libx264, ultrafast) with a keyframe every ``gop`` frames: a moving box and a frame counter
    bar over a gradient. Written once; reused when it exists."""
    if path.is_file():
        return path
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    w, h = size
    base = np.tile(np.linspace(0, 200, w, dtype=np.uint8)[None, :, None], (h, 1, 3))
    with av.open(str(tmp), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.gop_size = gop
        s.options = {"preset": "ultrafast", "keyint_min": str(gop), "sc_threshold": "0"}
        for i in range(int(seconds * fps)):
            img = base.copy()
            x = (i * 4) % (w - 40)
            img[h // 2 - 20 : h // 2 + 20, x : x + 40] = (255, 60, 30)
            img[:8, : (i % w)] = 255
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            for pkt in s.encode(frame):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    tmp.rename(path)
    return path


# -- seek ---------------------------------------------------------------------------------------


def bench_seek(args: argparse.Namespace) -> dict[str, Any]:
    from cezsar.data.decode import VideoReader, decode_from_start

    t0 = time.perf_counter()
    video = make_video(args.work / f"long-{args.minutes:g}min-gop{args.gop}.mp4", args.minutes * 60, args.gop)
    gen_s = time.perf_counter() - t0
    with VideoReader(video) as r:
        dur = r.info.duration
    times = dur - (args.frames - np.arange(args.frames) - 0.5) / args.clip_fps
    seek_s, stats = [], {}
    for _ in range(args.repeats):
        t = time.perf_counter()
        with VideoReader(video) as r:
            clip = r.frames_at(times)
            stats = {"seeks": r.seeks, "frames_decoded": r.decoded}
        seek_s.append(time.perf_counter() - t)
    t = time.perf_counter()
    ref = decode_from_start(video, times)
    start_s = time.perf_counter() - t
    return {
        "video": {"seconds": round(dur, 1), "size": "640x360", "fps": 30, "gop": args.gop, "codec": "h264"},
        "clip": {"frames": args.frames, "fps": args.clip_fps, "first_s": round(float(times[0]), 2)},
        "generate_seconds": round(gen_s, 1),
        "seek_seconds": round(min(seek_s), 4),
        "seek_reader": stats,
        "decode_from_start_seconds": round(start_s, 3),
        "same_frames": bool(np.array_equal(clip, ref)),
    }


# -- memory -------------------------------------------------------------------------------------


def extract_worker(video: str, seconds: float, copies: int, cache: str) -> None:
    """Fresh process: frozen extraction of 10 segments (each a tenth of the video) of each of ``copies``
    links to ``video``."""
    import torch

    from cezsar.preprocess import Preprocess
    from training.clips import Segment
    from training.featstore import FeatureStore
    from training.model import CezsarModel, ModelConfig

    torch.set_num_threads(1)
    links = Path(cache) / "links"
    links.mkdir(parents=True, exist_ok=True)
    segs = []
    for k in range(copies):
        link = links / f"copy{k:03d}.mp4"
        if not link.exists():
            link.symlink_to(video)
        step = seconds / 10
        segs += [Segment(link, step * j, step * (j + 1)) for j in range(10)]
    pre = Preprocess(size=112, resize=128)
    torch.manual_seed(0)
    model = CezsarModel(ModelConfig(backbone="tiny", frames=16, fps=1.0, preprocess=pre.to_dict(), text_dim=8))
    store = FeatureStore(segs, model.frame_encoder, pre, 1.0, 16, cache_dir=Path(cache), shard_segments=20)
    t = time.perf_counter()
    st = store.extract(progress=False)
    store.finalize()
    print(
        json.dumps(
            {
                "segments": len(segs),
                "shards": st.extracted,
                "rows": st.rows,
                "seconds": round(time.perf_counter() - t, 2),
                "peak_rss_mb": bc.peak_rss_mb(),
            }
        )
    )


def bench_memory(args: argparse.Namespace, video: Path) -> dict[str, Any]:
    out = {}
    for copies in (2, 20):
        with tempfile.TemporaryDirectory(dir=args.work) as cache:
            p = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--extract-worker",
                    str(video),
                    str(args.memory_seconds),
                    str(copies),
                    cache,
                ],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            out["x1" if copies == 2 else "x10"] = json.loads(p.stdout.strip().splitlines()[-1])
    return out


# -- throughput ---------------------------------------------------------------------------------


def bench_throughput(args: argparse.Namespace, video: Path) -> dict[str, Any]:
    from cezsar.preprocess import Preprocess
    from training.clips import Segment
    from training.stream import ClipBatches, WindowDraw, batch_loader

    links = args.work / "tlinks"
    links.mkdir(parents=True, exist_ok=True)
    segs = []
    for k in range(args.throughput_clips):
        link = links / f"v{k % 12:02d}.mp4"  # 12 "videos", several segments each
        if not link.exists():
            link.symlink_to(video)
        a = (k * 7.3) % max(1.0, args.memory_seconds - 20)
        segs.append(Segment(link, a, a + 20.0))
    order = np.random.default_rng(0).permutation(len(segs))
    batches = [order[i : i + 8] for i in range(0, len(order), 8)]
    pre = Preprocess(size=112, resize=128)
    out = {}
    for workers in (0, 1, 2):
        ds = ClipBatches(segs, batches, args.clip_fps, args.frames, pre, WindowDraw(0, 0, True))
        t = time.perf_counter()
        n = sum(len(b.idx) for b in batch_loader(ds, workers))
        out[f"workers_{workers}"] = round(n / (time.perf_counter() - t), 2)
    return {"clips": len(segs), "batch": 8, "frames": args.frames, "crop": 112, "clips_per_s": out}


# -- distributed equivalence --------------------------------------------------------------------


def train_worker(data: str, out: str, batch: int, steplog: str) -> None:
    from training.negatives import NegativeConfig
    from training.recipe import TrainConfig, model_config
    from training.train import train

    cfg = TrainConfig(
        model=model_config(frames=4, fps=2.0, image_size=32, resize=32, d_model=32, dropout=0.0),
        mode="frozen",
        loss="infonce",
        negatives=NegativeConfig(mode="random", count=4),
        batch_size=batch,
        epochs=int(os.environ.get("BENCH_EPOCHS", "12")),
        patience=1000,
        lr=1e-3,
        threads=1,
        step_log=steplog,
    )
    train(data, out, cfg, progress=False)


def bench_ddp(args: argparse.Namespace) -> dict[str, Any]:
    from cezsar.data.synthset import synthesize

    world = args.work / "world"
    if not (world / "captions.jsonl").is_file():
        synthesize(world, seed=5, train_clips_per_class=3, eval_clips_per_class=1)
    n_train = sum(1 for _ in open(world / "captions.jsonl"))
    steps_per_epoch = max(1, int(0.9 * n_train) // (2 * args.batch))
    epochs = int(np.ceil(args.steps / steps_per_epoch)) + 1
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CEZSAR_CACHE": str(args.work / "cache"),
        "BENCH_EPOCHS": str(epochs),
    }
    logs = {}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for name, launcher, b in (
            ("one_process_batch_2B", [sys.executable], 2 * args.batch),
            (
                "two_processes_batch_B",
                [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
                args.batch,
            ),
        ):
            log = Path(tmp) / f"{name}.jsonl"
            t = time.perf_counter()
            subprocess.run(
                [*launcher, __file__, "--train-worker", str(world), str(Path(tmp) / name), str(b), str(log)],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            logs[name] = {
                "losses": [json.loads(x)["loss"] for x in log.read_text().splitlines()],
                "seconds": round(time.perf_counter() - t, 1),
            }
    a = np.array(logs["one_process_batch_2B"]["losses"][: args.steps])
    b = np.array(logs["two_processes_batch_B"]["losses"][: args.steps])
    n = min(len(a), len(b))
    rel = np.abs(a[:n] - b[:n]) / np.abs(a[:n])
    return {
        "per_rank_batch": args.batch,
        "steps_compared": int(n),
        "first_losses": {k: [round(x, 4) for x in v["losses"][:5]] for k, v in logs.items()},
        "last_losses": {k: [round(x, 4) for x in v["losses"][n - 3 : n]] for k, v in logs.items()},
        "max_rel_diff": float(rel.max()),
        "mean_rel_diff": float(rel.mean()),
        "seconds": {k: v["seconds"] for k, v in logs.items()},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    res: dict[str, Any] = {"benchmark": "data", "machine": bc.machine(), "versions": bc.versions()}
    ratios: dict[str, float] = {}
    if "seek" not in skip:
        s = res["seek"] = bench_seek(args)
        ratios["seek_speedup"] = round(s["decode_from_start_seconds"] / s["seek_seconds"], 2)
    if not {"memory", "throughput"} <= skip:
        short = make_video(
            args.work / f"short-{args.memory_seconds:g}s-gop{args.gop}.mp4", args.memory_seconds, args.gop
        )
    if "memory" not in skip:
        m = res["memory"] = bench_memory(args, short)
        ratios["extract_memory_10x_over_1x"] = round(m["x10"]["peak_rss_mb"] / m["x1"]["peak_rss_mb"], 3)
    if "throughput" not in skip:
        res["throughput"] = bench_throughput(args, short)
    if "ddp" not in skip:
        d = res["ddp"] = bench_ddp(args)
        ratios["ddp_max_rel_loss_diff"] = float(f"{d['max_rel_diff']:.3g}")
    targets = {
        "seek_speedup": (">= 20", lambda v: v >= 20),
        "extract_memory_10x_over_1x": ("<= 1.2", lambda v: v <= 1.2),
        "ddp_max_rel_loss_diff": ("<= 0.02", lambda v: v <= 0.02),
    }
    res["ratios"] = ratios
    res["targets"] = {
        k: {"target": targets[k][0], "value": v, "holds": bool(targets[k][1](v))} for k, v in ratios.items()
    }
    res["seconds"] = round(time.perf_counter() - t_start, 1)
    return res


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.extract_worker:
        video, seconds, copies, cache = args.extract_worker
        extract_worker(video, float(seconds), int(copies), cache)
        return 0
    if args.train_worker:
        data, out, batch, steplog = args.train_worker
        train_worker(data, out, int(batch), steplog)
        return 0
    result = run(args)
    print("ratios: " + ", ".join(f"{k}={v}" for k, v in result["ratios"].items()), file=sys.stderr)
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
