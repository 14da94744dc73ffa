"""Backtest: an action set replayed over stored windows by the live code, before it is saved.

The windows of a time range go through the runtime's own :class:`edge.recognizer.Recognizer` (so its
:class:`edge.scorer.Scorer` and :class:`edge.decisions.Decisions`, and the glue between them) in the
order the live runtime stored them; only the embedder is replaced by one that hands over stored
windows. Exactness (docs/history.md):

- an action whose scoring is unchanged (same descriptions, background and, with ``exclusive``, the
  same rivals, same model) is replayed from the scores stored with each window, which are exactly what
  the live decisions saw: the backtest of the live action set gives back the live events;
- an action with new or edited text is scored by the Scorer on the stored vector (int8 or fp16, not
  the live fp32): its scores can differ by a few 1e-3 (measured in scripts/bench_history.py).

Threshold, hysteresis, minimum duration, cooldown, streams and zone are decision settings: editing
them keeps the stored scores. A stream's windows that go back in capture time or leave a gap longer
than ``gap`` seconds restart its decisions (as a reconnect does live).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from cezsar.scorecal import ScoreCalibration
from edge.actions import ActionSet
from edge.decisions import PARAM_KEYS, Decisions, Event, Params
from edge.embedder import Window
from edge.history import codec
from edge.history import schema as S
from edge.history.readrange import CHUNK, models_in_range, read_ahead, stored_rows
from edge.history.store import HistoryError
from edge.recognizer import Recognizer
from edge.scorer import Scorer, Scores

SCORE_BLOCK = 512  # windows decoded and scored at once (their vectors stay in the CPU's cache)
SLOW_BLOCK = 4  # windows per Recognizer push where something may happen (then quiet is checked again)
DECISION_KEYS = {*PARAM_KEYS, "name", "streams", "zone"}


# ---------------------------------------------------------------------------------------------- scoring keys


def score_keys(set_obj: dict[str, Any]) -> dict[str, str]:
    """Action name -> a digest of everything that shapes its score (not its decision settings), from
    an action set's file form (ActionSet.to_obj); equal digests mean equal scores on one window."""
    actions = set_obj.get("actions") or []
    common = {k: v for k, v in set_obj.items() if k not in ("actions", "defaults")}
    defaults = {k: v for k, v in (set_obj.get("defaults") or {}).items() if k not in PARAM_KEYS}
    rivals = sorted(json.dumps(a.get("descriptions"), sort_keys=True) for a in actions)
    out = {}
    for a in actions:
        own = {k: v for k, v in a.items() if k not in DECISION_KEYS}
        body = [own, common, defaults, rivals if set_obj.get("exclusive") else None]
        out[str(a.get("name"))] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return out


class _Stored:
    """The stored scores of the windows in hand, aligned to the backtest's actions (NaN: re-score)."""

    def __init__(self) -> None:
        self.scores: np.ndarray | None = None
        self.block: Scores | None = None  # the windows handed over next, already scored (the replay's)


class _ReplayScorer(Scorer):
    """The Scorer of the action set under test; columns with a stored score take it instead."""

    def __init__(self, base: Scorer, stored: _Stored, dim: int) -> None:
        self.__dict__.update(base.__dict__)
        self._stored = stored
        self._zero = base.score(np.zeros((1, dim), np.float32))  # what a window without a stored score gets

    def chunk(self, embs: np.ndarray | None, kept: np.ndarray) -> Scores:
        """A chunk's scores, once: ``kept`` (stored) where stored, else the Scorer's on the stored vector
        (``embs``; None where every action is replayed)."""
        if embs is not None:
            self._stored.scores = kept
            return self.score(embs)
        z, n = self._zero, len(kept)
        full = np.where(np.isnan(kept), z.scores, kept).astype(z.scores.dtype)
        bg = None if z.background is None else np.broadcast_to(z.background, (n,))
        return Scores(full, np.broadcast_to(z.cosine, (n, z.cosine.shape[1])), bg)

    def score(self, emb: np.ndarray) -> Scores:
        block, self._stored.block = self._stored.block, None
        if block is not None and len(block.scores) == len(emb):  # scored once for the stretch: the same numbers
            return block
        sc = super().score(emb)
        s = self._stored.scores
        if s is not None and s.shape == sc.scores.shape:
            m = ~np.isnan(s)
            if m.any():
                sc.scores = np.where(m, s, sc.scores).astype(sc.scores.dtype)
        return sc


class _ReplayEmbedder:
    """In place of the WindowEmbedder: add() hands over the stored windows put in hand."""

    def __init__(self) -> None:
        self.pending: list[Window] = []

    def add(self, frames: Sequence[Any]) -> list[Window]:
        out, self.pending = self.pending, []
        return out

    def reset(self, stream: str) -> None:
        pass


class _Text:
    def __init__(self, encode: Callable[[Sequence[str]], np.ndarray], dim: int) -> None:
        self.encode, self.dim = encode, dim

    def forget(self, keep: Sequence[str]) -> None:
        pass


# ---------------------------------------------------------------------------------------------- the replay


@dataclass
class Backtest:
    events: list[dict[str, Any]] = field(default_factory=list)
    windows: int = 0
    first: float | None = None  # Unix time of the first and last window replayed
    last: float | None = None
    replayed: list[str] = field(default_factory=list)  # actions taken from stored scores
    rescored: list[str] = field(default_factory=list)  # actions scored on stored vectors
    refused: dict[str, int] = field(default_factory=dict)  # other model hash -> windows not comparable
    series: dict[str, list[tuple[str, float, float, float]]] = field(default_factory=dict)  # (stream, t, wall, score)
    params: dict[str, Params] = field(default_factory=dict)  # each action's decision settings (the Scorer's)
    seconds: float = 0.0

    @property
    def days(self) -> float:
        return 0.0 if self.first is None or self.last is None else max(self.last - self.first, 1.0) / 86400.0


def run_backtest(
    store: Any,
    aset: ActionSet,
    encode: Callable[[Sequence[str]], np.ndarray],
    model_hash: str,
    dim: int,
    *,
    since: float | None = None,
    until: float | None = None,
    streams: list[int] | None = None,
    keep_series: Sequence[str] = (),
    gap: float = 60.0,
    update_interval: float = 1.0,
    calibration: ScoreCalibration | None = None,
) -> Backtest:
    """Replay ``aset`` over the stored windows of ``model_hash`` in the range (see the module).
    ``calibration``: the deploy folder's score calibration, as the live runtime had it (stored scores are
    already in its scale; re-scored actions and the default thresholds take it)."""
    import sqlalchemy as sa

    t0 = time.perf_counter()
    out = Backtest()
    with store.engine.connect() as conn:
        models = models_in_range(conn, since, until)
        mid = next((i for i, (h, _) in models.items() if h == model_hash), None)
        out.refused = {h[:12]: n for i, (h, n) in models.items() if i != mid}
        if mid is None:
            other = "; ".join(f"{n} of model {h}" for h, n in out.refused.items()) or "none at all"
            raise HistoryError(
                f"history: no stored windows of model {model_hash[:12]} in this range ({other}): "
                "embeddings of another model are not comparable"
            )
        scorings = {
            int(r[0]): (json.loads(r[1]), json.loads(r[2]))
            for r in conn.execute(sa.select(S.scorings.c.id, S.scorings.c.actions, S.scorings.c.names))
        }
    names = aset.names()
    new_keys = score_keys(aset.to_obj())
    columns: dict[int, list[int | None]] = {}  # scoring id -> for each action under test, its stored column
    for sid, (obj, stored_names) in scorings.items():
        keys = score_keys(obj)
        columns[sid] = [
            stored_names.index(n0) if n0 in stored_names else None
            for n0 in (next((k for k, v in keys.items() if v == new_keys[n]), None) for n in names)
        ]
    replayable = {n for j, n in enumerate(names) if any(c[j] is not None for c in columns.values())}
    out.replayed = [n for n in names if n in replayable]
    out.rescored = [n for n in names if n not in replayable]
    stored = _Stored()
    emb_needed = bool(out.rescored)
    scorer = Scorer.build(aset, _Text(encode, dim), calibration)  # type: ignore[arg-type]
    out.params = dict(scorer.params)

    replay = _ReplayScorer(scorer, stored, dim)

    def recognizer() -> Recognizer:
        """One per stream (decisions never mix streams): the live Recognizer, stored windows in."""
        rec = Recognizer(_ReplayEmbedder(), None, update_interval=update_interval)  # type: ignore[arg-type]
        rec.set_scorer(replay)
        return rec

    state = _State(recognizer, out, keep_series, gap, dim)
    for rows in read_ahead(stored_rows(store, mid, since, until, streams, emb_needed)):
        state.feed(rows, columns, len(names), stored, replay.chunk, emb_needed)
    state.flush(stored)
    for rec in state.recs.values():
        state.collect(rec.end_all("range_end", wall=out.last or 0.0), None)
    out.events.sort(key=lambda e: (e["time_end"], e["stream"], e["action"]))
    out.seconds = time.perf_counter() - t0
    return out


def _stored_scores(rows: list[Any], columns: dict[int, list[int | None]], n: int) -> np.ndarray:
    """(len(rows), n) stored scores aligned to the actions under test; NaN where there is none."""
    out = np.full((len(rows), n), np.nan)
    if all(c is None for cs in columns.values() for c in cs):  # new text: nothing stored to take
        return out
    by: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        if r[6] is not None and r[6] in columns and r[7]:
            by.setdefault(int(r[6]), []).append(i)
    for sid, idx in by.items():
        pairs = [(j, c) for j, c in enumerate(columns[sid]) if c is not None]
        if not pairs:
            continue
        width = max(c for _, c in pairs) + 1
        blobs = [rows[i][7] for i in idx]
        if any(len(b) < 2 * width for b in blobs):
            vals = np.stack([codec.decode_scores(b, width) for b in blobs])
        else:
            k = np.frombuffer(b"".join(b[: 2 * width] for b in blobs), "<i2").reshape(len(idx), width).astype(np.int64)
            vals = np.where(k == codec.NO_SCORE, np.nan, k / codec.SCORE_SCALE)
        for j, c in pairs:
            out[idx, j] = vals[:, c]
    return out


def _take(sc: Scores, rows: Any) -> Scores:
    """The Scores of some windows (an index array or a slice)."""
    return Scores(sc.scores[rows], sc.cosine[rows], None if sc.background is None else sc.background[rows])


def _joined(parts: list[Scores]) -> Scores:
    if len(parts) == 1:
        return parts[0]
    bgs = [p.background for p in parts if p.background is not None]
    return Scores(
        np.concatenate([p.scores for p in parts]),
        np.concatenate([p.cosine for p in parts]),
        np.concatenate(bgs) if bgs else None,
    )


_InHand = tuple[str, float, float, float, int]  # a window in hand: stream, start, end, wall, row in the chunks


class _State:
    """The replay's running state: windows in hand, each stream's last window, the events so far."""

    def __init__(
        self, make: Callable[[], Recognizer], out: Backtest, keep: Sequence[str], gap: float, dim: int
    ) -> None:
        self.make, self.out, self.keep, self.gap, self.dim = make, out, set(keep), gap, dim
        self.recs: dict[str, Recognizer] = {}
        # the windows in hand: (stream, start, end, wall, row) with row indexing the rows of the chunks
        self.batch: list[_InHand] = []
        self.chunks: list[tuple[np.ndarray | None, Scores]] = []  # (embeddings if re-scored, scores) as read
        self.rows_in_hand = 0
        self.in_batch: set[str] = set()
        self.last: dict[str, tuple[float, float]] = {}  # stream -> (capture end, wall time)
        self.offset: dict[str, float] = {}  # stream -> wall - capture time of its newest window
        self.open: dict[str, dict[str, Any]] = {}

    def feed(
        self,
        rows: list[Any],
        columns: dict[int, list[int | None]],
        n: int,
        stored: _Stored,
        chunk_scores: Callable[[np.ndarray | None, np.ndarray], Scores],
        emb_needed: bool,
    ) -> None:
        kept = _stored_scores(rows, columns, n)
        embs = None
        if not emb_needed:
            scores = chunk_scores(None, kept)
        else:  # decoded and scored a block at a time, while the block is in the CPU's cache
            embs = np.empty((len(rows), self.dim), np.float32)
            parts = []
            for k in range(0, len(rows), SCORE_BLOCK):
                embs[k : k + SCORE_BLOCK] = codec.decode_many([r[8] for r in rows[k : k + SCORE_BLOCK]], self.dim)
                parts.append(chunk_scores(embs[k : k + SCORE_BLOCK], kept[k : k + SCORE_BLOCK]))
            scores = _joined(parts)
        o = self.out
        cols = list(zip(*rows, strict=True))  # the chunk by column: the loop below runs once per window
        streams_, zones, walls, starts, ends = cols[1], cols[2], cols[3], cols[4], cols[5]
        o.first = walls[0] if o.first is None else min(o.first, min(walls))
        o.last = walls[-1] if o.last is None else max(o.last, max(walls))
        o.windows += len(rows)
        if not self.batch:  # nothing in hand refers to the chunks read before
            self.chunks, self.rows_in_hand = [], 0
        self.chunks.append((embs, scores))
        base, self.rows_in_hand = self.rows_in_hand, self.rows_in_hand + len(rows)
        names = streams_ if not any(zones) else [f"{s}@{z}" if z else s for s, z in zip(streams_, zones, strict=True)]
        last, offset, gap, batch, in_batch = self.last, self.offset, self.gap, self.batch, self.in_batch
        for g, name, wall, start, end in zip(range(base, base + len(rows)), names, walls, starts, ends, strict=True):
            prev = last.get(name)
            if prev is not None and (end < prev[0] - 1e-6 or wall - prev[1] > gap):
                if name in in_batch:
                    self.flush(stored)
                    batch, in_batch = self.batch, self.in_batch  # (a flush starts new ones)
                self.collect(self._rec(name).end_stream(name, "gap", wall=prev[1]), name)
            last[name] = (end, wall)
            offset[name] = wall - end
            batch.append((name, start, end, wall, g))
            in_batch.add(name)
        if len(self.batch) >= CHUNK:
            self.flush(stored)

    def _rec(self, stream: str) -> Recognizer:
        rec = self.recs.get(stream)
        if rec is None:
            rec = self.recs[stream] = self.make()
        return rec

    def flush(self, stored: _Stored) -> None:
        """The windows in hand, each stream's to its own Recognizer (in their stored order)."""
        if not self.batch:
            return
        by: dict[str, list[_InHand]] = {}
        for w in self.batch:
            by.setdefault(w[0], []).append(w)
        embs, sc = self.chunks[0]
        if len(self.chunks) > 1:
            embs = None if embs is None else np.concatenate([c[0] for c in self.chunks if c[0] is not None])
            sc = _joined([c[1] for c in self.chunks])
        for stream, ws in by.items():
            at = np.fromiter((w[4] for w in ws), np.int64, len(ws))
            self._replay(stream, ws, embs, at, _take(sc, at), stored)
        self.batch, self.in_batch = [], set()  # (the chunks stay until the next feed: a flush mid-feed)

    def _replay(
        self,
        stream: str,
        windows: list[_InHand],
        embs: np.ndarray | None,
        at: np.ndarray,
        scored: Scores,
        stored: _Stored,
    ) -> None:
        """One stream's windows in order. Quiet stretches (no event pending or open, every smoothed score
        under its threshold) are smoothed here with the Decisions' own expression and skipped; every other
        window goes through the live Recognizer in blocks, after the Decisions take the smoothed scores
        (Decisions.carry). The same scores, the same arithmetic: the same events as window by window."""
        rec = self._rec(stream)
        self.collect(rec.sync(wall=windows[0][3]), None)
        scorer = rec.scorer
        assert scorer is not None and isinstance(rec.embedder, _ReplayEmbedder)
        full = scored.scores  # stored where stored, else scored: once per chunk (the feed)
        cols, params, dec = rec.columns(stream), scorer.params, rec.decisions
        names = [n for _, n in cols]
        alpha = [params[n].smoothing for n in names]
        thr = [params[n].threshold for n in names]
        vals = [[round(x, 4) for x in full[:, j].tolist()] for j, _ in cols]  # as the Recognizer rounds
        i, count = 0, len(windows)
        while i < count:
            if dec.quiet(stream):
                i = self._quiet(stream, windows, vals, i, names, alpha, thr, dec, params)
                if i >= count:
                    break
            j = min(count, i + SLOW_BLOCK)
            vecs = embs[at[i:j]] if embs is not None else np.zeros((j - i, self.dim), np.float32)
            block = zip(windows[i:j], vecs, strict=True)
            rec.embedder.pending = [Window(s, t0, t1, 0, 0, 0, wall, e) for (s, t0, t1, wall, _), e in block]
            stored.block = _take(scored, slice(i, j))
            step = rec.push([])
            self.collect(step.ended, None)
            for r in step.windows:
                for a in self.keep:
                    v = r.scores.get(a)
                    if v is not None:
                        self.out.series.setdefault(a, []).append((stream, r.window.center, r.window.wall, v))
                self.collect(r.events, stream)
            i = j

    def _quiet(
        self,
        stream: str,
        windows: list[_InHand],
        vals: list[list[float]],
        i: int,
        names: list[str],
        alpha: list[float],
        thr: list[float],
        dec: Decisions,
        params: dict[str, Params],
    ) -> int:
        """Smooth from window ``i`` while nothing can turn on (``vals``: each action's rounded scores, as the
        Recognizer rounds them); the index of the first window that may turn something on."""
        before = dec.smoothed(stream)
        ema: list[float | None] = [before.get(n) for n in names]
        start, end = i, len(windows)
        if len(names) == 1:  # one action (the usual backtest): the same arithmetic without the lists
            col, a, t, e = vals[0], alpha[0], thr[0], ema[0]
            b = 1.0 - a
            while i < end:
                x = col[i]
                nx = x if e is None else a * x + b * e
                if nx >= t:
                    break
                e, i = nx, i + 1
            ema = [e]
        else:
            while i < end:
                new = [
                    v[i] if e is None else a * v[i] + (1.0 - a) * e for v, e, a in zip(vals, ema, alpha, strict=True)
                ]
                if any(x >= t for x, t in zip(new, thr, strict=True)):
                    break
                ema, i = new, i + 1  # type: ignore[assignment]
        if i > start:
            for k, n in enumerate(names):
                if n in self.keep:
                    col = vals[k]
                    got = ((stream, 0.5 * (w[1] + w[2]), w[3], col[m]) for m, w in enumerate(windows[start:i], start))
                    self.out.series.setdefault(n, []).extend(got)
            dec.carry(stream, {n: e for n, e in zip(names, ema, strict=True) if e is not None}, params)
        return i

    def collect(self, events: list[Event], stream: str | None) -> None:
        for ev in events:
            off = self.offset.get(ev.stream, 0.0)
            if ev.phase == "start":
                self.open[ev.id] = {
                    "stream": ev.stream.partition("@")[0],
                    "zone": ev.stream.partition("@")[2] or None,
                    "action": ev.action,
                    "start": round(ev.start, 3),
                    "time_start": round(ev.start + off, 3),
                }
            elif ev.phase == "end":
                e = self.open.pop(ev.id, None)
                if e is None:
                    continue
                end = ev.end if ev.end is not None else ev.start
                e.update(
                    end=round(end, 3),
                    time_end=round(end + off, 3),
                    duration=round(max(0.0, end - ev.start), 3),
                    peak=round(ev.peak, 4),
                    peak_time=round(ev.peak_time, 3),
                    windows=ev.windows,
                    reason=ev.reason,
                )
                self.out.events.append(e)


# ---------------------------------------------------------------------------------------------- threshold


def count_events(series: list[tuple[str, float, float, float]], action: str, params: Params) -> int:
    """Events the live Decisions start over one action's replayed scores with ``params``."""
    d = Decisions(update_interval=math.inf)
    p = {action: params}
    n = 0
    for stream, t, wall, score in series:
        n += sum(1 for ev in d.step(stream, t, wall, {action: score}, p) if ev.phase == "start")
    return n


def suggest_threshold(
    series: list[tuple[str, float, float, float]], action: str, params: Params, per_day: float, days: float
) -> dict[str, Any] | None:
    """The lowest threshold (to 1e-3) whose events per day stay at or under ``per_day``, by bisection
    with the live Decisions (events fall as the threshold rises)."""
    if not series or days <= 0:
        return None
    scores = np.asarray([s[3] for s in series])
    lo, hi = float(scores.min()) - 1e-3, float(scores.max()) + params.hysteresis + 1e-3
    target = per_day * days
    if count_events(series, action, replace(params, threshold=lo)) <= target:
        hi = lo
    while hi - lo > 1e-3:
        mid = 0.5 * (lo + hi)
        if count_events(series, action, replace(params, threshold=mid)) <= target:
            hi = mid
        else:
            lo = mid
    thr = math.ceil(hi * 1000) / 1000
    n = count_events(series, action, replace(params, threshold=thr))
    return {"threshold": thr, "events": n, "per_day": round(n / days, 2), "target_per_day": per_day}
