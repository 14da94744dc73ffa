"""The retained state the MQTT sink owns: what every retained topic should hold now (:meth:`Retained.want`),
what this connection has been sent, and which topics an earlier run (or this one, before a change) left
on the broker that must be emptied.

One thread only (the sink's worker). The desired content is kept per owner (runtime, stream, stream x
action, action), so that a broker restarted without persistence gets all of it back on reconnection and
a stream or action that goes away takes all its topics with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from edge.sinks.mqtt import discovery
from edge.sinks.mqtt.discovery import Catalog, Features
from edge.sinks.mqtt.naming import Topics, action_keys, slug


def build_catalog(
    streams: Iterable[str], pairs: Iterable[str] | Mapping[str, Iterable[str]], extra_actions: Iterable[str] = ()
) -> Catalog:
    """streams + (one action list for every stream, or stream -> its actions) + actions that apply to
    no stream now -> a Catalog with every action's key."""
    names = tuple(dict.fromkeys(str(s) for s in streams))
    if isinstance(pairs, Mapping):
        by_stream = {s: tuple(dict.fromkeys(str(a) for a in pairs.get(s, ()))) for s in names}
    else:
        every = tuple(dict.fromkeys(str(a) for a in pairs))
        by_stream = {s: every for s in names}
    actions = tuple(dict.fromkeys([*(a for s in names for a in by_stream[s]), *(str(a) for a in extra_actions)]))
    return Catalog(names, by_stream, actions, action_keys(actions))


@dataclass
class Retained:
    topics: Topics
    features: Features
    discovery: bool = True
    catalog: Catalog = field(default_factory=Catalog)
    known: bool = False  # the catalog has been given: retained topics outside it may be emptied
    status: bytes | None = None
    pair: dict[tuple[str, str], dict[str, bytes]] = field(default_factory=dict)  # "" (ON/OFF), attributes, snapshot
    stream: dict[str, dict[str, bytes]] = field(default_factory=dict)  # availability, health
    stream_on: dict[str, bool] = field(default_factory=dict)
    action_on: dict[str, bool] = field(default_factory=dict)
    sent: dict[str, bytes] = field(default_factory=dict)  # on this connection
    owned: set[str] = field(default_factory=set)  # retained topics that may hold something of ours
    _configs: dict[str, bytes] | None = None

    def set_catalog(self, cat: Catalog) -> bool:
        """True when it changed."""
        changed = cat != self.catalog or not self.known
        self.catalog, self.known = cat, True
        if changed:
            self._configs = None
            self.pair = {p: d for p, d in self.pair.items() if p[1] in cat.pairs.get(p[0], ())}
            self.stream = {s: d for s, d in self.stream.items() if s in cat.streams}
        return changed

    def key(self, action: str) -> str:
        return self.catalog.keys.get(action) or slug(action)

    def has_pair(self, stream: str, action: str) -> bool:
        return not self.known or action in self.catalog.pairs.get(stream, ())

    def has_stream(self, stream: str) -> bool:
        return not self.known or stream in self.catalog.streams

    def configs(self) -> dict[str, bytes]:
        if self._configs is None:
            cfg = discovery.configs(self.topics, self.catalog, self.features) if self.discovery else {}
            self._configs = {t: discovery.encode(c) for t, c in cfg.items()}
        return self._configs

    def want(self) -> dict[str, bytes]:
        """Every retained topic of ours -> what it should hold now."""
        t, cat, f = self.topics, self.catalog, self.features
        w: dict[str, bytes] = {t.availability: b"online"}
        if self.status is not None:
            w[t.status] = self.status
        w.update(self.configs())
        streams = list(cat.streams) if self.known else sorted({*self.stream, *(s for s, _ in self.pair)})
        for stream in streams:
            d = self.stream.get(stream, {})
            w[t.stream(stream, "availability")] = d.get("availability", b"offline")
            if "health" in d:
                w[t.stream(stream, "health")] = d["health"]
            if f.commands:
                w[t.stream(stream, "enabled")] = b"ON" if self.stream_on.get(stream, True) else b"OFF"
        pairs = cat.each_pair() if self.known else list(self.pair)
        for stream, action in pairs:
            key, d = self.key(action), self.pair.get((stream, action), {})
            w[t.action(stream, key)] = d.get("", b"OFF")
            for what in ("attributes", "snapshot"):
                if what in d:
                    w[t.action(stream, key, what)] = d[what]
        if f.commands:
            for action in cat.actions:
                w[t.action_switch(self.key(action))] = b"ON" if self.action_on.get(action, True) else b"OFF"
        return w

    def stale(self, want: Mapping[str, bytes]) -> list[str]:
        """Retained topics of ours that should hold nothing (only once the catalog is known)."""
        keep = {self.topics.availability, self.topics.status}  # the will's topic; the status comes back anyway
        return sorted(self.owned - want.keys() - keep) if self.known else []
