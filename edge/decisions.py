"""Window scores -> events, per stream and action: the state machine of :mod:`cezsar.events` (EMA,
hysteresis, minimum duration, cooldown), which lives below the stages so that training can choose a
calibrated default threshold with the very rules the edge runs. The edge imports it from here."""

from __future__ import annotations

from cezsar.events import PARAM_KEYS, Decisions, Event, Params

__all__ = ["PARAM_KEYS", "Decisions", "Event", "Params"]
