"""Calibrated scores: one scale for every model (issue 21).

The edge scores a window against an action by a cosine margin (:func:`margins`): the cosine to the
action's prototype minus the best cosine to a background description. Its scale depends on the model:
a tiny CNN trained here, a CLIP or SigLIP init and a fine-tuned model spread their margins differently,
so no fixed threshold fits them all. A calibration maps the margin to the probability that the action is happening,

    p = sigmoid(a * margin + b)

fitted (logistic regression, :func:`fit_logistic`) on held-out windows of seen classes, idle windows
and windows of other actions, when the model is trained (``cezsar train``), initialised (``cezsar
init``) or recalibrated (``cezsar calibrate-scores``). A second map does the same for the raw cosine
(an actions file without background). The calibration also carries the default decision parameters
in that scale: the threshold is chosen by event F1 on validation streams of seen classes
(training/calibrate_scores.py), never on unseen ones.

The file is JSON (``calibration.json``: cezsar.deploy.layout names it), written into the model folder
and copied into the deploy folder by ``cezsar export``. Torch-free: the edge applies it, training fits it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.errors import CezsarError
from cezsar.events import PARAM_KEYS, Params

FORMAT = "cezsar-score-calibration"
VERSION = 1
MODES = ("margin", "cosine")  # the margin over the background / the raw cosine (no background)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def margins(
    emb: np.ndarray, action_emb: np.ndarray, background_emb: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(N, J) window embeddings, (A, J) action prototypes, (B, J) background embeddings ->
    (raw scores (N, A), cosines (N, A), best background cosine (N,) or None).

    The score is the cosine minus the best background cosine; without background (B = 0 or None) it is
    the cosine itself. (``exclusive`` actions compete in the decisions, not here: cezsar.events.)
    """
    emb = _unit(np.asarray(emb, dtype=np.float32).reshape(len(emb), -1))
    n_act = len(action_emb)
    cos = emb @ np.asarray(action_emb, dtype=np.float32).T if n_act else np.zeros((len(emb), 0), np.float32)
    if background_emb is not None and len(background_emb):
        bg = (emb @ np.asarray(background_emb, dtype=np.float32).T).max(axis=1)
        return cos - bg[:, None], cos, bg
    return cos.copy(), cos, None


@dataclass(frozen=True)
class Logistic:
    """p = sigmoid(a * x + b)."""

    a: float
    b: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = self.a * np.asarray(x, dtype=np.float64) + self.b
        return (1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))).astype(np.float32)

    def inverse(self, p: float) -> float:
        """The raw value that maps to ``p`` (0 < p < 1)."""
        return (math.log(p / (1.0 - p)) - self.b) / self.a


def fit_logistic(
    x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None, l2: float = 1e-3, iters: int = 50
) -> Logistic:
    """Weighted logistic regression of labels ``y`` (0/1) on one feature ``x`` (Newton's method).

    Positives and negatives are re-weighted to equal total weight unless ``weight`` is given, so the
    map does not depend on how many idle windows were drawn. Raises when one class is missing or the
    fit gives a non-increasing map (the scores do not separate positives from negatives at all).
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(x) != len(y) or not len(x):
        raise CezsarError("calibration: no scores to fit")
    pos = y > 0.5
    if pos.all() or not pos.any():
        raise CezsarError("calibration: needs both positive and negative windows")
    if weight is None:
        weight = np.where(pos, 0.5 / pos.sum(), 0.5 / (~pos).sum())
    w = np.asarray(weight, dtype=np.float64).ravel() * len(x)
    # standardise for a well-conditioned Newton step, then map back
    mu, sd = float(x.mean()), float(x.std()) or 1.0
    z = (x - mu) / sd
    theta = np.zeros(2)  # slope, intercept on z
    design = np.stack([z, np.ones_like(z)], axis=1)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ theta, -60, 60)))
        grad = design.T @ (w * (p - y)) + l2 * np.array([theta[0], 0.0])
        hess = (design * (w * p * (1 - p))[:, None]).T @ design + l2 * np.diag([1.0, 1e-9])
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    a = float(theta[0] / sd)
    b = float(theta[1] - theta[0] * mu / sd)
    if not (a > 0 and math.isfinite(a) and math.isfinite(b)):
        raise CezsarError(f"calibration: the scores do not separate positives from negatives (slope {a:.3g})")
    return Logistic(a, b)


# The decision parameters of the calibrated scale, whatever the model (the threshold is each model's own,
# chosen on its validation streams: training/calibrate_scores.py); docs/live.md says how they were chosen.
CALIBRATED_DEFAULTS = Params(threshold=0.5, hysteresis=0.15, min_duration=1.5, cooldown=2.0, smoothing=0.5)
# the background the maps are fitted with (a user's own background words shift margins a little)
DEFAULT_BACKGROUND = ("nothing moves", "nothing happens", "everything stays still", "a still scene")


def score_mode(with_background: bool) -> str:
    """Which map applies: "margin" (over the background) or "cosine" (an actions file without background)."""
    return "margin" if with_background else "cosine"


def threshold_key(mode: str, exclusive: bool) -> str:
    """The key of a default threshold: the score mode, "+exclusive" for exclusive decisions."""
    return f"{mode}+exclusive" if exclusive else mode


@dataclass
class ScoreCalibration:
    """One map per score mode, the default decision parameters and each mode's default threshold."""

    maps: dict[str, Logistic]
    defaults: dict[str, float] = field(default_factory=lambda: CALIBRATED_DEFAULTS.to_dict())
    thresholds: dict[str, float] = field(default_factory=dict)  # threshold_key -> default threshold
    info: dict[str, Any] = field(default_factory=dict)  # what it was fitted on, and how well

    def apply(self, raw: np.ndarray, mode: str) -> np.ndarray:
        """Raw scores of ``mode`` (score_mode) -> probabilities."""
        return self.maps[mode](raw)

    def params(self, mode: str = "margin", exclusive: bool = False) -> Params:
        """The default Params of ``mode`` (and of exclusive decisions) in the calibrated scale."""
        vals = {k: float(self.defaults.get(k, getattr(CALIBRATED_DEFAULTS, k))) for k in PARAM_KEYS}
        key = threshold_key(mode, exclusive)
        key = key if key in self.thresholds else mode
        if key in self.thresholds:
            vals["threshold"] = float(self.thresholds[key])
            vals["hysteresis"] = min(vals["hysteresis"], vals["threshold"] / 2)
        return Params(**vals)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "scale": "probability that the action is happening: sigmoid(a * raw + b)",
            "maps": {k: {"a": m.a, "b": m.b} for k, m in self.maps.items()},
            "defaults": dict(self.defaults),
            "thresholds": dict(self.thresholds),
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, d: Any, source: str = "calibration") -> ScoreCalibration:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise CezsarError(f"{source}: not a cezsar score calibration (format {FORMAT!r} expected)")
        if int(d.get("version", -1)) > VERSION:
            raise CezsarError(f"{source}: calibration version {d.get('version')} is newer than this cezsar")
        try:
            maps = {}
            for mode in MODES:
                m = d["maps"][mode]
                a, b = float(m["a"]), float(m["b"])
                if not (a > 0 and math.isfinite(a) and math.isfinite(b)):
                    raise ValueError(f"{mode}: slope must be > 0 and both finite (a={a}, b={b})")
                maps[mode] = Logistic(a, b)
            defaults = {str(k): float(v) for k, v in dict(d.get("defaults", {})).items()}
            unknown = sorted(set(defaults) - set(PARAM_KEYS))
            if unknown:
                raise ValueError(f"unknown defaults {unknown}")
            Params(**defaults)
            thresholds = {str(k): float(v) for k, v in dict(d.get("thresholds", {})).items()}
            bad = sorted(k for k, v in thresholds.items() if k.split("+")[0] not in MODES or not 0.0 < v < 1.0)
            if bad:
                raise ValueError(f"thresholds {bad}: expected keys {', '.join(MODES)}[+exclusive], values in (0, 1)")
        except (KeyError, TypeError, ValueError) as e:
            raise CezsarError(f"{source}: invalid score calibration ({e})") from None
        return cls(maps, defaults, thresholds, dict(d.get("info", {})))


def load_calibration(path: str | Path) -> ScoreCalibration:
    from cezsar.jsonfile import read_json

    return ScoreCalibration.from_dict(read_json(path), source=str(path))


def save_calibration(path: str | Path, cal: ScoreCalibration) -> Path:
    from cezsar.atomic import write_json

    write_json(path, cal.to_dict())
    return Path(path)
