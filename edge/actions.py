"""The actions file: what to detect, in words. Load, validate, write back, watch.

    version: 1                # optional
    defaults:                 # optional; every key optional (default values: edge.decisions.Params)
      threshold: 0.05         # event starts when the smoothed score reaches this
      hysteresis: 0.03        # ... and ends when it falls below threshold - hysteresis
      min_duration: 1.0       # seconds above threshold before an event starts
      cooldown: 2.0           # seconds after an end before the same action can start again
      smoothing: 0.5          # EMA weight of the newest window score, (0, 1]
    templates:                # optional: each description is embedded through every template, averaged
      - a video of {}.
    background:               # optional: what "nothing happening" looks like
      - a shape staying still
    exclusive: false          # optional: true = at most one action at a time per stream (one actor)
    actions:
      - name: wave
        descriptions: [a hand waving, someone waves]   # or one string
        threshold: 0.1        # optional per action: threshold, hysteresis, min_duration, cooldown
        streams: [door, yard] # optional: only these streams (default: every stream)
        zone: porch           # optional: only inside this zone of a stream (site.yaml zones / --zone)
        templates: ["{}"]     # optional: this action's own templates (instead of the global ones)

The model is pydantic (:class:`ActionSet`, :class:`Action`); files go through the one YAML loader
(cezsar/yamlfile.py): every problem is one ``file:line:col: path: problem`` line, alias bombs, deep
nesting and tags are refused before any value is built. Control requests (JSON) are validated by the
same model, their messages name the field path instead of a line. ``schemas/actions.schema.json`` is
the model's JSON Schema (:func:`json_schema`).

:class:`ActionStore` holds the last good set. Its :meth:`ActionStore.poll` (run every 0.25 s by
:class:`ActionsWatcher`) re-reads the file when its mtime, size or content hash changes: a valid
edit replaces the set, an invalid one (or a deleted/emptied file) is reported and the last good
set stays active. The file is parsed outside the store's lock (a slow file never blocks the control
socket); only the swap holds it. Control changes are written back to the file atomically.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from cezsar import yamlfile
from cezsar.atomic import write_text
from cezsar.yamlfile import ConfigError, Located, what
from edge.action_fields import (
    MAX_ACTIONS,
    MAX_FILE_BYTES,
    NUM_KEYS,
    ActionName,
    Background,
    Cooldown,
    Descriptions,
    Hysteresis,
    MinDuration,
    Smoothing,
    Streams,
    Templates,
    Threshold,
    expand,
    listed,
)
from edge.decisions import PARAM_KEYS, Params
from edge.messages import ZONE_SEP
from edge.zones import Ident

log = logging.getLogger(__name__)


class ActionsError(ConfigError):
    """An invalid actions file or request: ``problems`` (one line each), ``line`` (1-based) where known."""


# ---------------------------------------------------------------------------------------------- the model


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Action(_Model):
    """One action. A number left out (None) takes the set's ``defaults``."""

    name: ActionName = Field(description="Name of the action (events and topics carry it).")
    descriptions: Descriptions = Field(description="What it looks like, in words: one sentence or a list.")
    threshold: Threshold | None = None
    hysteresis: Hysteresis | None = None
    min_duration: MinDuration | None = None
    cooldown: Cooldown | None = None
    streams: Streams = Field(default=(), description="Only these streams (default: every stream).")
    zone: Ident | None = Field(default=None, description="Only inside this zone of a stream (site file zones, --zone).")
    templates: Templates = Field(default=(), description="This action's own templates (default: the file's templates).")

    def __init__(self, name: str | None = None, descriptions: Any = None, /, **data: Any) -> None:
        """``Action("wave", ("a hand waving",), threshold=0.1)`` as well as keywords."""
        if name is not None:
            data["name"] = name
        if descriptions is not None:
            data["descriptions"] = descriptions
        super().__init__(**data)

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
        if self.templates:
            d["templates"] = list(self.templates)
        return d

    def applies(self, stream: str) -> bool:
        """Whether this action is decided on ``stream``: a real stream (``cam1``) or a zone's crop
        (``cam1@door``, see :data:`ZONE_SEP`)."""
        base, _, zone = stream.partition(ZONE_SEP)
        if (zone or None) != self.zone:
            return False
        return not self.streams or base in self.streams


class Defaults(_Model):
    """The values an action without its own takes (every key optional: :class:`edge.decisions.Params`).
    Which keys the file set is remembered (``model_fields_set``) so that a write-back keeps only those."""

    threshold: Threshold = Params.threshold
    hysteresis: Hysteresis = Params.hysteresis
    min_duration: MinDuration = Params.min_duration
    cooldown: Cooldown = Params.cooldown
    smoothing: Smoothing = Params.smoothing

    def to_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in PARAM_KEYS}

    def params(self) -> Params:
        return Params(**self.to_dict())


def _version(value: Any) -> Any:
    if value != 1 or isinstance(value, bool):
        raise ValueError(f"unsupported version {what(value)} (this cezsar reads 1)")
    return value


def _actions(value: Any) -> Any:
    return [] if value is None else listed("actions", MAX_ACTIONS, one=False, empty_ok=True)(value)


def _unique_names(actions: tuple[Action, ...]) -> tuple[Action, ...]:
    first: dict[str, int] = {}
    for i, a in enumerate(actions):
        if a.name in first:
            raise Located(f"duplicate action name '{a.name}'", (i,), (first[a.name],))
        first[a.name] = i
    return actions


class ActionSet(_Model):
    """An actions file: what to detect. ``actions`` is required in a file (it may be empty)."""

    version: Annotated[Literal[1], BeforeValidator(_version)] = 1
    defaults: Defaults = Field(default_factory=Defaults, description="Defaults for every action.")
    templates: Templates = Field(
        default=(), description="Sentences with '{}' that every description (and background) is put into; averaged."
    )
    background: Background = Field(
        default=(), description="What 'nothing happening' looks like; scores are margins over the best of these."
    )
    exclusive: StrictBool = Field(default=False, description="The actions compete: at most one at a time per stream.")
    actions: Annotated[tuple[Action, ...], BeforeValidator(_actions), AfterValidator(_unique_names)] = Field(
        description="The actions (a list; may be empty).", max_length=MAX_ACTIONS
    )

    @property
    def explicit_defaults(self) -> tuple[str, ...]:
        """Which defaults the file set (for writing back)."""
        return tuple(k for k in PARAM_KEYS if k in self.defaults.model_fields_set)

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
        if self.templates_for(action):
            d["templates"] = list(self.templates_for(action))
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
            obj["defaults"] = {k: getattr(self.defaults, k) for k in self.explicit_defaults}
        if self.templates:
            obj["templates"] = list(self.templates)
        if self.background:
            obj["background"] = list(self.background)
        if self.exclusive:
            obj["exclusive"] = True
        obj["actions"] = [a.explicit() for a in self.actions]
        return obj

    def descriptions(self) -> list[str]:
        """Every distinct description string (actions and background), in order, as written."""
        out: dict[str, None] = {}
        for a in self.actions:
            out.update(dict.fromkeys(a.descriptions))
        out.update(dict.fromkeys(self.background))
        return list(out)

    # -- what the text tower embeds ----------------------------------------------------------------
    def templates_for(self, action: Action) -> tuple[str, ...]:
        return action.templates or self.templates

    def texts_for(self, action: Action) -> list[str]:
        """The sentences whose embeddings are averaged into ``action``'s prototype: every description
        through every template (:func:`expand`)."""
        tpl = self.templates_for(action)
        return list(dict.fromkeys(s for d in action.descriptions for s in expand(d, tpl)))

    def background_texts(self) -> list[list[str]]:
        """Per background description, its sentences (through the global templates), averaged into one."""
        return [expand(b, self.templates) for b in self.background]

    def texts(self) -> list[str]:
        """Every distinct sentence the text tower embeds for this set (what its cache keeps)."""
        out: dict[str, None] = {}
        for a in self.actions:
            out.update(dict.fromkeys(self.texts_for(a)))
        for group in self.background_texts():
            out.update(dict.fromkeys(group))
        return list(out)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the actions file (``schemas/actions.schema.json``, ``cezsar schemas``)."""
    schema = ActionSet.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, "title": "cezsar actions file"}


# ---------------------------------------------------------------------------------------------- parsing

_EMPTY = "a mapping with an 'actions:' list"


def actions_document(text: str, source: str = "actions") -> yamlfile.Document:
    """YAML text -> the composed file (:meth:`yamlfile.Document.validate` with :class:`ActionSet` next)."""
    return yamlfile.parse_text(text, source, empty=_EMPTY, error=ActionsError, label_key="name")


def parse_actions(text: str, source: str = "actions") -> ActionSet:
    """YAML text -> ActionSet; raises ActionsError naming ``source:line:column`` for every problem."""
    return actions_document(text, source).validate(ActionSet)


def parse_action_obj(obj: Any, source: str = "request", path: str = "action") -> Action:
    """A JSON-like dict (control request) -> Action; messages name the field path."""
    return yamlfile.validate_obj(obj, Action, source, path, error=ActionsError, label_key="name")


def actions_from_obj(obj: Any, source: str = "request") -> ActionSet:
    return yamlfile.validate_obj(obj, ActionSet, source, error=ActionsError, label_key="name")


def load_actions(path: str | Path) -> ActionSet:
    p = Path(path)
    if not p.is_file():
        raise ActionsError(f"{p}: actions file not found")
    return yamlfile.load(p, ActionSet, empty=_EMPTY, error=ActionsError, label_key="name")


def _parse_bytes(data: bytes, source: str) -> ActionSet:
    if len(data) > MAX_FILE_BYTES:
        raise ActionsError(f"{source}: file is over {MAX_FILE_BYTES} bytes (at most {MAX_FILE_BYTES})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ActionsError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return parse_actions(text, source)


def warnings(aset: ActionSet) -> list[str]:
    """Problems that are legal but probably unintended (``cezsar actions check`` and the runtime warn).
    :func:`edge.actions_check.check_actions_file` adds those that need the site (streams, zones) or the
    deploy folder (token counts)."""
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


# ---------------------------------------------------------------------------------------------- the live set


class ActionStore:
    """The active ActionSet of a running runtime, fed by the file and by control requests.

    ``on_change(new_set)`` runs before a new set becomes active (e.g. to compute text embeddings);
    if it raises, the change is rejected and the old set stays. Changes are serialised (one poll or
    control change at a time); reading, parsing and ``on_change`` happen outside the store's lock,
    which covers only the swap (what a reader of ``current``, ``error`` or ``version`` may wait on).
    """

    def __init__(self, path: str | Path, on_change: Callable[[ActionSet], None] | None = None) -> None:
        self.path = Path(path)
        self.on_change = on_change
        self._lock = threading.RLock()  # the swap
        self._changing = threading.RLock()  # one change at a time (poll, control change)
        self.current = ActionSet(actions=())
        self.error: str | None = None  # the last problem with the file, None when the file is good
        self.error_line: int | None = None
        self.version = 0  # increments on every accepted change
        self.changed_at = 0.0
        self._stat: tuple[int, int] | None = None
        self._hash: str | None = None
        self._hashed_at = 0.0

    def load(self) -> ActionSet:
        """Initial load: raises ActionsError when the file is missing or invalid."""
        with self._changing:
            got = self._read()
            if got is None:
                raise ActionsError(f"{self.path}: actions file not found")
            data, stat = got
            aset = _parse_bytes(data, str(self.path))
            self._activate(aset, "file")
            self._seen(data, stat)
            return aset

    def _read(self) -> tuple[bytes, tuple[int, int]] | None:
        try:
            st = os.stat(self.path)
            with self.path.open("rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return None
        return data, (st.st_mtime_ns, st.st_size)

    def _seen(self, data: bytes | None, stat: tuple[int, int] | None) -> None:
        self._hash = None if data is None else _sha(data)
        self._stat, self._hashed_at = stat, time.monotonic()

    def _activate(self, aset: ActionSet, origin: str) -> None:
        if self.on_change is not None:
            self.on_change(aset)  # outside the lock: may embed text for a while
        with self._lock:
            self.current = aset
            self.version += 1
            self.changed_at = time.time()
            self.error, self.error_line = None, None
        log.info("actions (%s): %d active: %s", origin, len(aset.actions), ", ".join(aset.names()) or "-")

    def _report(self, message: str, line: int | None) -> None:
        if message != self.error:
            log.warning("%s; keeping the last good actions (%d)", message, len(self.current.actions))
        with self._lock:
            self.error, self.error_line = message, line

    def poll(self) -> bool:
        """Re-read the file if it changed; True when a new set became active."""
        with self._changing:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                st = None
            if st is not None and (st.st_mtime_ns, st.st_size) == self._stat:
                # mtime+size catch almost every edit; re-hash anyway once a second (coarse mtimes)
                if time.monotonic() - self._hashed_at < 1.0:
                    return False
            got = None if st is None else self._read()
            if got is None:
                self._report(f"{self.path}: actions file not found (deleted?)", None)
                self._seen(None, None)
                return False
            data, stat = got
            if _sha(data) == self._hash:
                self._seen(data, stat)
                return False
            self._seen(data, stat)
            try:
                self._activate(_parse_bytes(data, str(self.path)), "file edit")
            except ActionsError as e:
                self._report(e.message, e.line)
                return False
            except Exception as e:  # noqa: BLE001 - e.g. text encoding failed: keep the old set
                self._report(f"{self.path}: cannot apply ({type(e).__name__}: {e})", None)
                return False
            return True

    def modify(self, change: Callable[[ActionSet], ActionSet]) -> ActionSet:
        """Apply a control change: validate, activate, write the file back atomically."""
        with self._changing:
            self.poll()  # pick up a pending valid edit first, so it is not overwritten
            if self.error is not None:
                raise ActionsError(f"the actions file has a pending problem, fix it first: {self.error}")
            new = change(self.current)
            # round-trip through the file form: the same validation as the file gets
            text = dump_actions(new)
            checked = parse_actions(text, str(self.path))
            self._activate(checked, "control")
            write_text(self.path, text)
            try:
                st = os.stat(self.path)
                self._seen(text.encode("utf-8"), (st.st_mtime_ns, st.st_size))
            except FileNotFoundError:
                self._seen(text.encode("utf-8"), None)
            return checked

    # -- control helpers ---------------------------------------------------------------------
    def add(self, action: Action) -> ActionSet:
        def change(s: ActionSet) -> ActionSet:
            if s.get(action.name) is not None:
                raise ActionsError(f"action '{action.name}' already exists (use update)")
            if len(s.actions) >= MAX_ACTIONS:
                raise ActionsError(f"already {MAX_ACTIONS} actions")
            return s.model_copy(update={"actions": (*s.actions, action)})

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
                if v is None and k in (*NUM_KEYS, "streams", "zone", "templates"):
                    merged.pop(k)  # null resets a field to the default
            new = parse_action_obj(merged, source, path="action")
            if new.name != name and s.get(new.name) is not None:
                raise ActionsError(f"cannot rename '{name}' to '{new.name}': that name exists")
            return s.model_copy(update={"actions": tuple(new if a.name == name else a for a in s.actions)})

        return self.modify(change)

    def remove(self, name: str) -> ActionSet:
        def change(s: ActionSet) -> ActionSet:
            if s.get(name) is None:
                raise ActionsError(f"no action named '{name}'")
            return s.model_copy(update={"actions": tuple(a for a in s.actions if a.name != name)})

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
