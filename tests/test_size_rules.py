"""The size rules (docs/architecture.md): no module over 600 lines and no function over 80 lines in the
packages, the scripts and the tests, except the functions the docs' table lists, each with its reason."""

from __future__ import annotations

import ast
import re

from tests.helpers.procs import ROOT

MAX_MODULE, MAX_FUNCTION = 600, 80
TREES = ("cezsar", "edge", "training", "converter", "calibration", "scripts", "tests")


def _modules() -> list:
    return sorted(p for t in TREES for p in (ROOT / t).rglob("*.py") if "assets" not in p.parts)


def _documented() -> dict[str, int]:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text[text.index("## Exceptions to the size rules") :]
    return {m[0]: int(m[1]) for m in re.findall(r"^\| `([^`]+)` \| (\d+) \|", section, flags=re.M)}


def test_no_module_over_600_lines() -> None:
    long = [f"{p.relative_to(ROOT)}: {n}" for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE]
    assert not long, long


def test_functions_over_80_lines_are_the_documented_exceptions() -> None:
    found: dict[str, int] = {}
    for p in _modules():
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION:
                    found[f"{p.relative_to(ROOT)}: {node.name}"] = n
    documented = _documented()
    assert set(found) == set(documented), {
        "undocumented": sorted(set(found) - set(documented)),
        "no longer long": sorted(set(documented) - set(found)),
    }
    grown = {k: (documented[k], n) for k, n in found.items() if n > documented[k]}
    assert not grown, f"longer than the table says (table, now): {grown}"
