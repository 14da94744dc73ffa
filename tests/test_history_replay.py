"""The backtest's quiet-stretch fast path (edge/history/backtest.py _State._replay) gives exactly what the
live Recognizer gives window by window: the same events (start, end, peak, reason) and the same score
series, for stored and re-scored actions, exclusive or not, across stream gaps. The reference is the same
replay with the fast path switched off (Decisions.quiet answering False: every window through the
Recognizer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cezsar.events import Decisions
from edge.actions import actions_from_obj
from edge.history import codec
from edge.history.backtest import run_backtest
from edge.history.store import Batch, WindowRow, open_store
from tests.helpers.history import DIM, MODEL, unit

ACTIONS = [
    {"name": "fall", "descriptions": ["a person falls"], "threshold": 0.3, "min_duration": 2.0},
    {"name": "wave", "descriptions": ["a person waves"], "threshold": 0.25, "cooldown": 6.0},
]


def _store(tmp: Path, live: dict[str, Any], cameras: int = 3, per_camera: int = 1500) -> Any:
    """Stored windows with stored scores of the live action set ``live`` (its first two actions): slow
    random walks with bursts (events), a gap."""
    rng = np.random.default_rng(7)
    store = open_store(tmp / "h.sqlite")
    stored = actions_from_obj({**live, "actions": live["actions"][:2]})
    sid = store.scoring_id(MODEL, DIM, stored.to_obj(), stored.names())
    rows = []
    for cam in range(cameras):
        walk = np.cumsum(rng.normal(0, 0.02, (per_camera, 2)), axis=0) * 0.3
        bursts = (rng.random((per_camera, 2)) < 0.01).astype(float)
        level = np.convolve(bursts[:, 0], np.ones(12), "same")[:, None] * 0.5 + walk
        level[:, 1] += np.convolve(bursts[:, 1], np.ones(8), "same") * 0.4
        emb = codec.encode_many(unit(rng, per_camera))
        for i in range(per_camera):
            end = i * 2.0 + 2.0 + (400.0 if i > per_camera // 2 else 0.0)  # one gap of 400 s
            s = {"fall": round(float(level[i, 0]), 4), "wave": round(float(level[i, 1]), 4)}
            rows.append(
                WindowRow(
                    f"cam{cam}", None, 1e9 + end, end - 2.0, end, emb[i], codec.encode_scores(s, ["fall", "wave"]), sid
                )
            )
    store.write(Batch(windows=rows), MODEL, DIM)
    return store


def _encode(texts: Any) -> np.ndarray:
    rng = np.random.default_rng(abs(hash(tuple(texts))) % 2**32)
    return unit(rng, len(texts))


def _run(store: Any, obj: dict[str, Any]) -> tuple[list[tuple[Any, ...]], dict[str, Any], Any]:
    bt = run_backtest(store, actions_from_obj(obj), _encode, MODEL, DIM, keep_series=["fall", "wave", "new"])
    events = [(e["stream"], e["action"], e["start"], e["end"], e["peak"], e["reason"]) for e in bt.events]
    return events, bt.series, bt


@pytest.mark.parametrize(
    "obj",
    [
        {"actions": ACTIONS, "defaults": {"smoothing": 0.3}},
        {"actions": ACTIONS[:1]},
        {"actions": ACTIONS, "exclusive": True},
        {"actions": [*ACTIONS, {"name": "new", "descriptions": ["someone jumps"], "threshold": 0.05}]},
    ],
    ids=["stored", "one-action", "exclusive", "with-a-rescored-action"],
)
def test_fast_replay_equals_window_by_window(
    tmp_path: Path, obj: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path, obj)
    fast_events, fast_series, bt = _run(store, obj)
    with monkeypatch.context() as m:
        m.setattr(Decisions, "quiet", lambda self, stream: False)
        slow_events, slow_series, _ = _run(store, obj)
    assert len(fast_events) >= 10, "the history must hold events for the comparison to mean anything"
    assert fast_events == slow_events
    assert fast_series == slow_series and sum(len(v) for v in fast_series.values()) > 0
    assert bt.windows == 4500
    store.close()


@pytest.mark.parametrize(
    "since, until, streams", [(None, None, None), (1e9 + 500.0, 1e9 + 2600.0, None), (None, 1e9 + 900.0, [1, 3])]
)
def test_sqlite_driver_rows_equal_the_sqlalchemy_rows(
    tmp_path: Path, since: float | None, until: float | None, streams: list[int] | None
) -> None:
    """The backtest reads SQLite through the driver's cursor (edge/history/readrange.py): the same
    windows, in the same order and layout, as the dialect-neutral SQLAlchemy query, with each filter."""
    from edge.history.readrange import stored_rows

    store = _store(tmp_path, {"actions": ACTIONS}, per_camera=3000)  # more than one chunk of ids
    mid = store.model_id(MODEL, DIM)
    for emb in (True, False):
        fast = [tuple(r) for c in stored_rows(store, mid, since, until, streams, emb) for r in c]
        slow = [tuple(r) for c in stored_rows(store, mid, since, until, streams, emb, driver=False) for r in c]
        assert fast == slow and len(fast) > 100
        assert len(fast[0]) == (9 if emb else 8)
    store.close()
