"""Per-stream health, the one definition every place an operator looks uses (status over ZeroMQ and
MQTT, Home Assistant availability, /health/streams, Prometheus, the console).

=============  ====================================================================================
state          when
=============  ====================================================================================
``connecting`` opening, and no frame yet (a camera gets ``OPEN_TIMEOUT`` to answer)
``live``       frames arrive: the last one is younger than ``stall_after`` seconds
``stalled``    connected, but no frame for ``stall_after`` seconds (a frozen camera, a dead link)
``down``       cannot be opened or reading failed: reconnecting with backoff, or failed for good
``ended``      a file that played to its end
``stopped``    stopped by the runtime (removed, or shutting down)
=============  ====================================================================================

``since`` is when the stream entered its state (Unix time); ``reason`` says why it is not live.
A camera that never connects is ``down`` after its first failed open (within the 5 s open timeout).
"""

from __future__ import annotations

from typing import Any

STALL_AFTER = 5.0  # seconds without a frame before a connected stream counts as stalled
UP = "live"
STATES = ("connecting", "live", "stalled", "down", "ended", "stopped")


def stream_health(snap: dict[str, Any], now: float, stall_after: float = STALL_AFTER) -> dict[str, Any]:
    """A source snapshot (edge.sources.Source.snapshot) -> ``{"state", "reason", "since", "last_frame_age",
    "reconnects"}``."""
    state, since, last = snap["state"], snap["since"], snap.get("last_frame")
    age = None if last is None else round(max(0.0, now - last), 3)
    reason = snap.get("error")
    if state in ("starting", "connecting"):
        out = "connecting"
    elif state == "running":
        if age is not None and age <= stall_after:
            out, reason = UP, None
        else:
            out = "stalled"
            reason = f"no frame for {age if age is not None else now - since:.1f} s"
            since = (last if last is not None else since) + stall_after
    elif state in ("reconnecting", "failed"):
        out = "down"
    elif state == "finished":
        out = "ended"
    else:
        out = "stopped"
    return {
        "state": out,
        "reason": reason,
        "since": round(since, 3),
        "last_frame_age": age,
        "reconnects": snap.get("reconnects", 0),
    }
