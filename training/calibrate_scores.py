"""Fit a model's score calibration (issue 21): raw cosine margins -> "this action is happening".

``cezsar train`` runs this after training, ``cezsar init`` after initialising, ``cezsar calibrate-scores``
on any model folder; the result is ``calibration.json`` in the model folder (:mod:`cezsar.scorecal`),
which ``cezsar export`` copies into the deploy folder.

1. **Validation streams of seen classes, never unseen ones**, the most faithful there are: a
   synthetic world's rendered streams of its seen classes (``WORLD/streams/seen``: idle kinds, cuts,
   transitions, as the edge decodes them); else streams strung in memory from held-out clips of the
   training classes of a labelled dataset (``videos.jsonl`` + ``classes/`` + ``split.json``) or from
   the training run's validation captions (clips no step trained on, each its own action described by
   its caption), with idle stretches of 3-8 s between them (a held frame of a neighbouring clip, as
   is, drifting, with a lighting change, noise or a cut: training/idle.py) and a quarter of them back
   to back; with no data at all, the seen streams of a small rendered synthetic world.
2. **Windows as at the edge**: every 2 frames at the model's rate, through the model.
3. **The maps.** Each (window, action) pair is a positive when at least half the window shows the
   action, else a negative (idle windows and other actions' windows alike); a class-balanced
   logistic regression of the label on the margin over the background, and one on the raw cosine,
   give the two maps.
4. **The default threshold** of each map, for multi-label and for exclusive decisions, is chosen by
   event F1 (IoU >= 0.3) on these streams with the edge's own decision rules (cezsar.events): the
   middle of the thresholds within 0.02 of the best F1, and never below 0.5 (:data:`MIN_THRESHOLD`): the
   default does not call an event where the calibrated model says the action is more likely absent. The
   validation streams hold minutes of idle, a camera days: where F1 is flat, the lower thresholds it
   allows bought false alarms on long idle footage (docs/live.md).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cezsar.errors import CezsarError
from cezsar.events import Params, ScoredStream, decide, evaluate
from cezsar.scorecal import (
    CALIBRATED_DEFAULTS,
    DEFAULT_BACKGROUND,
    ScoreCalibration,
    fit_logistic,
    margins,
    threshold_key,
)
from cezsar.zeroshot import class_prototypes
from training.clips import Segment, frames_for, to_tensor
from training.idle import STILL_KINDS, still_window
from training.model import CezsarModel, SentenceEncoder

log = logging.getLogger(__name__)

CLIPS_PER_CLASS = 4
MAX_CLASSES = 40
MAX_CAPTION_CLIPS = 120
CLIPS_PER_STREAM = 8
IDLE_SECONDS = (3.0, 8.0)
P_DIRECT = 0.25
HOP = 2
MIN_IOU = 0.3
SEEN_STREAMS = "streams/seen"
WATCHED = 8  # actions watched on a validation stream (its own and others)
MIN_THRESHOLD = 0.5  # the default thresholds' floor on the probability scale (module doc, 4.)


@dataclass
class CalibClip:
    segment: Segment
    action: str
    descriptions: list[str]


def labelled_clips(data_dir: Path, seed: int) -> list[CalibClip] | None:
    """Clips of the seen classes of a labelled dataset (split.json's training classes), None without one."""
    from cezsar.data.formats import read_eval_set, read_split
    from cezsar.data.synthset import idle_classes

    if not ((data_dir / "videos.jsonl").is_file() and (data_dir / "classes").is_dir()):
        return None
    if not (data_dir / "split.json").is_file():
        return None
    es = read_eval_set(data_dir)
    split = read_split(data_dir / "split.json", es.class_names)
    skip = idle_classes(data_dir)
    seen = [c for c in split.training if c in es.classes and c not in skip]
    rng = np.random.default_rng([seed, 29])
    seen = [seen[int(i)] for i in rng.permutation(len(seen))[:MAX_CLASSES]]
    out = []
    for c in sorted(seen):
        vids = [v for v in es.videos if v.label == c]
        for k in rng.permutation(len(vids))[:CLIPS_PER_CLASS]:
            v = vids[int(k)]
            out.append(CalibClip(Segment(v.path, v.start, v.end), c, list(es.classes[c])))
    return out or None


def caption_clips(records: list[Any], idx: np.ndarray, seed: int) -> list[CalibClip]:
    """Held-out captioned clips, each an action of its own described by its caption."""
    rng = np.random.default_rng([seed, 31])
    pick = [int(idx[int(i)]) for i in rng.permutation(len(idx))[:MAX_CAPTION_CLIPS]]
    return [
        CalibClip(Segment(Path(records[i].video), records[i].start, records[i].end), f"clip {i}", [records[i].caption])
        for i in pick
    ]


@dataclass
class _Stream:
    frames: torch.Tensor  # (N, 3, S, S) normalised
    truth: list[dict[str, Any]]
    names: list[str]  # the actions watched on it


def clip_streams(model: CezsarModel, clips: list[CalibClip], seed: int) -> list[_Stream]:
    """Validation streams of clips: the clips in random order, idle stretches between them (or none)."""
    cfg = model.config
    pre, fps, t = cfg.pre, cfg.fps, cfg.frames
    rng = np.random.default_rng([seed, 37])
    order = [clips[int(i)] for i in rng.permutation(len(clips))]
    out = []
    for s in range(0, len(order), CLIPS_PER_STREAM):
        parts: list[torch.Tensor] = []
        truth: list[dict[str, Any]] = []
        n = 0
        group = order[s : s + CLIPS_PER_STREAM]
        for k, c in enumerate(group):
            x = to_tensor(frames_for(c.segment, fps, t, pre), pre)
            if k == 0 or rng.random() >= P_DIRECT:
                held = x[0] if rng.random() < 0.5 or not parts else parts[-1][-1]
                m = int(round(rng.uniform(*IDLE_SECONDS) * fps))
                kind = STILL_KINDS[int(rng.integers(len(STILL_KINDS)))]
                parts.append(still_window(held, m, kind, rng, pre))
                n += m
            parts.append(x)
            truth.append({"action": c.action, "start": n / fps, "end": (n + len(x)) / fps})
            n += len(x)
        tail = int(round(rng.uniform(*IDLE_SECONDS) * fps))
        parts.append(still_window(parts[-1][-1], tail, "held", rng, pre))
        out.append(_Stream(torch.cat(parts), truth, sorted({c.action for c in group})))
    return out


def rendered_streams(
    model: CezsarModel, folder: Path, seed: int = 0
) -> tuple[list[_Stream], dict[str, list[str]], list[str]]:
    """A stream group of the synthetic world (its seen classes: WORLD/streams/seen), decoded at the model's
    rate as the edge samples it: (streams, descriptions of its actions, its background). Each stream
    watches its own actions and others of the group up to WATCHED (an actions file of a few actions, as
    users write them, not every seen class at once)."""
    from cezsar.data.synthstreams import read_stream_group
    from cezsar.video import probe, read_frames

    group = read_stream_group(folder)
    cfg = model.config
    rng = np.random.default_rng([seed, 41])
    out = []
    for v in group.videos:
        info = probe(v)
        times = np.arange(0.0, info.duration - 1e-6, 1.0 / cfg.fps)
        crops = np.stack([cfg.pre.crop_uint8(f) for f in read_frames(v, times, info)])
        own = sorted({t["action"] for t in group.truth[v.name] if t["action"] in group.actions})
        others = [a for a in sorted(group.actions) if a not in own]
        extra = [others[int(i)] for i in rng.permutation(len(others))[: max(0, WATCHED - len(own))]]
        out.append(_Stream(to_tensor(crops, cfg.pre), group.truth[v.name], sorted([*own, *extra])))
    return out, group.actions, group.background


@torch.no_grad()
def _windows(model: CezsarModel, frames: torch.Tensor, batch: int = 256) -> tuple[np.ndarray, ...]:
    """(centres, ends, (W, J) embeddings) of the windows every HOP frames, as the edge computes them."""
    cfg = model.config
    t, fps = cfg.frames, cfg.fps
    feats = torch.cat([model.frame_encoder(frames[i : i + batch]) for i in range(0, len(frames), batch)])
    starts = np.arange(0, len(frames) - t + 1, HOP)
    wins = torch.stack([feats[s : s + t] for s in starts])
    emb = torch.cat([model.temporal_head(wins[i : i + batch]) for i in range(0, len(wins), batch)]).numpy()
    first, last = starts / fps, (starts + t - 1) / fps
    return (first + last) / 2, last, emb


def _labels(starts: np.ndarray, ends: np.ndarray, names: list[str], truth: list[dict[str, Any]]) -> np.ndarray:
    """(W, A) 1 where at least half of the window shows the action."""
    y = np.zeros((len(starts), len(names)))
    length = np.maximum(ends - starts, 1e-9)
    for seg in truth:
        j = names.index(seg["action"])
        cover = np.clip(np.minimum(ends, seg["end"]) - np.maximum(starts, seg["start"]), 0, None) / length
        y[:, j] = np.maximum(y[:, j], cover)
    return (y >= 0.5).astype(np.float64)


def _choose_threshold(streams: list[ScoredStream], base: Params, exclusive: bool) -> tuple[float, list[dict[str, Any]]]:
    """The middle of the thresholds whose event F1 is within 0.02 of the best (at least MIN_THRESHOLD), and the
    curve."""
    from dataclasses import replace

    curve = []
    for th in np.round(np.arange(0.10, 0.951, 0.025), 4):
        p = replace(base, threshold=float(th), hysteresis=min(base.hysteresis, float(th) / 2))
        res = evaluate([(s, decide(s, p, exclusive=exclusive)) for s in streams], MIN_IOU)
        curve.append({"threshold": float(th), "f1": res["f1"], "precision": res["precision"], "recall": res["recall"]})
    best = max(c["f1"] for c in curve)
    near = [c["threshold"] for c in curve if c["f1"] >= best - 0.02]
    return max(float(near[len(near) // 2]), MIN_THRESHOLD), curve


def calibrate_streams(
    model: CezsarModel,
    text: SentenceEncoder,
    streams: list[_Stream],
    descriptions: dict[str, list[str]],
    source: str,
    background: tuple[str, ...] | list[str] = DEFAULT_BACKGROUND,
) -> ScoreCalibration:
    """Fit the maps and choose the default thresholds on validation ``streams`` of the actions ``descriptions``."""
    if len(descriptions) < 2:
        raise CezsarError(f"score calibration: needs at least two actions ({source})")
    model.eval()
    fps = model.config.fps
    names = sorted(descriptions)
    with torch.no_grad():
        protos = class_prototypes([model.encode_text(text.encode(descriptions[n])).numpy() for n in names])
        bg = model.encode_text(text.encode(list(background))).numpy()
    raw: dict[str, list[np.ndarray]] = {"margin": [], "cosine": []}
    ys: list[np.ndarray] = []
    kept: list[tuple[_Stream, np.ndarray, np.ndarray, dict[str, np.ndarray]]] = []
    for st in streams:
        centres, ends, emb = _windows(model, st.frames)
        cols = [names.index(n) for n in st.names]
        m, cos, _ = margins(emb, protos[cols], bg)
        by_mode = {"margin": m, "cosine": cos}
        y = _labels(ends - (model.config.frames - 1) / fps, ends, st.names, st.truth)
        for k, v in by_mode.items():
            raw[k].append(v.ravel())
        ys.append(y.ravel())
        kept.append((st, centres, ends, by_mode))
    y_all = np.concatenate(ys)
    maps = {k: fit_logistic(np.concatenate(v), y_all) for k, v in raw.items()}
    thresholds: dict[str, float] = {}
    curves: dict[str, list[dict[str, Any]]] = {}
    for k, fit in maps.items():
        scored = [
            ScoredStream(f"val{i}", len(st.frames) / fps, c, e, st.names, np.round(fit(r[k]), 4), st.truth)
            for i, (st, c, e, r) in enumerate(kept)
        ]
        for exclusive in (False, True):
            key = threshold_key(k, exclusive)
            thresholds[key], curves[key] = _choose_threshold(scored, CALIBRATED_DEFAULTS, exclusive)
    info = {
        "fitted_on": source,
        "actions": len(names),
        "streams": len(streams),
        "seconds": round(sum(len(st.frames) for st in streams) / fps, 1),
        "windows": int(sum(len(c) for _, c, _, _ in kept)),
        "positive_pairs": int(y_all.sum()),
        "pairs": int(len(y_all)),
        "background": list(background),
        "threshold_f1": {k: max(c["f1"] for c in curves[k]) for k in curves},
        "curves": curves,
    }
    return ScoreCalibration(maps, CALIBRATED_DEFAULTS.to_dict(), thresholds, info)


def calibrate(
    model_dir: str | Path,
    data_dir: str | Path | None = None,
    val_records: tuple[list[Any], np.ndarray] | None = None,
    seed: int = 0,
    model: CezsarModel | None = None,
    text: SentenceEncoder | None = None,
) -> Path:
    """Fit and write ``model_dir``/calibration.json; returns its path. ``data_dir``: a synthetic world with
    its streams, a labelled dataset with a split, or a captions dataset (its ``val_records``: records and
    held-out indices, from the training run); None renders a small synthetic world."""
    from cezsar.deploy.layout import calibration_name
    from cezsar.scorecal import save_calibration

    model_dir = Path(model_dir)
    model = model or CezsarModel.load(model_dir)
    text = text or SentenceEncoder.for_config(model.config)
    cal = _calibrate_on(model, text, Path(data_dir) if data_dir is not None else None, val_records, seed)
    path = save_calibration(model_dir / calibration_name(), cal)
    log.info("score calibration: %s", json.dumps({k: v for k, v in cal.info.items() if k != "curves"}))
    return path


def _calibrate_on(
    model: CezsarModel,
    text: SentenceEncoder,
    data_dir: Path | None,
    val_records: tuple[list[Any], np.ndarray] | None,
    seed: int,
) -> ScoreCalibration:
    """The best validation streams there are: the synthetic world's rendered streams of seen classes, else
    streams of labelled seen-class clips, else of held-out captioned clips, else a rendered world's."""
    if data_dir is not None and (data_dir / SEEN_STREAMS / "truth.jsonl").is_file():
        streams, descs, background = rendered_streams(model, data_dir / SEEN_STREAMS, seed)
        source = f"{data_dir / SEEN_STREAMS}: rendered streams of seen classes"
        return calibrate_streams(model, text, streams, descs, source, background or DEFAULT_BACKGROUND)
    clips = labelled_clips(data_dir, seed) if data_dir is not None else None
    source = f"{data_dir}: held-out clips of its seen classes"
    if clips is None and val_records is not None:
        clips = caption_clips(val_records[0], val_records[1], seed)
        source = f"{data_dir}: {len(clips)} held-out captioned clips"
    if clips is not None:
        descs = {c.action: c.descriptions for c in clips}
        return calibrate_streams(model, text, clip_streams(model, clips, seed), descs, source)
    with tempfile.TemporaryDirectory(prefix="cezsar-calib-") as tmp:
        from cezsar.data.synthetic import IDLE, parse_class_name
        from cezsar.data.synthset import compositional_split
        from cezsar.data.synthstreams import write_stream_group

        training, _ = compositional_split(seed)
        seen = [c for c in training if parse_class_name(c)[1] != IDLE]
        write_stream_group(Path(tmp), "seen", seen, seed, repeats=1)
        streams, descs, background = rendered_streams(model, Path(tmp), seed)
        source = "streams of a rendered synthetic world (no data given: recalibrate on your own footage)"
        return calibrate_streams(model, text, streams, descs, source, background)


def calibrate_trained(
    out_dir: Path,
    data_dir: Path,
    model: CezsarModel,
    text: SentenceEncoder,
    val_records: tuple[list[Any], np.ndarray],
    seed: int,
) -> Path | None:
    """The calibration ``cezsar train`` fits after training; a model that cannot be calibrated is still a
    model: one warning, and the edge scores it in raw margins."""
    try:
        path = calibrate(out_dir, data_dir, val_records, seed, model=model, text=text)
    except CezsarError as e:
        log.warning("no score calibration for %s: %s", out_dir, e)
        return None
    log.info("score calibration: %s", path)
    return path
