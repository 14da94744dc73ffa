"""INT8 quantization of a deploy folder's frame encoder and temporal head (``cezsar quantize``).

The quantizers (ModelOpt / onnxruntime Q/DQ by TensorRT's rules, onnxruntime's CPU layout) are
:mod:`converter.quantizers`'. Here: the calibration data, the accuracy gate and the deploy folder. The frame
encoder is calibrated on the calibration frames, the head on FP32 frame-encoder features of those frames cut
into windows [B, T, D]. A share of the frames (``holdout``) is never calibrated on and measures the accuracy:
cosine between FP32 and INT8 video embeddings (frame encoder + head) and, with an eval folder, zero-shot top-1
of both. The gate (mean cosine >= 0.99, top-1 drop <= 2 points) decides whether the INT8 models are written.

``--target cpu`` (or ``both``, the default) also writes the CPU INT8 models (:func:`converter.quantizers.
quantize_cpu`), on the same calibration data, with its own report under ``cpu`` and the same gate. The CPU
temporal head stays FP32 unless ``int8_head`` (``--int8-head``) asks for INT8, or when the INT8 head fails the
gate (it runs once per hop; the frame encoder, run once per frame, carries the cost): the INT8 frame encoder
with the FP32 head is gated and, if it passes, only the CPU INT8 frame encoder is written and the manifest's
CPU INT8 key of the temporal head names the FP32 head (``report["cpu"]["head_precision"] == "fp32"``, the INT8
head's numbers under ``int8_head``). The default is FP32 because the gate cannot vouch for an INT8 head on a
camera's stream: its windows are cut from calibration frames, and on one synthetic world an INT8 head within
the gate (cosine 0.9997) moved event scores by 0.09 on average on the stream (docs/live.md).

The report says per target what was written and what was refused (``targets``, ``summary``) and
``exit_code``: 0 when at least one usable INT8 deployment was written, 1 when the gate refused every
requested target (bad input raises CezsarError, exit 2 in the CLI).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.backends.base import run_batched
from cezsar.backends.onnxruntime import ort_runner, ort_session
from cezsar.deploy import layout
from cezsar.deploy.manifest import Manifest, file_sha256, load_manifest, save_manifest
from cezsar.errors import CezsarError
from converter.common import cosine_rows
from converter.quantizers import quantize_cpu, quantize_onnx

log = logging.getLogger("cezsar.quantize")

MIN_COSINE = 0.99
MAX_TOP1_DROP = 0.02


# -- windows of frame features ------------------------------------------------------------------


def group_order(source_index: np.ndarray, times: np.ndarray) -> list[np.ndarray]:
    """Indices of the frames of each source, in time order."""
    groups = []
    for s in np.unique(source_index):
        idx = np.flatnonzero(source_index == s)
        groups.append(idx[np.argsort(times[idx], kind="stable")])
    return groups


def make_windows(feats: np.ndarray, groups: list[np.ndarray], window: int, stride: int) -> np.ndarray:
    """Cut [N, D] features into [B, window, D] windows that slide over the frames in (source, time) order.

    Calibration sets hold a few frames from each of many clips, or many from one long video; sliding over
    the concatenation gives temporal windows in the second case and scene changes inside a window in the
    first, without repeating frames. Fewer than ``window`` frames in all: the frames repeat.
    """
    order = np.concatenate([g for g in groups if len(g)]) if groups else np.zeros(0, dtype=np.int64)
    if len(order) == 0:
        raise CezsarError("no frames to build feature windows from")
    if len(order) < window:
        return feats[np.resize(order, window)][None].astype(np.float32)
    starts = range(0, len(order) - window + 1, max(1, stride))
    return np.stack([feats[order[s : s + window]] for s in starts]).astype(np.float32)


# -- accuracy -----------------------------------------------------------------------------------


def _video_embeddings(fe: Any, th: Any, frames: np.ndarray, groups: list[np.ndarray], window: int) -> np.ndarray:
    feats = run_batched(fe, frames, 32)
    windows = make_windows(feats, groups, window, max(1, window // 4))
    return run_batched(th, windows, 32)


def _top1(
    deploy: Path, m: Manifest, eval_data: Path, sessions: dict[str, tuple[Any, Any]], threads: int | None
) -> dict[str, Any]:
    """Zero-shot top-1 of each (frame encoder, head) pair on an eval folder (testing classes of split.json)."""
    from cezsar import zeroshot
    from cezsar.data.formats import SPLIT_FILE, read_eval_set, read_split
    from cezsar.tokenize import SentenceTokenizer
    from cezsar.video import sample_clip

    evalset = read_eval_set(eval_data)
    names = list(evalset.classes)
    split_path = Path(eval_data) / SPLIT_FILE
    if split_path.is_file():
        names = list(read_split(split_path, names).testing)
    videos = [v for v in evalset.videos if v.label in set(names)]
    if len(names) < 2 or not videos:
        raise CezsarError(f"{eval_data}: need >= 2 classes with videos to measure top-1")
    tx = ort_session(m.path(deploy, "text_encoder"), threads)
    tokenize = SentenceTokenizer(m.path(deploy, "tokenizer"), max_length=m.text_max_length)
    proto = zeroshot.class_prototypes([tx.run(None, tokenize(evalset.classes[name]))[0] for name in names])
    pre = m.pre
    clips = []
    for v in videos:
        clips.append(pre(sample_clip(v.path, m.fps, m.window, v.start, v.end)))
    frames = np.concatenate(clips)
    labels = np.asarray([names.index(v.label) for v in videos])
    out: dict[str, Any] = {"eval_videos": len(videos), "eval_classes": len(names), "split": split_path.is_file()}
    for key, (fe, th) in sessions.items():
        feats = run_batched(fe, frames, 32).reshape(len(videos), m.window, -1)
        emb = run_batched(th, feats, 32)
        out[f"top1_{key}"] = zeroshot.top1_accuracy(zeroshot.cosine_scores(emb, proto), labels)
    return out


def _speed(path_fp32: Path, path_int8: Path, size: int, batch: int = 8, runs: int = 20) -> dict[str, Any]:
    """onnxruntime CPU latency of both frame encoders at one batch size, runs interleaved so that background
    load hits both alike; reports the best (``*_ms``) and the median run."""
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    sessions = {"fp32": ort_session(path_fp32), "int8": ort_session(path_int8)}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        s.run(None, {"frames": x})
    for _ in range(runs):
        for key, s in sessions.items():
            t = time.perf_counter()
            s.run(None, {"frames": x})
            times[key].append(time.perf_counter() - t)
    res: dict[str, Any] = {"batch": batch, "threads": os.cpu_count(), "runs": runs}
    for key, ts in times.items():
        res[f"{key}_ms"] = round(1000 * float(np.min(ts)), 3)
        res[f"{key}_median_ms"] = round(1000 * float(np.median(ts)), 3)
    res["speedup"] = round(res["fp32_ms"] / max(res["int8_ms"], 1e-9), 3)
    return res


# -- the command --------------------------------------------------------------------------------


TARGETS = (*layout.INT8_TARGETS, "both")


def _accuracy(
    fe32: Any, th32: Any, fe8: Any, th8: Any, hold_frames: np.ndarray, groups_hold: list[np.ndarray], window: int
) -> dict[str, Any]:
    """Cosine FP32 vs INT8 on held-out frames: video embeddings (frame encoder + head), frame features, head only."""
    emb32 = _video_embeddings(fe32, th32, hold_frames, groups_hold, window)
    emb8 = _video_embeddings(fe8, th8, hold_frames, groups_hold, window)
    cos = cosine_rows(emb32, emb8)
    f32 = run_batched(fe32, hold_frames, 32)
    f8 = run_batched(fe8, hold_frames, 32)
    feat_cos = cosine_rows(f32, f8)
    hold_windows = make_windows(f32, groups_hold, window, max(1, window // 4))
    head_cos = cosine_rows(run_batched(th32, hold_windows, 64), run_batched(th8, hold_windows, 64))
    return {
        "mean_cosine": float(cos.mean()),
        "min_cosine": float(cos.min()),
        "windows": int(len(cos)),
        "frame_features": {"mean_cosine": float(feat_cos.mean()), "min_cosine": float(feat_cos.min())},
        "head_only": {"mean_cosine": float(head_cos.mean()), "min_cosine": float(head_cos.min())},
    }


def _gate(report: dict[str, Any], min_cosine: float, max_top1_drop: float, force: bool) -> None:
    reasons = []
    if not report["mean_cosine"] >= min_cosine:
        reasons.append(f"mean cosine FP32 vs INT8 {report['mean_cosine']:.4f} < {min_cosine}")
    if report["top1_fp32"] is not None and report["top1_fp32"] - report["top1_int8"] > max_top1_drop + 1e-9:
        reasons.append(
            f"top-1 drops {100 * (report['top1_fp32'] - report['top1_int8']):.1f} points "
            f"({report['top1_fp32']:.3f} -> {report['top1_int8']:.3f}) > {100 * max_top1_drop:.0f}"
        )
    report["passed"] = not reasons
    report["reason"] = "; ".join(reasons) or "within the gate"
    report["forced"] = bool(reasons) and force


CPU_FP32_HEAD = "cpu_fp32_head"  # sessions key: CPU INT8 frame encoder + FP32 head
EXIT_NOTHING_WRITTEN = 1  # every requested target refused by the gate (exit 0: something usable written)


def _summary_line(target: str, t: dict[str, Any]) -> str:
    """One line per target: what was written and what was refused, and why."""
    if not t["written"]:
        return f"{target}: refused, nothing written ({t['reason']})"
    wrote = ", ".join(t["files"])
    if t["head_precision"] == "fp32":
        return f"{target}: wrote {wrote}; temporal head kept in FP32 ({t['reason']})"
    if not t["passed"]:
        return f"{target}: wrote {wrote} although the gate failed (--force: {t['reason']})"
    return f"{target}: wrote {wrote} ({t['reason']})"


@dataclass
class _Run:
    """One ``cezsar quantize`` run: the deploy folder, the calibration frames split into calibration and
    hold-out, and per target the INT8 files written to the work folder and their report."""

    deploy: Path
    m: Manifest
    cal: Any  # cezsar.data.calibration.CalibrationSet
    train: np.ndarray  # calibration frame indices
    hold: np.ndarray  # hold-out frame indices
    targets: list[str]
    threads: int | None
    paths: dict[str, dict[str, Path]] = field(default_factory=dict)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    parts_written: dict[str, list[str]] = field(default_factory=dict)

    @property
    def fe_path(self) -> Path:
        return self.m.path(self.deploy, "frame_encoder")

    @property
    def th_path(self) -> Path:
        return self.m.path(self.deploy, "temporal_head")


def _open(
    deploy_dir: str | Path, calib: str | Path, holdout: float, seed: int, target: str, threads: int | None
) -> _Run:
    """The deploy folder and its calibration set, split into calibration and hold-out frames (bad input fails here)."""
    from cezsar.data.calibration import load_calibration

    if target not in TARGETS:
        raise CezsarError(f"--target {target}: choose one of {', '.join(TARGETS)}")
    deploy = Path(deploy_dir)
    m = load_manifest(deploy)
    cal = load_calibration(calib, m.pre, m.model_hash)
    if not 0.0 < holdout < 0.9:
        raise CezsarError(f"--holdout {holdout}: must be between 0 and 0.9")
    n = len(cal)
    n_hold = max(1, int(round(n * holdout)))
    if n - n_hold < 16:
        raise CezsarError(f"{calib}: {n} frames leave {n - n_hold} to calibrate on after the hold-out; need >= 16")
    perm = np.random.default_rng(seed).permutation(n)
    targets = ["tensorrt", "cpu"] if target == "both" else [target]
    return _Run(deploy, m, cal, np.sort(perm[n_hold:]), np.sort(perm[:n_hold]), targets, threads)


def _quantize(run: _Run, work: Path, fe32: Any, method: str, calibration_method: str, common: dict[str, Any]) -> None:
    """Quantize both parts for each target into ``work``; a report per target (accuracy still to measure)."""
    m = run.m
    train_frames = run.cal.frames[run.train]
    train_feats = run_batched(fe32, train_frames, 32)
    groups_train = group_order(run.cal.source_index[run.train], run.cal.times[run.train])
    head_data = make_windows(train_feats, groups_train, m.window, max(1, m.window // 4))
    for t in run.targets:
        fe8_path, th8_path = (work / layout.int8_name(part, t) for part in layout.VIDEO_PARTS)
        tt = time.perf_counter()
        if t == "tensorrt":
            cm = calibration_method
            fe_res = quantize_onnx(run.fe_path, fe8_path, "frames", train_frames, method, m.opset, 32, cm)
            th_res = quantize_onnx(run.th_path, th8_path, "features", head_data, method, m.opset, 32, cm)
            methods = {fe_res["method"], th_res["method"]}
            meth = "+".join(sorted(methods)) if len(methods) > 1 else fe_res["method"]
        else:
            fe_res = quantize_cpu(run.fe_path, fe8_path, "frames", train_frames, 32)
            th_res = quantize_cpu(run.th_path, th8_path, "features", head_data, 32)
            meth = "ort-cpu"
        run.paths[t] = {"frame_encoder": fe8_path, "temporal_head": th8_path}
        run.reports[t] = {
            "mean_cosine": 0.0,
            "min_cosine": 0.0,
            "top1_fp32": None,
            "top1_int8": None,
            "method": meth,
            "passed": False,
            "reason": "",
            "target": t,
            "trt_rules_checked": t == "tensorrt",
            **common,
            "calibration_method": fe_res["calibration"],
            "parts": {"frame_encoder": fe_res, "temporal_head": th_res},
            "quantize_seconds": round(time.perf_counter() - tt, 2),
        }


def _measure(run: _Run, fe32: Any, eval_data: str | Path | None, measure_speed: bool) -> dict[str, Any] | None:
    """Accuracy of each target on the held-out frames (and top-1 on ``eval_data``); returns the CPU target's
    numbers with its head kept in FP32 (None without the CPU target)."""
    m, threads = run.m, run.threads
    th32 = ort_runner(run.th_path, threads)
    hold_frames = run.cal.frames[run.hold]
    groups_hold = group_order(run.cal.source_index[run.hold], run.cal.times[run.hold])
    sessions: dict[str, tuple[Any, Any]] = {"fp32": (fe32, th32)}
    fallback: dict[str, Any] | None = None  # the CPU target with its head kept in FP32
    for t in run.targets:
        fe8 = ort_runner(run.paths[t]["frame_encoder"], threads)
        th8 = ort_runner(run.paths[t]["temporal_head"], threads)
        sessions[t] = (fe8, th8)
        run.reports[t].update(_accuracy(fe32, th32, fe8, th8, hold_frames, groups_hold, m.window))
        if t == "cpu":
            sessions[CPU_FP32_HEAD] = (fe8, th32)
            fallback = {"method": run.reports[t]["method"], "top1_fp32": None, "top1_int8": None,
                        **_accuracy(fe32, th32, fe8, th32, hold_frames, groups_hold, m.window)}  # fmt: skip
    if eval_data is not None:
        top1 = _top1(run.deploy, m, Path(eval_data), sessions, threads)
        for t in run.targets:
            run.reports[t].update({k: v for k, v in top1.items() if not k.startswith("top1_")})
            run.reports[t]["top1_fp32"], run.reports[t]["top1_int8"] = top1["top1_fp32"], top1[f"top1_{t}"]
        if fallback is not None:
            fallback["top1_fp32"], fallback["top1_int8"] = top1["top1_fp32"], top1[f"top1_{CPU_FP32_HEAD}"]
    if measure_speed:
        for t in run.targets:
            run.reports[t]["cpu_speed_frame_encoder"] = _speed(run.fe_path, run.paths[t]["frame_encoder"], m.pre.size)
    return fallback


def _keep_fp32_head(
    run: _Run, fallback: dict[str, Any], min_cosine: float, max_top1_drop: float, force: bool, int8_head: bool
) -> None:
    """The head runs once per hop, the frame encoder once per frame: on the CPU an INT8 frame encoder is most of
    the gain. The head stays FP32 unless ``int8_head`` asks for it (the gate's windows are cut from calibration
    frames, not from a camera's stream, and cannot vouch for the head there: docs/live.md); an INT8 head that
    was asked for stays FP32 too when it fails the gate and the INT8 frame encoder with the FP32 head passes."""
    cpu = run.reports["cpu"]
    _gate(fallback, min_cosine, max_top1_drop, force and not int8_head)
    cpu["fp32_head"] = {k: v for k, v in fallback.items() if k not in ("method", "forced")}
    if int8_head and (not fallback["passed"] or cpu["passed"] or force):
        return
    int8_reason = cpu["reason"] if int8_head else f"not asked for (--int8-head); its own gate: {cpu['reason']}"
    cpu["int8_head"] = {"mean_cosine": cpu["mean_cosine"], "min_cosine": cpu["min_cosine"],
                        "top1_int8": cpu["top1_int8"], "reason": int8_reason}  # fmt: skip
    cpu.update({k: fallback[k] for k in ("mean_cosine", "min_cosine", "top1_fp32", "top1_int8", "passed", "forced")})
    cpu["head_precision"] = "fp32"
    if int8_head:
        cpu["reason"] = f"INT8 head refused ({int8_reason}); INT8 frame encoder + FP32 head within the gate"
    else:
        cpu["reason"] = f"INT8 frame encoder + FP32 head: {fallback['reason']}"
    run.parts_written["cpu"] = ["frame_encoder"]


def _report(run: _Run, target: str, force: bool, t0: float) -> dict[str, Any]:
    """The run's report: the TensorRT target's numbers on top (the CPU target's when only it ran), the CPU
    target's under ``cpu``, per target whether it passed and was written, a summary line each."""
    reports = run.reports
    report: dict[str, Any] = dict(reports.get("tensorrt", reports.get("cpu", {})))
    if "cpu" in reports:
        report["cpu"] = reports["cpu"]
    report["target"] = target
    write = [t for t in run.targets if reports[t]["passed"] or force]
    report["targets"] = {
        t: {
            "passed": r["passed"],
            "written": t in write,
            "reason": r["reason"],
            "files": [layout.int8_name(part, t) for part in run.parts_written[t]] if t in write else [],
            "head_precision": r["head_precision"],
        }
        for t, r in reports.items()
    }
    report["summary"] = [_summary_line(t, report["targets"][t]) for t in run.targets]
    report["exit_code"] = 0 if write else EXIT_NOTHING_WRITTEN
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return report


def _write(run: _Run, report: dict[str, Any]) -> None:
    """The INT8 models of the targets written, then the manifest (last), keeping an earlier run's report of the
    other target."""
    from cezsar.atomic import atomic_path

    deploy, m = run.deploy, run.m
    write = [t for t, r in report["targets"].items() if r["written"]]
    stale: list[Path] = []  # an earlier run's INT8 head, replaced by the FP32 one: removed after the manifest
    for t in write:
        for part, p in run.paths[t].items():
            key = layout.int8_key(part, t)
            if part not in run.parts_written[t]:  # kept in FP32: the int8 key names the FP32 file
                old_rel = m.files.get(key)
                m.files[key] = m.files[part]
                if old_rel and old_rel != m.files[part]:
                    m.sha256.pop(old_rel, None)
                    stale.append(deploy / old_rel)
                continue
            rel = layout.int8_name(part, t)
            with atomic_path(deploy / rel) as tmp:
                shutil.copyfile(p, tmp)
            m.files[key] = rel
            m.sha256[rel] = file_sha256(deploy / rel)
    old = m.extra.get("quantization")
    stored: dict[str, Any] = dict(old) if isinstance(old, dict) else {}
    if "tensorrt" in write:
        keep_cpu = stored.get("cpu")
        stored = {k: v for k, v in report.items() if k not in ("cpu", "targets")}
        if keep_cpu is not None:
            stored["cpu"] = keep_cpu
    if "cpu" in write:
        stored["cpu"] = run.reports["cpu"]
    m.extra["quantization"] = stored
    save_manifest(deploy, m)
    for path in stale:
        path.unlink(missing_ok=True)


def quantize_deploy(
    deploy_dir: str | Path,
    calib: str | Path,
    eval_data: str | Path | None = None,
    force: bool = False,
    method: str = "auto",
    holdout: float = 0.2,
    seed: int = 0,
    calibration_method: str = "entropy",
    min_cosine: float = MIN_COSINE,
    max_top1_drop: float = MAX_TOP1_DROP,
    threads: int | None = None,
    measure_speed: bool = True,
    target: str = "both",
    int8_head: bool = False,
) -> dict[str, Any]:
    """Quantize the deploy folder's frame encoder and head; returns the report (see module doc).

    ``int8_head``: the CPU target quantizes the temporal head too (default: the CPU head stays FP32).

    ``target``: "tensorrt" (Q/DQ by TensorRT's rules), "cpu" (laid out
    for onnxruntime's CPU integer kernels, see :func:`converter.quantizers.quantize_cpu`; not checked against
    the TensorRT rules) or "both". Each target has its own gate on the same held-out frames, and its files are
    written only when its gate passes, or with ``force``. The report's top-level numbers are the
    TensorRT target's (the CPU target's when only it ran); ``report["cpu"]`` holds the CPU target's
    report, ``report["targets"]`` whether each target passed and was written. The manifest keeps the
    report under ``extra.quantization`` (a later run of one target keeps the other target's report).
    """
    run = _open(deploy_dir, calib, holdout, seed, target, threads)
    t0 = time.perf_counter()
    fe32 = ort_runner(run.fe_path, threads)
    common = {
        "holdout_frames": len(run.hold),
        "calibration_frames": len(run.train),
        "calib_file": str(calib),
        "calib_sources": len(run.cal.sources),
        "gate": {"min_mean_cosine": min_cosine, "max_top1_drop": max_top1_drop},
    }
    with tempfile.TemporaryDirectory(prefix="cezsar-int8-") as td:
        _quantize(run, Path(td), fe32, method, calibration_method, common)
        fallback = _measure(run, fe32, eval_data, measure_speed)
        for t in run.targets:
            _gate(run.reports[t], min_cosine, max_top1_drop, force)
            run.parts_written[t] = ["frame_encoder", "temporal_head"]
        if fallback is not None:
            _keep_fp32_head(run, fallback, min_cosine, max_top1_drop, force, int8_head)
        for t in run.targets:
            run.reports[t].setdefault("head_precision", "int8")
        report = _report(run, target, force, t0)
        if report["exit_code"] == 0:
            _write(run, report)
    return report
