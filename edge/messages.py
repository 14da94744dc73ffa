"""The wire format shared by the publisher, the control socket and the client.

Every published message is ONE ZeroMQ frame: ``b"<topic> <json>"`` (topic, one space, UTF-8 JSON),
so that subscribers filter by topic prefix and ``CONFLATE`` works (it cannot keep multi-part
messages). Every JSON object carries ``"schema": SCHEMA``; a consumer should check the major part.
See docs/messages.md for every message with an example.
"""

from __future__ import annotations

import json
import math
from typing import Any

SCHEMA = "cezsar/1"

TOPIC_EVENT = "event"  # event.<stream>
TOPIC_SCORES = "scores"  # scores.<stream>
TOPIC_STATUS = "status"


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
