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

Every published message also carries the publisher's identity and sequence numbers
(:class:`Sequencer`: ``seq``, ``topic_seq``, ``host``, ``instance``), so a subscriber sees what it
missed. :func:`json_schemas` gives a JSON Schema per topic, generated from the field tables next to
the builders below (``cezsar schemas --out schemas/`` writes them; a test keeps the committed files
equal and validates real published messages against them).

Imports nothing heavy (json, math): edge.client and the CLI use it too.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
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
ZONE_SEP = "@"  # the Recognizer's name of a zone's crop: "<stream>@<zone>"; messages carry stream + zone


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
def split_stream(name: str) -> tuple[str, str | None]:
    """``cam1@door`` -> (``cam1``, ``door``); ``cam1`` -> (``cam1``, None)."""
    base, _, zone = name.partition(ZONE_SEP)
    return base, zone or None


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 1)


CLOCKS = ("media", "wall")


class Sequencer:
    """Stamps every published message of one publisher (one runtime) with ``seq`` (1, 2, ... over all
    its messages), ``topic_seq`` (1, 2, ... per topic, e.g. per ``event.cam1``), ``host`` and
    ``instance`` (new on every start, so that a restart, whose numbers begin at 1 again, is told
    apart from a gap). Thread-safe."""

    def __init__(self, instance: str | None = None, host: str | None = None) -> None:
        self.host = host or socket.gethostname()
        self.instance = instance or os.urandom(6).hex()
        self.seq = 0
        self._topics: dict[str, int] = {}
        self._lock = threading.Lock()

    def stamp(self, msg: Message) -> Message:
        with self._lock:
            self.seq += 1
            n = self._topics[msg.topic] = self._topics.get(msg.topic, 0) + 1
            seq = self.seq
        return Message(
            msg.topic, {**msg.payload, "seq": seq, "topic_seq": n, "host": self.host, "instance": self.instance}
        )


class GapCounter:
    """A subscriber's view of :class:`Sequencer` stamps: ``missed`` counts the messages of a topic it
    subscribed to that never arrived (``topic_seq`` jumps), per publisher instance."""

    def __init__(self) -> None:
        self.missed = 0
        self.gaps: list[tuple[str, int, int]] = []  # (topic, expected topic_seq, got)
        self._last: dict[tuple[str, str], int] = {}

    def see(self, topic: str, data: dict[str, Any]) -> int:
        """Record one message; returns how many of its topic were missed just before it."""
        inst, n = data.get("instance"), data.get("topic_seq")
        if not isinstance(inst, str) or not isinstance(n, int):
            return 0
        last = self._last.get((inst, topic))
        self._last[(inst, topic)] = n
        if last is None or n <= last + 1:
            return 0
        self.missed += n - last - 1
        self.gaps.append((topic, last + 1, n))
        return n - last - 1


def event(
    ev: Event,
    now: float,
    media: dict[str, Any] | None = None,
    *,
    clock: str = "media",
    actions_version: int | None = None,
    model: str | None = None,
) -> Message:
    """One phase (start/update/end) of an event; ``now``: publish time (Unix). ``media``: the end's
    ``{"snapshot", "clip", "written": false}`` (paths or URLs) when --media records evidence.
    ``clock``: what the capture times are (``media`` time of a file, ``wall`` time of a live source);
    ``actions_version``/``model``: the action set and model (hash) that produced the event."""
    stream, zone = split_stream(ev.stream)
    payload = {
        "type": "event",
        "id": ev.id,
        "phase": ev.phase,
        "stream": stream,
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
        "clock": clock,
        "captured_at": ev.wall or None,
        "actions_version": actions_version,
        "model": model,
        "zone": zone,
    }
    if media is not None:
        payload["media"] = media
    return Message(topic_for(TOPIC_EVENT, stream), payload)


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


def scores(r: WindowResult, now: float, *, clock: str = "media") -> Message:
    """The scores of one window; ``now``: publish time (Unix); ``clock`` as for :func:`event`."""
    w = r.window
    stream, zone = split_stream(w.stream)
    payload = {
        "type": "scores",
        "stream": stream,
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
        "clock": clock,
        "captured_at": w.wall,
        "zone": zone,
    }
    return Message(topic_for(TOPIC_SCORES, stream), payload)


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


# -- JSON Schemas ------------------------------------------------------------------------------
# One table per published message, next to its builder above: field -> JSON Schema. A number the
# builder may send as null (NaN/inf cleaned, or "not yet") is ``_NUM_OR_NULL``. ``json_schemas()``
# turns the tables into one schema per topic; the event/scores/media schemas forbid unknown fields,
# so a field added to a builder without its table entry fails the tests that validate real messages.
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_INT = {"type": "integer"}
_STR = {"type": "string"}
_STR_OR_NULL = {"type": ["string", "null"]}
_BOOL = {"type": "boolean"}
_SCORE_MAP = {"type": "object", "additionalProperties": _NUM_OR_NULL}

STAMP_FIELDS: dict[str, dict[str, Any]] = {
    "schema": {"type": "string", "pattern": r"^cezsar/[0-9]+$", "description": "contract version; check the major"},
    "seq": {"type": "integer", "minimum": 1, "description": "per publisher instance: 1, 2, ... over every message"},
    "topic_seq": {"type": "integer", "minimum": 1, "description": "per publisher instance and topic: 1, 2, ..."},
    "host": {"type": "string", "description": "host name of the publisher"},
    "instance": {"type": "string", "description": "publisher instance id, new on every start"},
}
_CLOCK = {
    "enum": list(CLOCKS),
    "description": "what the capture times are: media (seconds into a file) or wall (Unix time, live source)",
}
_CAPTURED_AT = {**_NUM_OR_NULL, "description": "Unix time the newest frame behind this message was decoded"}

EVENT_FIELDS: dict[str, dict[str, Any]] = {
    "type": {"const": "event"},
    "id": _STR,
    "phase": {"enum": ["start", "update", "end"]},
    "stream": _STR,
    "action": _STR,
    "start": _NUM,
    "end": _NUM_OR_NULL,
    "duration": _NUM_OR_NULL,
    "score": _NUM_OR_NULL,
    "peak": _NUM_OR_NULL,
    "peak_time": _NUM,
    "windows": _INT,
    "reason": _STR_OR_NULL,
    "time": _NUM,
    "latency_ms": _NUM_OR_NULL,
    "clock": _CLOCK,
    "captured_at": _CAPTURED_AT,
    "actions_version": {"type": ["integer", "null"], "description": "version of the action set that decided it"},
    "model": {**_STR_OR_NULL, "description": "model hash of the deploy folder"},
    "zone": {**_STR_OR_NULL, "description": "the zone of the stream the action is bound to; null: whole frame"},
}
EVENT_OPTIONAL: dict[str, dict[str, Any]] = {
    "media": {
        "type": "object",
        "properties": {"snapshot": _STR, "clip": _STR, "written": _BOOL},
        "required": ["snapshot", "clip", "written"],
        "additionalProperties": False,
    }
}
SCORES_FIELDS: dict[str, dict[str, Any]] = {
    "type": {"const": "scores"},
    "stream": _STR,
    "window": {
        "type": "object",
        "properties": {
            "start": _NUM,
            "end": _NUM,
            "center": _NUM,
            "frames": _INT,
            "first_index": _INT,
            "last_index": _INT,
        },
        "required": ["start", "end", "center", "frames", "first_index", "last_index"],
        "additionalProperties": False,
    },
    "scores": _SCORE_MAP,
    "smoothed": _SCORE_MAP,
    "cosine": _SCORE_MAP,
    "background": _NUM_OR_NULL,
    "time": _NUM,
    "latency_ms": _NUM_OR_NULL,
    "clock": _CLOCK,
    "captured_at": _CAPTURED_AT,
    "zone": {**_STR_OR_NULL, "description": "the zone whose crop this window is; null: whole frame"},
}
MEDIA_FIELDS: dict[str, dict[str, Any]] = {
    "type": {"const": "media"},
    "event": _STR,
    "stream": _STR,
    "snapshot": _STR_OR_NULL,
    "clip": _STR_OR_NULL,
    "written": _BOOL,
    "error": _STR_OR_NULL,
}
_OBJ = {"type": "object"}
STATUS_FIELDS: dict[str, dict[str, Any]] = {
    "type": {"const": "status"},
    "time": _NUM,
    "uptime": _NUM,
    "final": _BOOL,
    "state": _STR,
    "backend": _STR,
    "backend_reason": _STR,
    "precision": _STR,
    "fps": _NUM,
    "window": _INT,
    "hop": _INT,
    "cache": _BOOL,
    "realtime": _BOOL,
    "streams": {"type": "object", "additionalProperties": _OBJ},
    "latency_ms": _OBJ,
    "inference": _OBJ,
    "actions": _OBJ,
    "events": _OBJ,
    "publisher": _OBJ,
    "security": _OBJ,
    "errors": {"type": "array", "items": _STR},
    "outputs": _OBJ,
}
REPLY_FIELDS: dict[str, dict[str, Any]] = {"schema": STAMP_FIELDS["schema"], "ok": _BOOL}


def _object(title: str, fields: dict[str, dict[str, Any]], optional: dict[str, Any], closed: bool) -> dict[str, Any]:
    props = {**fields, **optional}
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"https://cezsar.invalid/schemas/{title}.json",
        "title": title,
        "type": "object",
        "properties": props,
        "required": list(fields),
        "additionalProperties": not closed,
    }


def json_schemas() -> dict[str, dict[str, Any]]:
    """One JSON Schema per topic (file stem -> schema): ``event`` (``event.<stream>``), ``scores``,
    ``status``, ``media``, and ``control-reply`` for the control socket's replies."""
    return {
        "event": _object("event", {**STAMP_FIELDS, **EVENT_FIELDS}, EVENT_OPTIONAL, closed=True),
        "scores": _object("scores", {**STAMP_FIELDS, **SCORES_FIELDS}, {}, closed=True),
        "media": _object("media", {**STAMP_FIELDS, **MEDIA_FIELDS}, {}, closed=True),
        # a newer runtime may add status fields, so it stays open
        "status": _object("status", {**STAMP_FIELDS, **STATUS_FIELDS}, {}, closed=False),
        "control-reply": _object("control-reply", REPLY_FIELDS, {"op": _STR, "id": {}, "error": _STR}, closed=False),
    }


def schema_for_topic(topic: str) -> str:
    """The :func:`json_schemas` key of a published topic (``event.cam1`` -> ``event``)."""
    return topic.split(".", 1)[0]
