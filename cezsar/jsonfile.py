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
