"""The actions file broken while the runtime runs, and hostile requests on the control socket: each is
refused with a message, the last good set stays active, nothing changes."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import zmq

from edge.client import ControlClient
from tests.helpers.collect import Collector
from tests.helpers.net import free_port
from tests.helpers.procs import RunProcess, actions_yaml, run_args


def test_actions_file_broken_while_running(tmp_path: Path, deploy: Path, long_video: Path) -> None:
    """Subprocess. Deleted, emptied, invalid YAML, an unknown key, a 10,000-character description, an alias
    bomb, a recursive alias, a python tag: each is reported in the status (``actions.error``) and the log
    as one line, the active set stays; a valid file afterwards is taken again by itself. The alias bomb
    (it once took the runtime from 367 MB to 1.06 GB and held the store for 11.5 s) leaves the RSS as it
    was."""
    actions = tmp_path / "actions.yaml"
    actions.write_text(actions_yaml(["a", "b"]))
    pub = f"tcp://127.0.0.1:{free_port()}"
    col = Collector(pub, ("status",))
    rt = RunProcess(
        run_args(deploy, [f"v={long_video}"], actions, pub, None, "--status-interval", "0.2"), tmp_path / "log"
    )
    try:
        first = col.wait("status", lambda d: True, 40)["actions"]
        assert first["names"] == ["a", "b"] and first["error"] is None
        good = actions_yaml(["a", "b"])
        faults: list[tuple[str, str | None, str]] = [
            ("deleted", None, "actions file not found"),
            ("emptied", "", "the file is empty"),
            ("invalid YAML", "actions:\n  - name: [a\n", "actions.yaml:"),
            ("unknown key", good + "colour: red\n", "unknown key 'colour'"),
            ("10,000-character description", actions_yaml(["a", "b"], description="x" * 10_000), "10"),
            ("alias bomb", good + BOMB, "refused: more than 50000 values once aliases are expanded"),
            ("recursive alias", good + "x: &x [a, *x]\n", "refused: recursive alias *x"),
            ("python tag", good + "x: !!python/object/apply:os.system [echo hi]\n", "tag !!python/object/apply"),
        ]
        rss: dict[str, int] = {}
        version = first["version"]
        for what, text, expect in faults:
            t0 = time.time()
            rss[f"before {what}"] = _rss_kib(rt.proc.pid)
            if text is None:
                actions.unlink()
            else:
                actions.write_text(text)
            st = col.wait("status", lambda d: d["actions"]["error"] is not None, 5, since=t0)["actions"]
            rss[f"after {what}"] = _rss_kib(rt.proc.pid)
            assert expect in st["error"] and "\n" not in st["error"], (what, st["error"])
            assert st["names"] == ["a", "b"] and st["version"] == version, what
            rt.wait_log("keeping the last good actions (2)", 2)
            # back to a valid file between faults (so each fault is a new problem)
            t1 = time.time()
            actions.write_text(good)
            version = col.wait("status", lambda d: d["actions"]["error"] is None, 5, since=t1)["actions"]["version"]
        assert "description is 10004 characters long (at most 500)" in rt.log()
        grew = rss["after alias bomb"] - rss["before alias bomb"]
        assert grew < 32 * 1024, rss  # KiB: the bomb is refused before a value is built
        assert "Traceback" not in rt.log()
        # a valid edit is taken after all that
        t2 = time.time()
        actions.write_text(actions_yaml(["a", "b", "c"]))
        st = col.wait("status", lambda d: d["actions"]["names"] == ["a", "b", "c"], 5, since=t2)["actions"]
        assert st["error"] is None
        assert rt.alive()
    finally:
        rt.kill()
        col.close()


# a billion laughs: 9 strings, 8 levels of 9 aliases each (435 million values once expanded, 487 bytes)
BOMB = (
    "lol: &l0 ["
    + ", ".join(["lol"] * 9)
    + "]\n"
    + "".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n" for i in range(1, 9))
)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _raw(endpoint: str, payload: Any, timeout: float = 3.0) -> dict[str, Any] | None:
    """Send one request (bytes or multipart list) from a fresh REQ socket; the reply or None."""
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    try:
        if isinstance(payload, list):
            s.send_multipart(payload)
        else:
            s.send(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
        if not s.poll(int(timeout * 1000)):
            return None
        reply: dict[str, Any] = json.loads(s.recv())
        return reply
    finally:
        s.close(0)


def test_hostile_control_requests(tmp_path: Path, deploy: Path, long_video: Path) -> None:
    """Subprocess. Bad JSON, unknown commands, wrong types, huge and deeply nested messages,
    multi-part messages, file paths, a non-ZeroMQ client: every one gets an error reply (or, over
    the 1 MiB transport limit, is dropped), the control socket keeps answering, the active set, its
    version and the actions file stay exactly as they were."""
    actions = tmp_path / "actions.yaml"
    actions.write_text(actions_yaml(["a", "b"]))
    before_file = actions.read_bytes()
    pub, ctl = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    rt = RunProcess(run_args(deploy, [f"v={long_video}"], actions, pub, ctl), tmp_path / "log")
    try:
        with ControlClient(ctl, timeout=30) as c:
            before = c.list()
        hostile: list[tuple[str, Any, str]] = [
            ("not JSON", b"{op: list", "not valid JSON"),
            ("not UTF-8", b"\xff\xfe\x00", "not UTF-8"),
            ("a list", b"[1, 2]", "JSON object"),
            ("a string", b'"list"', "JSON object"),
            ("no op", {"name": "a"}, "unknown op"),
            ("unknown op", {"op": "shutdown"}, "unknown op"),
            ("op of wrong type", {"op": ["list"]}, "unknown op"),
            ("id of wrong type", {"op": "list", "id": {"x": 1}}, "'id'"),
            ("unknown field", {"op": "list", "verbose": True}, "unknown field"),
            ("add without action", {"op": "add"}, "missing 'action'"),
            ("name of wrong type", {"op": "add", "action": {"name": 7, "descriptions": "x"}}, "expected a string"),
            ("threshold as string", {"op": "update", "name": "a", "fields": {"threshold": "0.2"}}, "expected a number"),
            ("threshold out of range", {"op": "update", "name": "a", "fields": {"threshold": 1e9}}, "threshold"),
            ("boolean as number", {"op": "update", "name": "a", "fields": {"cooldown": True}}, "got bool"),
            ("remove a list", {"op": "remove", "name": ["a"]}, "non-empty string"),
            ("remove unknown", {"op": "remove", "name": "zzz"}, "no action named"),
            ("long description", {"op": "add", "action": {"name": "c", "descriptions": "x" * 10_000}}, "at most 500"),
            ("too many descriptions", {"op": "add", "action": {"name": "c", "descriptions": ["x"] * 100}}, "at most"),
            ("load a file", {"op": "load", "path": "/etc/passwd"}, "cannot name files"),
            ("file in an action", {"op": "add", "action": {"name": "c", "descriptions": "x", "file": "/x"}}, "files"),
            ("path in fields", {"op": "update", "name": "a", "fields": {"path": "../../etc/passwd"}}, "files"),
            ("nested deep", {"op": "add", "action": {"name": "c", "descriptions": [[[[[[[["x"]]]]]]]]}}, "nested"),
            ("bracket bomb", b"[" * 60_000, "nested too deeply"),
            ("over 64 KiB", {"op": "add", "action": {"name": "c", "descriptions": "x" * 70_000}}, "bytes (at most"),
            ("multi-part", [b'{"op": "list"}', b"more"], "one frame"),
        ]
        for what, payload, expect in hostile:
            reply = _raw(ctl, payload)
            assert reply is not None, f"{what}: no reply"
            assert reply["ok"] is False and reply["schema"] == "cezsar/1", (what, reply)
            assert expect in reply["error"], (what, reply["error"])
        # over MAXMSGSIZE (1 MiB): ZeroMQ drops the connection, no reply; the socket still serves others
        assert _raw(ctl, b" " * (2 * 1024 * 1024), timeout=1.0) is None
        # a client that does not speak ZeroMQ at all
        host, port = ctl.rsplit("/", 1)[1].split(":")
        with socket.create_connection((host, int(port)), timeout=2) as raw:
            raw.sendall(b"GET / HTTP/1.0\r\n\r\n" + os.urandom(4096))
            time.sleep(0.2)
        with ControlClient(ctl, timeout=10) as c:
            after = c.list()
            assert c.ping()["ok"] is True
        for key in ("actions", "background", "defaults", "version", "file_error"):
            assert after[key] == before[key], key
        assert actions.read_bytes() == before_file
        assert "control: " in rt.log()  # refusals are logged
        assert rt.alive()
    finally:
        rt.kill()
