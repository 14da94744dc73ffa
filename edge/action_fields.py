"""The field types of the actions file (edge/actions.py): each with its limits and its one-line messages.

Numbers are strict (``"0.1"`` and ``true`` are not numbers) and within :data:`RANGES`; a description is
one line of at most :data:`MAX_DESCRIPTION_CHARS` characters (whitespace collapsed); a list field may be
given as one string; names follow :data:`NAME_CHARS` (actions) or edge.zones.NAME_PATTERN (streams and
zones); a template holds ``{}`` exactly once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from cezsar import yamlfile
from cezsar.yamlfile import what
from edge.decisions import PARAM_KEYS
from edge.zones import NAME_PATTERN, Ident

MAX_DESCRIPTION_CHARS = 500
MAX_DESCRIPTIONS = 32
MAX_ACTIONS = 256
MAX_BACKGROUND = 32
MAX_TEMPLATES = 16
MAX_TEMPLATE_CHARS = 200
MAX_FILE_BYTES = yamlfile.LIMITS.max_bytes
NAME_CHARS = r"^[A-Za-z0-9][A-Za-z0-9 _.:-]{0,63}$"
NUM_KEYS = ("threshold", "hysteresis", "min_duration", "cooldown")
DEFAULT_KEYS = PARAM_KEYS  # what ``defaults:`` may set: every decision parameter
STREAM_PATTERN = NAME_PATTERN
# (minimum, maximum) for every number; cosine margins lie in [-2, 2]
RANGES: dict[str, tuple[float, float]] = {
    "threshold": (-2.0, 2.0),
    "hysteresis": (0.0, 2.0),
    "min_duration": (0.0, 3600.0),
    "cooldown": (0.0, 86400.0),
    "smoothing": (1e-6, 1.0),
}


# ---------------------------------------------------------------------------------------------- field types


def _range(key: str, help: str) -> Any:
    """A number's constraints: strict (no "0.1" strings, no booleans), within :data:`RANGES`."""
    lo, hi = RANGES[key]
    return Field(strict=True, ge=lo, le=hi, description=help)


Threshold = Annotated[float, _range("threshold", "An event starts when the smoothed score reaches this.")]
Hysteresis = Annotated[float, _range("hysteresis", "... and ends when it falls below threshold - hysteresis.")]
MinDuration = Annotated[float, _range("min_duration", "Seconds above threshold before an event starts.")]
Cooldown = Annotated[float, _range("cooldown", "Seconds after an end before the same action can start again.")]
Smoothing = Annotated[float, _range("smoothing", "EMA weight of the newest window score, (0, 1].")]


def _description(value: str) -> str:
    s = " ".join(value.split())
    if not s:
        raise ValueError("empty description")
    if len(s) > MAX_DESCRIPTION_CHARS:
        raise ValueError(f"description is {len(s)} characters long (at most {MAX_DESCRIPTION_CHARS})")
    return s


def _template(value: str) -> str:
    s = " ".join(value.split())
    if s.count("{}") != 1 or s.replace("{}", "").count("{") or s.replace("{}", "").count("}"):
        raise ValueError(f"a template holds '{{}}' (where the description goes) once, and no other braces: {s!r}")
    if len(s) > MAX_TEMPLATE_CHARS:
        raise ValueError(f"template is {len(s)} characters long (at most {MAX_TEMPLATE_CHARS})")
    return s


def listed(what_: str, limit: int, one: bool = True, empty_ok: bool = False) -> Callable[[Any], Any]:
    """Before validation: one string -> a list of it (``one``); a list: not empty (unless ``empty_ok``),
    at most ``limit`` items."""

    def check(value: Any) -> Any:
        if one and isinstance(value, str):
            return [value]
        if not isinstance(value, list | tuple):
            alt = "a string or a list of strings" if one else "a list"
            raise ValueError(f"expected {alt}, got {what(value)}")
        if not value and not empty_ok:
            raise ValueError(f"empty list (give at least one of {what_})")
        if len(value) > limit:
            raise ValueError(f"{len(value)} {what_} (at most {limit})")
        return value

    return check


def unique(items: tuple[str, ...]) -> tuple[str, ...]:
    """Without repeats, in order."""
    return tuple(dict.fromkeys(items))


def one_or_list_schema(item: dict[str, Any], limit: int, min_items: int = 1) -> Any:
    """The JSON Schema of a field that takes one ``item`` or a list of them."""
    many = {"type": "array", "items": item, "minItems": min_items, "maxItems": limit}
    return WithJsonSchema({"anyOf": [item, many]})


DESC_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_DESCRIPTION_CHARS}
Description = Annotated[str, AfterValidator(_description)]
Descriptions = Annotated[
    tuple[Description, ...],
    BeforeValidator(listed("descriptions", MAX_DESCRIPTIONS)),
    AfterValidator(unique),
    one_or_list_schema(DESC_SCHEMA, MAX_DESCRIPTIONS),
]
Background = Annotated[
    tuple[Description, ...],
    BeforeValidator(listed("background descriptions", MAX_BACKGROUND, empty_ok=True)),
    AfterValidator(unique),
    one_or_list_schema(DESC_SCHEMA, MAX_BACKGROUND, min_items=0),
]
_TEMPLATE_SCHEMA = {"type": "string", "pattern": r"\{\}", "maxLength": MAX_TEMPLATE_CHARS}
Template = Annotated[str, AfterValidator(_template), WithJsonSchema(_TEMPLATE_SCHEMA)]
Templates = Annotated[
    tuple[Template, ...],
    BeforeValidator(listed("templates", MAX_TEMPLATES, one=False, empty_ok=True)),
    AfterValidator(unique),
    WithJsonSchema({"type": "array", "items": _TEMPLATE_SCHEMA, "maxItems": MAX_TEMPLATES}),
]
Streams = Annotated[
    tuple[Ident, ...],
    BeforeValidator(listed("stream names", 64)),
    AfterValidator(unique),
    one_or_list_schema({"type": "string", "pattern": STREAM_PATTERN}, 64),
]


def _action_name(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {what(value)}")
    name = value.strip()
    if not re.match(NAME_CHARS, name):
        raise ValueError(f"invalid name {name!r} (1-64 characters: letters, digits, space _ . : -)")
    return name


ActionName = Annotated[str, BeforeValidator(_action_name), WithJsonSchema({"type": "string", "pattern": NAME_CHARS})]


def expand(description: str, templates: Sequence[str]) -> list[str]:
    """The sentences one description stands for: one per template (``{}`` replaced), or itself."""
    return [t.replace("{}", description) for t in templates] or [description]
