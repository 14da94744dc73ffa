"""The message contract: JSON Schemas generated from edge/messages.py, committed in schemas/, and
every message of a real run valid against them; a slow subscriber detects its gaps."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from edge import messages
from edge.client import ControlClient, Subscriber
from edge.runtime import Runtime
from edge.settings import RuntimeSettings, settings_from
from tests.helpers.models import deploy_dir

REPO = Path(__file__).resolve().parents[1]
ACTIONS = {
    "background": ["a shape staying still"],
    "actions": [{"name": "left", "descriptions": "something moving left"}],
}


def validators() -> dict[str, Any]:
    out = {}
    for name in messages.json_schemas():
        schema = json.loads((REPO / "schemas" / f"{name}.json").read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        out[name] = jsonschema.Draft202012Validator(schema)
    return out


def test_committed_schemas_are_the_generated_ones(tmp_path: Path) -> None:
    """schemas/*.json == `cezsar schemas --out` (regenerate with: python -m cezsar schemas --out schemas)."""
    from typer.testing import CliRunner

    from cezsar.cli import app

    res = CliRunner().invoke(app, ["schemas", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    generated = sorted(p.name for p in tmp_path.glob("*.json"))
    assert generated == sorted(p.name for p in (REPO / "schemas").glob("*.json"))
    for name in generated:
        assert (tmp_path / name).read_text() == (REPO / "schemas" / name).read_text(), name


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cezsar.data.synthetic import render_stream

    p = tmp_path_factory.mktemp("schemas") / "v.mp4"
    render_stream(p, [("staying still", 1.5), ("moving left", 3.0), ("staying still", 1.5)], seed=3)
    return p


def _cfg(tmp_path: Path, video: Path, **kw: Any) -> RuntimeSettings:
    actions = tmp_path / "actions.yaml"
    actions.write_text(yaml.safe_dump(ACTIONS))
    base: dict[str, Any] = dict(
        deploy=deploy_dir(),
        source=[f"cam={video}"],
        actions=actions,
        pub="tcp://127.0.0.1:*",
        control="none",
        realtime=False,
        status_interval=0.2,
    )
    base.update(kw)
    return settings_from(**base)


def _join(rt: Runtime, sub: Subscriber) -> None:
    for _ in range(100):  # slow joiner: wait until the subscription is live
        rt.publish_status()
        if sub.recv(0.05) is not None:
            break


def test_every_message_of_a_real_run_validates(tmp_path: Path, video: Path) -> None:
    v = validators()
    rt = Runtime(_cfg(tmp_path, video, control="tcp://127.0.0.1:*", media=tmp_path / "media", media_pre_roll=1.0))
    assert rt.control is not None
    sub = Subscriber(rt.publisher.endpoint)
    _join(rt, sub)
    rt.start()  # the control thread (files without real time wait for the main loop: nothing is lost)
    with ControlClient(rt.control.endpoint, 5.0) as ctl:
        replies = [ctl.list(), ctl.request({"op": "status"})]
    got: list[tuple[str, dict[str, Any]]] = []
    done = threading.Event()

    def listen() -> None:
        while True:
            m = sub.recv(0.3)
            if m is None:
                if done.is_set():
                    return
                continue
            got.append((m.topic, m.data))

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert rt.run() == 0
    done.set()
    t.join(5)
    sub.close()
    kinds = {messages.schema_for_topic(tp) for tp, _ in got}
    assert kinds == {"event", "scores", "status", "media"}, kinds
    for tp, data in got:
        v[messages.schema_for_topic(tp)].validate(data)
        assert data["host"] == rt.outputs.sequencer.host and data["instance"] == rt.outputs.sequencer.instance
    events = [d for _, d in got if d["type"] == "event"]
    assert all(e["clock"] == "media" and e["model"] == rt.manifest.model_hash for e in events)
    assert all(e["actions_version"] == rt.store.version for e in events)
    assert any("media" in e for e in events if e["phase"] == "end")
    for reply in replies:
        v["control-reply"].validate(json.loads(messages.encode_reply(reply)))
    # a field the schema does not know is refused (the schemas are closed for these topics)
    bad = dict(events[0], colour="red")
    with pytest.raises(jsonschema.ValidationError):
        v["event"].validate(bad)


def test_a_slow_subscriber_detects_its_sequence_gap(tmp_path: Path, video: Path) -> None:
    """PUB drops for a subscriber that does not keep up (bounded queues); the seq stamps show it."""
    # inproc (same process, same context): no kernel buffers, the two bounded queues alone decide
    rt = Runtime(_cfg(tmp_path, video, pub="inproc://slow-subscriber", hwm=5, status_interval=0.005, realtime=True))
    slow = Subscriber(rt.publisher.endpoint, rcvhwm=5)
    _join(rt, slow)
    while slow.recv(0.05) is not None:  # drain what the join produced
        pass
    run = threading.Thread(target=rt.run, daemon=True)
    run.start()
    time.sleep(3.0)  # the slow subscriber reads nothing while the runtime publishes
    gaps = messages.GapCounter()
    received = 0
    seqs: list[int] = []
    while True:
        m = slow.recv(1.0)
        if m is None:
            if not run.is_alive():
                break
            continue
        received += 1
        seqs.append(m.data["seq"])
        gaps.see(m.topic, m.data)
        time.sleep(0.01)  # and stays slow
    run.join(30)
    slow.close()
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert gaps.missed > 0 and gaps.gaps, (received, rt.outputs.sequencer.seq, rt.publisher.stats(), seqs[:50])
    assert received + gaps.missed <= rt.outputs.sequencer.seq


def test_the_documented_examples_validate() -> None:
    """Every example message in docs/messages.md is valid against the committed schemas."""
    v = validators()
    n = 0
    for line in (REPO / "docs" / "messages.md").read_text(encoding="utf-8").splitlines():
        if line.split(" ", 1)[0].split(".")[0] in ("event", "scores", "status", "media") and " {" in line:
            topic, data = messages.decode(line.encode("utf-8"))
            v[messages.schema_for_topic(topic)].validate(data)
            n += 1
    assert n >= 6
