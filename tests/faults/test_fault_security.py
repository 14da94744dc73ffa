"""Security: loopback by default (a warning otherwise), CURVE encryption + authentication on both
sockets, and no unpickling of untrusted data anywhere in the code base."""

from __future__ import annotations

import ast
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from cezsar.errors import CezsarError
from edge.client import ControlClient, Subscriber
from edge.endpoints import DEFAULT_CONTROL, DEFAULT_PUB
from edge.security import CurveClient, is_loopback
from edge.settings import ZmqSettings
from tests.helpers.collect import Collector
from tests.helpers.net import free_port
from tests.helpers.procs import ROOT, RunProcess, actions_yaml, run_args


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp) listening on ``port``."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, st = line.split()[1], line.split()[3]
        addr, p = local.split(":")
        if int(p, 16) == port and st == "0A":  # 0A = LISTEN
            out.add(addr)
    return out


def test_loopback_by_default_and_a_warning_otherwise(tmp_path: Path, deploy: Path, long_video: Path) -> None:
    """Subprocess: the PUB socket on 127.0.0.1 (checked in /proc/net/tcp), the control socket on all
    interfaces: a warning names the control socket, none for the loopback one."""
    assert is_loopback(DEFAULT_PUB) and is_loopback(DEFAULT_CONTROL)
    field = ZmqSettings.model_fields
    assert field["pub"].default == DEFAULT_PUB and field["control"].default == DEFAULT_CONTROL
    assert not is_loopback("tcp://*:5556") and not is_loopback("tcp://0.0.0.0:1") and not is_loopback("tcp://eth0:1")
    actions = tmp_path / "actions.yaml"
    actions.write_text(actions_yaml(["moving"]))
    pp, cp = free_port(), free_port()
    rt = RunProcess(
        run_args(deploy, [f"v={long_video}"], actions, f"tcp://127.0.0.1:{pp}", f"tcp://0.0.0.0:{cp}"), tmp_path / "log"
    )
    try:
        rt.wait_log("publish: ", 60)
        assert _listening(pp) == {"0100007F"}  # 127.0.0.1 only
        assert _listening(cp) == {"00000000"}
        log = rt.log()
        assert f"--control tcp://0.0.0.0:{cp}: listening beyond this machine WITHOUT authentication" in log
        assert "--pub tcp://127.0.0.1" not in log.split("WITHOUT")[0].rsplit("\n", 1)[-1]
        assert log.count("WITHOUT authentication") == 1
    finally:
        rt.kill()


def _keys(out: Path, name: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "cezsar", "keys", str(out), "--name", name], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr


def test_curve_only_allowed_clients_get_messages_and_control(tmp_path: Path, deploy: Path, long_video: Path) -> None:
    """Subprocess with ``--curve-secret/--curve-clients``: a plain subscriber and one with an unknown key
    receive nothing, an allowed one receives messages; the same on the control socket (no reply vs a
    reply); `cezsar listen` and `cezsar actions list` with the client's keys work."""
    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    for name in ("server", "alice", "mallory"):
        _keys(keys, name)
    for name in ("server", "alice", "mallory"):
        assert stat.S_IMODE((keys / f"{name}.key_secret").stat().st_mode) == 0o600
        assert "secret-key" not in (keys / f"{name}.key").read_text()
    # refuses to overwrite a key
    r = subprocess.run(
        [sys.executable, "-m", "cezsar", "keys", str(keys), "--name", "alice"], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 2 and "exists" in r.stderr
    allowed.mkdir()
    (allowed / "alice.key").write_bytes((keys / "alice.key").read_bytes())
    actions = tmp_path / "actions.yaml"
    actions.write_text(actions_yaml(["moving"]))
    pub, ctl = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    alice = CurveClient.load(keys / "alice.key_secret", keys / "server.key")
    mallory = CurveClient.load(keys / "mallory.key_secret", keys / "server.key")
    plain_col = Collector(pub)
    mallory_col = Collector(pub, curve=mallory)
    alice_col = Collector(pub, curve=alice)
    args = run_args(deploy, [f"v={long_video}"], actions, pub, ctl, "--status-interval", "0.25")
    args += ["--curve-secret", str(keys / "server.key_secret"), "--curve-clients", str(allowed)]
    rt = RunProcess(args, tmp_path / "log")
    try:
        st = alice_col.wait("status", lambda d: d["streams"]["v"]["windows"] >= 2, 60)
        assert st["security"] == {"curve": True, "allowed_clients": 1}
        time.sleep(1.0)
        assert len(alice_col.of("scores")) >= 2
        assert plain_col.msgs == [] and mallory_col.msgs == []
        # a plain ZeroMQ subscriber with a raw socket: nothing either
        with Subscriber(pub, ["status"]) as raw:
            assert raw.recv(1.0) is None
        # control: only alice gets replies
        for curve in (None, mallory):
            with ControlClient(ctl, timeout=1.0, curve=curve) as c:
                try:
                    c.ping()
                    raise AssertionError("an unauthenticated control client got a reply")
                except CezsarError as e:
                    assert "no reply" in str(e)
        with ControlClient(ctl, timeout=10, curve=alice) as c:
            assert c.list()["actions"][0]["name"] == "moving"
        # the command-line clients with alice's keys
        curve_args = ["--curve-secret", str(keys / "alice.key_secret"), "--curve-server", str(keys / "server.key")]
        r = subprocess.run(
            [sys.executable, "-m", "cezsar", "listen", pub, "-t", "status", "-n", "1", "--timeout", "10", *curve_args],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0 and '"type": "status"' in r.stdout, r.stderr
        r = subprocess.run(
            [sys.executable, "-m", "cezsar", "actions", "list", "--control", ctl, "--json", *curve_args],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0 and '"moving"' in r.stdout, r.stderr
        r = subprocess.run(
            [sys.executable, "-m", "cezsar", "listen", pub, "-n", "1", "--timeout", "2"],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )  # fmt: skip
        assert r.returncode == 1  # without keys: nothing arrives
        assert plain_col.msgs == [] and mallory_col.msgs == []
        assert rt.alive()
    finally:
        rt.kill()
        for c in (plain_col, mallory_col, alice_col):
            c.close()


# -- no pickle ------------------------------------------------------------------------------------
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            out += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES:
            out.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            kw = {k.arg: k.value for k in node.keywords}

            def true(key: str, kw: dict = kw) -> bool:  # type: ignore[type-arg]
                v = kw.get(key)
                return isinstance(v, ast.Constant) and v.value is True

            if owner == "torch" and name == "load" and not true("weights_only"):
                out.append(f"{where}: torch.load without weights_only=True")
            if name == "load" and owner in ("np", "numpy") and true("allow_pickle"):
                out.append(f"{where}: np.load(allow_pickle=True)")
            if name in ("read_pickle", "unsafe_load", "full_load") or (owner == "yaml" and name == "load"):
                out.append(f"{where}: {owner}.{name}")
    return out


def test_no_unpickling_anywhere() -> None:
    """Static scan of every Python file of the project (not .venv): no pickle-family imports, no
    torch.load without weights_only=True, no np.load(allow_pickle=True), no unsafe YAML loading.
    Models load from safetensors/ONNX/JSON only."""
    files = [
        p
        for top in ("cezsar", "edge", "converter", "training", "calibration", "scripts", "tests")
        for p in (ROOT / top).rglob("*.py")
        if ".venv" not in p.parts
    ]
    assert len(files) > 30
    offences = [o for p in files for o in _offences(p)]
    assert offences == [], "\n".join(offences)
    # the scan itself catches what it should
    probe = ROOT / "tests" / "faults" / f".probe_{os.getpid()}.py"
    probe.write_text(
        "import pickle\nimport torch\ntorch.load('x')\nimport numpy as np\nnp.load('x', allow_pickle=True)\n"
    )
    try:
        assert len(_offences(probe)) == 3
    finally:
        probe.unlink()
