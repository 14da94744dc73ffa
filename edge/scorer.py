"""Window embeddings -> one score per action, normalised against the background, on a calibrated scale.

An action's text embedding is the mean of its descriptions' embeddings, re-normalised (a prompt
ensemble: paraphrases average out each other's wording); with ``templates:`` every description is put
through every template first (``ActionSet.texts_for``), a background description likewise through the
global ones. With background descriptions,

    margin(window, action) = cos(window, action) - max_b cos(window, background_b)

> 0 means the window looks more like the action than like anything in the background. It does not
depend on which other actions are configured (a softmax over actions would: adding an action would
lower every other score), and it cancels the per-video offset of raw cosines (lighting, camera,
domain). Without background the raw cosine is used. ``exclusive: true`` (one actor in view, one action
at a time) does not change the scores: the decisions let only the top action be on (cezsar.events).

The deploy folder's score calibration (``calibration.json``, :mod:`cezsar.scorecal`) maps the margin
to the probability that the action is happening, the same scale for every model: the score, the
thresholds, the hysteresis and the console's sparklines are then in [0, 1], and the calibration's
default threshold (chosen on validation streams of seen classes) replaces ``Params()``'s. A deploy
folder without one (exported before issue 21) scores raw margins as before, with one warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cezsar.deploy.layout import CALIBRATION
from cezsar.deploy.manifest import Manifest
from cezsar.events import PARAM_KEYS
from cezsar.scorecal import ScoreCalibration, load_calibration, margins, score_mode
from cezsar.zeroshot import class_prototypes
from edge.actions import Action, ActionSet
from edge.decisions import Params
from edge.text import TextEncoder

log = logging.getLogger(__name__)


@dataclass
class Scores:
    scores: np.ndarray  # (N, A) the scores the decisions see (calibrated when the deploy folder has a calibration)
    cosine: np.ndarray  # (N, A) raw cosine to each action
    background: np.ndarray | None  # (N,) best cosine to a background description, or None


def deploy_calibration(deploy_dir: str | Path, manifest: Manifest) -> ScoreCalibration | None:
    """The deploy folder's score calibration, or None (with one warning) for a folder exported without one."""
    if CALIBRATION not in manifest.files:
        log.warning(
            "%s: no score calibration (exported before calibrated scores): thresholds are raw cosine margins "
            "whose scale depends on the model; re-export the model (cezsar export) after `cezsar calibrate-scores`",
            deploy_dir,
        )
        return None
    return load_calibration(manifest.verified(deploy_dir, CALIBRATION))


def action_params(aset: ActionSet, action: Action, base: Params) -> Params:
    """An action's decision parameters: its own values, else the file's ``defaults:``, else ``base``
    (the calibration's defaults, or ``Params()`` without one)."""
    vals: dict[str, float] = {}
    for k in PARAM_KEYS:
        v = getattr(action, k, None)
        if v is None:
            v = getattr(aset.defaults, k) if k in aset.explicit_defaults else getattr(base, k)
        vals[k] = float(v)
    return Params(**vals)


class Scorer:
    def __init__(
        self,
        aset: ActionSet,
        action_emb: np.ndarray,
        background_emb: np.ndarray,
        calibration: ScoreCalibration | None = None,
    ) -> None:
        self.aset = aset
        self.names = aset.names()
        self.action_emb = np.asarray(action_emb, dtype=np.float32).reshape(len(self.names), -1)
        self.background_emb = np.asarray(background_emb, dtype=np.float32)
        self.calibration = calibration
        self.mode = score_mode(len(self.background_emb) > 0)
        base = calibration.params(self.mode, aset.exclusive) if calibration is not None else Params()
        self.params = {a.name: action_params(aset, a, base) for a in aset.actions}

    @classmethod
    def build(cls, aset: ActionSet, text: TextEncoder, calibration: ScoreCalibration | None = None) -> Scorer:
        """Embed the set's descriptions (cached per string) and build a scorer."""
        # every description through the templates (ActionSet.texts_for), averaged into one prototype
        action_emb = class_prototypes([text.encode(aset.texts_for(a)) for a in aset.actions], dim=text.dim)
        bg = class_prototypes([text.encode(t) for t in aset.background_texts()], dim=text.dim)
        return cls(aset, action_emb, bg, calibration)

    def score(self, emb: np.ndarray) -> Scores:
        """(N, J) window embeddings -> Scores."""
        raw, cos, bg = margins(emb, self.action_emb, self.background_emb)
        if self.calibration is not None:
            raw = self.calibration.apply(raw, self.mode)
        return Scores(raw, cos, bg)
