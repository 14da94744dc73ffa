"""One loader for the YAML files a person edits (the actions file, the site file) and for the JSON objects
that control requests carry: read, compose safely, refuse duplicate keys, validate with a pydantic model,
and turn every problem into one line.

    site.yaml:14:11: sources[1].zones[0].rect: x0 must be < x1 and y0 < y1 (got [0.8, 0.1, 0.2, 0.9])
    request: action ('wave').threshold: expected a number, got str '0.2'

Files name ``file:line:col`` (the YAML node marks); objects name the field path. All the problems of one
pass come together, in file order (:attr:`ConfigError.problems`).

Safety, before any value is built: the file size is capped; the node count *with aliases expanded*, the
number of aliases and the nesting depth are limited while composing, so an alias bomb (a few hundred bytes
that expand to billions of nodes) or a recursive alias is refused in milliseconds with one line; only the
plain YAML types are accepted (``!!python/object`` and any other tag is refused, not ignored).

API: :func:`load` (a path) and :func:`parse` (text) -> a validated model; :func:`parse_text` -> a
:class:`Document` (the plain data and the node tree, to validate later, e.g. after merging flags);
:func:`validate_obj` for a plain object. Validators may raise :class:`Located` to point at a part of
their value (an item of a list) instead of the whole field.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from cezsar.errors import CezsarError

M = TypeVar("M", bound=BaseModel)
Loc = tuple[int | str, ...]


@dataclass(frozen=True)
class Limits:
    """What a file may hold. ``max_nodes`` counts every node an alias repeats (the expanded size)."""

    max_bytes: int = 1 << 20
    max_nodes: int = 50_000
    max_aliases: int = 1_000
    max_depth: int = 32


LIMITS = Limits()

_TAG = "tag:yaml.org,2002:"
# the plain YAML types; anything else (python/object, binary, set, timestamp, a local !tag) is refused
PLAIN_TAGS = frozenset(_TAG + t for t in ("null", "bool", "int", "float", "str", "seq", "map", "merge"))


class ConfigError(CezsarError):
    """An invalid file or object. ``problems``: every problem as one line (``file:line:col: where: what``);
    the message is the first, with a count of the rest; ``line``: the first problem's line where known."""

    def __init__(self, problems: str | Sequence[str], line: int | None = None) -> None:
        problems = [problems] if isinstance(problems, str) else list(problems)
        if not problems:
            raise ValueError("ConfigError needs at least one problem")
        n = len(problems) - 1
        more = f" (and {n} more problem{'s' if n > 1 else ''})" if n else ""
        super().__init__(problems[0] + more)
        self.problems = problems
        self.line = line


class Located(ValueError):
    """Raised by a validator: ``problem`` is about ``at`` (a location inside the validated value, e.g.
    ``(3,)`` for its 4th item); ``first``: where the same thing first appeared (``(first at line N)``)."""

    def __init__(self, problem: str, at: Loc = (), first: Loc | None = None) -> None:
        super().__init__(problem)
        self.problem, self.at, self.first = problem, tuple(at), first


# ---------------------------------------------------------------------------------------------- composing


class _Refused(yaml.MarkedYAMLError):
    pass


def _no_timestamps() -> dict[Any, Any]:
    """SafeLoader's implicit resolvers without timestamps: ``2024-05-01`` stays a string."""
    out: dict[Any, Any] = {}
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items():
        out[first] = [(tag, rx) for tag, rx in resolvers if tag != _TAG + "timestamp"]
    return out


class _Loader(yaml.SafeLoader):
    """SafeLoader that counts while it composes: expanded nodes, aliases, depth; and refuses other tags."""

    yaml_implicit_resolvers = _no_timestamps()

    def __init__(self, text: str, limits: Limits) -> None:
        super().__init__(text)
        self.limits = limits
        self._sizes: dict[int, int] = {}  # id(node) -> its size with aliases expanded (finished nodes only)
        self._open: list[int] = []  # the node sizes being summed, innermost last
        self._aliases = 0

    def _refuse(self, mark: Any, problem: str) -> _Refused:
        return _Refused(problem=problem, problem_mark=mark)

    def _count(self, size: int, mark: Any) -> None:
        if self._open:
            self._open[-1] += size
        if (self._open[-1] if self._open else size) > self.limits.max_nodes:
            raise self._refuse(
                mark, f"more than {self.limits.max_nodes} values once aliases are expanded (an alias bomb?)"
            )

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None:
                size = self._sizes.get(id(target))
                if size is None:
                    raise self._refuse(event.start_mark, f"recursive alias *{event.anchor} (inside its own anchor)")
                self._aliases += 1
                if self._aliases > self.limits.max_aliases:
                    raise self._refuse(event.start_mark, f"more than {self.limits.max_aliases} aliases")
                self._count(size, event.start_mark)
            return super().compose_node(parent, index)
        event = self.peek_event()
        if len(self._open) >= self.limits.max_depth:
            raise self._refuse(event.start_mark, f"nested more than {self.limits.max_depth} levels deep")
        self._open.append(1)
        try:
            node: Any = super().compose_node(parent, index)
        except BaseException:
            self._open.pop()
            raise
        size = self._open.pop()
        if node.tag not in PLAIN_TAGS:
            raise self._refuse(event.start_mark, f"tag {_short_tag(node.tag)} is not allowed (plain YAML values only)")
        self._sizes[id(node)] = size
        self._count(size, event.start_mark)
        return node


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _duplicates(root: yaml.Node, source: str) -> list[tuple[int, str]]:
    """Every repeated key (each aliased subtree checked once), with its line."""
    out: list[tuple[int, str]] = []
    seen_nodes: set[int] = set()
    todo: list[tuple[yaml.Node, str]] = [(root, "")]
    while todo:
        node, path = todo.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for k, v in node.value:
                key = str(k.value) if isinstance(k, yaml.ScalarNode) else "?"
                if isinstance(k, yaml.ScalarNode) and k.tag != _TAG + "merge":
                    line, col = _mark(k)
                    if key in first:
                        dup = f"duplicate key '{key}' (first at line {first[key]})"
                        out.append((line, f"{source}:{line}:{col}: {path or '(top level)'}: {dup}"))
                    else:
                        first[key] = line
                todo.append((v, f"{path}.{key}" if path else key))
        elif isinstance(node, yaml.SequenceNode):
            todo += [(v, f"{path}[{i}]") for i, v in enumerate(node.value)]
    return sorted(out)


def compose(
    text: str, source: str, limits: Limits = LIMITS, error: type[ConfigError] = ConfigError
) -> yaml.Node | None:
    """YAML text -> its node tree (None for an empty file), within ``limits``, without duplicate keys."""
    loader = _Loader(text, limits)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        where = f"{source}:{line}:{mark.column + 1}" if mark else source
        kind = "refused" if isinstance(e, _Refused) else "invalid YAML"
        raise error(f"{where}: {kind}: {e.problem or e.context}", line) from None
    except yaml.YAMLError as e:  # e.g. a character YAML does not allow
        raise error(f"{source}: invalid YAML: {str(e).splitlines()[0]}") from None
    finally:
        loader.dispose()
    if root is not None:
        dups = _duplicates(root, source)
        if dups:
            raise error([m for _, m in dups], dups[0][0])
    return root


def read(path: str | Path, limits: Limits = LIMITS, error: type[ConfigError] = ConfigError) -> str:
    """A file's text: at most ``limits.max_bytes`` bytes of UTF-8; one line for every failure."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(limits.max_bytes + 1)
    except FileNotFoundError:
        raise error(f"{p}: no such file") from None
    except OSError as e:
        raise error(f"{p}: cannot read ({e.strerror or e})") from None
    if len(data) > limits.max_bytes:
        raise error(f"{p}: file is over {limits.max_bytes} bytes (at most {limits.max_bytes})")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None


# ---------------------------------------------------------------------------------------------- locating


def _child(node: Any, part: int | str, yaml_tree: bool) -> tuple[Any, Any] | None:
    """(key node or None, child) of ``node`` at ``part``; None when there is none."""
    if yaml_tree:
        if isinstance(node, yaml.MappingNode):
            for k, v in reversed(node.value):
                if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                    return k, v
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            return None, node.value[part]
        return None
    if isinstance(node, dict) and part in node:
        return None, node[part]
    if isinstance(node, list | tuple) and isinstance(part, int) and 0 <= part < len(node):
        return None, node[part]
    return None


def _label(node: Any, key: str | None, yaml_tree: bool) -> str:
    """`` ('wave')`` for a mapping whose ``key`` is a string (the actions file names each action)."""
    if key is None:
        return ""
    found = _child(node, key, yaml_tree)
    if found is None:
        return ""
    value = found[1]
    if yaml_tree:
        if not (isinstance(value, yaml.ScalarNode) and value.tag == _TAG + "str"):
            return ""
        value = value.value
    return f" ('{value.strip()[:64]}')" if isinstance(value, str) and value.strip() else ""


@dataclass
class _Spot:
    where: str  # the path as a person reads it: actions[2] ('wave').threshold
    node: Any  # the deepest node of the location that the input holds


def _walk(root: Any, loc: Loc, root_name: str, label_key: str | None, yaml_tree: bool) -> _Spot:
    """Follow ``loc`` through the input; a part the input does not hold (a union member's name that
    pydantic puts into locations) is skipped."""
    where, node = root_name + _label(root, label_key, yaml_tree), root
    for part in loc:
        nxt = _child(node, part, yaml_tree)
        if nxt is None:
            continue
        node = nxt[1]
        if isinstance(part, int):
            where += f"[{part}]"
        else:
            where += f".{part}" if where else str(part)
        where += _label(node, label_key, yaml_tree)
    return _Spot(where, node)


# ---------------------------------------------------------------------------------------------- messages

_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dataclass_type": "a mapping",
    "path_type": "a path",
}
_BOUNDS = {"ge": "at least", "gt": "more than", "le": "at most", "lt": "less than"}


def what(value: Any) -> str:
    """A value as a message shows it: ``a mapping``, ``a list``, ``nothing (null)``, ``str 'high'``."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"[:80]


# a key whose value a message never shows (it would put a secret into a log line)
_SECRET_KEY = re.compile(r"pass|token|secret|credential|private", re.IGNORECASE)


def _message(err: dict[str, Any]) -> str:
    kind, msg, value, ctx = err["type"], str(err["msg"]), err.get("input"), err.get("ctx") or {}
    secret = any(isinstance(p, str) and _SECRET_KEY.search(p) for p in err["loc"])
    shown = type(value).__name__ if secret and isinstance(value, str | int | float) else what(value)
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {shown}"
    if kind == "literal_error":
        return f"expected {ctx.get('expected', msg)}, got {shown}"
    bound = next((b for b in _BOUNDS if b in ctx), None)
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal") and bound:
        return f"{'the value' if secret else repr(value)} is out of range ({_BOUNDS[bound]} {ctx[bound]})"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    if isinstance(value, str | int | float | bool) and not secret:
        shown = repr(value)
        msg += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    return msg


def _model_at(model: Any, loc: Loc) -> type[BaseModel] | None:
    """The model class at ``loc`` of ``model`` (to list the keys it allows), where it can be followed."""
    kind: Any = model
    for part in loc:
        kind = _unwrap(kind, part)
        if kind is None:
            return None
    found = _unwrap(kind, None)
    return found if isinstance(found, type) and issubclass(found, BaseModel) else None


def _unwrap(kind: Any, part: int | str | None) -> Any:
    """One step into a type: the field ``part`` of a model, the item of a list (``part`` an int), or, for
    None, the type itself with Optional/Annotated peeled off."""
    for _ in range(8):
        origin, args = typing.get_origin(kind), typing.get_args(kind)
        if origin is typing.Annotated:
            kind = args[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in args if a is not type(None)]
            if len(members) != 1:
                models = [a for a in members if isinstance(a, type) and issubclass(a, BaseModel)]
                if len(models) != 1:
                    return None
                members = models
            kind = members[0]
        else:
            break
    if part is None:
        return kind
    if isinstance(part, int):
        args = typing.get_args(kind)
        return args[0] if typing.get_origin(kind) in (list, tuple) and args else None
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        for name, field in kind.model_fields.items():
            if part in (name, field.alias):
                return field.annotation
    return None


def _keys(node: Any) -> set[str]:
    if isinstance(node, yaml.MappingNode):
        return {str(k.value) for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    return {str(k) for k in node} if isinstance(node, dict) else set()


def _unknown_key(model: Any, parent: Loc, key: str, present: set[str]) -> str:
    """``unknown key 'treshold' (did you mean 'threshold'?)``, else the keys the mapping allows."""
    msg = f"unknown key '{key}'"
    found = _model_at(model, parent)
    if found is None:
        return msg
    allowed = [f.alias or n for n, f in found.model_fields.items()]
    close = difflib.get_close_matches(key, [k for k in allowed if k not in present], n=1, cutoff=0.7)
    return msg + (f" (did you mean '{close[0]}'?)" if close else f" (allowed: {', '.join(allowed)})")


def _misspelt(loc: Loc, unknown: list[tuple[Loc, str]]) -> bool:
    """Whether the missing key at ``loc`` is close to an unknown key of the same mapping (its misspelling)."""
    keys = [k for parent, k in unknown if parent == loc[:-1]]
    return bool(difflib.get_close_matches(str(loc[-1]), keys, n=1, cutoff=0.7))


def _lines(
    e: ValidationError, model: Any, root: Any, source: str, root_name: str, label_key: str | None, yaml_tree: bool
) -> list[tuple[int, int, str]]:
    out = []
    errors = e.errors(include_url=False)
    unknown = [(tuple(x["loc"][:-1]), str(x["loc"][-1])) for x in errors if x["type"] == "extra_forbidden" and x["loc"]]
    for err in errors:
        loc: Loc = tuple(err["loc"])
        if err["type"] == "missing" and loc and _misspelt(loc, unknown):
            continue  # one mistake, one line: "unknown key 'treshold' (did you mean 'threshold'?)" says it
        located = (err.get("ctx") or {}).get("error")
        first: Loc | None = None
        if isinstance(located, Located):
            loc, msg, first = loc + located.at, located.problem, located.first
        elif err["type"] in ("missing", "extra_forbidden") and loc:
            key = str(loc[-1])
            loc = loc[:-1]
            if err["type"] == "missing":
                msg = f"missing required key '{key}'"
            else:
                present = _keys(_walk(root, loc, root_name, None, yaml_tree).node)
                msg = _unknown_key(model, loc, key, present)
        else:
            msg = _message(dict(err))
        spot = _walk(root, loc, root_name, label_key, yaml_tree)
        if err["type"] == "extra_forbidden" and yaml_tree:  # point at the unknown key itself
            key_spot = _child(spot.node, str(err["loc"][-1]), True)
            line, col = _mark(key_spot[0]) if key_spot and key_spot[0] is not None else _mark(spot.node)
        elif yaml_tree:
            line, col = _mark(spot.node)
        else:
            line, col = 0, 0
        if first is not None:
            first_spot = _walk(root, tuple(err["loc"]) + first, root_name, label_key, yaml_tree)
            msg += f" (first at line {_mark(first_spot.node)[0]})" if yaml_tree else f" (first at {first_spot.where})"
        where = spot.where or "(top level)"
        out.append((line, col, f"{source}:{line}:{col}: {where}: {msg}" if yaml_tree else f"{source}: {where}: {msg}"))
    return out


# ---------------------------------------------------------------------------------------------- the API


@dataclass
class Document:
    """A composed file: ``data`` (plain values) and the node tree that locates problems in it."""

    source: str
    root: yaml.Node
    data: Any
    error: type[ConfigError] = ConfigError
    label_key: str | None = None

    def problems(self, e: ValidationError, model: Any = None) -> list[str]:
        """A ValidationError of this document's data -> its lines, in file order."""
        lines = sorted(_lines(e, model, self.root, self.source, "", self.label_key, True), key=lambda x: x[:2])
        return [m for _, _, m in lines]

    def validate(self, model: type[M], context: dict[str, Any] | None = None, data: Any = None) -> M:
        """``data`` (default: the document's) -> ``model``; raises ``error`` with every problem."""
        try:
            return model.model_validate(self.data if data is None else data, context=context)
        except ValidationError as e:
            lines = sorted(_lines(e, model, self.root, self.source, "", self.label_key, True), key=lambda x: x[:2])
            raise self.error([m for _, _, m in lines], lines[0][0] if lines else None) from None

    def locate(self, loc: Loc) -> tuple[str, int, int]:
        """(path, line, column) of a location in the file (the deepest part of it that is there)."""
        spot = _walk(self.root, loc, "", self.label_key, True)
        line, col = _mark(spot.node)
        return spot.where or "(top level)", line, col


def parse_text(
    text: str,
    source: str,
    *,
    empty: str = "a mapping",
    limits: Limits = LIMITS,
    error: type[ConfigError] = ConfigError,
    label_key: str | None = None,
) -> Document:
    """YAML text -> :class:`Document` (composed within ``limits``, duplicate keys refused, values built).
    An empty file is one problem (``empty``: what the file should hold)."""
    root = compose(text, source, limits, error)
    if root is None:
        raise error(f"{source}:1:1: the file is empty (expected {empty})", 1)
    try:
        data = yaml.constructor.SafeConstructor().construct_document(root)
    except yaml.MarkedYAMLError as e:  # e.g. a list as a mapping key
        mark = e.problem_mark or e.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise error(f"{where}: invalid YAML: {e.problem or e.context}", mark.line + 1 if mark else None) from None
    return Document(source, root, data, error, label_key)


def parse(
    text: str,
    model: type[M],
    source: str,
    *,
    context: dict[str, Any] | None = None,
    empty: str = "a mapping",
    limits: Limits = LIMITS,
    error: type[ConfigError] = ConfigError,
    label_key: str | None = None,
) -> M:
    """YAML text -> a validated ``model``; raises ``error`` naming ``source:line:col`` for every problem."""
    doc = parse_text(text, source, empty=empty, limits=limits, error=error, label_key=label_key)
    return doc.validate(model, context)


def load(
    path: str | Path,
    model: type[M],
    *,
    context: dict[str, Any] | None = None,
    empty: str = "a mapping",
    limits: Limits = LIMITS,
    error: type[ConfigError] = ConfigError,
    label_key: str | None = None,
) -> M:
    """:func:`read` then :func:`parse` (the file's path is the source of every message)."""
    text = read(path, limits, error)
    return parse(text, model, str(path), context=context, empty=empty, limits=limits, error=error, label_key=label_key)


def validate_obj(
    obj: Any,
    model: type[M],
    source: str,
    root: str = "",
    *,
    context: dict[str, Any] | None = None,
    error: type[ConfigError] = ConfigError,
    label_key: str | None = None,
) -> M:
    """A plain object (a parsed JSON request) -> ``model``; messages name ``source: root.path: problem``."""
    try:
        return model.model_validate(obj, context=context)
    except ValidationError as e:
        lines = _lines(e, model, obj, source, root, label_key, False)
        raise error([m for _, _, m in lines]) from None
