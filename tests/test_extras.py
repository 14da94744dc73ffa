"""Missing optional dependencies: named in one line from the declarations (cezsar.extras), no hand list."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cezsar import extras

REPO = Path(__file__).resolve().parents[1]


def test_declarations_answer_with_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extras, "_EXTRAS", {})
    extras.requires("paho.mqtt", extra="mqtt")
    extras.requires("paho", "zmq", extra="edge")  # a later declaration of paho does not replace the first
    assert extras.declared() == {"paho": "mqtt", "zmq": "edge"}
    assert extras.missing_extra(ModuleNotFoundError("x", name="paho.mqtt.client")) == (
        "this command needs the optional 'mqtt' dependencies (module paho is missing): pip install 'cezsar[mqtt]'"
    )
    assert extras.missing_extra(ModuleNotFoundError("x", name="numpy")) is None
    with pytest.raises(ValueError):
        extras.requires("x", extra="")


@pytest.mark.parametrize(
    "blocked,argv,extra",
    [
        ("torch", ["train", "--data", "d", "--out", "m"], "train"),
        ("modelopt", None, "quant"),
        ("tensorrt", None, "tensorrt"),
    ],
)
def test_the_command_names_the_extra_in_one_line(blocked: str, argv: list[str] | None, extra: str) -> None:
    """Through the real command where a verb imports the module (torch for `train`); for the others, the
    command's handler given the error a verb would raise."""
    run = (
        f"sys.argv = ['cezsar', *{argv!r}]; main()"
        if argv
        else f"from cezsar.cli import missing_extra; print(missing_extra(ModuleNotFoundError('x', name={blocked!r})))"
    )
    code = f"import sys; sys.modules[{blocked!r}] = None\nfrom cezsar.cli import main\n{run}"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    line = (
        f"this command needs the optional '{extra}' dependencies (module {blocked} is missing): "
        f"pip install 'cezsar[{extra}]'"
    )
    if argv:
        assert res.returncode == 2 and res.stderr.strip().splitlines() == [f"error: {line}"], res.stderr
    else:
        assert res.returncode == 0 and res.stdout.strip() == line, res.stderr
