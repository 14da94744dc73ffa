"""Benchmark the history (issue 22): writes, recognition with the store on vs off, bytes per window,
search over a large history, backtest of 24 h x 10 cameras, the re-score error of stored vectors, and
the same write and search figures on PostgreSQL. One run; JSON with ``ratios`` (target / measured).

    python scripts/bench_history.py --out docs/bench_history.json              # the full figures
    python scripts/bench_history.py --windows 20000 --backtest-hours 1 --quick # a quick check

Synthetic histories: window embeddings are unit vectors around 400 "scene" directions (noise 0.8 of
the signal) so that a sentence has a true best moment and the search's first pass is measured on
structure, not on noise; its recall@20 against an exact scan is reported. The recognition ratio and the
re-score error use the bundled demo model on rendered synthetic streams.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.app.bench import machine

MODEL = "bench-model-" + "0" * 52
SCENES = 400


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--windows", type=int, default=1_000_000, help="Windows in the search history.")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--write-windows", type=int, default=30000, help="Windows pushed through the writer.")
    p.add_argument("--backtest-hours", type=float, default=24.0)
    p.add_argument("--cameras", type=int, default=10, help="Cameras of the backtest history.")
    p.add_argument("--period", type=float, default=3.0, help="Seconds between two windows of a camera.")
    p.add_argument("--queries", type=int, default=21)
    p.add_argument("--postgres", default="auto", help="'auto' (initdb a server here), a URL, or 'off'.")
    p.add_argument("--pg-windows", type=int, default=None, help="Windows in the PostgreSQL search history.")
    p.add_argument("--work", type=Path, default=None, help="Folder for the stores (default: a temp folder).")
    p.add_argument("--recognition-runs", type=int, default=5, help="Runs with the store on, and as many off.")
    p.add_argument("--quick", action="store_true", help="Skip the recognition runs and the re-score error.")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------- data


def scenes(dim: int, seed: int = 0) -> np.ndarray:
    c = np.random.default_rng(seed).standard_normal((SCENES, dim)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def embeddings(centers: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    which = rng.integers(0, len(centers), n)
    x = centers[which] + 0.8 * rng.standard_normal((n, centers.shape[1])).astype(np.float32) / np.sqrt(
        centers.shape[1] / 4
    )
    return x / np.linalg.norm(x, axis=1, keepdims=True), which


def fill(
    store: Any,
    n: int,
    dim: int,
    *,
    cameras: int = 64,
    period: float = 3.0,
    t0: float | None = None,
    scores: bool = False,
    seed: int = 1,
    chunk: int = 20000,
) -> dict[str, Any]:
    """n windows of ``cameras`` streams, one every ``period`` s each, ending now; direct batches."""
    from edge.actions import actions_from_obj
    from edge.history import codec
    from edge.history.store import Batch, WindowRow

    rng = np.random.default_rng(seed)
    centers = scenes(dim)
    t0 = time.time() - n / cameras * period if t0 is None else t0
    aset = actions_from_obj({"actions": [{"name": "fall", "descriptions": ["a person falls"]}]})
    sid = store.scoring_id(MODEL, dim, aset.to_obj(), aset.names()) if scores else None
    t = time.perf_counter()
    for i in range(0, n, chunk):
        k = min(chunk, n - i)
        x, which = embeddings(centers, k, rng)
        blobs = codec.encode_many(x)
        rows = []
        for j in range(k):
            g = i + j
            cam, step = g % cameras, g // cameras
            end = step * period + 2.0
            s = codec.encode_scores({"fall": round(float(x[j] @ centers[0]) - 0.05, 4)}, ["fall"]) if scores else None
            rows.append(WindowRow(f"cam{cam}", None, t0 + end, end - 2.0, end, blobs[j], s, sid))
        store.write(Batch(windows=rows), MODEL, dim)
    return {"windows": n, "seconds": round(time.perf_counter() - t, 2)}


# ---------------------------------------------------------------------------------------------- parts


def bench_writes(where: Any, n: int, dim: int) -> dict[str, Any]:
    """Windows handed to the runtime's writer as fast as a producer can; sustained windows/s stored."""
    from edge.actions import actions_from_obj
    from edge.embedder import Window
    from edge.history.writer import HistoryWriter
    from edge.recognizer import WindowResult

    w = HistoryWriter(where, MODEL, dim, capacity=5000).start()
    aset = actions_from_obj(
        {
            "actions": [
                {"name": "fall", "descriptions": ["a person falls"]},
                {"name": "wave", "descriptions": ["a person waves"]},
            ]
        }
    )
    x, _ = embeddings(scenes(dim), 512, np.random.default_rng(3))
    t = time.perf_counter()
    handed = 0
    while handed < n:
        if w.queue.qsize() > 4000:  # a full queue would drop: keep it fed, not overflowing
            time.sleep(0.002)
            continue
        for _ in range(64):
            e = x[handed % 512]
            win = Window(f"cam{handed % 64}", handed / 64 * 3.0, handed / 64 * 3.0 + 2.0, 8, 0, 7, time.time(), e)
            w.window(WindowResult(win, {"fall": 0.01, "wave": -0.02}, {}, None, {}), aset, "media")
            handed += 1
    wait_t = time.perf_counter()
    while w.written["windows"] < n and time.perf_counter() - wait_t < 120:
        time.sleep(0.01)
    secs = time.perf_counter() - t
    w.close()
    return {
        "windows": w.written["windows"],
        "seconds": round(secs, 2),
        "per_s": round(w.written["windows"] / secs, 1),
        "dropped": w.dropped["windows"],
    }


def bench_storage(folder: Path, dim: int, n: int = 50000) -> dict[str, Any]:
    import sqlite3

    from edge.history.store import open_store

    out: dict[str, Any] = {}
    for enc in ("int8", "fp16"):
        p = folder / f"storage-{enc}.sqlite"
        store = open_store(p)
        from edge.history import codec

        orig = codec.encode_many
        codec.encode_many = lambda x, e="int8", _o=orig, _enc=enc: _o(x, _enc)  # type: ignore[misc]
        try:
            fill(store, n, dim, scores=True, seed=9)
        finally:
            codec.encode_many = orig
        store.close()
        con = sqlite3.connect(p)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        out[enc] = round(p.stat().st_size / n, 1)
    thumbs = thumbnail_bytes()
    per_window = thumbs * 3.0 / 5.0  # a thumbnail every 5 s, a window every 3 s per camera
    out["thumbnail_bytes"] = round(thumbs, 1)
    out["int8_with_thumbnails"] = round(out["int8"] + per_window, 1)
    out["fp16_with_thumbnails"] = round(out["fp16"] + per_window, 1)
    return out


def thumbnail_bytes() -> float:
    """Mean JPEG size of the writer's 160 px thumbnails of rendered 320x240 synthetic frames."""
    import cv2

    from cezsar.data.synthetic import render_stream

    with tempfile.TemporaryDirectory() as d:
        render_stream(Path(d) / "v.mp4", [("moving left", 4.0), ("spinning", 4.0)], seed=2, size=320)
        cap = cv2.VideoCapture(str(Path(d) / "v.mp4"))
        sizes = []
        while True:
            ok, img = cap.read()
            if not ok:
                break
            small = cv2.resize(img, (160, 120), interpolation=cv2.INTER_AREA)
            sizes.append(len(cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 70])[1]))
        cap.release()
    return float(np.mean(sizes))


def bench_search(store: Any, dim: int, queries: int) -> dict[str, Any]:
    """Cold load, then p50/p95 of a sentence-like query over every window; recall@20 vs an exact scan."""
    from edge.history import codec
    from edge.history import schema as S
    from edge.history.search import RERANK, Searcher, rerank

    sr = Searcher(store)
    mid = store.model_id(MODEL, dim)
    centers = scenes(dim)
    rng = np.random.default_rng(11)
    t = time.perf_counter()
    sr.search(centers[0], mid, dim, limit=20)
    cold = time.perf_counter() - t
    idx = sr._indexes[mid]
    times, recalls = [], []
    exact_x: np.ndarray | None = None
    ids_all: np.ndarray | None = None
    for i in range(queries):
        q = centers[rng.integers(0, SCENES)] + 0.3 * rng.standard_normal(dim).astype(np.float32) / np.sqrt(dim / 4)
        q /= np.linalg.norm(q)
        t = time.perf_counter()
        moments, n = sr.search(q, mid, dim, limit=20)
        times.append(time.perf_counter() - t)
        if i < 5:  # recall of the first pass: the exact top 20 windows among those re-ranked
            if exact_x is None:
                exact_x, ids_all = _all_vectors(store, dim)
            assert ids_all is not None
            exact = set(ids_all[np.argsort(-(exact_x @ q))[:20]].tolist())
            cand, _ = idx.candidates(q, None, None, None, RERANK)
            got = {r["id"] for r in rerank(store, cand, q, dim)[:20]}
            recalls.append(len(exact & got) / 20)
    del codec, S
    return {
        "windows": len(idx),
        "cold_load_s": round(cold, 2),
        "p50_s": round(float(np.median(times)), 4),
        "p95_s": round(float(np.percentile(times, 95)), 4),
        "recall_at_20": round(float(np.mean(recalls)), 3),
        "index_mb": round(sum(v.nbytes for v in (idx._merged or {}).values()) / 2**20, 1),
    }


def _all_vectors(store: Any, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Every stored vector, dequantized and normalised (the exact scan's reference)."""
    import sqlalchemy as sa

    from edge.history import codec
    from edge.history import schema as S

    xs, ids = [], []
    with store.engine.connect() as conn:
        last = 0
        while True:
            rows = conn.execute(
                sa.select(S.windows.c.id, S.windows.c.embedding)
                .where(S.windows.c.id > last)
                .order_by(S.windows.c.id)
                .limit(100000)
            ).all()
            if not rows:
                break
            x = codec.decode_many([r[1] for r in rows], dim)
            xs.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16))
            ids.append(np.asarray([r[0] for r in rows]))
            last = int(rows[-1][0])
    return np.concatenate(xs).astype(np.float32), np.concatenate(ids)


def bench_backtest(folder: Path, dim: int, hours: float, cameras: int, period: float) -> dict[str, Any]:
    """24 h x 10 cameras of windows with stored scores: one action replayed (unchanged) and re-scored."""
    from edge.actions import actions_from_obj
    from edge.history.backtest import run_backtest
    from edge.history.store import open_store

    store = open_store(folder / "backtest.sqlite")
    n = int(hours * 3600 / period) * cameras
    fill(store, n, dim, cameras=cameras, period=period, scores=True, seed=5)
    centers = scenes(dim)

    def encode(texts: Any) -> np.ndarray:
        return np.stack([centers[zlib.crc32(t.encode()) % SCENES] for t in texts])  # the same in every run

    out: dict[str, Any] = {"windows": n}
    same = actions_from_obj({"actions": [{"name": "fall", "descriptions": ["a person falls"]}]})
    edited = actions_from_obj({"actions": [{"name": "fall", "descriptions": ["someone falls down"]}]})
    for label, aset in (("replayed", same), ("rescored", edited)):
        t = time.perf_counter()
        bt = run_backtest(store, aset, encode, MODEL, dim)
        out[f"{label}_s"] = round(time.perf_counter() - t, 3)
        out[f"{label}_events"] = len(bt.events)
    store.close()
    return out


def bench_recognition(runs: int = 3, repeat: int = 24) -> dict[str, Any]:
    """The real runtime over rendered streams, not real-time: windows/s with the history on vs off, from
    its start until its sources are done (the shutdown, which waits for the writer's last commit, is not
    recognition). ``repeat``: the streams' length (x 25 s); runs of a few seconds, so that the writer's
    work falls inside them (``written_in_run``: the share of the windows committed before the shutdown)."""
    from cezsar.app.demo import bundled_model_dir, ensure_deploy
    from cezsar.data.synthetic import IDLE, motion_descriptions, render_stream
    from edge.runtime import Runtime
    from edge.settings import settings_from

    deploy = ensure_deploy(bundled_model_dir())
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        videos = []
        for i in range(4):
            plan = [("staying still", 5.0), ("moving left", 10.0), ("spinning", 10.0)] * repeat
            render_stream(root / f"v{i}.mp4", plan, seed=i)
            videos.append(root / f"v{i}.mp4")
        import yaml

        acts = {
            "background": motion_descriptions(IDLE),
            "actions": [
                {"name": "left", "descriptions": motion_descriptions("moving left")},
                {"name": "spin", "descriptions": motion_descriptions("spinning")},
            ],
        }
        (root / "a.yaml").write_text(yaml.safe_dump(acts))
        rates: dict[str, list[float]] = {"off": [], "on": []}
        in_run: list[float] = []
        for r in range(runs * 2):
            mode = "on" if r % 2 else "off"
            kw = {"history": str(root / f"h{r}.sqlite")} if mode == "on" else {}
            s = settings_from(
                deploy=str(deploy),
                source=[f"s{i}={v}" for i, v in enumerate(videos)],
                actions=str(root / "a.yaml"),
                realtime=False,
                pub="tcp://127.0.0.1:0",
                control="none",
                **kw,
            )
            rt = Runtime(s)
            ended: list[float] = []
            writer = rt.outputs.history
            close = rt.close

            def at_close(c: Any = close, e: list[float] = ended, w: Any = writer) -> None:
                e += [time.perf_counter(), 0.0 if w is None else w.written["windows"]]
                c()

            rt.close = at_close  # type: ignore[method-assign]
            t = time.perf_counter()
            rt.run()
            windows = rt.status(final=True)["inference"]["windows"]
            rates[mode].append(windows / (ended[0] - t))
            if writer is not None:
                in_run.append(ended[1] / max(windows, 1))
    on, off = float(np.median(rates["on"])), float(np.median(rates["off"]))
    return {
        "windows_per_s_on": round(on, 1),
        "windows_per_s_off": round(off, 1),
        "ratio": round(on / off, 3),
        "runs": runs,
        "repeat": repeat,
        "written_in_run": round(float(np.median(in_run)), 3),
        "all": {k: [round(v, 1) for v in vs] for k, vs in rates.items()},
    }


def bench_rescore_error() -> dict[str, Any]:
    """Live fp32 scores vs the Scorer on stored (int8, fp16) vectors of the same windows, demo model."""
    from cezsar.app.demo import bundled_model_dir, ensure_deploy
    from cezsar.data.synthetic import IDLE, motion_descriptions, render_stream
    from cezsar.deploy.manifest import load_manifest
    from edge.actions import actions_from_obj
    from edge.history import codec
    from edge.runtime import Runtime
    from edge.scorer import Scorer
    from edge.settings import settings_from
    from edge.text import TextEncoder

    deploy = ensure_deploy(bundled_model_dir())
    m = load_manifest(deploy)
    plan = [("staying still", 4.0), ("moving left", 8.0), ("spinning", 8.0), ("moving up", 8.0), ("staying still", 4.0)]
    obj = {
        "background": motion_descriptions(IDLE),
        "actions": [
            {"name": n, "descriptions": motion_descriptions(n)} for n in ("moving left", "spinning", "moving up")
        ],
    }
    aset = actions_from_obj(obj)
    scorer = Scorer.build(aset, TextEncoder(deploy, m))
    with tempfile.TemporaryDirectory() as d:
        embs = []
        for seed in range(3):
            render_stream(Path(d) / f"v{seed}.mp4", plan, seed=seed)
            import yaml

            (Path(d) / "a.yaml").write_text(yaml.safe_dump(obj))
            rt = Runtime(
                settings_from(
                    deploy=str(deploy),
                    source=[f"v={Path(d) / f'v{seed}.mp4'}"],
                    actions=str(Path(d) / "a.yaml"),
                    realtime=False,
                    pub="tcp://127.0.0.1:0",
                    control="none",
                )
            )
            got: list[np.ndarray] = []
            rt.outputs.step = lambda step, g=got, f=rt.outputs.step: (
                g.extend(r.window.embedding for r in step.windows),
                f(step),
            )[1]  # type: ignore[method-assign]
            rt.run()
            embs += got
    x = np.stack(embs)
    ref = np.round(scorer.score(x).scores.astype(np.float64), 4)
    out: dict[str, Any] = {"windows": len(x)}
    for enc in ("int8", "fp16"):
        y = codec.decode_many(codec.encode_many(x, enc))
        got_s = np.round(scorer.score(y).scores.astype(np.float64), 4)
        diff = np.abs(got_s - ref)
        out[enc] = {
            "max_abs": round(float(diff.max()), 5),
            "mean_abs": round(float(diff.mean()), 6),
            "p99_abs": round(float(np.percentile(diff, 99)), 5),
        }
    return out


def postgres_url(arg: str, work: Path) -> tuple[str | None, Any]:
    """'off' -> none; a URL -> it; 'auto' -> a PostgreSQL started here (Debian's binaries, initdb in
    ``work``, a free loopback port; as root it runs as the postgres user), stopped at the end."""
    import glob
    import shutil
    import socket
    import subprocess

    if arg == "off":
        return None, None
    if arg != "auto":
        return arg, None
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        return None, None
    bindir, data = Path(found[-1]).parent, work / "pg"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data.mkdir(parents=True, exist_ok=True)
    (work / "pgpw").write_text("bench\n")
    if as_user:
        work.chmod(0o755)  # a temporary folder is 0700: the server's user must reach its data folder
        for p in (data, work / "pgpw"):
            shutil.chown(p, "postgres")
    subprocess.run(
        [
            *as_user,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "bench",
            "--pwfile",
            str(work / "pgpw"),
            "-A",
            "scram-sha-256",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    with open(data / "postgresql.conf", "a") as f:
        f.write(f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{data}'\nfsync = off\n")
    ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(data)]
    subprocess.run([*ctl, "-l", str(data / "log"), "-w", "start"], check=True, capture_output=True)

    class Server:
        def cleanup(self) -> None:
            subprocess.run([*ctl, "-m", "immediate", "-w", "stop"], capture_output=True)

    return f"postgresql://bench:bench@127.0.0.1:{port}/postgres", Server()


# ---------------------------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    from edge.history.store import open_store
    from edge.history.url import history_url

    work = args.work or Path(tempfile.mkdtemp(prefix="cezsar-bench-history-"))
    work.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {
        "machine": machine(),
        "load_average": os.getloadavg(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    res["writes_sqlite"] = bench_writes(history_url(work / "writes.sqlite"), args.write_windows, args.dim)
    res["storage_bytes_per_window"] = bench_storage(work, args.dim)
    store = open_store(work / "search.sqlite")
    res["fill_sqlite"] = fill(store, args.windows, args.dim)
    res["search_sqlite"] = bench_search(store, args.dim, args.queries)
    store.close()
    res["backtest"] = bench_backtest(work, args.dim, args.backtest_hours, args.cameras, args.period)
    if not args.quick:
        res["recognition"] = bench_recognition(args.recognition_runs)
        res["rescore_error"] = bench_rescore_error()
    url, pg = postgres_url(args.postgres, work)
    if url is not None:
        try:
            res["writes_postgres"] = bench_writes(history_url(url), args.write_windows, args.dim)
            pstore = open_store(url)
            res["fill_postgres"] = fill(pstore, args.pg_windows or args.windows, args.dim)
            res["search_postgres"] = bench_search(pstore, args.dim, args.queries)
            pstore.close()
        finally:
            if pg is not None:
                pg.cleanup()
    ratios: dict[str, float] = {
        "writes_vs_target_200": round(res["writes_sqlite"]["per_s"] / 200.0, 2),
        "bytes_per_window_int8_vs_1200": round(res["storage_bytes_per_window"]["int8"] / 1200.0, 3),
        "search_p50_vs_0.5s": round(res["search_sqlite"]["p50_s"] / 0.5, 3),
        "backtest_replayed_vs_2s": round(res["backtest"]["replayed_s"] / 2.0, 3),
        "backtest_rescored_vs_2s": round(res["backtest"]["rescored_s"] / 2.0, 3),
    }
    if "recognition" in res:
        ratios["recognition_on_vs_off"] = res["recognition"]["ratio"]
    if "search_postgres" in res:
        ratios["postgres_writes_vs_sqlite"] = round(res["writes_postgres"]["per_s"] / res["writes_sqlite"]["per_s"], 3)
        ratios["postgres_search_p50_vs_sqlite"] = round(
            res["search_postgres"]["p50_s"] / res["search_sqlite"]["p50_s"], 3
        )
    res["ratios"] = ratios
    return res


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    res = run(args)
    text = json.dumps(res, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
