"""Home Assistant MQTT discovery: the retained config of every entity, from the current catalog.

Devices: one for the runtime (``cezsar <node>``, or ``cezsar`` for the default node) and one per
camera (``<runtime name> <stream>``, ``via_device`` the runtime). Every config carries ``origin``
and, with a public URL (``outputs.http.public_url``), the devices' ``configuration_url`` (the web
console).

=====================  =========================================  =======================================
entity                 object id, device                          state (availability: runtime + ...)
=====================  =========================================  =======================================
binary_sensor          ``<stream>-<key>``, camera                 ``P/<stream>/<key>`` ON/OFF (+ camera);
                                                                  attributes: the action's last event
sensor (score)         ``<stream>-<key>``, camera                 ``P/<stream>/<key>/score`` (+ camera)
image (snapshot)       ``<stream>-<key>``, camera                 ``P/<stream>/<key>/snapshot`` JPEG
binary_sensor          ``<stream>-_connectivity``, camera         ``P/<stream>/health`` live -> ON;
(connectivity)                                                    attributes: the health
switch (detection)     ``<stream>-_detect``, camera               ``P/<stream>/enabled``, command ``/set``
switch (action)        ``runtime-<key>``, runtime                 ``P/actions/<key>/enabled``, ``/set``
sensor (state)         ``runtime-_state``, runtime                ``P/status``: running, finished ...
=====================  =========================================  =======================================

"+ camera": the entity is also unavailable while its camera is not live (``P/<stream>/availability``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge.sinks.mqtt.naming import Topics


@dataclass(frozen=True)
class Catalog:
    """What exists now: the streams, the actions of each stream (``pairs``), every action (also those
    that apply to no stream now) and each action's key (edge.sinks.mqtt.naming.action_keys)."""

    streams: tuple[str, ...] = ()
    pairs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    actions: tuple[str, ...] = ()
    keys: Mapping[str, str] = field(default_factory=dict)

    def each_pair(self) -> list[tuple[str, str]]:
        return [(s, a) for s in self.streams for a in self.pairs.get(s, ())]

    def action_of(self, key: str) -> str | None:
        return next((a for a, k in self.keys.items() if k == key), None)


@dataclass(frozen=True)
class Features:
    """Which entities to announce: score sensors, snapshot images, switches (commands)."""

    scores: bool = True
    snapshots: bool = True
    commands: bool = False
    qos: int = 1
    version: str = "dev"
    public_url: str | None = None


def device_name(node: str) -> str:
    return "cezsar" if node == "cezsar" else f"cezsar {node}"


def _runtime_device(t: Topics, f: Features) -> dict[str, Any]:
    d: dict[str, Any] = {
        "identifiers": [f"cezsar:{t.node}"],
        "name": device_name(t.node),
        "manufacturer": "cezsar",
        "model": "cezsar edge runtime",
        "sw_version": f.version,
    }
    if f.public_url:
        d["configuration_url"] = f.public_url.rstrip("/") + "/console/"
    return d


def _camera_device(t: Topics, f: Features, stream: str) -> dict[str, Any]:
    d: dict[str, Any] = {
        "identifiers": [f"cezsar:{t.node}:{stream}"],
        "name": f"{device_name(t.node)} {stream}",
        "manufacturer": "cezsar",
        "model": "camera stream",
        "via_device": f"cezsar:{t.node}",
    }
    if f.public_url:
        d["configuration_url"] = f.public_url.rstrip("/") + "/console/"
    return d


def _availability(t: Topics, stream: str | None) -> dict[str, Any]:
    topics = [t.availability] if stream is None else [t.availability, t.stream(stream, "availability")]
    each = [{"topic": x, "payload_available": "online", "payload_not_available": "offline"} for x in topics]
    return {"availability": each, "availability_mode": "all"}


def _entity(
    t: Topics, f: Features, domain: str, object_id: str, name: str, device: dict[str, Any], camera: str | None
) -> dict[str, Any]:
    return {
        "name": name,
        "unique_id": t.unique_id(domain, object_id),
        "device": device,
        "origin": {"name": "cezsar", "sw_version": f.version},
        "qos": f.qos,
        **_availability(t, camera),
    }


def configs(t: Topics, cat: Catalog, f: Features) -> dict[str, dict[str, Any]]:
    """Every discovery config topic -> its config, for the catalog ``cat``."""
    out: dict[str, dict[str, Any]] = {}
    runtime = _runtime_device(t, f)
    state_id = t.runtime_id("state")
    out[t.config("sensor", state_id)] = {
        **_entity(t, f, "sensor", state_id, "State", runtime, None),
        "state_topic": t.status,
        "value_template": "{{ value_json.state }}",
        "icon": "mdi:cctv",
    }
    if f.commands:
        for action in cat.actions:
            key = cat.keys[action]
            oid = t.runtime_id(key, key=True)
            out[t.config("switch", oid)] = {
                **_entity(t, f, "switch", oid, f"{action} detection", runtime, None),
                "state_topic": t.action_switch(key),
                "command_topic": t.action_switch(key) + "/set",
                "payload_on": "ON",
                "payload_off": "OFF",
                "icon": "mdi:motion-sensor",
            }
    for stream in cat.streams:
        out.update(_camera_configs(t, f, stream, [(a, cat.keys[a]) for a in cat.pairs.get(stream, ())]))
    return out


def _camera_configs(t: Topics, f: Features, stream: str, actions: Sequence[tuple[str, str]]) -> dict[str, Any]:
    out: dict[str, dict[str, Any]] = {}
    cam = _camera_device(t, f, stream)
    oid = t.camera_id(stream, "connectivity")
    out[t.config("binary_sensor", oid)] = {
        **_entity(t, f, "binary_sensor", oid, "Connected", cam, None),
        "device_class": "connectivity",
        "entity_category": "diagnostic",
        "state_topic": t.stream(stream, "health"),
        "value_template": "{{ 'ON' if value_json.state == 'live' else 'OFF' }}",
        "json_attributes_topic": t.stream(stream, "health"),
        "payload_on": "ON",
        "payload_off": "OFF",
    }
    if f.commands:
        oid = t.camera_id(stream, "detect")
        out[t.config("switch", oid)] = {
            **_entity(t, f, "switch", oid, "Detection", cam, None),
            "state_topic": t.stream(stream, "enabled"),
            "command_topic": t.stream(stream, "enabled") + "/set",
            "payload_on": "ON",
            "payload_off": "OFF",
            "icon": "mdi:cctv",
        }
    for action, key in actions:
        oid = t.pair_id(stream, key)
        out[t.config("binary_sensor", oid)] = {
            **_entity(t, f, "binary_sensor", oid, action, cam, stream),
            "state_topic": t.action(stream, key),
            "json_attributes_topic": t.action(stream, key, "attributes"),
            "payload_on": "ON",
            "payload_off": "OFF",
        }
        if f.scores:
            out[t.config("sensor", oid)] = {
                **_entity(t, f, "sensor", oid, f"{action} score", cam, stream),
                "state_topic": t.action(stream, key, "score"),
                "state_class": "measurement",
                "suggested_display_precision": 3,
                "icon": "mdi:chart-bell-curve",
            }
        if f.snapshots:
            out[t.config("image", oid)] = {
                **_entity(t, f, "image", oid, f"{action} snapshot", cam, None),
                "image_topic": t.action(stream, key, "snapshot"),
                "content_type": "image/jpeg",
            }
    return out


def encode(config: Mapping[str, Any]) -> bytes:
    return json.dumps(config, separators=(",", ":"), sort_keys=True).encode("utf-8")
