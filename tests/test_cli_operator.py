"""What a new operator meets first: help on every option, --version, a missing extra named in one
line, `cezsar actions init`, and a warning for an actions file without background."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from cezsar.cli import app
from edge.actions import load_actions, warnings

REPO = Path(__file__).resolve().parents[1]


def test_every_option_of_every_command_has_help() -> None:
    missing: list[str] = []

    def walk(cmd: object, path: list[str], ctx: object) -> None:
        if hasattr(cmd, "list_commands"):
            for name in cmd.list_commands(ctx):  # type: ignore[attr-defined]
                sub = cmd.get_command(ctx, name)  # type: ignore[attr-defined]
                walk(sub, [*path, name], type(ctx)(sub, parent=ctx))  # type: ignore[call-arg]
            return
        for p in cmd.params:  # type: ignore[attr-defined]
            if p.param_type_name == "option" and not p.help and not getattr(p, "hidden", False):
                missing.append(f"{' '.join(path)} {p.opts[0]}")

    root = typer.main.get_command(app)
    walk(root, ["cezsar"], root.make_context("cezsar", ["--help"], resilient_parsing=True))
    assert not missing, missing


def test_version_and_run_help() -> None:
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.startswith("cezsar ")
    root = typer.main.get_command(app)
    ctx = root.make_context("cezsar", ["--help"], resilient_parsing=True)
    run = {p.name: p for p in root.get_command(ctx, "run").params}  # type: ignore[attr-defined]
    assert run["fps"].default is None and "from its manifest" in run["fps"].help  # not "[default: 0.0]"
    assert run["batch_wait"].help.startswith("Seconds")  # like every other time option
    assert "NAME=" in run["source"].help


def test_a_missing_extra_is_one_line_naming_it() -> None:
    code = (
        "import sys; sys.modules['zmq'] = None\n"
        "from cezsar.cli import main; sys.argv = ['cezsar', 'listen', '--count', '1']; main()"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: this command needs the optional 'edge' dependencies (module zmq is missing): pip install 'cezsar[edge]'"
    ]


def test_actions_init_writes_a_valid_starter_and_check_warns_without_background(tmp_path: Path) -> None:
    f = tmp_path / "actions.yaml"
    res = CliRunner().invoke(app, ["actions", "init", str(f)])
    assert res.exit_code == 0, res.output
    aset = load_actions(f)
    assert aset.background and len(aset.actions) >= 2 and warnings(aset) == []
    res = CliRunner().invoke(app, ["actions", "init", str(f)])
    assert res.exit_code != 0 and "exists" in str(res.exception)
    bare = tmp_path / "bare.yaml"
    bare.write_text("actions:\n  - name: wave\n    descriptions: a hand waving\n")
    res = subprocess.run(
        [sys.executable, "-m", "cezsar", "actions", "check", str(bare)], capture_output=True, text=True, cwd=REPO
    )
    assert res.returncode == 0 and "ok" in res.stdout
    assert "warning:" in res.stderr and "background" in res.stderr
    res = subprocess.run(
        [sys.executable, "-m", "cezsar", "actions", "check", str(f)], capture_output=True, text=True, cwd=REPO
    )
    assert res.returncode == 0 and "warning" not in res.stderr
