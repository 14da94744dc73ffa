"""A sentence over the stored windows: the best moments, neighbouring windows merged.

Two passes, both over one model's windows (embeddings of two models are not comparable):

1. in memory: each window's sign bits (``J/8`` bytes) with its time and stream, loaded once per
   model and then only the new rows (:class:`SignIndex`, ~90 bytes a window); the Hamming distance
   to the sentence's sign bits ranks every window of the time range and streams asked for;
2. exact: the :data:`RERANK` nearest by that distance are read back from the store and scored as the
   live Scorer scores an action: the cosine of the stored vector (dequantized) to the sentence minus
   its best cosine to a background description (the action set's ``background``; without one, the
   cosine). With no more windows than that in the range, every one is scored exactly.

The first pass compares sign bits with the direction sentence - mean(background), which approximates
that margin; how often it keeps the true best moments is measured in scripts/bench_history.py.

Windows of a stream whose spans touch are merged into one moment (its score: the best window's).
The same code serves SQLite and PostgreSQL; on PostgreSQL the first search of a model streams its
windows' embeddings over the network once (docs/history.md has the figures and the limits).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.history import codec
from edge.history import schema as S

RERANK = 1024  # windows scored exactly per search (at least 50 x the moments asked for)
MERGE_POOL = 20  # the best (this x the moments asked for) of those are merged into moments
MERGE_DROP = 0.05  # a neighbouring window joins a moment while its cosine is within this of the moment's best
LOAD_CHUNK = 50000


@dataclass
class Moment:
    stream: str
    zone: str | None
    start: float  # Unix time of the first matching window's first frame
    end: float
    score: float  # the best window's score: its cosine to the sentence minus its best background cosine
    window: int  # the best window's id
    peak: float  # Unix time of that window's middle
    windows: int  # windows merged
    recording: int | None = None
    capture: tuple[float, float] | None = None  # capture times (a recording: seconds into the file)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "zone": self.zone,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "score": round(self.score, 4),
            "window": self.window,
            "peak": round(self.peak, 3),
            "windows": self.windows,
            "recording": self.recording,
            "capture": None if self.capture is None else [round(c, 3) for c in self.capture],
        }


class SignIndex:
    """The sign bits, times and streams of one model's windows, in memory; refreshed before each search."""

    def __init__(self, store: Any, model_id: int, dim: int) -> None:
        self.store, self.model_id, self.dim = store, model_id, dim
        self.words = (dim + 63) // 64
        self.last_id = 0
        self._blocks: list[dict[str, np.ndarray]] = []
        self._merged: dict[str, np.ndarray] | None = None
        self._lock = threading.Lock()

    def refresh(self) -> int:
        """Load the windows added since the last call; forget those retention deleted. Returns rows added."""
        import sqlalchemy as sa

        w = S.windows
        cols = (w.c.id, w.c.stream_id, w.c.time, w.c.start, w.c.end, w.c.embedding)
        added = 0
        with self._lock, self.store.engine.connect() as conn:
            while True:
                q = sa.select(*cols).where(w.c.model_id == self.model_id, w.c.id > self.last_id)
                rows = conn.execute(q.order_by(w.c.id).limit(LOAD_CHUNK)).all()
                if not rows:
                    break
                ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
                block: dict[str, np.ndarray] = {
                    "id": ids,
                    "stream": np.fromiter((r[1] for r in rows), np.int32, len(rows)),
                    "time": np.fromiter((r[2] for r in rows), np.float64, len(rows)),
                    "span": np.fromiter((r[4] - r[3] for r in rows), np.float32, len(rows)),
                    "bits": codec.signs([r[5] for r in rows], self.dim),
                }
                self._blocks.append(block)
                self.last_id = int(ids[-1])
                added += len(rows)
            first = conn.execute(sa.select(sa.func.min(w.c.id)).where(w.c.model_id == self.model_id)).scalar()
        if added or (first is not None and self._blocks and int(self._blocks[0]["id"][0]) < int(first)):
            self._merge(None if first is None else int(first))
        return added

    def _merge(self, first: int | None) -> None:
        with self._lock:
            if not self._blocks:
                return
            merged = {k: np.concatenate([b[k] for b in self._blocks]) for k in self._blocks[0]}
            if first is not None:
                keep = merged["id"] >= first
                if not keep.all():
                    merged = {k: v[keep] for k, v in merged.items()}
            self._blocks = [merged]
            self._merged = merged

    def __len__(self) -> int:
        return 0 if self._merged is None else len(self._merged["id"])

    def candidates(
        self, q: np.ndarray, since: float | None, until: float | None, streams: list[int] | None, k: int
    ) -> tuple[np.ndarray, int]:
        """(ids of the k windows nearest by sign bits within the range, windows in the range)."""
        m = self._merged
        if m is None or not len(m["id"]):
            return np.zeros(0, np.int64), 0
        mask = np.ones(len(m["id"]), bool)
        if since is not None:
            mask &= m["time"] >= since
        if until is not None:
            mask &= m["time"] <= until
        if streams is not None:
            mask &= np.isin(m["stream"], np.asarray(streams, np.int32))
        sel = np.flatnonzero(mask)
        if len(sel) <= k:
            return m["id"][sel], len(sel)
        qbits = np.packbits(q > 0)
        qbits = np.pad(qbits, (0, self.words * 8 - len(qbits))).view(np.uint64)
        dist = np.bitwise_count(m["bits"][sel] ^ qbits).sum(axis=1, dtype=np.uint16)
        best = np.argpartition(dist, k)[:k]
        return m["id"][sel[best]], len(sel)


def _fetch(conn: Any, sql: str, ids: list[int]) -> list[Any]:
    """``sql`` with ``{ids}`` filled by integer ids, in chunks (plain integers: nothing to escape, and no
    bound-parameter limit or per-parameter cost)."""
    out: list[Any] = []
    for i in range(0, len(ids), 5000):
        out += conn.exec_driver_sql(sql.format(ids=",".join(str(int(x)) for x in ids[i : i + 5000]))).all()
    return out


def rerank(
    store: Any, ids: np.ndarray, q: np.ndarray, dim: int, bg: np.ndarray | None = None, keep: int | None = None
) -> list[dict[str, Any]]:
    """The windows ``ids`` with their exact score, best first (the ``keep`` best): the cosine of the
    stored vector to ``q``, minus its best cosine to a background description when ``bg`` (B, J) has any
    (as the Scorer does)."""
    if not len(ids):
        return []
    with store.engine.connect() as conn:
        rows = _fetch(conn, "SELECT id, embedding FROM windows WHERE id IN ({ids})", [int(x) for x in ids])
        if not rows:
            return []
        x = codec.decode_many([r[1] for r in rows], dim)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        cos = np.nan_to_num(x @ np.asarray(q, np.float32), nan=-2.0)
        if bg is not None and len(bg):
            back = np.nan_to_num((x @ bg.T).max(axis=1), nan=0.0)
        else:
            back = np.zeros(len(rows), np.float32)
        score = cos - back
        order = np.argsort(-score)[: keep or len(rows)]
        best = {int(rows[i][0]): (float(score[i]), float(cos[i])) for i in order}
        meta = _fetch(
            conn,
            'SELECT w.id, s.name, w.zone, w.time, w.start, w."end", w.recording_id FROM windows w '
            "JOIN streams s ON s.id = w.stream_id WHERE w.id IN ({ids})",
            list(best),
        )
    out = []
    for r in meta:
        d = dict(zip(("id", "name", "zone", "time", "start", "end", "recording_id"), r, strict=True))
        d["score"], d["cosine"] = best[int(r[0])]
        out.append(d)
    return sorted(out, key=lambda r: -r["score"])


def _span(r: dict[str, Any]) -> tuple[float, float]:
    """A window's wall-clock span (its time is its newest frame's)."""
    return float(r["time"]) - float(r["end"] - r["start"]), float(r["time"])


def merge(windows: list[dict[str, Any]], limit: int, drop: float = MERGE_DROP) -> list[Moment]:
    """Scored windows -> moments, best first: from the best window not yet used, its stream's windows
    that follow on from it in time and score at least its score - ``drop`` join it; windows that
    overlap a moment are not used again."""
    lines: dict[tuple[str, str | None, Any], list[dict[str, Any]]] = {}
    for r in windows:
        lines.setdefault((r["name"], r["zone"], r["recording_id"]), []).append(r)
    pos: dict[int, tuple[list[dict[str, Any]], int]] = {}
    for line in lines.values():
        line.sort(key=lambda r: r["time"])
        for i, r in enumerate(line):
            pos[int(r["id"])] = (line, i)
    used: set[int] = set()
    moments: list[Moment] = []
    for best in sorted(windows, key=lambda r: -r["score"]):
        if len(moments) >= limit:
            break
        if int(best["id"]) in used:
            continue
        line, i = pos[int(best["id"])]
        lo = hi = i
        while lo > 0 and _joins(line[lo - 1], line[lo], best, used, drop):
            lo -= 1
        while hi + 1 < len(line) and _joins(line[hi + 1], line[hi], best, used, drop):
            hi += 1
        run = line[lo : hi + 1]
        t0, t1 = _span(run[0])[0], max(_span(r)[1] for r in run)
        for r in line:  # the moment's span is taken
            a, b = _span(r)
            if a < t1 and b > t0:
                used.add(int(r["id"]))
        bs = _span(best)
        m = Moment(best["name"], best["zone"], t0, t1, best["score"], int(best["id"]), 0.5 * (bs[0] + bs[1]), len(run))
        m.recording = best["recording_id"]
        m.capture = (float(run[0]["start"]), float(max(r["end"] for r in run)))
        moments.append(m)
    return moments


def _joins(r: dict[str, Any], neighbour: dict[str, Any], best: dict[str, Any], used: set[int], drop: float) -> bool:
    """``r`` continues the run at ``neighbour`` (spans touch) and scores close enough to its best."""
    if int(r["id"]) in used or r["score"] < best["score"] - drop:
        return False
    a, b = _span(r)
    c, d = _span(neighbour)
    gap = max(c - b, a - d)
    return gap <= 0.5 * (b - a)


class Searcher:
    """Search one store: a SignIndex per model, kept between searches (the runtime's and the CLI's)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._indexes: dict[int, SignIndex] = {}

    def search(
        self,
        q: np.ndarray,
        model_id: int,
        dim: int,
        *,
        background: np.ndarray | None = None,
        since: float | None = None,
        until: float | None = None,
        streams: list[int] | None = None,
        limit: int = 20,
    ) -> tuple[list[Moment], int]:
        """(the best ``limit`` moments, windows searched)."""
        idx = self._indexes.get(model_id)
        if idx is None:
            idx = self._indexes[model_id] = SignIndex(self.store, model_id, dim)
        idx.refresh()
        q = np.asarray(q, np.float32).reshape(-1)
        bg = None if background is None or not len(background) else np.asarray(background, np.float32)
        # the first pass ranks by the direction of the margin: the sentence minus the background's mean
        d = q if bg is None else q - bg.mean(axis=0)
        ids, n = idx.candidates(d, since, until, streams, max(RERANK, 50 * limit))
        return merge(rerank(self.store, ids, q, dim, bg, keep=MERGE_POOL * limit), limit), n
