"""The actions file: what to detect, in words. Load, validate, write back, watch.

    defaults:                 # optional; every key optional (default values: edge.decisions.Params)
      threshold: 0.05         # event starts when the smoothed score reaches this
      hysteresis: 0.03        # ... and ends when it falls below threshold - hysteresis
      min_duration: 1.0       # seconds above threshold before an event starts
      cooldown: 2.0           # seconds after an end before the same action can start again
      smoothing: 0.5          # EMA weight of the newest window score, (0, 1]
    background:               # optional: what "nothing happening" looks like
      - a shape staying still
    exclusive: false          # optional: true = at most one action at a time per stream (one actor)
    actions:
      - name: wave
        descriptions: [a hand waving, someone waves]   # or one string
        threshold: 0.1        # optional per action: threshold, hysteresis, min_duration, cooldown
        streams: [door, yard] # optional: only these streams (default: every stream)
        zone: porch           # optional: only inside this zone of a stream (site.yaml zones / --zone)

Validation is strict and every message names the file, line and column (from the YAML node marks):
unknown keys, missing ``name``/``descriptions``, wrong types, out-of-range numbers, descriptions
longer than 500 characters, duplicate names, duplicate keys. The same validator checks control
requests (JSON), whose messages name the field path instead of a line.

:class:`ActionStore` holds the last good set. Its :meth:`ActionStore.poll` (run every 0.25 s by
:class:`ActionsWatcher`) re-reads the file when its mtime, size or content hash changes: a valid
edit replaces the set, an invalid one (or a deleted/emptied file) is reported and the last good
set stays active. Control changes are written back to the file atomically (see docs/edge.md).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from cezsar.atomic import write_text
from cezsar.errors import CezsarError
from edge.decisions import PARAM_KEYS, Params
from edge.messages import ZONE_SEP

log = logging.getLogger(__name__)

MAX_DESCRIPTION_CHARS = 500
MAX_DESCRIPTIONS = 32
MAX_ACTIONS = 256
MAX_BACKGROUND = 32
MAX_FILE_BYTES = 1 << 20
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.:-]{0,63}$")

TOP_KEYS = ("version", "defaults", "background", "exclusive", "actions")
DEFAULT_KEYS = PARAM_KEYS  # what ``defaults:`` may set: every decision parameter
NUM_KEYS = ("threshold", "hysteresis", "min_duration", "cooldown")
ACTION_KEYS = ("name", "descriptions", *NUM_KEYS, "streams", "zone")
STREAM_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # stream and zone names (cezsar.video, edge/settings)

# (minimum, maximum) for every number; cosine margins lie in [-2, 2]
RANGES: dict[str, tuple[float, float]] = {
    "threshold": (-2.0, 2.0),
    "hysteresis": (0.0, 2.0),
    "min_duration": (0.0, 3600.0),
    "cooldown": (0.0, 86400.0),
    "smoothing": (1e-6, 1.0),
}


class ActionsError(CezsarError):
    """An invalid actions file or request; ``line`` is 1-based where known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True)
class Action:
    name: str
    descriptions: tuple[str, ...]
    # None: take the value from the set's defaults
    threshold: float | None = None
    hysteresis: float | None = None
    min_duration: float | None = None
    cooldown: float | None = None
    streams: tuple[str, ...] = ()  # empty: every stream
    zone: str | None = None  # None: the whole frame

    def explicit(self) -> dict[str, Any]:
        """The fields as written (what the file holds)."""
        d: dict[str, Any] = {"name": self.name, "descriptions": list(self.descriptions)}
        for k in NUM_KEYS:
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        if self.streams:
            d["streams"] = list(self.streams)
        if self.zone is not None:
            d["zone"] = self.zone
        return d

    def applies(self, stream: str) -> bool:
        """Whether this action is decided on ``stream``: a real stream (``cam1``) or a zone's crop
        (``cam1@door``, see :data:`ZONE_SEP`)."""
        base, _, zone = stream.partition(ZONE_SEP)
        if (zone or None) != self.zone:
            return False
        return not self.streams or base in self.streams


@dataclass(frozen=True)
class ActionSet:
    actions: tuple[Action, ...] = ()
    background: tuple[str, ...] = ()
    defaults: Params = field(default_factory=Params)
    explicit_defaults: tuple[str, ...] = ()  # which defaults the file set (for writing back)
    exclusive: bool = False  # actions compete: each is scored against the best of the others too

    def get(self, name: str) -> Action | None:
        return next((a for a in self.actions if a.name == name), None)

    def names(self) -> list[str]:
        return [a.name for a in self.actions]

    def value(self, action: Action, key: str) -> float:
        v = getattr(action, key)
        return float(getattr(self.defaults, key) if v is None else v)

    def effective(self, action: Action) -> dict[str, Any]:
        d: dict[str, Any] = {"name": action.name, "descriptions": list(action.descriptions)}
        for k in NUM_KEYS:
            d[k] = self.value(action, k)
        if action.streams:
            d["streams"] = list(action.streams)
        if action.zone is not None:
            d["zone"] = action.zone
        return d

    def zones(self) -> set[tuple[str | None, str]]:
        """(stream or None for every stream, zone) pairs that some action needs."""
        out: set[tuple[str | None, str]] = set()
        for a in self.actions:
            if a.zone is not None:
                out |= {(s, a.zone) for s in a.streams} if a.streams else {(None, a.zone)}
        return out

    def to_obj(self) -> dict[str, Any]:
        """The file form: only what was written explicitly."""
        obj: dict[str, Any] = {}
        if self.explicit_defaults:
            obj["defaults"] = {k: getattr(self.defaults, k) for k in DEFAULT_KEYS if k in self.explicit_defaults}
        if self.background:
            obj["background"] = list(self.background)
        if self.exclusive:
            obj["exclusive"] = True
        obj["actions"] = [a.explicit() for a in self.actions]
        return obj

    def descriptions(self) -> list[str]:
        """Every distinct description string (actions and background), in order."""
        out: dict[str, None] = {}
        for a in self.actions:
            out.update(dict.fromkeys(a.descriptions))
        out.update(dict.fromkeys(self.background))
        return list(out)


# -- values with positions ------------------------------------------------------------------
@dataclass
class _V:
    """A parsed value with its position: scalar (value), list of _V, or list of (_V key, _V value)."""

    kind: str  # "scalar" | "seq" | "map"
    value: Any
    line: int | None = None  # 1-based
    col: int | None = None


_constructor = yaml.constructor.SafeConstructor()


def _from_node(node: yaml.Node) -> _V:
    line, col = node.start_mark.line + 1, node.start_mark.column + 1
    if isinstance(node, yaml.MappingNode):
        return _V("map", [(_from_node(k), _from_node(v)) for k, v in node.value], line, col)
    if isinstance(node, yaml.SequenceNode):
        return _V("seq", [_from_node(x) for x in node.value], line, col)
    try:
        value = _constructor.construct_object(node)
    except yaml.YAMLError as e:
        raise ActionsError(f"{line}:{col}: {e}", line) from None
    return _V("scalar", value, line, col)


def _from_obj(obj: Any) -> _V:
    if isinstance(obj, dict):
        return _V("map", [(_V("scalar", k), _from_obj(v)) for k, v in obj.items()])
    if isinstance(obj, list | tuple):
        return _V("seq", [_from_obj(x) for x in obj])
    return _V("scalar", obj)


class _Checker:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, v: _V | None, path: str, problem: str) -> ActionsError:
        if v is not None and v.line is not None:
            return ActionsError(f"{self.source}:{v.line}:{v.col}: {path}: {problem}", v.line)
        return ActionsError(f"{self.source}: {path}: {problem}")

    @staticmethod
    def what(v: _V) -> str:
        if v.kind != "scalar":
            return "a mapping" if v.kind == "map" else "a list"
        if v.value is None:
            return "nothing (null)"
        return f"{type(v.value).__name__} {v.value!r}"[:80]

    def mapping(self, v: _V, path: str, allowed: tuple[str, ...]) -> dict[str, tuple[_V, _V]]:
        if v.kind != "map":
            raise self.fail(v, path, f"expected a mapping, got {self.what(v)}")
        out: dict[str, tuple[_V, _V]] = {}
        for k, val in v.value:
            if k.kind != "scalar" or not isinstance(k.value, str):
                raise self.fail(k, path, f"keys must be strings, got {self.what(k)}")
            if k.value not in allowed:
                raise self.fail(k, path, f"unknown key '{k.value}' (allowed: {', '.join(allowed)})")
            if k.value in out:
                raise self.fail(k, path, f"duplicate key '{k.value}'")
            out[k.value] = (k, val)
        return out

    def number(self, v: _V, path: str, key: str) -> float:
        if v.kind != "scalar" or isinstance(v.value, bool) or not isinstance(v.value, int | float):
            raise self.fail(v, path, f"expected a number, got {self.what(v)}")
        x = float(v.value)
        lo, hi = RANGES[key]
        if not math.isfinite(x) or not lo <= x <= hi:
            raise self.fail(v, path, f"{x} is out of range [{lo:g}, {hi:g}]")
        return x

    def text(self, v: _V, path: str) -> str:
        if v.kind != "scalar" or not isinstance(v.value, str):
            raise self.fail(v, path, f"expected a string, got {self.what(v)}")
        s = " ".join(v.value.split())
        if not s:
            raise self.fail(v, path, "empty description")
        if len(s) > MAX_DESCRIPTION_CHARS:
            raise self.fail(v, path, f"description is {len(s)} characters long (at most {MAX_DESCRIPTION_CHARS})")
        return s

    def texts(self, v: _V, path: str, limit: int) -> tuple[str, ...]:
        if v.kind == "scalar" and isinstance(v.value, str):
            return (self.text(v, path),)
        if v.kind != "seq":
            raise self.fail(v, path, f"expected a string or a list of strings, got {self.what(v)}")
        if not v.value:
            raise self.fail(v, path, "empty list (give at least one description)")
        if len(v.value) > limit:
            raise self.fail(v, path, f"{len(v.value)} descriptions (at most {limit})")
        return tuple(dict.fromkeys(self.text(x, f"{path}[{i}]") for i, x in enumerate(v.value)))

    def action(self, v: _V, path: str) -> Action:
        if v.kind == "map":  # name the action in every message, even those about other keys
            for k, val in v.value:
                if k.value == "name" and val.kind == "scalar" and isinstance(val.value, str):
                    path = f"{path} ('{val.value.strip()[:64]}')"
                    break
        m = self.mapping(v, path, ACTION_KEYS)
        if "name" not in m:
            raise self.fail(v, path, "missing 'name'")
        nk, nv = m["name"]
        if nv.kind != "scalar" or not isinstance(nv.value, str):
            raise self.fail(nv, f"{path}.name", f"expected a string, got {self.what(nv)}")
        name = nv.value.strip()
        if not NAME_RE.match(name):
            raise self.fail(
                nv, f"{path}.name", f"invalid name {name!r} (1-64 characters: letters, digits, space _ . : -)"
            )
        where = path
        if "descriptions" not in m:
            raise self.fail(v, where, "missing 'descriptions'")
        descs = self.texts(m["descriptions"][1], f"{where}.descriptions", MAX_DESCRIPTIONS)
        nums = {k: self.number(m[k][1], f"{where}.{k}", k) for k in NUM_KEYS if k in m}
        streams: tuple[str, ...] = ()
        if "streams" in m:
            sv = m["streams"][1]
            items = [sv] if sv.kind == "scalar" else sv.value if sv.kind == "seq" else None
            if not items:
                raise self.fail(sv, f"{where}.streams", "expected a stream name or a non-empty list of them")
            streams = tuple(dict.fromkeys(self.ident(x, f"{where}.streams") for x in items))
        zone = self.ident(m["zone"][1], f"{where}.zone") if "zone" in m else None
        return Action(name, descs, **nums, streams=streams, zone=zone)

    def ident(self, v: _V, path: str) -> str:
        if v.kind != "scalar" or not isinstance(v.value, str | int) or isinstance(v.value, bool):
            raise self.fail(v, path, f"expected a name, got {self.what(v)}")
        s = str(v.value).strip()
        if not STREAM_RE.match(s):
            raise self.fail(v, path, f"invalid name {s!r} (1-64 characters: letters, digits, _ -)")
        return s

    def actions_set(self, v: _V | None) -> ActionSet:
        if v is None or (v.kind == "scalar" and v.value is None):
            raise ActionsError(f"{self.source}: the file is empty (expected a mapping with an 'actions:' list)")
        top = self.mapping(v, "top level", TOP_KEYS)
        if "version" in top:
            ver = top["version"][1]
            if ver.kind != "scalar" or ver.value != 1:
                raise self.fail(ver, "version", f"unsupported version {self.what(ver)} (this cezsar reads 1)")
        defaults = Params()
        explicit: tuple[str, ...] = ()
        if "defaults" in top:
            dm = self.mapping(top["defaults"][1], "defaults", DEFAULT_KEYS)
            vals = {k: self.number(dm[k][1], f"defaults.{k}", k) for k in dm}
            defaults = replace(defaults, **vals)
            explicit = tuple(k for k in DEFAULT_KEYS if k in vals)
        background: tuple[str, ...] = ()
        if "background" in top:
            bv = top["background"][1]
            if not (bv.kind == "seq" and not bv.value):
                background = self.texts(bv, "background", MAX_BACKGROUND)
        exclusive = False
        if "exclusive" in top:
            ev = top["exclusive"][1]
            if ev.kind != "scalar" or not isinstance(ev.value, bool):
                raise self.fail(ev, "exclusive", f"expected true or false, got {self.what(ev)}")
            exclusive = ev.value
        if "actions" not in top:
            raise self.fail(v, "top level", "missing 'actions' (a list; may be empty)")
        av = top["actions"][1]
        if av.kind == "scalar" and av.value is None:
            items: list[_V] = []
        elif av.kind != "seq":
            raise self.fail(av, "actions", f"expected a list, got {self.what(av)}")
        else:
            items = av.value
        if len(items) > MAX_ACTIONS:
            raise self.fail(av, "actions", f"{len(items)} actions (at most {MAX_ACTIONS})")
        actions: list[Action] = []
        seen: dict[str, int | None] = {}
        for i, item in enumerate(items):
            a = self.action(item, f"actions[{i}]")
            if a.name in seen:
                first = f" (first at line {seen[a.name]})" if seen[a.name] else ""
                raise self.fail(item, f"actions[{i}]", f"duplicate action name '{a.name}'{first}")
            seen[a.name] = item.line
            actions.append(a)
        return ActionSet(tuple(actions), background, defaults, explicit, exclusive)


def parse_actions(text: str, source: str = "actions") -> ActionSet:
    """YAML text -> ActionSet; raises ActionsError naming ``source:line:column``."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        where = f"{source}:{line}:{mark.column + 1}" if mark else source
        raise ActionsError(f"{where}: invalid YAML: {e.problem or e.context}", line) from None
    except yaml.YAMLError as e:
        raise ActionsError(f"{source}: invalid YAML: {e}") from None
    checker = _Checker(source)
    try:
        v = _from_node(node) if node is not None else None
    except ActionsError as e:
        raise ActionsError(f"{source}:{e.message}", e.line) from None
    return checker.actions_set(v)


def parse_action_obj(obj: Any, source: str = "request", path: str = "action") -> Action:
    """A JSON-like dict (control request) -> Action; messages name the field path."""
    return _Checker(source).action(_from_obj(obj), path)


def actions_from_obj(obj: Any, source: str = "request") -> ActionSet:
    return _Checker(source).actions_set(_from_obj(obj))


def warnings(aset: ActionSet) -> list[str]:
    """Problems that are legal but probably unintended (``cezsar actions check`` and the runtime warn)."""
    out = []
    if aset.actions and not aset.background:
        out.append(
            "no 'background:' descriptions: the thresholds then apply to raw cosines, which are high for "
            "almost any video; add what 'nothing happening' looks like (see docs/edge.md)"
        )
    return out


def dump_actions(aset: ActionSet) -> str:
    body = yaml.safe_dump(aset.to_obj(), sort_keys=False, allow_unicode=True, width=100)
    return "# cezsar actions file (rewritten by a control-socket change; comments are not kept)\n" + body


def load_actions(path: str | Path) -> ActionSet:
    p = Path(path)
    if not p.is_file():
        raise ActionsError(f"{p}: actions file not found")
    data = p.read_bytes()
    return _parse_bytes(data, str(p))


def _parse_bytes(data: bytes, source: str) -> ActionSet:
    if len(data) > MAX_FILE_BYTES:
        raise ActionsError(f"{source}: file is {len(data)} bytes (at most {MAX_FILE_BYTES})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ActionsError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return parse_actions(text, source)


# -- the live set --------------------------------------------------------------------------
class ActionStore:
    """The active ActionSet of a running runtime, fed by the file and by control requests.

    ``on_change(new_set)`` runs before a new set becomes active (e.g. to compute text embeddings);
    if it raises, the change is rejected and the old set stays.
    """

    def __init__(self, path: str | Path, on_change: Callable[[ActionSet], None] | None = None) -> None:
        self.path = Path(path)
        self.on_change = on_change
        self._lock = threading.RLock()
        self.current = ActionSet()
        self.error: str | None = None  # the last problem with the file, None when the file is good
        self.error_line: int | None = None
        self.version = 0  # increments on every accepted change
        self.changed_at = 0.0
        self._stat: tuple[int, int] | None = None
        self._hash: str | None = None
        self._hashed_at = 0.0

    def load(self) -> ActionSet:
        """Initial load: raises ActionsError when the file is missing or invalid."""
        with self._lock:
            data = self._read()
            if data is None:
                raise ActionsError(f"{self.path}: actions file not found")
            aset = _parse_bytes(data, str(self.path))
            self._activate(aset, "file")
            self._hash = _sha(data)
            return aset

    def _read(self) -> bytes | None:
        try:
            st = os.stat(self.path)
            data = self.path.read_bytes()
        except FileNotFoundError:
            self._stat = None
            return None
        self._stat = (st.st_mtime_ns, st.st_size)
        self._hashed_at = time.monotonic()
        return data

    def _activate(self, aset: ActionSet, origin: str) -> None:
        if self.on_change is not None:
            self.on_change(aset)
        self.current = aset
        self.version += 1
        self.changed_at = time.time()
        log.info("actions (%s): %d active: %s", origin, len(aset.actions), ", ".join(aset.names()) or "-")

    def _report(self, message: str, line: int | None) -> None:
        if message != self.error:
            log.warning("%s; keeping the last good actions (%d)", message, len(self.current.actions))
        self.error, self.error_line = message, line

    def poll(self) -> bool:
        """Re-read the file if it changed; True when a new set became active."""
        with self._lock:
            try:
                st = os.stat(self.path)
                key: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                key = None
            if key is None:
                self._report(f"{self.path}: actions file not found (deleted?)", None)
                self._stat, self._hash = None, None
                return False
            # mtime+size catch almost every edit; re-hash anyway once a second (coarse mtimes)
            if key == self._stat and time.monotonic() - self._hashed_at < 1.0:
                return False
            data = self._read()
            if data is None:
                return False
            h = _sha(data)
            if h == self._hash:
                return False
            self._hash = h
            try:
                aset = _parse_bytes(data, str(self.path))
                self._activate(aset, "file edit")
            except ActionsError as e:
                self._report(e.message, e.line)
                return False
            except Exception as e:  # noqa: BLE001 - e.g. text encoding failed: keep the old set
                self._report(f"{self.path}: cannot apply ({type(e).__name__}: {e})", None)
                return False
            self.error, self.error_line = None, None
            return True

    def modify(self, change: Callable[[ActionSet], ActionSet]) -> ActionSet:
        """Apply a control change: validate, activate, write the file back atomically."""
        with self._lock:
            self.poll()  # pick up a pending valid edit first, so it is not overwritten
            if self.error is not None:
                raise ActionsError(f"the actions file has a pending problem, fix it first: {self.error}")
            new = change(self.current)
            # round-trip through the file form: the same validation as the file gets
            text = dump_actions(new)
            checked = parse_actions(text, str(self.path))
            self._activate(checked, "control")
            data = text.encode("utf-8")
            write_text(self.path, text)
            self._hash = _sha(data)
            try:
                st = os.stat(self.path)
                self._stat = (st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                self._stat = None
            return checked

    # -- control helpers ---------------------------------------------------------------------
    def add(self, action: Action) -> ActionSet:
        def change(s: ActionSet) -> ActionSet:
            if s.get(action.name) is not None:
                raise ActionsError(f"action '{action.name}' already exists (use update)")
            if len(s.actions) >= MAX_ACTIONS:
                raise ActionsError(f"already {MAX_ACTIONS} actions")
            return replace(s, actions=(*s.actions, action))

        return self.modify(change)

    def update(self, name: str, fields: dict[str, Any], source: str = "request") -> ActionSet:
        def change(s: ActionSet) -> ActionSet:
            old = s.get(name)
            if old is None:
                raise ActionsError(f"no action named '{name}'")
            if not isinstance(fields, dict):
                raise ActionsError(f"{source}: fields: expected an object")
            merged = {**old.explicit(), **fields}
            for k, v in fields.items():
                if v is None and k in (*NUM_KEYS, "streams", "zone"):
                    merged.pop(k)  # null resets a field to the default
            new = parse_action_obj(merged, source, path="action")
            if new.name != name and s.get(new.name) is not None:
                raise ActionsError(f"cannot rename '{name}' to '{new.name}': that name exists")
            return replace(s, actions=tuple(new if a.name == name else a for a in s.actions))

        return self.modify(change)

    def remove(self, name: str) -> ActionSet:
        def change(s: ActionSet) -> ActionSet:
            if s.get(name) is None:
                raise ActionsError(f"no action named '{name}'")
            return replace(s, actions=tuple(a for a in s.actions if a.name != name))

        return self.modify(change)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ActionsWatcher:
    """Polls an ActionStore every ``interval`` seconds in a daemon thread."""

    def __init__(self, store: ActionStore, interval: float = 0.25) -> None:
        self.store = store
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="actions-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.store.poll()
            except Exception:  # noqa: BLE001 - the watcher must survive anything
                log.exception("actions watcher")
