"""History test pieces: fake-free window results built from real numbers (a WindowResult as the
Recognizer makes it), and a writer fed directly."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edge.actions import ActionSet, actions_from_obj
from edge.embedder import Window
from edge.recognizer import WindowResult

DIM = 64
MODEL = "m" * 64


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def result(stream: str, t: float, emb: np.ndarray, scores: dict[str, float], wall: float | None = None) -> WindowResult:
    """One scored window of 2 s ending at capture time ``t``."""
    w = Window(stream, t - 2.0, t, 8, 0, 7, time.time() if wall is None else wall, emb)
    return WindowResult(w, scores, dict(scores), None, dict(scores))


def aset(*names: str) -> ActionSet:
    return actions_from_obj({"actions": [{"name": n, "descriptions": [f"a person {n}"]} for n in names]})


def event(eid: str, phase: str, t: float, **kw: Any) -> dict[str, Any]:
    """An event message payload as edge/messages.py builds it (the fields the store reads)."""
    return {
        "type": "event",
        "id": eid,
        "phase": phase,
        "stream": kw.get("stream", "cam"),
        "action": kw.get("action", "fall"),
        "start": kw.get("start", t),
        "end": kw.get("end"),
        "score": 0.2,
        "peak": kw.get("peak", 0.3),
        "peak_time": t,
        "windows": 3,
        "reason": kw.get("reason"),
        "time": t,
        "clock": "wall",
        "captured_at": t,
        "actions_version": 1,
        "model": MODEL,
        "zone": None,
        **({"media": kw["media"]} if "media" in kw else {}),
    }
