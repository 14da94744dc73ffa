"""The backend registry, and ``--backend auto|tensorrt|onnxruntime|torch|onnxruntime-cpu|...``.

A backend is one module of the ``cezsar.backends`` package: the registry imports every module of the
package (:func:`discover`; no list of them anywhere), and importing a module registers its class with
:func:`register_backend` (as timm's ``register_model``). A module of the package, not an entry point: a new
backend is then one file, found in a source checkout as in an install, without reinstalling the
distribution or editing pyproject.toml. A backend module imports its library (onnxruntime, TensorRT,
torch) only when it is used, so importing all of them costs nothing.

Each backend declares its :class:`~cezsar.backends.base.Offer` per device: the precisions it runs, what
``--precision auto`` tries, and its rank for ``--backend auto``; which deploy files serve it
(``Backend.serving_file``); and the optional modules it needs with the extra that installs them
(``Backend.requires``, ``Backend.extra``, declared to :mod:`cezsar.extras`). Everything here comes from
those declarations:

- the ``--backend`` names: ``auto``, each backend's name, and ``NAME-DEVICE`` for a backend with
  several devices (``onnxruntime-cpu``, ``torch-cuda``, ...);
- ``auto`` tries the ranked (backend, device) pairs in rank order and takes the first that loads
  both networks (tensorrt > onnxruntime-cuda > torch-cuda > onnxruntime-cpu with the built-in ones);
- a plain name tries its devices in rank order, skipping devices that are not present here;
- ``--precision auto`` lets each candidate try its own ``auto`` precisions in order.

Every skipped candidate is recorded with its reason, so the startup summary says which backend runs
and why. A backend's files are checked (:meth:`Backend.check_files`) before its library is probed,
so a stale TensorRT engine is reported the same on every machine. torch is only imported when a
torch candidate is tried, and torch-cuda only when an NVIDIA driver is present.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from cezsar import extras
from cezsar.backends.base import Backend, Runner
from cezsar.deploy import layout
from cezsar.deploy.manifest import Manifest
from cezsar.errors import CezsarError

log = logging.getLogger(__name__)

PRECISION_CHOICES = ("auto", *layout.PRECISIONS)  # --precision: auto, then the precisions (cezsar.deploy.layout)

_REGISTRY: dict[str, type[Backend]] = {}
_FAILED: dict[str, str] = {}  # backend modules that could not be imported: module -> why
B = TypeVar("B", bound=type[Backend])


def register_backend(cls: B) -> B:
    """Class decorator: make ``cls`` selectable by its ``name`` (and ``name-device``)."""
    if not cls.offers:
        raise TypeError(f"backend {cls.__name__} declares no offers")
    known = _REGISTRY.get(cls.name)
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise TypeError(f"backend name {cls.name!r} is taken by {known.__qualname__}")
    _REGISTRY[cls.name] = cls
    if cls.requires and cls.extra:
        extras.requires(*cls.requires, extra=cls.extra)
    return cls


def discover() -> None:
    """Import every module of the ``cezsar.backends`` package that is not imported yet (each backend module
    registers its class when imported). A module that fails to import is logged and left out, once."""
    import cezsar.backends as package

    for info in pkgutil.iter_modules(package.__path__):
        name = f"{package.__name__}.{info.name}"
        if info.name.startswith("_") or name in _FAILED:
            continue
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - one broken backend module must not take the others down
            _FAILED[name] = f"{type(e).__name__}: {e}"
            log.warning("backend module %s cannot be imported (%s); its backend is not offered", name, _FAILED[name])


def backends() -> dict[str, type[Backend]]:
    """Registered backends by name, best rank first."""
    discover()

    def best(cls: type[Backend]) -> int:
        ranks = [o.rank for o in cls.offers if o.rank is not None]
        return min(ranks) if ranks else 1 << 30

    return dict(sorted(_REGISTRY.items(), key=lambda kv: (best(kv[1]), kv[0])))


@dataclass(frozen=True)
class Candidate:
    """One (backend, device) pair under its ``--backend`` name."""

    name: str
    backend: type[Backend]
    device: str

    def auto_precisions(self) -> tuple[str, ...]:
        return self.backend.offer(self.device).auto


def candidates() -> dict[str, Candidate]:
    """Every (backend, device) pair by ``--backend`` name."""
    out: dict[str, Candidate] = {}
    for cls in backends().values():
        for o in sorted(cls.offers, key=lambda o: o.device):
            c = Candidate(cls.candidate(o.device), cls, o.device)
            out[c.name] = c
    return out


def auto_order() -> list[str]:
    """``--backend auto``'s candidates, best first."""
    ranked = [(c.backend.offer(c.device).rank, name) for name, c in candidates().items()]
    return [name for rank, name in sorted((r, n) for r, n in ranked if r is not None)]


def names() -> tuple[str, ...]:
    """Every ``--backend`` value: auto, the backends, then their per-device names."""
    plain = list(backends())
    return ("auto", *plain, *(n for n in candidates() if n not in plain))


@dataclass
class Loaded:
    backend: Backend
    frame_encoder: Runner
    temporal_head: Runner
    reason: str
    skipped: list[str] = field(default_factory=list)  # "candidate: why not"

    def close(self) -> None:
        self.frame_encoder.close()
        self.temporal_head.close()


def _plain_candidates(cls: type[Backend], precision: str) -> list[Candidate]:
    """A plain backend name: its devices by rank (unranked last), those not present here left out (the
    last one is always tried, so that the error says why)."""
    offers = sorted(cls.offers, key=lambda o: (o.rank is None, o.rank if o.rank is not None else 0))
    every = [Candidate(cls.candidate(o.device), cls, o.device) for o in offers]
    prec = precision if precision != "auto" else cls.offer(every[0].device).auto[0]
    keep = [c for c in every[:-1] if cls.device_present(c.device, prec)]
    return keep + every[-1:]


def _try(cand: Candidate, precision: str, deploy_dir: Path, manifest: Manifest, threads: int | None) -> Loaded:
    """Load both networks with one candidate at one precision; CezsarError says why it cannot."""
    backend = cand.backend(precision, cand.device, threads)  # precision and device checks, no library
    backend.check_files(deploy_dir, manifest)  # pure Python: the same message on every machine
    for ok, why in (cand.backend.available(), cand.backend.device_available(cand.device, precision)):
        if not ok:
            raise CezsarError(why)
    fe = backend.load(deploy_dir, manifest, "frame_encoder")
    try:
        th = backend.load(deploy_dir, manifest, "temporal_head")
    except BaseException:
        fe.close()
        raise
    return Loaded(backend, fe, th, "")


def load_backend(
    name: str, precision: str, deploy_dir: str | Path, manifest: Manifest, threads: int | None = None
) -> Loaded:
    all_names = names()
    if name not in all_names:
        raise CezsarError(f"--backend {name}: choose one of {', '.join(all_names)}")
    if precision not in PRECISION_CHOICES:
        raise CezsarError(f"--precision {precision}: choose one of {', '.join(PRECISION_CHOICES)}")
    deploy_dir = Path(deploy_dir)
    table = candidates()
    order = auto_order()
    if name == "auto":
        cands = [table[n] for n in order]
    elif name in backends():
        cands = _plain_candidates(backends()[name], precision)
    else:
        cands = [table[name]]
    skipped: list[str] = []
    for i, cand in enumerate(cands):
        precisions = cand.auto_precisions() if precision == "auto" else (precision,)
        problems = []
        for prec in precisions:
            try:
                loaded = _try(cand, prec, deploy_dir, manifest, threads)
            except CezsarError as e:
                problems.append(str(e))
                continue
            except Exception as e:  # noqa: BLE001 - a broken backend install must not stop auto selection
                if name != "auto":
                    raise
                problems.append(f"{type(e).__name__}: {e}")
                continue
            if name == "auto":
                reason = f"auto: {cand.name} is the first usable of {' > '.join(order)}"
            else:
                reason = f"asked for {name}" + (f" ({cand.name})" if cand.name != name else "")
            if precision == "auto":
                reason += f"; precision {prec} (auto)"
            for s in skipped:
                log.debug("backend skipped: %s", s)
            loaded.reason, loaded.skipped = reason, skipped
            return loaded
        problem = "; ".join(dict.fromkeys(problems))
        if name != "auto" and i == len(cands) - 1:
            prior = f" (also tried: {'; '.join(skipped)})" if skipped else ""
            raise CezsarError(f"--backend {name}: {problem}{prior}")
        skipped.append(f"{cand.name}: {problem}")
    raise CezsarError(f"--backend auto: no backend can run --precision {precision} here: " + "; ".join(skipped))
