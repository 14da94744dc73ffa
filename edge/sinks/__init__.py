"""Output sinks: where the runtime's messages go, one module each, found by discovery.

A sink takes the messages exactly as the runtime publishes them: ``publish(topic, payload)`` with the
topic (``event.<stream>``, ``scores.<stream>``, ``media.<stream>``, ``status``) and the payload dict of
an :class:`edge.messages.Message` (built by edge/messages.py, the one message builder), returns
``True`` when it accepted the message, never blocks the caller for long, and ``close()`` ends it (the
runtime closes its sinks after the final status). A sink picks the topics it wants.

A new output is one module in this package: a class decorated with ``@register_sink("KEY")``, where
``KEY`` is its section of the settings (``outputs.KEY`` in edge/settings/outputs.py), with

- ``name``: what /metrics and the status call it;
- ``from_settings(section, ctx)``: build it from its settings section and the :class:`SinkContext`;
- optional ``stats()``: its counters (``sent``, ``dropped``, ``unsent``, ``connected`` ...), exported
  in /metrics (``cezsar_sink_messages_total{sink}``) and the status's ``outputs``;
- optional ``set_catalog(streams, pairs)``: which stream x action pairs exist (Home Assistant
  discovery), called when the actions or the sources change.

The runtime builds every sink whose section is set (edge/runtime/outputs.py); nothing else is edited.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from edge.host import SinkHost

log = logging.getLogger(__name__)


@runtime_checkable
class Sink(Protocol):
    def publish(self, topic: str, payload: dict[str, Any]) -> bool: ...

    def close(self) -> None: ...


@runtime_checkable
class CatalogSink(Protocol):
    def set_catalog(self, streams: Iterable[str], pairs: Mapping[str, list[str]]) -> None: ...


@dataclass(frozen=True)
class SinkContext:
    """What a sink may need beyond its own section: whether scores are published at all
    (``outputs.scores``), the ZeroMQ CURVE server (``outputs.zmq.curve_*``), the runtime's side for
    outputs (edge.host.SinkHost: camera health, switching a stream or an action off and on), the media
    folder (``outputs.media.dir``: event snapshots) and the address users reach the HTTP server at
    (``outputs.http.public_url``)."""

    scores: bool = True
    curve: Any = None  # edge.security.CurveServer | None
    host: SinkHost | None = None
    media_dir: Path | None = None
    public_url: str | None = None


T = TypeVar("T")
_REGISTRY: dict[str, Any] = {}


def register_sink(key: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: this class is the sink of ``outputs.<key>``."""

    def deco(cls: type[T]) -> type[T]:
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise ValueError(f"sink {key!r} is registered twice ({_REGISTRY[key].__name__}, {cls.__name__})")
        _REGISTRY[key] = cls
        return cls

    return deco


def sink_types() -> dict[str, Any]:
    """Every sink of this package, by settings key (its modules are imported once, here)."""
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")
    return dict(_REGISTRY)


class Sinks:
    """Fan-out: every message to every sink, in the order they were added. A sink that raises is
    counted (``failures``, per sink) and logged (1st, 2nd, 4th, ... time); the others and the caller
    go on. Is itself a Sink."""

    def __init__(self, *sinks: Sink) -> None:
        self.sinks: list[Sink] = list(sinks)
        self.failures: dict[str, int] = {}

    def add(self, sink: Sink) -> None:
        if not isinstance(sink, Sink):
            raise TypeError(f"{type(sink).__name__} is not a sink (needs publish(topic, payload) and close())")
        self.sinks.append(sink)

    def _failed(self, sink: Sink, what: str, e: Exception) -> None:
        name = type(sink).__name__
        n = self.failures[name] = self.failures.get(name, 0) + 1
        if n & (n - 1) == 0:
            log.warning("sink %s: %s failed (%s: %s) [%d so far]", name, what, type(e).__name__, str(e)[:200], n)

    def publish(self, topic: str, payload: dict[str, Any]) -> bool:
        """True when at least one sink accepted the message."""
        accepted = False
        for sink in self.sinks:
            try:
                accepted = sink.publish(topic, payload) or accepted
            except Exception as e:  # noqa: BLE001 - one broken output must not stop the others
                self._failed(sink, f"publish {topic}", e)
        return accepted

    def set_catalog(self, streams: Iterable[str], pairs: Mapping[str, list[str]]) -> None:
        for sink in self.sinks:
            if isinstance(sink, CatalogSink):
                try:
                    sink.set_catalog(list(streams), pairs)
                except Exception as e:  # noqa: BLE001
                    self._failed(sink, "set_catalog", e)

    def stats(self) -> dict[str, Any]:
        """Each named sink's counters (``stats()``), by name."""
        out: dict[str, Any] = {}
        for sink in self.sinks:
            fn, name = getattr(sink, "stats", None), getattr(sink, "name", None)
            if callable(fn) and isinstance(name, str):
                out[name] = fn()
        return out

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:  # noqa: BLE001 - close the others anyway
                self._failed(sink, "close", e)
