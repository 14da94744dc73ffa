"""The building blocks of the settings: ``opt`` (a key with its default, help and flag), durations,
sections, paths relative to the site file, secrets from environment variables."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
)

from cezsar.errors import CezsarError

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|::1|localhost)$")
_LEVEL = r"^[^+#\s]+$"  # one or more MQTT topic levels without wildcards
ENV_ONLY = "the flag's own environment variable does this"


def opt(
    default: Any = ...,
    help: str = "",
    *,
    flag: str | None = None,
    env: str | None = None,
    file_only: str | None = None,
    **kw: Any,
) -> Any:
    """A settings key: its default, its help (docs and ``--help``) and its flag (with the environment
    variable that may give it), or why it has none (``file_only``)."""
    extra: dict[str, Any] = {}
    if flag is not None:
        extra["flag"] = flag
    if env is not None:
        extra["env"] = env
    if file_only is not None:
        extra["file_only"] = file_only
    if "default_factory" in kw:
        return Field(description=help, json_schema_extra=extra or None, **kw)
    return Field(default, description=help, json_schema_extra=extra or None, **kw)


def _seconds(value: Any) -> Any:
    """``30``, ``"30s"``, ``"15m"``, ``"12h"``, ``"7d"``, ``"500ms"`` -> seconds (float)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration (seconds, or a number with ms/s/m/h/d)")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError(f"expected a duration (seconds, or a number with ms/s/m/h/d), got {value!r}")


Seconds = Annotated[float, BeforeValidator(_seconds)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve(p: Path | None, info: ValidationInfo) -> Path | None:
    """A relative path of the site file -> relative to its folder (``context["base"]``)."""
    if p is None:
        return None
    p = p.expanduser()
    base = (info.context or {}).get("base")
    return p if p.is_absolute() or base is None else Path(base) / p


def _one_of(model: BaseModel, *names: str) -> None:
    """``name`` or ``name_env`` (a secret in the file, or the variable that holds it), not both."""
    for name in names:
        if getattr(model, name) is not None and getattr(model, f"{name}_env") is not None:
            raise ValueError(f"give {name} or {name}_env, not both")


def env_secret(value: str | None, env: str | None, what: str) -> str | None:
    """``value``, or the environment variable ``env`` when one is named (one line when it is unset)."""
    if env is None:
        return value
    got = os.environ.get(env)
    if got is None:
        raise CezsarError(f"{what}: environment variable {env} is not set")
    return got


# ---------------------------------------------------------------------------------------------- sources


def _unique(names: list[str], what: str) -> None:
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{what} (repeated: {', '.join(dup)})")
