"""Event quality on continuous streams with known segments (``cezsar eval-stream``, issue 21).

Users see events on a stream that is mostly idle, not clip top-1. This runs the very
:class:`~edge.recognizer.Recognizer` of the runtime over video files, with no threads and no sockets,
as fast as the CPU allows (every sampled frame, in capture order, the runtime's sampler and
preprocessing), and scores its events against the truth (:func:`cezsar.events.evaluate`): event
precision, recall and F1 at temporal IoU >= 0.3, overall and per action; false alarms per hour of
idle; start latency; and a threshold sweep (the precision-recall curve, JSON and PNG) that re-runs the
decisions on the recorded window scores.

Input: ``--streams`` is a folder of videos with a ``truth.jsonl`` (one line per segment:
``{"stream": "<file name in the folder>", "action": "<action name>", "start": s, "end": e}``), or one
video with its truth next to it (``<video>.truth.jsonl``, lines without ``stream``) or given with
``--truth``. ``cezsar synth`` writes such folders (WORLD/streams/<group>/, cezsar.data.synthstreams);
footage of your own works the same way. A video of the folder with no truth line is all idle; a truth
segment of an action the actions file does not watch counts as activity (not idle) but is not scored.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.errors import CezsarError
from cezsar.events import Params, ScoredStream, decide, evaluate, sweep
from edge.actions import ActionSet, load_actions
from edge.decisions import Event
from edge.recognizer import Recognizer, WindowResult
from edge.scorer import Scorer

log = logging.getLogger(__name__)

TRUTH_FILE = "truth.jsonl"
TRUTH_SUFFIX = ".truth.jsonl"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
TRUTH_HINT = '{"stream": "<video file name>", "action": "<name>", "start": <s>, "end": <s>}'
BATCH_FRAMES = 32
MIN_IOU = 0.3


@dataclass
class StreamSet:
    """Videos to evaluate and their truth segments (stream name -> segments)."""

    videos: list[Path]
    truth: dict[str, list[dict[str, Any]]]
    truth_file: Path


@dataclass
class StreamRun:
    """One video through the Recognizer: its windows and events."""

    name: str
    duration: float
    frames: int
    windows: list[WindowResult] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # end events as cezsar.events.event_dict


def _truth_line(raw: str, where: str, need_stream: bool) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        raise CezsarError(f"{where}: not JSON ({e.msg}); expected {TRUTH_HINT}") from None
    if not isinstance(obj, dict):
        raise CezsarError(f"{where}: expected an object {TRUTH_HINT}")
    keys = ("stream", "action", "start", "end") if need_stream else ("action", "start", "end")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise CezsarError(f"{where}: missing {', '.join(missing)}; expected {TRUTH_HINT}")
    for k in ("stream", "action"):
        if k in obj and (not isinstance(obj[k], str) or not obj[k].strip()):
            raise CezsarError(f"{where}: {k} must be a non-empty string, not {obj[k]!r}")
    try:
        start, end = float(obj["start"]), float(obj["end"])
    except (TypeError, ValueError):
        raise CezsarError(f"{where}: start and end must be numbers of seconds") from None
    if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
        raise CezsarError(f"{where}: needs 0 <= start < end (got start {start}, end {end})")
    return {"stream": obj.get("stream"), "action": obj["action"], "start": start, "end": end}


def read_truth(path: Path, videos: Sequence[Path], single: bool = False) -> dict[str, list[dict[str, Any]]]:
    """Parse a truth file; every line is checked, the first bad one is reported with its line number.
    ``single``: the truth of one video (``stream`` optional)."""
    if not path.is_file():
        where = "next to the video" if single else "in the folder"
        raise CezsarError(f"{path}: no truth file ({where}; one JSON line per segment: {TRUTH_HINT})")
    by_name = {v.name: v for v in videos}
    out: dict[str, list[dict[str, Any]]] = {v.name: [] for v in videos}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CezsarError(f"{path}: cannot be read ({e})") from None
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        seg = _truth_line(raw, f"{path}:{i}", need_stream=not single)
        name = videos[0].name if single else seg["stream"]
        if name not in by_name:
            raise CezsarError(f"{path}:{i}: stream {name!r} is not a video in {path.parent}")
        out[name].append({"action": seg["action"], "start": seg["start"], "end": seg["end"]})
    return out


def read_streams(streams: str | Path, truth: str | Path | None = None) -> StreamSet:
    """A folder of videos + truth.jsonl, or one video + its truth file; one clear line for what is wrong."""
    streams = Path(streams)
    if streams.is_dir():
        videos = sorted(p for p in streams.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        if not videos:
            raise CezsarError(f"{streams}: no videos ({', '.join(VIDEO_SUFFIXES)}) in the folder")
        tfile = Path(truth) if truth is not None else streams / TRUTH_FILE
        return StreamSet(videos, read_truth(tfile, videos), tfile)
    if streams.is_file():
        tfile = Path(truth) if truth is not None else streams.with_name(streams.stem + TRUTH_SUFFIX)
        return StreamSet([streams], read_truth(tfile, [streams], single=True), tfile)
    raise CezsarError(f"{streams}: no such folder or video")


def _decode(path: Path, fps: float, pre: Any, name: str) -> tuple[list[Any], float]:
    """Every frame the runtime's sampler keeps (capture time = media time, as for a file source), as
    Frames whose ``wall`` is their capture time (so latencies come out in media time)."""
    from cezsar.video import open_video
    from edge.sampler import Sampler
    from edge.sources import Frame

    cap = open_video(path)
    try:
        native = float(cap.get(5)) or fps  # cv2.CAP_PROP_FPS
        sampler = Sampler(fps)
        frames: list[Frame] = []
        i = 0
        while True:
            ok, img = cap.read()
            if not ok:
                break
            t = i / native
            i += 1
            if sampler.want(t):
                frames.append(Frame.from_image(name, len(frames), t, t, img, pre))
    finally:
        cap.release()
    if not frames:
        raise CezsarError(f"{path}: no frame could be decoded")
    return frames, i / native


def run_stream(recognizer: Recognizer, path: Path, fps: float, pre: Any) -> StreamRun:
    """One video through the Recognizer (as the runtime feeds a file in --no-realtime mode)."""
    name = path.stem
    frames, duration = _decode(path, fps, pre, name)
    run = StreamRun(name, duration, len(frames))
    detected: dict[str, float] = {}

    def keep(evs: Sequence[Event]) -> None:
        from cezsar.events import event_dict

        for ev in evs:
            if ev.phase == "start":
                detected[ev.id] = ev.wall
            elif ev.phase == "end":
                run.events.append(event_dict(ev, detected.get(ev.id, ev.start)))

    for k in range(0, len(frames), BATCH_FRAMES):
        step = recognizer.push(frames[k : k + BATCH_FRAMES])
        run.windows += step.windows
        keep(step.events)
    keep(recognizer.end_stream(name, "stream_end", wall=frames[-1].t))
    return run


def scored(run: StreamRun, names: list[str], truth: list[dict[str, Any]]) -> ScoredStream:
    """A run's window scores (what the decisions saw) with its truth split into watched and other."""
    watched = set(names)
    cols = [n for n in names if all(n in r.scores for r in run.windows)]
    return ScoredStream(
        run.name,
        run.duration,
        np.array([r.window.center for r in run.windows]),
        np.array([r.window.end for r in run.windows]),
        cols,
        np.array([[r.scores[n] for n in cols] for r in run.windows]).reshape(len(run.windows), len(cols)),
        [s for s in truth if s["action"] in watched],
        [s for s in truth if s["action"] not in watched],
    )


def rescore(streams: Sequence[ScoredStream], runs: Sequence[StreamRun], scorer: Scorer) -> list[ScoredStream]:
    """The same windows under another scorer (another actions file, exclusive or not, calibrated or
    not): re-scored from their embeddings, no video decoded again. Scores rounded as the Recognizer does."""
    out = []
    for s, run in zip(streams, runs, strict=True):
        emb = np.stack([r.window.embedding for r in run.windows]) if run.windows else np.zeros((0, 1))
        sc = np.round(scorer.score(emb).scores, 4) if len(emb) else np.zeros((0, len(scorer.names)))
        truth = [*s.truth, *s.other]
        names = set(scorer.names)
        out.append(
            ScoredStream(
                s.name,
                s.duration,
                s.centers,
                s.ends,
                list(scorer.names),
                sc,
                [t for t in truth if t["action"] in names],
                [t for t in truth if t["action"] not in names],
            )
        )
    return out


def thresholds_for(streams: Sequence[ScoredStream], calibrated: bool, n: int = 41) -> list[float]:
    """The sweep's thresholds: [0.02, 0.98] on a calibrated scale, else the range of the scores seen."""
    if calibrated:
        return [round(float(x), 4) for x in np.linspace(0.02, 0.98, n)]
    allv = np.concatenate([s.scores.ravel() for s in streams if s.scores.size]) if streams else np.zeros(0)
    if not allv.size:
        return [0.0]
    lo, hi = np.quantile(allv, [0.5, 1.0])
    return [round(float(x), 4) for x in np.linspace(lo, hi, n)]


@dataclass
class Setup:
    """What evaluate_streams loads: kept so scripts can re-score the same windows cheaply."""

    recognizer: Recognizer
    aset: ActionSet
    runs: list[StreamRun]
    streams: list[ScoredStream]
    backend: str


def _recognizer(deploy: Path, backend: str, precision: str, hop: int, threads: int | None) -> tuple[Any, ...]:
    from cezsar.backends.registry import load_backend
    from cezsar.deploy.manifest import load_manifest
    from edge.embedder import WindowEmbedder
    from edge.scorer import deploy_calibration
    from edge.text import TextEncoder

    if hop < 1:
        raise CezsarError(f"--hop {hop}: must be >= 1")
    m = load_manifest(deploy)
    loaded = load_backend(backend, precision, deploy, m, threads)
    text = TextEncoder(deploy, m, threads)
    emb = WindowEmbedder(loaded.frame_encoder, loaded.temporal_head, m.window, hop, m.feature_dim)
    rec = Recognizer(emb, text, calibration=deploy_calibration(deploy, m))
    return m, loaded, rec


def run_streams(
    deploy: str | Path,
    streams: str | Path,
    actions: str | Path,
    truth: str | Path | None = None,
    backend: str = "auto",
    precision: str = "auto",
    hop: int = 2,
    threads: int | None = None,
) -> Setup:
    """Load everything, run every video through one Recognizer, keep the windows (no scoring yet)."""
    sset = read_streams(streams, truth)
    aset = load_actions(actions)
    m, loaded, rec = _recognizer(Path(deploy), backend, precision, hop, threads)
    try:
        rec.set_actions(aset)
        runs = [run_stream(rec, v, m.fps, m.pre) for v in sset.videos]
    finally:
        loaded.close()
    names = aset.names()
    scored_streams = [scored(r, names, sset.truth[v.name]) for r, v in zip(runs, sset.videos, strict=True)]
    return Setup(rec, aset, runs, scored_streams, getattr(loaded, "reason", "") or str(backend))


def report(
    setup: Setup, min_iou: float = MIN_IOU, n_thresholds: int = 41, scorer: Scorer | None = None
) -> dict[str, Any]:
    """The evaluation of a run: the Recognizer's own events and the threshold sweep; with ``scorer`` (another
    actions file, exclusive or not, with or without background), the same windows re-scored and decided
    by the same rules instead (no video decoded again)."""
    if scorer is None:
        scorer = setup.recognizer.scorer
        assert scorer is not None
        streams = setup.streams
        events = [r.events for r in setup.runs]
    else:
        streams = rescore(setup.streams, setup.runs, scorer)
        events = [decide(s, scorer.params, exclusive=scorer.aset.exclusive) for s in streams]
    res = evaluate(list(zip(streams, events, strict=True)), min_iou)
    cal = scorer.calibration
    defaults = cal.params(scorer.mode, scorer.aset.exclusive) if cal is not None else Params()
    curve = sweep(
        streams,
        defaults,
        thresholds_for(streams, cal is not None, n_thresholds),
        min_iou,
        per_action=scorer.params,
        exclusive=scorer.aset.exclusive,
    )
    best = max(curve, key=lambda c: (c["f1"], -abs(c["threshold"] - defaults.threshold)))
    return {
        **res,
        "calibrated": cal is not None,
        "exclusive": scorer.aset.exclusive,
        "params": {n: p.to_dict() for n, p in scorer.params.items()},
        "frames": sum(r.frames for r in setup.runs),
        "windows": sum(len(r.windows) for r in setup.runs),
        "per_stream": [
            {"stream": r.name, "seconds": round(r.duration, 2), "segments": len(s.truth), "events": ev}
            for r, s, ev in zip(setup.runs, streams, events, strict=True)
        ],
        "sweep": {"best": best, "curve": curve},
    }


def scorer_for(setup: Setup, obj: dict[str, Any]) -> Scorer:
    """A scorer of an actions file given as an object (its descriptions embedded by the run's text tower,
    the run's calibration)."""
    from edge.actions import actions_from_obj

    rec = setup.recognizer
    assert rec.text is not None
    return Scorer.build(actions_from_obj(obj), rec.text, rec.calibration)


def plot_curve(curve: Sequence[dict[str, Any]], path: Path, title: str, current: float | None = None) -> Path | None:
    """The precision-recall curve of a sweep as a PNG (matplotlib, no display); None, with one warning,
    where matplotlib is not installed (the curve is in the JSON anyway)."""
    try:
        import matplotlib
    except ImportError:
        log.warning("no matplotlib: %s not drawn (pip install 'cezsar[plots]'); the curve is in sweep.json", path)
        return None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cezsar.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(5, 4.5))
    r = [c["recall"] for c in curve]
    p = [c["precision"] for c in curve]
    ax.plot(r, p, "-o", ms=3, lw=1.2)
    best = max(curve, key=lambda c: c["f1"])
    label = f"best F1 {best['f1']:.2f} @ {best['threshold']:g}"
    ax.plot([best["recall"]], [best["precision"]], "r*", ms=12, label=label)
    if current is not None:
        here = min(curve, key=lambda c: abs(c["threshold"] - current))
        ax.plot([here["recall"]], [here["precision"]], "ks", ms=7, label=f"threshold {current:g}: F1 {here['f1']:.2f}")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("event recall")
    ax.set_ylabel("event precision")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def evaluate_streams(
    deploy: str | Path,
    streams: str | Path,
    actions: str | Path | None = None,
    truth: str | Path | None = None,
    out: str | Path | None = None,
    backend: str = "auto",
    precision: str = "auto",
    hop: int = 2,
    threads: int | None = None,
    min_iou: float = MIN_IOU,
) -> dict[str, Any]:
    """``cezsar eval-stream``: run, score, sweep; with ``out``, write report.json, sweep.json and
    pr_curve.png there. ``actions`` defaults to the streams folder's actions.yaml."""
    t0 = time.time()
    if actions is None:
        folder = Path(streams) if Path(streams).is_dir() else Path(streams).parent
        actions = folder / "actions.yaml"
        if not actions.is_file():
            raise CezsarError(f"{folder}: no actions.yaml; pass --actions FILE (the actions to watch)")
    setup = run_streams(deploy, streams, actions, truth, backend, precision, hop, threads)
    rep = report(setup, min_iou)
    rep["backend"] = setup.backend
    rep["seconds_taken"] = round(time.time() - t0, 2)
    rep["realtime_factor"] = round(rep["seconds"] / max(rep["seconds_taken"], 1e-9), 1)
    if out is not None:
        from cezsar.atomic import write_json

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "report.json", rep)
        write_json(out / "sweep.json", rep["sweep"])
        scorer = setup.recognizer.scorer
        current = next(iter(scorer.params.values())).threshold if scorer is not None and scorer.params else None
        title = f"{Path(streams).name}: {rep['segments']} segments, {rep['seconds']:.0f} s"
        png = plot_curve(rep["sweep"]["curve"], out / "pr_curve.png", title, current)
        rep["written"] = [str(out / "report.json"), str(out / "sweep.json"), *([str(png)] if png else [])]
    return rep


def summary_lines(rep: dict[str, Any]) -> list[str]:
    """A report in a few lines for the terminal: the totals, false alarms, latency, the per-action table
    and the sweep's best threshold."""
    fa, lat = rep["false_alarms"], rep["latency"]
    det = lat["detection"]
    scale = "calibrated probability" if rep.get("calibrated") else "raw cosine margin (no calibration)"
    lines = [
        f"{rep['streams']} streams, {rep['seconds']:.0f} s, {rep['segments']} segments; {rep['events']} events, "
        f"{rep['tp']} right (IoU >= {rep['min_iou']})",
        f"precision {rep['precision']:.3f}  recall {rep['recall']:.3f}  F1 {rep['f1']:.3f}",
        f"false alarms: {fa['idle']} in {fa['idle_seconds']:.0f} s of idle ({fa['per_idle_hour']} per idle hour), "
        f"{fa['wrong_action']} on other activity",
        f"detection latency (segment start -> start event): mean {det['mean']} s, median {det['median']} s",
        f"scores: {scale}; exclusive: {str(rep.get('exclusive', False)).lower()}",
        "",
        f"{'action':<28} {'segments':>8} {'events':>7} {'right':>6} {'P':>6} {'R':>6} {'F1':>6}",
    ]
    for name, a in rep["per_action"].items():
        lines.append(
            f"{name[:28]:<28} {a['segments']:>8} {a['events']:>7} {a['tp']:>6} "
            f"{a['precision']:>6.2f} {a['recall']:>6.2f} {a['f1']:>6.2f}"
        )
    best = rep["sweep"]["best"]
    lines += [
        "",
        f"best threshold of the sweep: {best['threshold']:g} (F1 {best['f1']:.3f}, precision {best['precision']:.3f}, "
        f"recall {best['recall']:.3f})",
        f"{rep['frames']} frames, {rep['windows']} windows in {rep['seconds_taken']:.1f} s "
        f"({rep['realtime_factor']}x real time, {rep['backend']})",
    ]
    lines += [f"wrote {p}" for p in rep.get("written", [])]
    return lines
