"""Event-level detection quality against known segments (the demo, `cezsar eval-stream`, the end-to-end
test): :func:`cezsar.events.match_events` (same action, temporal IoU >= ``min_iou``, one-to-one, greedy
by IoU)."""

from __future__ import annotations

from cezsar.events import match_events, temporal_iou

__all__ = ["match_events", "temporal_iou"]
