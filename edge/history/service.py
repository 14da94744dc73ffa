"""What the HTTP routes, the console and the verbs ask of a history: review, search, backtest.

:class:`HistoryService` reads a :class:`~edge.history.store.HistoryStore` (its own connections: reads
never wait for the writer's transactions in WAL mode) and needs the text tower only for a sentence
(search) or new descriptions (backtest). Every bad input is a :class:`CezsarError` with one line.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from cezsar.errors import CezsarError
from cezsar.scorecal import ScoreCalibration
from edge.actions import ActionSet, actions_from_obj
from edge.history import codec
from edge.history import schema as S
from edge.history.backtest import Backtest, run_backtest, suggest_threshold
from edge.history.search import Searcher
from edge.history.store import HistoryStore, rows_of

Encode = Callable[[Sequence[str]], np.ndarray]
_AGO = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(s|m|h|d|w)\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
AROUND_S = 30.0  # the scores shown around an event: this much before its start and after its end
MAX_PAGE = 200


def parse_time(value: Any, what: str, now: float | None = None) -> float | None:
    """``24h`` / ``30m`` / ``7d`` (that long ago), an ISO date or time, or Unix seconds -> Unix seconds."""
    if value is None or value == "":
        return None
    now = time.time() if now is None else now
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value)
    m = _AGO.match(text)
    if m:
        return now - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise CezsarError(
            f"{what} {text!r}: expected a duration ago (24h, 30m, 7d), an ISO date or Unix seconds"
        ) from None


class HistoryService:
    def __init__(
        self,
        store: HistoryStore,
        model_hash: str,
        dim: int,
        encode: Encode | None = None,
        background: Callable[[], Sequence[str]] | None = None,
        calibration: ScoreCalibration | None = None,
    ) -> None:
        """``encode``: the text tower (unit-norm embeddings); ``background``: the background descriptions
        a search subtracts (the runtime's current action set's; the CLI's --actions file's);
        ``calibration``: the deploy folder's score calibration, so a backtest decides as the live run did."""
        self.store, self.model_hash, self.dim, self.encode = store, model_hash, int(dim), encode
        self.background = background
        self.calibration = calibration
        self.searcher = Searcher(store)

    # -- lookups ------------------------------------------------------------------------------------
    def _stream_ids(self, names: Sequence[str] | None) -> list[int] | None:
        import sqlalchemy as sa

        if not names:
            return None
        with self.store.engine.connect() as conn:
            rows = conn.execute(sa.select(S.streams.c.id, S.streams.c.name).where(S.streams.c.name.in_(list(names))))
            found = {r[1]: int(r[0]) for r in rows}
        missing = [n for n in names if n not in found]
        if missing:
            raise CezsarError(f"history: no stream named {', '.join(map(repr, missing))} in {self.store.where}")
        return list(found.values())

    def _model_id(self) -> int | None:
        import sqlalchemy as sa

        with self.store.engine.connect() as conn:
            r = conn.execute(sa.select(S.models.c.id).where(S.models.c.hash == self.model_hash)).first()
        return None if r is None else int(r[0])

    def streams(self) -> list[str]:
        import sqlalchemy as sa

        with self.store.engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.select(S.streams.c.name).order_by(S.streams.c.name))]

    # -- review ---------------------------------------------------------------------------------------
    def events(
        self,
        *,
        stream: str | None = None,
        action: str | None = None,
        since: Any = None,
        until: Any = None,
        page: int = 1,
        per_page: int = 50,
    ) -> dict[str, Any]:
        """A page of stored events, newest first, with the filters' total."""
        import sqlalchemy as sa

        e, st = S.events, S.streams
        page, per_page = max(1, int(page)), max(1, min(MAX_PAGE, int(per_page)))
        q = sa.select(e, st.c.name.label("stream")).join(st, st.c.id == e.c.stream_id)
        conds = []
        if stream:
            conds.append(st.c.name == stream)
        if action:
            conds.append(e.c.action == action)
        t0, t1 = parse_time(since, "since"), parse_time(until, "until")
        if t0 is not None:
            conds.append(e.c.time_start >= t0)
        if t1 is not None:
            conds.append(e.c.time_start <= t1)
        with self.store.engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(q.where(*conds).subquery())).scalar() or 0
            rows = rows_of(
                conn.execute(
                    q.where(*conds).order_by(e.c.time_start.desc()).limit(per_page).offset((page - 1) * per_page)
                )
            )
            actions = [r[0] for r in conn.execute(sa.select(e.c.action).distinct().order_by(e.c.action))]
        for r in rows:
            r.pop("stream_id", None)
            r["thumbnail"] = self.thumbnail_near(
                r["stream"], r["time_start"] + 0.5 * ((r["time_end"] or r["time_start"]) - r["time_start"])
            )
        pages = max(1, -(-int(total) // per_page))
        return {
            "events": rows,
            "total": int(total),
            "page": page,
            "pages": pages,
            "per_page": per_page,
            "streams": self.streams(),
            "actions": actions,
        }

    def event(self, event_id: str) -> dict[str, Any]:
        """One event with its phases and its action's scores on its stream around it."""
        import sqlalchemy as sa

        e, st, w = S.events, S.streams, S.windows
        with self.store.engine.connect() as conn:
            row = conn.execute(
                sa.select(e, st.c.name.label("stream")).join(st, st.c.id == e.c.stream_id).where(e.c.id == event_id)
            ).first()
            if row is None:
                raise CezsarError(f"history: no event {event_id!r}")
            ev = dict(row._mapping)
            phases = rows_of(
                conn.execute(
                    sa.select(S.event_phases.c.phase, S.event_phases.c.time, S.event_phases.c.score)
                    .where(S.event_phases.c.event_id == event_id)
                    .order_by(S.event_phases.c.id)
                )
            )
            t0 = ev["time_start"] - AROUND_S
            t1 = (ev["time_end"] or ev["time_start"]) + AROUND_S
            q = sa.select(w.c.time, w.c.start, w.c.end, w.c.scoring_id, w.c.scores).where(
                w.c.stream_id == ev["stream_id"], w.c.time >= t0, w.c.time <= t1
            )
            q = q.where(w.c.zone == ev["zone"]) if ev["zone"] else q.where(w.c.zone.is_(None))
            wins = conn.execute(q.order_by(w.c.time).limit(5000)).all()
            names = {int(r[0]): json.loads(r[1]) for r in conn.execute(sa.select(S.scorings.c.id, S.scorings.c.names))}
        scores = []
        for t, _, _, sid, blob in wins:
            nm = names.get(sid) if sid is not None else None
            if nm and ev["action"] in nm:
                v = codec.decode_scores(blob, len(nm))[nm.index(ev["action"])]
                if not np.isnan(v):
                    scores.append([round(float(t), 3), float(v)])
        ev.pop("stream_id", None)
        ev["thumbnail"] = self.thumbnail_near(ev["stream"], ev["time_start"])
        return {"event": ev, "phases": phases, "scores": scores}

    def thumbnail_near(self, stream: str, t: float, within: float = 30.0) -> int | None:
        import sqlalchemy as sa

        th, st = S.thumbnails, S.streams
        with self.store.engine.connect() as conn:
            sid = conn.execute(sa.select(st.c.id).where(st.c.name == stream)).scalar()
            if sid is None:
                return None
            after = conn.execute(
                sa.select(th.c.id, th.c.time)
                .where(th.c.stream_id == sid, th.c.time >= t, th.c.time <= t + within)
                .order_by(th.c.time)
                .limit(1)
            ).first()
            before = conn.execute(
                sa.select(th.c.id, th.c.time)
                .where(th.c.stream_id == sid, th.c.time < t, th.c.time >= t - within)
                .order_by(th.c.time.desc())
                .limit(1)
            ).first()
        best = min((r for r in (after, before) if r is not None), key=lambda r: abs(r[1] - t), default=None)
        return None if best is None else int(best[0])

    def thumbnail(self, thumb_id: int) -> bytes | None:
        import sqlalchemy as sa

        with self.store.engine.connect() as conn:
            r = conn.execute(sa.select(S.thumbnails.c.jpeg).where(S.thumbnails.c.id == int(thumb_id))).first()
        return None if r is None else bytes(r[0])

    # -- search -----------------------------------------------------------------------------------------
    def search(
        self, text: Any, *, since: Any = None, until: Any = None, stream: str | None = None, limit: int = 20
    ) -> dict[str, Any]:
        """A sentence -> the best moments in the range (edge/history/search.py)."""
        import sqlalchemy as sa

        if not isinstance(text, str) or not text.strip():
            raise CezsarError("search: give a sentence")
        if len(text) > 500:
            raise CezsarError("search: the sentence is longer than 500 characters")
        if not 1 <= int(limit) <= 500:
            raise CezsarError(f"search: limit {limit}: must be 1-500")
        if self.encode is None:
            raise CezsarError("search: no text tower (give the deploy folder)")
        t0 = time.perf_counter()
        q = self.encode([text.strip()])[0]
        back = list(self.background()) if self.background is not None else []
        bg = self.encode(back) if back else None
        mid = self._model_id()
        if mid is None:
            raise CezsarError(f"history {self.store.where}: no windows of model {self.model_hash[:12]}")
        streams = self._stream_ids([stream] if stream else None)
        moments, n = self.searcher.search(
            q,
            mid,
            self.dim,
            background=bg,
            since=parse_time(since, "since"),
            until=parse_time(until, "until"),
            streams=streams,
            limit=int(limit),
        )
        out = []
        with self.store.engine.connect() as conn:
            for m in moments:
                d = m.as_dict()
                d["thumbnail"] = self.thumbnail_near(m.stream, m.peak)
                ev = conn.execute(
                    sa.select(S.events.c.id, S.events.c.action, S.events.c.snapshot, S.events.c.clip)
                    .join(S.streams, S.streams.c.id == S.events.c.stream_id)
                    .where(S.streams.c.name == m.stream, S.events.c.time_start <= m.end)
                    .where(sa.func.coalesce(S.events.c.time_end, S.events.c.time_start) >= m.start)
                    .limit(1)
                ).first()
                d["event"] = None if ev is None else dict(ev._mapping)
                if m.recording is not None:
                    path = conn.execute(sa.select(S.recordings.c.path).where(S.recordings.c.id == m.recording)).scalar()
                    d["file"] = path
                out.append(d)
        return {
            "ok": True,
            "text": text.strip(),
            "background": back,
            "moments": out,
            "windows": n,
            "seconds": round(time.perf_counter() - t0, 4),
        }

    # -- backtest -------------------------------------------------------------------------------------
    def backtest(
        self,
        aset: ActionSet,
        *,
        since: Any = "24h",
        until: Any = None,
        stream: str | None = None,
        report: Sequence[str] | None = None,
        per_day: float | None = None,
        bins: int = 48,
    ) -> dict[str, Any]:
        """Replay ``aset`` over the stored windows (edge/history/backtest.py); ``report``: the actions to
        list (default all); ``per_day``: also suggest each one's threshold for that many events a day."""
        if self.encode is None:
            raise CezsarError("backtest: no text tower (give the deploy folder)")
        names = list(report) if report else aset.names()
        t0, t1 = parse_time(since, "since"), parse_time(until, "until")
        bt = run_backtest(
            self.store,
            aset,
            self.encode,
            self.model_hash,
            self.dim,
            since=t0,
            until=t1,
            streams=self._stream_ids([stream] if stream else None),
            keep_series=names,
            calibration=self.calibration,
        )
        return self._report(bt, aset, names, per_day, bins, t0, t1)

    def _report(
        self,
        bt: Backtest,
        aset: ActionSet,
        names: list[str],
        per_day: float | None,
        bins: int,
        t0: float | None,
        t1: float | None,
    ) -> dict[str, Any]:
        events = [e for e in bt.events if e["action"] in names]
        days = bt.days
        lo = t0 if t0 is not None else (bt.first or 0.0)
        hi = t1 if t1 is not None else (bt.last or lo + 1.0)
        edges = np.linspace(lo, max(hi, lo + 1.0), bins + 1)
        spark: dict[str, Any] = {"edges": [round(float(x), 3) for x in edges], "max": {}, "starts": {}}
        for n in names:
            s = bt.series.get(n, [])
            walls = np.asarray([x[2] for x in s]) if s else np.zeros(0)
            vals = np.asarray([x[3] for x in s]) if s else np.zeros(0)
            idx = np.clip(np.searchsorted(edges, walls, side="right") - 1, 0, bins - 1)
            mx = np.full(bins, np.nan)
            if len(vals):
                np.fmax.at(mx, idx, vals)
            spark["max"][n] = [None if np.isnan(v) else round(float(v), 4) for v in mx]
            starts = np.asarray([e["time_start"] for e in events if e["action"] == n])
            spark["starts"][n] = np.histogram(starts, edges)[0].astype(int).tolist() if len(starts) else [0] * bins
        out: dict[str, Any] = {
            "ok": True,
            "windows": bt.windows,
            "hours": round(days * 24, 3),
            "events": events,
            "count": {n: sum(1 for e in events if e["action"] == n) for n in names},
            "per_day": {
                n: round(sum(1 for e in events if e["action"] == n) / days, 2) if days else None for n in names
            },
            "replayed": bt.replayed,
            "rescored": bt.rescored,
            "refused": bt.refused,
            "seconds": round(bt.seconds, 4),
            "sparkline": spark,
        }
        if bt.refused:
            out["note"] = "; ".join(
                f"{k} windows of model {h} not used (not comparable)" for h, k in bt.refused.items()
            )
        if per_day is not None:
            t = time.perf_counter()
            out["suggestion"] = {
                n: suggest_threshold(bt.series.get(n, []), n, bt.params[n], per_day, days) for n in names
            }
            out["suggestion_seconds"] = round(time.perf_counter() - t, 4)
        return out

    def backtest_edit(
        self, current: ActionSet, fields: dict[str, Any], replaces: str | None, **kw: Any
    ) -> dict[str, Any]:
        """The console's editor: ``fields`` (one action, as the editor sends it) in place of the action
        ``replaces`` (or added) in the current set; only that action is reported."""
        obj = current.to_obj()
        action = {k: v for k, v in fields.items() if v is not None}
        others = [a for a in obj.get("actions", []) if a.get("name") not in (replaces, action.get("name"))]
        obj["actions"] = [*others, action] if obj.get("exclusive") else [action]
        aset = actions_from_obj(obj, "backtest")
        return self.backtest(aset, report=[str(action.get("name"))], **kw)


def deploy_service(
    store: HistoryStore, deploy: Any, threads: int | None = None, background: Sequence[str] = ()
) -> HistoryService:
    """The history service of a deploy folder, as the CLI verbs open it: its model hash and size, its text
    tower and its score calibration (so a backtest decides in the scale the live run decided in)."""
    from cezsar.deploy.manifest import load_manifest
    from edge.scorer import deploy_calibration
    from edge.text import TextEncoder

    manifest = load_manifest(deploy)
    text = TextEncoder(deploy, manifest, threads)
    bg = list(background)
    cal = deploy_calibration(deploy, manifest)
    return HistoryService(store, manifest.model_hash, manifest.joint_dim, text.encode, lambda: bg, cal)


class LiveHistory:
    """The running runtime's history for its routes: a service over the writer's store (once the store
    is open; until then one line says why not), the text tower and the current action set."""

    def __init__(
        self,
        writer: Any,
        encode: Encode,
        forget: Callable[[Sequence[str]], None],
        current: Callable[[], ActionSet],
        calibration: ScoreCalibration | None = None,
    ) -> None:
        self.writer, self._encode, self._forget, self.current = writer, encode, forget, current
        self.calibration = calibration
        self._service: HistoryService | None = None

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = self._encode(texts)
        self._forget(self.current().descriptions())  # a searched sentence does not stay cached
        return out

    def service(self) -> HistoryService:
        store = self.writer.store
        if store is None:
            raise CezsarError(f"history {self.writer.where}: not reachable ({self.writer.last_error or 'starting'})")
        if self._service is None or self._service.store is not store:
            self._service = HistoryService(
                store,
                self.writer.model,
                self.writer.dim,
                self.encode,
                lambda: self.current().background,
                self.calibration,
            )
        return self._service

    def backtest(self, fields: Any, replaces: Any, hours: Any, stream: Any, per_day: Any) -> dict[str, Any]:
        """The console editor's backtest: one action (new or edited) over the last ``hours``."""
        if not isinstance(fields, dict):
            raise CezsarError("backtest: 'action' must be an object (name, descriptions, threshold ...)")
        try:
            h = float(hours)
        except (TypeError, ValueError):
            raise CezsarError(f"backtest: hours {hours!r}: expected a number") from None
        if not 0 < h <= 24 * 366:
            raise CezsarError(f"backtest: hours {h:g}: must be > 0 and at most a year")
        pd = None if per_day in (None, "") else float(per_day)
        rep = replaces if isinstance(replaces, str) and replaces else None
        st = stream if isinstance(stream, str) and stream else None
        return self.service().backtest_edit(self.current(), fields, rep, since=f"{h}h", stream=st, per_day=pd)
