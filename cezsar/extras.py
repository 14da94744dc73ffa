"""Optional dependencies: which extra of pyproject.toml installs a module, declared where the module is used.

A part of cezsar that needs an optional library says so once, next to its use: a backend class
(``Backend.requires`` / ``Backend.extra``), a backbone family (``training.backbones.register_prefix``), a
sink or a stage package (``requires("paho", extra="mqtt")`` at module level). The ``cezsar`` command turns
a ModuleNotFoundError of a declared module into one line naming the extra (:func:`missing_extra`); there
is no hand-kept list of modules beside the declarations.

A module declared by several parts keeps its first declaration (declare the narrowest extra, e.g. paho ->
mqtt rather than edge, where it is first imported).
"""

from __future__ import annotations

_EXTRAS: dict[str, str] = {}  # top-level module name -> extra


def requires(*modules: str, extra: str) -> None:
    """Declare that ``modules`` (import names: ``paho``, ``prometheus_client``) come with ``extra``."""
    if not extra:
        raise ValueError("requires(): name the extra that installs the modules")
    for name in modules:
        _EXTRAS.setdefault(name.split(".")[0], extra)


def extra_for(module: str) -> str | None:
    """The extra that installs ``module`` (or the package it belongs to), if one was declared."""
    return _EXTRAS.get(module.split(".")[0])


def declared() -> dict[str, str]:
    """Every declared module and its extra."""
    return dict(_EXTRAS)


def install_hint(extra: str) -> str:
    return f"pip install 'cezsar[{extra}]'"


def missing_extra(e: ModuleNotFoundError) -> str | None:
    """One line naming the extra that installs the missing module, or None when no declaration names it."""
    root = (e.name or "").split(".")[0]
    extra = _EXTRAS.get(root)
    if extra is None:
        return None
    return f"this command needs the optional '{extra}' dependencies (module {root} is missing): {install_hint(extra)}"
