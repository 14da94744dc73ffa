"""Event-level detection quality against known segments (the demo and the end-to-end test).

A predicted event matches a ground-truth segment when the action is the same and their temporal
IoU is at least ``min_iou``; matching is one-to-one, greedy by IoU (highest first), as in detection
evaluation. F1 = 2PR / (P + R) over the matched counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def temporal_iou(a0: float, a1: float, b0: float, b1: float) -> float:
    inter = max(0.0, min(a1, b1) - max(a0, b0))
    union = max(a1, b1) - min(a0, b0)
    return inter / union if union > 0 else 0.0


def match_events(
    predicted: Sequence[dict[str, Any]], truth: Sequence[dict[str, Any]], min_iou: float = 0.3
) -> dict[str, Any]:
    """``predicted``/``truth``: dicts with "action", "start", "end" (seconds)."""
    pairs = []
    for i, p in enumerate(predicted):
        for j, t in enumerate(truth):
            if p["action"] != t["action"]:
                continue
            iou = temporal_iou(float(p["start"]), float(p["end"]), float(t["start"]), float(t["end"]))
            if iou >= min_iou:
                pairs.append((iou, i, j))
    pairs.sort(key=lambda x: -x[0])
    used_p: set[int] = set()
    used_t: set[int] = set()
    matches = []
    for iou, i, j in pairs:
        if i in used_p or j in used_t:
            continue
        used_p.add(i)
        used_t.add(j)
        matches.append({"event": i, "segment": j, "iou": round(iou, 3)})
    tp = len(matches)
    precision = tp / len(predicted) if predicted else 0.0
    recall = tp / len(truth) if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    if not predicted and not truth:
        precision = recall = f1 = 1.0
    return {
        "tp": tp,
        "fp": len(predicted) - tp,
        "fn": len(truth) - tp,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "matches": sorted(matches, key=lambda m: m["segment"]),
    }
