"""The site install (packaging/): the systemd unit checked by systemd-analyze (verify, and the offline security
review), its drop-ins, the site configs the unit and the image read, the container recipes and the compose file.

Building and running the image takes minutes and root (scripts/site_image.sh); its recorded result is in
docs/deployment.md. Here: what can be checked in seconds on every CI run.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "packaging"
UNIT = PKG / "systemd" / "cezsar.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (Debian: apt-get install systemd; scripts/test.sh does)"
)
# The unit's ExecStart as installed (docs/deployment.md); verify checks that the program exists and is executable.
INSTALLED = "/opt/cezsar/bin/cezsar"


def _cezsar() -> str:
    exe = Path(sys.executable).with_name("cezsar")
    found = str(exe) if exe.exists() else shutil.which("cezsar")
    assert found, "the cezsar console script of this environment"
    return found


def _unit_copy(folder: Path, drop_ins: tuple[str, ...] = ()) -> Path:
    """The unit with its ExecStart program replaced by this environment's cezsar (the one thing verify checks on
    the machine rather than in the file), and the named drop-ins beside it as the admin would install them."""
    text = UNIT.read_text()
    assert text.count(INSTALLED) == 2, "ExecStartPre and ExecStart run the installed cezsar"
    unit = folder / "cezsar.service"
    unit.write_text(text.replace(INSTALLED, _cezsar()))
    if drop_ins:
        (folder / "cezsar.service.d").mkdir()
        for name in drop_ins:
            shutil.copy(PKG / "systemd" / name, folder / "cezsar.service.d" / name)
    return unit


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    env = {**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_COLORS": "0"}
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=120, env=env)


@needs_analyze
@pytest.mark.parametrize("drop_ins", [(), ("camera.conf",), ("gpu.conf",), ("camera.conf", "gpu.conf")])
def test_unit_verifies_without_a_warning(tmp_path: Path, drop_ins: tuple[str, ...]) -> None:
    """`systemd-analyze verify` exits 0 even for an unknown key or a value it cannot parse (it warns and ignores
    the line), so any output at all fails: every directive of the unit and its drop-ins is one systemd knows."""
    unit = _unit_copy(tmp_path, drop_ins)
    p = _analyze("verify", "--man=no", str(unit))
    assert p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(), p.stdout + p.stderr


@needs_analyze
def test_verify_catches_a_misspelt_directive(tmp_path: Path) -> None:
    """The test above can fail: a misspelt key and a bad boolean are reported."""
    unit = _unit_copy(tmp_path)
    text = unit.read_text().replace("ProtectSystem=", "ProtectSystm=")
    unit.write_text(text.replace("PrivateTmp=yes", "PrivateTmp=y3s"))
    out = _analyze("verify", "--man=no", str(unit))
    text = out.stdout + out.stderr
    assert "ProtectSystm" in text and "y3s" in text, text


def _exposure(unit: Path) -> tuple[float, str]:
    p = _analyze("security", "--offline=yes", "--no-pager", str(unit))
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", p.stdout)
    assert m, p.stdout[-2000:] + p.stderr[-2000:]
    return float(m.group(1)), p.stdout


@needs_analyze
def test_unit_security_exposure(tmp_path: Path) -> None:
    """`systemd-analyze security --offline` rates the unit (0 = fully sandboxed, 10 = not at all); the score
    docs/deployment.md states is the one measured here, and the directives asked for are in force."""
    score, table = _exposure(_unit_copy(tmp_path))
    assert score <= 1.5, table
    docs = (REPO / "docs" / "deployment.md").read_text()
    assert f"exposure level **{score:.1f}**" in docs, f"docs/deployment.md should state the score {score:.1f}"
    for line in (
        "✓ NoNewPrivileges=",
        "✓ ProtectSystem=",
        "✓ PrivateTmp=",
        "✓ User=/DynamicUser=",
        "✓ RestrictAddressFamilies=~AF_PACKET",
        "✓ RestrictAddressFamilies=~…",
        "✓ CapabilityBoundingSet=~CAP_SYS_ADMIN",
        "✓ SystemCallFilter=~@privileged",
    ):
        assert line in table, (line, table)


@needs_analyze
def test_security_review_can_fail(tmp_path: Path) -> None:
    """The score moves: the same unit without its sandbox rates far worse."""
    unit = _unit_copy(tmp_path)
    sandbox = re.compile(r"(Protect|Private|Restrict|System|Capab|No|Dyn)")
    bare = [ln for ln in unit.read_text().splitlines() if not sandbox.match(ln)]
    unit.write_text("\n".join(bare) + "\n")
    score, _ = _exposure(unit)
    assert score >= 8.0


def _directives(path: Path) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), []).append(value.strip())
    return keys


def test_unit_hardening_as_documented() -> None:
    d = _directives(UNIT)
    assert d["DynamicUser"] == ["yes"] and "User" not in d
    assert d["ProtectSystem"] == ["strict"] and d["NoNewPrivileges"] == ["yes"] and d["PrivateTmp"] == ["yes"]
    assert d["CapabilityBoundingSet"] == [""] and d["AmbientCapabilities"] == [""]
    # AF_NETLINK: ZeroMQ lists the interfaces (getifaddrs) when it binds, and aborts without it
    assert d["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX AF_NETLINK"]
    assert d["StateDirectory"] == ["cezsar"] and d["Restart"] == ["on-failure"]
    assert d["ExecStart"] == [f"{INSTALLED} run --config /etc/cezsar/site.yaml"]
    assert d["EnvironmentFile"] == ["-/etc/cezsar/cezsar.env"]
    env = _directives(PKG / "systemd" / "cezsar.env")
    assert env == {"CEZSAR_HTTP_TOKEN": [""], "CEZSAR_MQTT_PASSWORD": [""]}, "the template holds no secret"


@pytest.mark.parametrize("kind", ["systemd", "container"])
def test_site_configs_validate(kind: str) -> None:
    """The site configs the unit and the image read pass the runtime's own schema; HTTP beyond loopback has a
    token from the environment and the MQTT password comes from the environment too."""
    from edge.settings import check_site_config

    cfg = check_site_config(PKG / kind / "site.yaml", files=False)
    http, mqtt = cfg.outputs.http, cfg.outputs.mqtt
    assert http is not None and http.token_env == "CEZSAR_HTTP_TOKEN" and http.token is None
    assert mqtt is not None and mqtt.password_env == "CEZSAR_MQTT_PASSWORD" and mqtt.password is None
    assert str(cfg.actions).startswith("/var/lib/cezsar/"), "actions in the state directory: the console writes back"
    assert cfg.outputs.media is not None and str(cfg.outputs.media.dir).startswith("/var/lib/cezsar/")


def _stages(path: Path) -> list[list[tuple[str, str]]]:
    """Instructions (KEYWORD, rest) per stage, continuation lines joined."""
    lines = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    stages: list[list[tuple[str, str]]] = [[]]
    for line in filter(None, (ln.strip() for ln in text.splitlines())):
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        stages[-1].append((word.upper(), rest.strip()))
    return stages


@pytest.mark.parametrize("name", ["Containerfile.edge", "Containerfile.nvidia"])
def test_containerfiles(name: str) -> None:
    stages = _stages(PKG / "container" / name)
    final = stages[-1]
    kw = dict(final)
    assert re.fullmatch(r"\d+:\d+", kw["USER"]) and not kw["USER"].startswith("0"), "a numeric, non-root user"
    assert kw["ENTRYPOINT"] == '["cezsar"]' and "HEALTHCHECK" in kw
    every = [i for s in stages for i in s]
    # pip's configuration and CA bundle only as build secrets, for the one RUN that installs
    pip_runs = [rest for k, rest in every if k == "RUN" and "pip install" in rest]
    assert len(pip_runs) == 1 and "--mount=type=secret,id=pipconf" in pip_runs[0] and "id=ca" in pip_runs[0]
    for k, rest in every:
        assert not (k in ("COPY", "ADD") and re.search(r"pip\.conf|\.crt|\.pem|secrets", rest)), rest
        assert not (k in ("ENV", "ARG") and re.search(r"PIP_(CERT|CONFIG|INDEX)|TOKEN|PASSWORD", rest)), rest
    extras = re.search(r"/src\[([^\]]+)\]", pip_runs[0])
    assert extras and "train" not in extras.group(1) and "quant" not in extras.group(1), "no torch in the image"
    # what COPY takes from the build context is let in by .dockerignore
    allowed = [ln[1:] for ln in (REPO / ".dockerignore").read_text().splitlines() if ln.startswith("!")]
    for k, rest in every:
        if k == "COPY" and "--from=" not in rest:
            for src in rest.split()[:-1]:
                if not src.startswith("--"):
                    assert (REPO / src).exists() and src in allowed, src


def test_compose_file() -> None:
    """Ports on the host's loopback only, secrets only from the environment (.env), the edge service read-only
    without capabilities, and every file it mounts or builds from is in the repository."""
    folder = PKG / "container"
    doc = yaml.safe_load((folder / "compose.yaml").read_text())
    services = doc["services"]
    assert set(services) == {"mosquitto", "cezsar"}
    gpu = yaml.safe_load((folder / "compose.gpu.yaml").read_text())["services"]
    assert set(gpu) == {"cezsar"} and (folder / "../.." / gpu["cezsar"]["build"]["dockerfile"]).exists()
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
        for key, value in (svc.get("environment") or {}).items():
            assert re.fullmatch(r"\$\{" + key + r":\?[^}]+\}", str(value)), (name, key, value)
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./") and src not in ("./deploy", "./passwd"):  # the site's own: made as the header says
                assert (folder / src).exists(), (name, vol)
        if "build" in svc:
            assert (folder / svc["build"]["context"] / svc["build"]["dockerfile"]).exists(), name
    svc = services["cezsar"]
    assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in svc["security_opt"]
    assert "./site.yaml:/etc/cezsar/site.yaml:ro" in svc["volumes"]
    mosq = (folder / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in mosq and "password_file /mosquitto/config/passwd" in mosq


def test_site_image_script() -> None:
    """The build-and-run script parses, and its verdict fails on what it checks (scripts/site_image_check.py)."""
    assert subprocess.run(["bash", "-n", str(REPO / "scripts" / "site_image.sh")]).returncode == 0
    spec = importlib.util.spec_from_file_location("site_image_check", REPO / "scripts" / "site_image_check.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules[spec.name]
    good = {
        "image_facts": {"user": "10001:10001", "healthcheck": True, "torch": False, "pip_config_in_image": False,
                        "host_ca_bundle_in_image": False},
        "mqtt_anonymous_refused": True,
        "edge": {"readyz_without_token": 401, "metrics_without_token": 401, "metrics_with_token": 200,
                 "frames_in": 100.0, "podman_healthcheck": "healthy", "zmq": {"events": 4, "status": 3},
                 "mqtt": {"events": 4, "status": 3}, "media_files": 2, "exit_code": 0, "secrets_in_log": False,
                 "traceback_in_log": False},
    }  # fmt: skip
    assert mod.verdict(good) == []
    bad = {**good, "edge": {**good["edge"], "secrets_in_log": True, "metrics_without_token": 200}}
    assert mod.verdict(bad) == ["edge: /readyz and /metrics need the token", "edge: no secret in the log"]
