"""Which zone crops the runtime cuts from each frame: the zones that some action of the current set
needs (edge/zones.py has the zones themselves; each crop becomes the stream ``<stream>@<zone>``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from cezsar.preprocess import Preprocess
from edge.actions import ActionSet
from edge.sources import Frame
from edge.zones import Zone, zone_stream

log = logging.getLogger("cezsar.edge")


class ZonePlanner:
    """``zones``: stream -> zone name -> Zone. The plan is computed once per actions version."""

    def __init__(self, zones: Mapping[str, Mapping[str, Zone]], pre: Preprocess, report: Callable[[str], None]) -> None:
        self.zones = {k: dict(v) for k, v in zones.items()}
        self.pre = pre
        self.report = report
        self._plan: tuple[int, dict[str, list[Zone]]] = (-1, {})  # (actions version, stream -> zones)

    def names(self, stream: str) -> list[str]:
        """A stream and its zones' crops, as the Recognizer names them."""
        return [stream, *(zone_stream(stream, z) for z in self.zones.get(stream, {}))]

    def invalidate(self) -> None:
        """The sources changed: plan again at the next frames."""
        self._plan = (-1, {})

    def plan(self, version: int, aset: ActionSet, streams: Iterable[str]) -> dict[str, list[Zone]]:
        """stream -> the zones some action of ``aset`` needs."""
        if self._plan[0] == version:
            return self._plan[1]
        names = list(streams)
        plan: dict[str, list[Zone]] = {}
        for stream, zname in sorted(aset.zones(), key=str):
            for name in [stream] if stream is not None else names:
                z = self.zones.get(name, {}).get(zname)
                if z is None:
                    if stream is not None or not any(zname in zs for zs in self.zones.values()):
                        self.report(
                            f"actions: zone '{zname}' is not defined for stream {name} (site config zones / --zone)"
                        )
                    continue
                if z not in plan.setdefault(name, []):
                    plan[name].append(z)
        self._plan = (version, plan)
        return plan

    def frames(self, frames: list[Frame], plan: Mapping[str, list[Zone]]) -> list[Frame]:
        """The crops of the planned zones, each as a frame of the stream ``<stream>@<zone>``."""
        if not plan:
            return []
        return [
            Frame.from_image(zone_stream(f.stream, z.name), f.index, f.t, f.wall, z.crop(f.image), self.pre)
            for f in frames
            for z in plan.get(f.stream, ())
        ]

    def catalog(self, aset: ActionSet, streams: Iterable[str]) -> dict[str, list[str]]:
        """stream -> the actions that apply to it or to one of its zones (MQTT discovery)."""
        return {s: [a.name for a in aset.actions if any(a.applies(n) for n in self.names(s))] for s in streams}
