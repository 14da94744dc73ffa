"""Reading a JSON file with one clear error line naming it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cezsar.errors import CezsarError


def read_json(path: str | Path) -> Any:
    """Parse ``path``; an unreadable file or invalid JSON raises CezsarError naming the file and line."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise CezsarError(f"{path}: cannot be read ({e})") from None
    except json.JSONDecodeError as e:
        raise CezsarError(f"{path}: invalid JSON ({e.msg}, line {e.lineno})") from None


def json_depth(text: str) -> int:
    """The deepest nesting of objects and arrays in JSON text (strings skipped), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_request(raw: bytes | str, what: str = "request", max_bytes: int = 64 * 1024, max_depth: int = 8) -> Any:
    """JSON from a client (HTTP, control socket), or CezsarError with one line: too large, not UTF-8,
    nested too deeply, not JSON (a 5,000-digit integer included). Nothing is echoed back."""
    if len(raw) > max_bytes:
        raise CezsarError(f"{what} is {len(raw)} bytes (at most {max_bytes})")
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise CezsarError(f"{what} is not UTF-8") from None
    if json_depth(text) > max_depth:
        raise CezsarError(f"{what} is nested too deeply (at most {max_depth} levels)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CezsarError(f"{what} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except (ValueError, RecursionError) as e:  # e.g. an integer of more than 4,300 digits
        raise CezsarError(f"{what} is not usable JSON ({str(e).split(':')[0][:100]})") from None
