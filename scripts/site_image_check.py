"""Run the edge image against a stream and mosquitto and check it from the host (scripts/site_image.sh).

Two containers in one network namespace, its ports published on the host's loopback only: mosquitto
(password file, no anonymous clients) and the edge image with packaging/container/site.yaml (HTTP on
0.0.0.0 with a token, ZeroMQ PUB on 0.0.0.0, MQTT to the broker beside it; only the sources and the
broker's host are changed for the check), run read-only, with every capability dropped and
no-new-privileges. The stream is a synthetic video (two actions between stretches of staying still) and
the deploy folder is the bundled demo model exported on the host (this needs torch, which the image does
not have); both are mounted read-only.

Checked from the host: /healthz (no token) and the time until it answers, /readyz and /metrics refused
without the token and served with it, the image's HEALTHCHECK (`podman healthcheck run`), events and status
over ZeroMQ and over MQTT (authenticated; an anonymous client is refused), a snapshot per event in the state
volume, a clean exit on SIGTERM (`podman stop`), neither secret in the container's log, and no pip
configuration or build CA in the image. Prints a JSON report and writes it to --report.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
ULIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, cond: Callable[[], bool], timeout: float, step: float = 0.25) -> float:
    """Seconds until ``cond()`` held; raises after ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(step)
    raise SystemExit(f"site_image_check: timed out after {timeout:.0f} s waiting for {what}")


def http_get(url: str, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=3) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


class Podman:
    def __init__(self, runtime: str) -> None:
        self.base = ["podman", "--runtime", runtime]

    def __call__(self, *args: str, check: bool = True, env: dict[str, str] | None = None) -> str:
        p = subprocess.run([*self.base, *args], capture_output=True, text=True, env=env, timeout=300)
        if check and p.returncode != 0:
            raise SystemExit(f"site_image_check: podman {' '.join(args[:3])} failed: {p.stderr.strip()[-2000:]}")
        return p.stdout


class MqttWatch:
    """A paho subscriber on the host: every message under the prefix, by topic."""

    def __init__(self, port: int, username: str | None, password: str | None) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes]] = []
        self.refused: int | None = None
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"site-check-{secrets.token_hex(3)}")
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.refused = int(reason.value)
        else:
            self.refused = 0
            client.subscribe("cezsar/#", qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload))

    def on(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p in self.messages if t == topic]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def prepare(site: Site) -> dict[str, Any]:
    """Deploy folder, video, actions, site files (edge image, unit) and mosquitto's password file."""
    from cezsar.app.demo import write_actions
    from cezsar.data.synthetic import IDLE, default_stream_plan, render_stream
    from converter.export import export_model

    work = site.work
    t0 = time.monotonic()
    export_model(REPO / "cezsar" / "assets" / "demo_model", work / "deploy")
    export_s = time.monotonic() - t0
    moves = [m for m, _ in default_stream_plan(0) if m != IDLE][:2]
    plan = [(IDLE, 5.0), (moves[0], 9.0), (IDLE, 5.0), (moves[1], 9.0), (IDLE, 6.0)]
    for d in ("videos", "state", "etc", "unit", "mosquitto"):
        (work / d).mkdir()
    truth = render_stream(work / "videos" / "entrance.mp4", plan, seed=0)
    write_actions(work / "state" / "actions.yaml", plan)
    shutil.copy(work / "state" / "actions.yaml", work / "unit" / "actions.yaml")
    source = [{"name": "entrance", "url": "/videos/entrance.mp4"}]
    for kind, name in (("container", "etc"), ("systemd", "unit")):
        cfg = yaml.safe_load((REPO / "packaging" / kind / "site.yaml").read_text())
        cfg["sources"] = source  # and the broker beside it, in the same network namespace:
        cfg["outputs"]["mqtt"]["host"] = "127.0.0.1"
        (work / name / "site.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = (REPO / "packaging" / "systemd" / "cezsar.env").read_text()
    env = env.replace("CEZSAR_HTTP_TOKEN=\n", f"CEZSAR_HTTP_TOKEN={site.token}\n")
    env = env.replace("CEZSAR_MQTT_PASSWORD=\n", f"CEZSAR_MQTT_PASSWORD={site.password}\n")
    (work / "unit" / "cezsar.env").write_text(env)
    (work / "unit" / "cezsar.env").chmod(0o600)
    mq = work / "mosquitto"
    shutil.copy(REPO / "packaging" / "container" / "mosquitto.conf", mq / "mosquitto.conf")
    # the password goes in through the environment of a one-off container, never on a command line
    site.runtime(
        "run",
        "--rm",
        *ULIMITS,
        "-e",
        "MQ_PASSWORD",
        "-v",
        f"{mq}:/mosquitto/config:U",
        "--entrypoint",
        "sh",
        site.args.mosquitto_image,
        "-c",
        f'mosquitto_passwd -b -c /mosquitto/config/passwd {site.user} "$MQ_PASSWORD"',
        env={**os.environ, "MQ_PASSWORD": site.password},
    )
    for folder in (work, work / "deploy", work / "videos", work / "etc"):
        folder.chmod(0o755)  # the container's user reads the read-only mounts
    return {"plan": plan, "truth": truth, "export_s": round(export_s, 1)}


def image_facts(runtime: Podman, image: str) -> dict[str, Any]:
    info = json.loads(runtime("image", "inspect", image))[0]
    cfg = info.get("Config", {})
    probe = (
        "import importlib.util as u, os, pathlib, sys\n"
        "print('torch', u.find_spec('torch') is not None)\n"
        "print('pipconf', any(os.path.exists(p) for p in ('/etc/pip.conf', '/etc/xdg/pip', '/run/secrets/pipconf', "
        "os.path.expanduser('~/.config/pip'))))\n"
        "print('pip_env', sorted(k for k in os.environ if k.startswith('PIP_')))\n"
        "print('ca_sha', __import__('hashlib').sha256(pathlib.Path('/etc/ssl/certs/ca-certificates.crt')"
        ".read_bytes()).hexdigest())\n"
    )
    out = runtime("run", "--rm", *ULIMITS, "--health-cmd", "none", "--entrypoint", "python3", image, "-c", probe)
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
    import hashlib

    host_ca = Path("/etc/ssl/certs/ca-certificates.crt")
    return {
        "size_bytes": int(info["Size"]),
        "size_mb": round(int(info["Size"]) / 1e6, 1),
        "user": cfg.get("User"),
        "healthcheck": bool(info.get("Healthcheck") or cfg.get("Healthcheck")),
        "torch": lines["torch"] == "True",
        "pip_config_in_image": lines["pipconf"] == "True" or lines["pip_env"] != "[]",
        "host_ca_bundle_in_image": host_ca.exists()
        and hashlib.sha256(host_ca.read_bytes()).hexdigest() == lines["ca_sha"],
    }


@dataclass
class Site:
    """What the phases share: podman, the work folder, the secrets, the host ports, the MQTT subscriber."""

    args: argparse.Namespace
    runtime: Podman
    work: Path
    name: str
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    user: str = "cezsar"
    http_port: int = field(default_factory=free_port)
    pub_port: int = field(default_factory=free_port)
    mq_port: int = field(default_factory=free_port)
    watch: MqttWatch | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def mqtt_watch(self) -> MqttWatch:
        if self.watch is not None:
            self.watch.close()
        self.watch = MqttWatch(self.mq_port, self.user, self.password)
        wait_for("the MQTT subscriber", lambda: self.watch is not None and self.watch.refused == 0, 10)
        return self.watch

    def http_checks(self, report: dict[str, Any]) -> None:
        report["readyz_without_token"] = http_get(f"{self.base}/readyz")[0]
        report["metrics_without_token"] = http_get(f"{self.base}/metrics")[0]

    def frames(self, report: dict[str, Any]) -> None:
        code, body = http_get(f"{self.base}/metrics", self.token)
        lines = [ln for ln in body.decode().splitlines() if ln.startswith('cezsar_frames_in_total{stream="entrance"}')]
        report["metrics_with_token"] = code
        report["frames_in"] = float(lines[0].split()[-1]) if lines else 0.0


def start_broker(site: Site, report: dict[str, Any]) -> None:
    """mosquitto owns the network namespace the others join (like a pod, without its infra container)."""
    site.runtime(
        "run",
        "-d",
        "--name",
        f"{site.name}-mosquitto",
        *ULIMITS,
        "-p",
        f"127.0.0.1:{site.http_port}:8080",
        "-p",
        f"127.0.0.1:{site.pub_port}:5556",
        "-p",
        f"127.0.0.1:{site.mq_port}:1883",
        "-v",
        f"{site.work / 'mosquitto'}:/mosquitto/config:ro",
        site.args.mosquitto_image,
    )
    wait_for("mosquitto", lambda: _connects(site.mq_port), 30)
    anon = MqttWatch(site.mq_port, None, None)
    wait_for("mosquitto's answer to an anonymous client", lambda: anon.refused is not None, 10)
    report["mqtt_anonymous_refused"] = anon.refused != 0
    anon.close()


def edge_phase(site: Site) -> dict[str, Any]:
    """The edge image as compose runs it: read-only, no capabilities, secrets from the environment."""
    from edge.client import Subscriber

    r: dict[str, Any] = {}
    watch = site.mqtt_watch()
    zsub = Subscriber(f"tcp://127.0.0.1:{site.pub_port}", ["event.", "status"])
    env = {**os.environ, "CEZSAR_HTTP_TOKEN": site.token, "CEZSAR_MQTT_PASSWORD": site.password}
    ctr, w = f"{site.name}-cezsar", site.work
    t0 = time.monotonic()
    site.runtime(
        "run",
        "-d",
        "--network",
        f"container:{site.name}-mosquitto",
        "--name",
        ctr,
        *ULIMITS,
        "--read-only",
        "--cap-drop",
        "all",
        "--security-opt",
        "no-new-privileges",
        "--health-interval",
        "disable",  # no systemd timers here; `podman healthcheck run` below
        "-e",
        "CEZSAR_HTTP_TOKEN",
        "-e",
        "CEZSAR_MQTT_PASSWORD",
        "-v",
        f"{w / 'etc' / 'site.yaml'}:/etc/cezsar/site.yaml:ro",
        "-v",
        f"{w / 'deploy'}:/deploy:ro",
        "-v",
        f"{w / 'videos'}:/videos:ro",
        "-v",
        f"{w / 'state'}:/var/lib/cezsar:U",
        site.args.image,
        env=env,
    )
    r["time_to_healthy_s"] = round(wait_for("/healthz", lambda: http_get(f"{site.base}/healthz")[0] == 200, 120), 1)
    ready = lambda: http_get(f"{site.base}/readyz", site.token)[0] == 200  # noqa: E731
    r["time_to_ready_s"] = round(wait_for("/readyz", ready, 120), 1)
    site.http_checks(r)
    hc = subprocess.run([*site.runtime.base, "healthcheck", "run", ctr], capture_output=True, text=True)
    r["podman_healthcheck"] = "healthy" if hc.returncode == 0 else f"rc {hc.returncode}: {hc.stderr}"
    msgs: list[dict[str, Any]] = []

    def events_everywhere() -> bool:
        while (m := zsub.recv(0)) is not None:
            msgs.append(m.data)
        ends = [d for d in msgs if d.get("type") == "event" and d.get("phase") == "end"]
        return len(ends) >= 1 and len(watch.on("cezsar/events")) >= 1

    r["time_to_first_event_s"] = round(wait_for("an event over ZeroMQ and MQTT", events_everywhere, 120), 1)
    site.frames(r)
    t1 = time.monotonic()
    site.runtime("stop", "-t", "30", ctr)
    r["stop_s"] = round(time.monotonic() - t1, 1)
    r["exit_code"] = int(site.runtime("inspect", "--format", "{{.State.ExitCode}}", ctr).strip())
    r["run_s"] = round(time.monotonic() - t0, 1)
    while (m := zsub.recv(0.5)) is not None:
        msgs.append(m.data)
    zsub.close()
    time.sleep(1.0)
    logs = subprocess.run([*site.runtime.base, "logs", ctr], capture_output=True, text=True, timeout=60)
    log = logs.stdout + logs.stderr
    events = [d for d in msgs if d.get("type") == "event"]
    r["zmq"] = {"events": len(events), "status": sum(d.get("type") == "status" for d in msgs)}
    r["mqtt"] = {"events": len(watch.on("cezsar/events")), "status": len(watch.on("cezsar/status"))}
    r["media_files"] = sum(p.is_file() for p in (w / "state" / "media").rglob("*"))
    r["secrets_in_log"] = site.token in log or site.password in log
    r["traceback_in_log"] = "Traceback" in log
    r["log_tail"] = log.strip().splitlines()[-4:]
    site.runtime("rm", "-f", ctr)
    return r


def unit_phase(site: Site) -> dict[str, Any]:
    """packaging/systemd/cezsar.service started by a real systemd (Containerfile.unit-check), the host's
    ports and broker reused: /healthz, the token, MQTT events, the dynamic user, a clean `systemctl stop`."""
    r: dict[str, Any] = {}
    img = "localhost/cezsar-unit-check:dev"
    t0 = time.monotonic()
    site.runtime(
        "build",
        "--isolation",
        "chroot",
        *ULIMITS,
        "--build-arg",
        f"BASE={site.args.base}",
        "--build-arg",
        f"IMAGE={site.args.image}",
        "-f",
        str(REPO / "packaging/systemd/Containerfile.unit-check"),
        "-t",
        img,
        str(REPO / "packaging/systemd"),
    )
    r["harness_build_s"] = round(time.monotonic() - t0, 1)
    ctr, w = f"{site.name}-unit", site.work
    site.runtime(
        "create",
        "--name",
        ctr,
        *ULIMITS,
        "--systemd",
        "always",
        "--privileged",
        "--network",
        f"container:{site.name}-mosquitto",
        "-v",
        f"{w / 'videos'}:/videos:ro",
        img,
    )
    for src, dst in (
        (w / "unit" / "site.yaml", "/etc/cezsar/site.yaml"),
        (w / "unit" / "cezsar.env", "/etc/cezsar/cezsar.env"),
        (w / "deploy", "/var/lib/private/cezsar/deploy"),
        (w / "unit" / "actions.yaml", "/var/lib/private/cezsar/actions.yaml"),
    ):
        site.runtime("cp", str(src), f"{ctr}:{dst}")
    site.runtime("start", ctr)
    sh = lambda cmd: site.runtime("exec", ctr, "sh", "-c", cmd, check=False).strip()  # noqa: E731
    wait_for("systemd in the container", lambda: sh("systemctl is-system-running") in ("running", "degraded"), 60)
    r["verify"] = sh("systemd-analyze verify /etc/systemd/system/cezsar.service 2>&1; echo rc=$?")
    watch = site.mqtt_watch()
    t1 = time.monotonic()
    sh("systemctl enable --now cezsar.service")
    r["time_to_healthy_s"] = round(wait_for("/healthz", lambda: http_get(f"{site.base}/healthz")[0] == 200, 120), 1)
    site.http_checks(r)
    pid = sh("systemctl show -p MainPID --value cezsar")
    r["service_uid"] = sh(f"stat -c %u /proc/{pid}")
    r["security"] = sh("systemd-analyze security cezsar.service | tail -1")
    event = lambda: len(watch.on("cezsar/events")) > 0  # noqa: E731
    r["time_to_first_event_s"] = round(wait_for("an event over MQTT", event, 120), 1)
    site.frames(r)
    sh("systemctl stop cezsar.service")
    r["run_s"] = round(time.monotonic() - t1, 1)
    r["service"] = sh("systemctl show -p Result -p ExecMainStatus -p NRestarts cezsar | sort | tr '\\n' ' '")
    r["media_files"] = int(sh("find /var/lib/private/cezsar/media -type f | wc -l") or 0)
    journal = sh("journalctl -u cezsar --no-pager")
    r["secrets_in_journal"] = site.token in journal or site.password in journal
    r["errors_in_journal"] = [ln for ln in journal.splitlines() if "Traceback" in ln or " ERROR " in ln][:5]
    r["mqtt_events"] = len(watch.on("cezsar/events"))
    site.runtime("rm", "-f", "-t", "10", ctr)
    return r


def run_check(args: argparse.Namespace) -> dict[str, Any]:
    runtime = Podman(args.runtime)
    report: dict[str, Any] = {"image": args.image, "image_facts": image_facts(runtime, args.image)}
    work = Path(tempfile.mkdtemp(prefix="cezsar-site-check."))
    site = Site(args, runtime, work, f"cezsar-check-{secrets.token_hex(3)}")
    try:
        report.update(prepare(site))
        start_broker(site, report)
        report["edge"] = edge_phase(site)
        if args.unit:
            report["unit"] = unit_phase(site)
    finally:
        if site.watch is not None:
            site.watch.close()
        for c in ("cezsar", "unit", "mosquitto"):  # one by one: podman rm stops at a name already gone
            runtime("rm", "-f", "-t", "5", f"{site.name}-{c}", check=False)
        if args.keep:
            print(f"site_image_check: kept {site.work}", file=sys.stderr)
        else:
            subprocess.run(["rm", "-rf", str(site.work)], check=False)
    return report


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def verdict(r: dict[str, Any]) -> list[str]:
    """What failed, one line each (empty: passed)."""
    f, e, u = r["image_facts"], r.get("edge", {}), r.get("unit")
    checks = {
        "the image runs as a non-root user": f["user"] not in (None, "", "0", "root", "0:0"),
        "the image has a HEALTHCHECK": f["healthcheck"],
        "the image has no torch": not f["torch"],
        "no pip configuration in the image": not f["pip_config_in_image"],
        "the build machine's CA bundle is not in the image": not f["host_ca_bundle_in_image"],
        "an anonymous MQTT client is refused": r.get("mqtt_anonymous_refused") is True,
        "edge: /readyz and /metrics need the token": (e.get("readyz_without_token"), e.get("metrics_without_token"))
        == (401, 401),
        "edge: /metrics with the token": e.get("metrics_with_token") == 200 and e.get("frames_in", 0) > 20,
        "edge: podman healthcheck run": e.get("podman_healthcheck") == "healthy",
        "edge: events over ZeroMQ": e.get("zmq", {}).get("events", 0) >= 2 and e["zmq"]["status"] >= 1,
        "edge: events over MQTT": e.get("mqtt", {}).get("events", 0) >= 2 and e["mqtt"]["status"] >= 1,
        "edge: a snapshot and a clip per event": e.get("media_files", 0) >= 2,
        "edge: clean exit on SIGTERM": e.get("exit_code") == 0,
        "edge: no secret in the log": e.get("secrets_in_log") is False,
        "edge: no traceback in the log": e.get("traceback_in_log") is False,
    }
    if u is not None:
        checks |= {
            "unit: systemd-analyze verify": u.get("verify") == "rc=0",
            "unit: /readyz and /metrics need the token": (u.get("readyz_without_token"), u.get("metrics_without_token"))
            == (401, 401),
            "unit: /metrics with the token": u.get("metrics_with_token") == 200 and u.get("frames_in", 0) > 20,
            "unit: runs as a dynamic user": u.get("service_uid", "0") not in ("", "0"),
            "unit: events over MQTT": u.get("mqtt_events", 0) >= 1,
            "unit: a snapshot and a clip per event": u.get("media_files", 0) >= 2,
            "unit: clean systemctl stop": u.get("service", "").split()
            == ["ExecMainStatus=0", "NRestarts=0", "Result=success"],
            "unit: no secret in the journal": u.get("secrets_in_journal") is False,
            "unit: no error in the journal": u.get("errors_in_journal") == [],
        }
    return [name for name, ok in checks.items() if not ok]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--mosquitto-image", required=True)
    ap.add_argument("--runtime", default="runc")
    ap.add_argument("--base", default="localhost/cezsar-base:bookworm", help="base image of the unit's harness")
    ap.add_argument("--unit", action=argparse.BooleanOptionalAction, default=True, help="also run the systemd unit")
    ap.add_argument("--report", type=Path, default=REPO / "build" / "site_image.json")
    ap.add_argument("--timing", action="append", default=[], help="KEY=SECONDS from the build, for the report")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    git = ["git", "-C", str(REPO)]
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "dirty": bool(subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True).stdout),
        "podman": subprocess.run(["podman", "--version"], capture_output=True, text=True).stdout.strip(),
    }
    for item in args.timing:
        key, _, value = item.partition("=")
        report[key] = None if value in ("", "null") else float(value)
    report.update(run_check(args))
    failed = verdict(report)
    report["failed"] = failed
    report["passed"] = not failed
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    for name in failed:
        print(f"site_image_check: FAILED: {name}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
