"""The reference tables of the docs, generated from the settings model (one place for every default).

``python -m edge.settings.reference`` rewrites the generated blocks in docs/edge.md (every flag of
``cezsar run`` with its site-file key) and docs/integrations.md (every site-file key with its flag or
why it has none); tests/test_settings_docs.py fails when a block differs from what the model says.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from edge.settings.options import OPTIONS, walk

BLOCKS = {
    "docs/edge.md": "run-options",
    "docs/integrations.md": "site-keys",
}


def _default(f: FieldInfo) -> str:
    if f.is_required():
        return "required"
    if f.default_factory is not None:
        return ""
    d = f.default
    if d is None:
        return ""
    if isinstance(d, bool):
        return "on" if d else "off"
    if hasattr(d, "human_readable"):  # a ByteSize
        return f"`{d.human_readable(decimal=False)}`"
    if isinstance(d, float) and d.is_integer():
        d = int(d)
    return f"`{d}`"


def _meta(f: FieldInfo) -> dict[str, Any]:
    return dict(f.json_schema_extra) if isinstance(f.json_schema_extra, dict) else {}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def run_options() -> str:
    """Every flag of ``cezsar run``: | flag | site-file key | default | what |."""
    rows = ["| flag | site-file key | default | what |", "| --- | --- | --- | --- |"]
    fields = {path: f for path, f, _ in walk()}
    rows.append("| `--config FILE` | | | the site file; the flags below override its keys |")
    for o in OPTIONS.values():
        keys = ", ".join(f"`{'.'.join(p)}`" for p in o.paths)
        f = fields.get(o.paths[0])
        default = _default(f) if f is not None and o.anchor is None else ""
        flag = f"`{o.flag}`" + (f" / `--no-{o.flag[2:]}`" if o.kind is bool else "")
        if o.metavar and o.kind is not bool:
            flag = f"`{o.flag} {o.metavar}`"
        env = f" Environment: `{o.env}`." if o.env else ""
        rows.append(f"| {flag} | {keys} | {default} | {_cell(o.help)}{env} |")
    return "\n".join(rows)


def site_keys() -> str:
    """Every key of the site file: | key | default | flag | what |."""
    rows = ["| key | default | flag | what |", "| --- | --- | --- | --- |"]
    for path, f, _ in walk():
        meta = _meta(f)
        flag = f"`{meta['flag']}`" if meta.get("flag") else f"file only: {meta.get('file_only', '')}"
        rows.append(f"| `{'.'.join(path)}` | {_default(f)} | {flag} | {_cell(f.description or '')} |")
    return "\n".join(rows)


def render(name: str) -> str:
    return {"run-options": run_options, "site-keys": site_keys}[name]()


def markers(name: str) -> tuple[str, str]:
    return (
        f"<!-- generated: {name} (python -m edge.settings.reference) -->",
        f"<!-- end generated: {name} -->",
    )


def block(text: str, name: str) -> str | None:
    """The generated block ``name`` in a document, or None when it has none."""
    begin, end = markers(name)
    if begin not in text or end not in text:
        return None
    return text[text.index(begin) + len(begin) : text.index(end)].strip("\n")


def rewrite(root: Path) -> list[Path]:
    """Put the generated blocks into the docs (between their markers); the files changed."""
    from cezsar.atomic import write_text

    changed = []
    for rel, name in BLOCKS.items():
        path = root / rel
        text = path.read_text(encoding="utf-8")
        begin, end = markers(name)
        if block(text, name) is None:
            raise SystemExit(f"{path}: no markers for {name} ({begin} ... {end})")
        new = text[: text.index(begin) + len(begin)] + "\n" + render(name) + "\n" + text[text.index(end) :]
        if new != text:
            write_text(path, new)
            changed.append(path)
    return changed


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()
    for p in rewrite(root):
        print(f"rewrote {p}")
