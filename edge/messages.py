"""The wire format: every message the runtime sends is built here, and only here.

- :func:`event`, :func:`scores`, :func:`status`: the published messages, as :class:`Message`
  (topic + payload) that every sink (edge/sinks) receives alike;
- :func:`reply_ok`, :func:`reply_error`, :func:`action_set`, :func:`encode_reply`: the control
  socket's replies;
- :func:`encode`/:func:`decode`: the ZeroMQ framing, :func:`log_line`: the events-log line.

Every published message is ONE ZeroMQ frame: ``b"<topic> <json>"`` (topic, one space, UTF-8 JSON),
so that subscribers filter by topic prefix and ``CONFLATE`` works (it cannot keep multi-part
messages). Every JSON object carries ``"schema": SCHEMA``; a consumer should check the major part.
See docs/messages.md for every message with an example; a change of a field here is a change of
that contract.

Imports nothing heavy (json, math): edge.client and the CLI use it too.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from edge.actions import ActionSet
    from edge.decisions import Event
    from edge.recognizer import WindowResult

SCHEMA = "cezsar/1"

TOPIC_EVENT = "event"  # event.<stream>
TOPIC_SCORES = "scores"  # scores.<stream>
TOPIC_STATUS = "status"
TOPIC_MEDIA = "media"  # media.<stream>


class Message(NamedTuple):
    """A published message: ``topic`` (``event.<stream>``, ``scores.<stream>``, ``status``) and its JSON
    ``payload`` (without ``schema``, which :func:`encode` adds)."""

    topic: str
    payload: dict[str, Any]


def topic_for(kind: str, stream: str | None = None) -> str:
    return kind if stream is None else f"{kind}.{stream}"


def _clean(obj: Any) -> Any:
    """JSON has no NaN/inf: map them to null (json.dumps would emit invalid JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def to_json(obj: dict[str, Any]) -> str:
    return json.dumps(_clean(obj), ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode(topic: str, payload: dict[str, Any]) -> bytes:
    if " " in topic or not topic:
        raise ValueError(f"topic {topic!r} must be non-empty and contain no space")
    body = {"schema": SCHEMA, **payload}
    return topic.encode("utf-8") + b" " + to_json(body).encode("utf-8")


def decode(frame: bytes) -> tuple[str, dict[str, Any]]:
    """``b"topic json"`` -> (topic, dict). Raises ValueError on anything else."""
    topic, sep, body = frame.partition(b" ")
    if not sep or not topic:
        raise ValueError("not a 'topic json' message")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"message body is not UTF-8 JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError("message body is not a JSON object")
    return topic.decode("utf-8"), data


def schema_major(data: dict[str, Any]) -> int | None:
    s = data.get("schema")
    if not isinstance(s, str) or not s.startswith("cezsar/"):
        return None
    try:
        return int(s.split("/", 1)[1].split(".")[0])
    except ValueError:
        return None


# -- published messages ------------------------------------------------------------------------
def _ms(seconds: float) -> float:
    return round(1000 * seconds, 1)


def event(ev: Event, now: float, media: dict[str, Any] | None = None) -> Message:
    """One phase (start/update/end) of an event; ``now``: publish time (Unix). ``media``: the end's
    ``{"snapshot", "clip", "written": false}`` (paths or URLs) when --media records evidence."""
    payload = {
        "type": "event",
        "id": ev.id,
        "phase": ev.phase,
        "stream": ev.stream,
        "action": ev.action,
        "start": round(ev.start, 3),
        "end": None if ev.end is None else round(ev.end, 3),
        "duration": None if ev.end is None else round(max(0.0, ev.end - ev.start), 3),
        "score": round(ev.score, 4),
        "peak": round(ev.peak, 4),
        "peak_time": round(ev.peak_time, 3),
        "windows": ev.windows,
        "reason": ev.reason,
        "time": now,
        "latency_ms": _ms(now - ev.wall) if ev.wall else None,
    }
    if media is not None:
        payload["media"] = media
    return Message(topic_for(TOPIC_EVENT, ev.stream), payload)


def media(event_id: str, stream: str, files: dict[str, str], written: bool, error: str | None) -> Message:
    """An ended event's snapshot and clip are on disk (``written``) or failed (``error``); sent once
    the media writer is done, after the event's ``end`` (which already named the same files)."""
    payload = {
        "type": "media",
        "event": event_id,
        "stream": stream,
        "snapshot": files.get("snapshot"),
        "clip": files.get("clip"),
        "written": written,
        "error": error,
    }
    return Message(topic_for(TOPIC_MEDIA, stream), payload)


def scores(r: WindowResult, now: float) -> Message:
    """The scores of one window; ``now``: publish time (Unix)."""
    w = r.window
    payload = {
        "type": "scores",
        "stream": w.stream,
        "window": {
            "start": round(w.start, 3),
            "end": round(w.end, 3),
            "center": round(w.center, 3),
            "frames": w.frames,
            "first_index": w.first_index,
            "last_index": w.last_index,
        },
        "scores": r.scores,
        "smoothed": {a: round(v, 4) for a, v in r.smoothed.items()},
        "cosine": {a: round(v, 4) for a, v in r.cosine.items()},
        "background": None if r.background is None else round(r.background, 4),
        "time": now,
        "latency_ms": _ms(now - w.wall),
    }
    return Message(topic_for(TOPIC_SCORES, w.stream), payload)


def inference(frames_encoded: int, windows: int, encoder_seconds: float, head_seconds: float) -> dict[str, Any]:
    """The ``inference`` part of the status."""
    return {
        "frames_encoded": frames_encoded,
        "windows": windows,
        "encoder_ms_per_frame": round(1000 * encoder_seconds / max(1, frames_encoded), 3),
        "head_ms_per_window": round(1000 * head_seconds / max(1, windows), 3),
    }


def actions_state(names: list[str], version: int, error: str | None, error_line: int | None) -> dict[str, Any]:
    """The ``actions`` part of the status."""
    return {"count": len(names), "names": names, "version": version, "error": error, "error_line": error_line}


def status(
    *,
    now: float,
    started_at: float,
    final: bool,
    state: str,
    backend: str,
    backend_reason: str,
    precision: str,
    fps: float,
    window: int,
    hop: int,
    cache: bool,
    realtime: bool,
    streams: dict[str, dict[str, Any]],
    latency: dict[str, Any],
    inference: dict[str, Any],
    actions: dict[str, Any],
    events: dict[str, int],
    publisher: dict[str, Any],
    security: dict[str, Any],
    errors: list[str],
    outputs: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Message:
    """The runtime's health, every ``--status-interval`` s and once more (``final``) at shutdown."""
    payload = {
        "type": "status",
        "time": now,
        "uptime": round(now - started_at, 3),
        "final": final,
        "state": state,
        "backend": backend,
        "backend_reason": backend_reason,
        "precision": precision,
        "fps": fps,
        "window": window,
        "hop": hop,
        "cache": cache,
        "realtime": realtime,
        "streams": streams,
        "latency_ms": latency,
        "inference": inference,
        "actions": actions,
        "events": events,
        "publisher": publisher,
        "security": security,
        "errors": errors,
        "outputs": outputs or {},
        **(extra or {}),
    }
    return Message(TOPIC_STATUS, payload)


def log_line(msg: Message) -> str:
    """One line of ``--events-log``: the message with its topic and schema."""
    return to_json({"topic": msg.topic, "schema": SCHEMA, **msg.payload})


# -- control replies ---------------------------------------------------------------------------
def action_set(aset: ActionSet, version: int, file: str, file_error: str | None) -> dict[str, Any]:
    """The active action set, as ``list``, ``add``, ``update`` and ``remove`` return it."""
    return {
        "actions": [aset.effective(a) for a in aset.actions],
        "background": list(aset.background),
        "defaults": aset.defaults.to_dict(),
        "version": version,
        "file": file,
        "file_error": file_error,
    }


def reply_ok(op: str, body: dict[str, Any], rid: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"ok": True, "op": op, **body}
    if rid is not None:
        out["id"] = rid
    return out


def reply_error(message: str, op: Any = None, rid: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"ok": False, "error": message}
    if op is not None:
        out["op"] = op
    if rid is not None:
        out["id"] = rid
    return out


def encode_reply(reply: dict[str, Any]) -> bytes:
    """A control reply as sent: one frame of UTF-8 JSON with the schema first."""
    return to_json({"schema": SCHEMA, **reply}).encode("utf-8")
