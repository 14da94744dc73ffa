"""``cezsar demo``: the whole edge pipeline on a rendered synthetic stream, scored against its truth.

1. model: ``--model DIR`` or the bundled cezsar/assets/demo_model (trained on the synthetic world);
2. deploy folder: exported once with converter.export.export_model into a cache keyed by the
   model's weights hash ($CEZSAR_CACHE or ~/.cache/cezsar, then demo/<hash>);
3. stream: cezsar.data.synthetic.render_stream(default_stream_plan(seed)) into a temporary folder;
4. actions file: one action per motion of the plan (its motion_descriptions), exclusive (one object,
   one motion at a time), background = the idle motion's descriptions; its ``defaults:`` are the deploy
   folder's calibrated defaults (probabilities; edge/scorer.py), or Params() in raw margins for a model
   without a score calibration;
5. the runtime runs in this process (no-realtime by default) and publishes over ZeroMQ on
   127.0.0.1 (free ports); a Subscriber in a thread prints the events as they arrive;
6. the received end events are matched with the known segments (same action, temporal IoU >= 0.3,
   one-to-one) and a summary is printed, ending with one JSON line: {"events", "segments", "f1", ...}.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from cezsar.errors import CezsarError
from edge.decisions import Params

log = logging.getLogger("cezsar.demo")

MIN_IOU = 0.3
# thresholds of the demo's actions file for a model without a score calibration: the runtime's raw-margin
# defaults (margins over the idle background, see docs/edge.md), written out so that the file shows them
DEMO_DEFAULTS = Params().to_dict()


def bundled_model_dir() -> Path:
    import cezsar

    return Path(cezsar.__file__).resolve().parent / "assets" / "demo_model"


def cache_root() -> Path:
    env = os.environ.get("CEZSAR_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "cezsar"


def weights_hash(model_dir: Path) -> str:
    w = model_dir / "model.safetensors"
    if not w.is_file():
        raise CezsarError(f"{model_dir}: not a model folder (no model.safetensors)")
    from cezsar.deploy.manifest import file_sha256

    return file_sha256(w)


def deploy_key(model_dir: Path) -> str:
    """The demo deploy cache's key: the weights, the config (what the model was trained on goes into the
    manifest) and the score calibration (a recalibrated model re-exports)."""
    import hashlib

    from cezsar.deploy.layout import calibration_name
    from cezsar.deploy.manifest import file_sha256

    extra = [file_sha256(p) for p in (model_dir / "config.json", model_dir / calibration_name()) if p.is_file()]
    return hashlib.sha256((weights_hash(model_dir) + "".join(extra)).encode()).hexdigest()


def ensure_deploy(model_dir: Path, root: Path | None = None) -> Path:
    """The cached deploy folder of ``model_dir``, exporting it first when absent or stale."""
    from cezsar.deploy.layout import PARTS, TOKENIZER
    from cezsar.deploy.manifest import load_manifest

    model_dir = Path(model_dir)
    digest = weights_hash(model_dir)
    deploy = (root or cache_root()) / "demo" / deploy_key(model_dir)[:16]
    try:
        m = load_manifest(deploy)
        if m.model_hash == digest:
            for key in (*PARTS, TOKENIZER):
                m.path(deploy, key)
            return deploy
    except CezsarError:
        pass
    try:
        from converter.export import export_model
    except ImportError as e:
        raise CezsarError(
            f"exporting the demo model needs the converter and torch ({e.name} is missing): pip install 'cezsar[train]'"
        ) from None
    log.info("exporting %s to %s (once per model)", model_dir, deploy)
    export_model(model_dir, deploy)
    return deploy


def demo_defaults(deploy: Path) -> dict[str, float]:
    """The defaults the demo's actions file shows: the deploy folder's calibrated ones (exclusive decisions
    over a background), else the raw-margin Params()."""
    from cezsar.deploy.manifest import load_manifest
    from edge.scorer import deploy_calibration

    cal = deploy_calibration(deploy, load_manifest(deploy))
    return cal.params("margin", exclusive=True).to_dict() if cal is not None else dict(DEMO_DEFAULTS)


def write_actions(path: Path, plan: list[tuple[str, float]], defaults: dict[str, float] | None = None) -> list[str]:
    from cezsar.data.synthetic import IDLE, motion_descriptions

    motions = list(dict.fromkeys(m for m, _ in plan if m != IDLE))
    doc = {
        "defaults": dict(defaults if defaults is not None else DEMO_DEFAULTS),
        "background": motion_descriptions(IDLE),
        "exclusive": True,  # one object on screen: one motion at a time
        "actions": [{"name": m, "descriptions": motion_descriptions(m)} for m in motions],
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return motions


class _Listener(threading.Thread):
    """A real ZeroMQ subscriber: collects events and the final status, prints events as they come."""

    def __init__(self, endpoint: str, echo: bool = True) -> None:
        super().__init__(name="demo-listener", daemon=True)
        from edge.client import Subscriber

        self.sub = Subscriber(endpoint, ["event.", "status"])
        self.echo = echo
        self.events: list[dict[str, Any]] = []
        self.statuses = 0
        self.final: dict[str, Any] | None = None
        self.ready = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        try:
            while not self.done.is_set():
                msg = self.sub.recv(0.2)
                if msg is None:
                    continue
                self.ready.set()
                if msg.type == "status":
                    self.statuses += 1
                    if msg.data.get("final"):
                        self.final = msg.data
                        break
                elif msg.type == "event":
                    self.events.append(msg.data)
                    if self.echo and msg.data["phase"] != "update":
                        d = msg.data
                        span = (
                            f"{d['start']:6.2f} - {d['end']:6.2f} s" if d["end"] is not None else f"{d['start']:6.2f} s"
                        )
                        print(f"  event {d['phase']:<5} {d['action']:<14} {span}  peak {d['peak']:+.3f}", flush=True)
        finally:
            self.sub.close()


def _model_dir(model: Path | None) -> Path:
    model_dir = Path(model) if model is not None else bundled_model_dir()
    if not (model_dir / "config.json").is_file():
        where = "--model" if model is not None else "the bundled demo model"
        raise CezsarError(
            f"{model_dir}: {where} is not a trained model folder (config.json + model.safetensors); "
            "pass --model DIR, e.g. the output of `cezsar train`"
        )
    return model_dir


def _listened_run(rt: Any, echo: bool) -> tuple[_Listener, int, float]:
    """Run the runtime to the end of its file with a ZeroMQ subscriber listening: (listener, exit code, s)."""
    listener = _Listener(rt.publisher.endpoint, echo)
    listener.start()
    # PUB/SUB "slow joiner": publish status until the subscriber hears one, then start streaming
    deadline = time.time() + 10
    while not listener.ready.is_set() and time.time() < deadline:
        rt.publish_status()
        listener.ready.wait(0.05)
    if not listener.ready.is_set():
        rt.close()
        raise CezsarError(f"demo: the subscriber got nothing from {rt.publisher.endpoint}")
    t_run = time.time()
    code = rt.run()
    seconds = time.time() - t_run
    listener.join(5.0)
    listener.done.set()
    return listener, code, seconds


def _print_matches(segments: list[dict[str, Any]], ended: list[dict[str, Any]], result: dict[str, Any]) -> None:
    print("\nsegments (truth) vs events (received over ZeroMQ):", flush=True)
    by_seg = {m["segment"]: m for m in result["matches"]}
    for j, s in enumerate(segments):
        m = by_seg.get(j)
        got = f"matched, IoU {m['iou']:.2f}" if m else "missed"
        print(f"  {s['action']:<14} {s['start']:6.2f} - {s['end']:6.2f} s  {got}")
    matched_events = {m["event"] for m in result["matches"]}
    for i, e in enumerate(ended):
        if i not in matched_events:
            print(f"  false alarm: {e['action']:<14} {e['start']:6.2f} - {e['end']:6.2f} s")


def run_demo(
    model: Path | None = None,
    seed: int = 0,
    backend: str = "auto",
    precision: str = "auto",
    realtime: bool = False,
    keep: Path | None = None,
    output: Path | None = None,
    cache: Path | None = None,
    echo: bool = True,
) -> dict[str, Any]:
    from cezsar.data.synthetic import default_stream_plan, render_stream
    from edge.event_scoring import match_events
    from edge.runtime import Runtime
    from edge.settings import settings_from

    t0 = time.time()
    model_dir = _model_dir(model)
    deploy = ensure_deploy(model_dir, cache)
    t_export = time.time() - t0
    work = Path(tempfile.mkdtemp(prefix="cezsar-demo-"))
    try:
        plan = default_stream_plan(seed)
        video, actions = work / "stream.mp4", work / "actions.yaml"
        segments = render_stream(video, plan, seed=seed)
        motions = write_actions(actions, plan, demo_defaults(deploy))
        total = sum(s for _, s in plan)
        print(f"demo: {len(segments)} segments in a {total:.0f} s stream; watching {', '.join(motions)}", flush=True)
        settings = settings_from(
            deploy=deploy,
            source=[f"synthetic={video}"],
            actions=actions,
            pub="tcp://127.0.0.1:*",
            control="tcp://127.0.0.1:*",
            backend=backend,
            precision=precision,
            realtime=realtime,
            events_log=work / "events.jsonl",
            output=output,
            status_interval=1.0,
        )
        rt = Runtime(settings)
        for line in rt.summary():
            log.info("%s", line)
        listener, code, run_seconds = _listened_run(rt, echo)
        ended = [e for e in listener.events if e["phase"] == "end"]
        result = match_events(ended, segments, MIN_IOU)
        _print_matches(segments, ended, result)
        final = listener.final or rt.status(final=True)
        summary = {
            "events": len(ended),
            "segments": len(segments),
            **{k: result[k] for k in ("f1", "precision", "recall")},
            "matched": result["tp"],
            "min_iou": MIN_IOU,
            "model": weights_hash(model_dir)[:12],
            "backend": final.get("backend"),
            "windows": final.get("inference", {}).get("windows"),
            "latency_ms_p50": final.get("latency_ms", {}).get("p50"),
            "run_seconds": round(run_seconds, 2),
            "export_seconds": round(t_export, 2),
            "total_seconds": round(time.time() - t0, 2),
            "exit_code": code,
        }
        print(
            f"\nF1 {result['f1']:.3f} (precision {result['precision']:.3f}, recall {result['recall']:.3f}): "
            f"{result['tp']} of {len(segments)} segments found, {len(ended)} events, "
            f"{summary['total_seconds']:.1f} s in all",
            flush=True,
        )
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for name in ("stream.mp4", "actions.yaml", "events.jsonl"):
                if (work / name).exists():
                    shutil.copy2(work / name, keep / name)
        return {"summary": summary, "segments": segments, "events": listener.events, "match": result}
    finally:
        shutil.rmtree(work, ignore_errors=True)
