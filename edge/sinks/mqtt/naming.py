"""Every MQTT topic and Home Assistant id of the MQTT sink, in one place, and why none can collide.

Names: a stream is ``[A-Za-z0-9_-]{1,64}`` (cezsar.video.STREAM_NAME), so it is one topic level as it
is. An action name may hold spaces and dots, so it becomes a *key* (:func:`action_keys`): its
:func:`slug` (``[a-z0-9_]``, never ``-``, never a leading or trailing ``_``), or, when that slug is
taken by another action of the set or is one of the :data:`RESERVED` camera-level words, the slug
plus the first hex digits of the name's SHA-1 (as many as it takes to be unique). So ``moving left``
is ``moving_left``, and of ``b c`` and ``b_c`` the second keeps ``b_c`` and the first becomes
``b_c_<hash>``.

Topics (``P`` = prefix): runtime-level topics have one level below ``P`` (``P/status``), every stream
topic two or more (``P/<stream>/...``), a stream's own topics end in a reserved word
(``P/<stream>/health``) and an action's are ``P/<stream>/<key>[/...]``; the global action switches are
``P/actions/<key>/enabled``, whose last level no action topic of a stream named ``actions`` has.

Discovery object ids (one topic level, ``[A-Za-z0-9_-]``): ``<stream>-<key>`` for an action on a
stream (binary_sensor, sensor, image), ``<stream>-_connectivity`` (binary_sensor) and
``<stream>-_detect`` (switch) for the camera itself, ``runtime-_state`` (sensor) and
``runtime-<key>`` (switch: the action switches) for the runtime. A key has no ``-`` and does not
start with ``_``, so the last ``-`` splits an id into (owner, tail) and the tail tells an action (a
key) from a camera or runtime entity (``_<kind>``); within one Home Assistant domain no two kinds of
entity share the tail form, so a stream called ``runtime`` cannot collide either. ``unique_id`` is
``cezsar:<node>:<domain>:<object id>`` (``:`` occurs in none of them). Stream ``a_b`` with action
``c`` and stream ``a`` with action ``b c`` are ``a_b-c`` and ``a-b_c``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cezsar.errors import CezsarError
from cezsar.video import STREAM_NAME

_UNSAFE = re.compile(r"[^a-z0-9]+")
STREAM_LEVEL = STREAM_NAME  # a stream or zone name is one topic level as it is
# the last level of a stream's own topics: no action key may be one of them
RESERVED = frozenset({"availability", "health", "enabled", "scores", "media"})
RUNTIME = "runtime"  # the owner part of the runtime's own object ids


def slug(name: str) -> str:
    """A name as one MQTT topic level and a Home Assistant object id: ``[a-z0-9_]+``.

    Lower-cased, every run of other characters becomes ``_``, no ``_`` at either end; a name with
    nothing usable left becomes ``a`` + the first 8 hex digits of its SHA-1.
    """
    s = _UNSAFE.sub("_", name.strip().lower()).strip("_")
    return s or "a" + _sha1(name)[:8]


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def action_keys(names: Iterable[str]) -> dict[str, str]:
    """Each action name -> its key, unique within ``names`` and never a :data:`RESERVED` word.

    A name keeps its plain slug when no other name has the same slug (or when it *is* that slug);
    the others get ``_`` + SHA-1 hex digits. Depends only on the set, not on its order."""
    unique = sorted(set(names))
    groups: dict[str, list[str]] = {}
    for n in unique:
        groups.setdefault(slug(n), []).append(n)
    keys: dict[str, str] = {}
    for s, group in groups.items():
        if s in RESERVED:
            continue
        for n in group:
            if len(group) == 1 or n == s:
                keys[n] = s
    taken = set(keys.values())
    for n in unique:
        if n in keys:
            continue
        h = _sha1(n)
        k = next(f"{slug(n)}_{h[:w]}" for w in range(6, 41) if f"{slug(n)}_{h[:w]}" not in taken)
        keys[n] = k
        taken.add(k)
    return keys


def check_level(value: str, what: str) -> str:
    """A prefix: one or more topic levels without wildcards, no empty level at either end."""
    if not value or any(c in value for c in "+#\0") or value.startswith("/") or value.endswith("/"):
        raise CezsarError(f"mqtt {what} {value!r}: must be non-empty, without + # or a leading/trailing /")
    return value


def default_node_id(prefix: str) -> str:
    """The node id when the settings give none: the prefix as one level (``cezsar``, ``site/a`` ->
    ``site_a``). Two runtimes on one broker need different prefixes anyway (their topics would mix),
    so this is as unique as the topics, and it stays the same when the container is rebuilt."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", prefix).strip("_") or "cezsar"


@dataclass(frozen=True)
class Topics:
    """The topics and ids of one sink: ``prefix`` (``cezsar``), Home Assistant's ``discovery`` prefix
    (``homeassistant``) and the ``node`` id."""

    prefix: str
    discovery: str
    node: str

    # -- the runtime ---------------------------------------------------------------------------------
    @property
    def availability(self) -> str:
        return f"{self.prefix}/availability"

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def events(self) -> str:
        return f"{self.prefix}/events"

    def action_switch(self, key: str) -> str:
        """ON/OFF of one action on every stream (retained); ``/set`` is its command topic."""
        return f"{self.prefix}/actions/{key}/enabled"

    # -- a stream ------------------------------------------------------------------------------------
    def stream(self, stream: str, what: str) -> str:
        """A stream's own topic: ``what`` is one of RESERVED (availability, health, enabled, scores, media)."""
        assert what in RESERVED
        return f"{self.prefix}/{stream}/{what}"

    def scores(self, stream: str, zone: str | None) -> str:
        """The scores messages of a stream's full frame, or of one of its zones."""
        base = self.stream(stream, "scores")
        return base if zone is None else f"{base}/{zone}"

    # -- an action on a stream -----------------------------------------------------------------------
    def action(self, stream: str, key: str, what: str = "") -> str:
        """``what``: "" (ON/OFF), ``attributes``, ``score`` or ``snapshot``."""
        base = f"{self.prefix}/{stream}/{key}"
        return f"{base}/{what}" if what else base

    # -- subscriptions -------------------------------------------------------------------------------
    def command_filters(self) -> list[str]:
        return [f"{self.prefix}/+/enabled/set", f"{self.prefix}/actions/+/enabled/set"]

    def scan_filters(self) -> list[str]:
        """Where this node's retained messages of an earlier run may be (clean-up at start)."""
        return [f"{self.prefix}/#", f"{self.discovery}/+/{self.node}/+/config"]

    def parse_command(self, topic: str) -> tuple[str, str] | None:
        """A command topic -> ("stream", stream) or ("action", key); None for any other topic."""
        if not topic.startswith(self.prefix + "/") or not topic.endswith("/enabled/set"):
            return None
        middle = topic[len(self.prefix) + 1 : -len("/enabled/set")].split("/")
        if len(middle) == 1 and STREAM_LEVEL.match(middle[0]):
            return "stream", middle[0]
        if len(middle) == 2 and middle[0] == "actions" and middle[1]:
            return "action", middle[1]
        return None

    # -- Home Assistant discovery --------------------------------------------------------------------
    def config(self, domain: str, object_id: str) -> str:
        return f"{self.discovery}/{domain}/{self.node}/{object_id}/config"

    def unique_id(self, domain: str, object_id: str) -> str:
        return f"cezsar:{self.node}:{domain}:{object_id}"

    @staticmethod
    def pair_id(stream: str, key: str) -> str:
        return f"{stream}-{key}"

    @staticmethod
    def camera_id(stream: str, kind: str) -> str:
        return f"{stream}-_{kind}"

    @staticmethod
    def runtime_id(kind_or_key: str, *, key: bool = False) -> str:
        return f"{RUNTIME}-{kind_or_key}" if key else f"{RUNTIME}-_{kind_or_key}"
