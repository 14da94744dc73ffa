"""Window embeddings -> one score per action, normalised against the background.

An action's text embedding is the mean of its descriptions' embeddings, re-normalised (a prompt
ensemble: paraphrases average out each other's wording); with ``templates:`` every description is put
through every template first (``ActionSet.texts_for``), a background description likewise through the
global ones. With background descriptions,

    score(window, action) = cos(window, action) - max_b cos(window, background_b)

a margin: > 0 means the window looks more like the action than like anything in the background.
It does not depend on which other actions are configured (a softmax over actions would: adding an
action would lower every other score), so one fixed threshold keeps its meaning as the set is
edited, and it cancels the per-video offset of raw cosines (lighting, camera, domain) that a
threshold on the raw cosine would have to absorb. Without background the score is the raw cosine.

With ``exclusive: true`` (one actor in view, one action at a time) the actions also compete: an
action's score is its cosine minus the best of the background *and every other action*, so at most
one action per window has a positive score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cezsar.zeroshot import class_prototypes
from edge.actions import ActionSet
from edge.decisions import Params
from edge.text import TextEncoder


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class Scores:
    scores: np.ndarray  # (N, A) normalised scores
    cosine: np.ndarray  # (N, A) raw cosine to each action
    background: np.ndarray | None  # (N,) best cosine to a background description, or None


class Scorer:
    def __init__(self, aset: ActionSet, action_emb: np.ndarray, background_emb: np.ndarray) -> None:
        self.aset = aset
        self.names = aset.names()
        self.action_emb = np.asarray(action_emb, dtype=np.float32).reshape(len(self.names), -1)
        self.background_emb = np.asarray(background_emb, dtype=np.float32)
        self.params = {
            a.name: Params(
                threshold=aset.value(a, "threshold"),
                hysteresis=aset.value(a, "hysteresis"),
                min_duration=aset.value(a, "min_duration"),
                cooldown=aset.value(a, "cooldown"),
                smoothing=aset.defaults.smoothing,
            )
            for a in aset.actions
        }

    @classmethod
    def build(cls, aset: ActionSet, text: TextEncoder) -> Scorer:
        """Embed the set's descriptions (cached per string) and build a scorer."""
        # every description through the templates (ActionSet.texts_for), averaged into one prototype
        action_emb = class_prototypes([text.encode(aset.texts_for(a)) for a in aset.actions], dim=text.dim)
        bg = class_prototypes([text.encode(t) for t in aset.background_texts()], dim=text.dim)
        return cls(aset, action_emb, bg)

    def score(self, emb: np.ndarray) -> Scores:
        """(N, J) window embeddings -> Scores."""
        emb = _unit(np.asarray(emb, dtype=np.float32).reshape(len(emb), -1))
        cos = emb @ self.action_emb.T if len(self.names) else np.zeros((len(emb), 0), dtype=np.float32)
        bg = (emb @ self.background_emb.T).max(axis=1) if len(self.background_emb) else None
        if self.aset.exclusive and cos.shape[1] > 1:
            # best competitor of each action: the top cosine of the others (second best for the top one)
            order = np.sort(cos, axis=1)
            top, second = order[:, -1:], order[:, -2:-1]
            rival = np.where(cos >= top, second, top)
            if bg is not None:
                rival = np.maximum(rival, bg[:, None])
            return Scores(cos - rival, cos, bg)
        if bg is not None:
            return Scores(cos - bg[:, None], cos, bg)
        return Scores(cos, cos, None)
