"""Age and size limits for windows, thumbnails and events, each on its own (docs/history.md).

A pass deletes what is older than ``max_age``, then the oldest rows beyond ``max_bytes``, in chunks of
:data:`CHUNK` rows per transaction so that the writer's batches never wait long behind it. Sizes are
estimated as rows x the mean size of the newest rows (payload + :data:`ROW_OVERHEAD`); a file does not
shrink (SQLite reuses the freed pages), it stops growing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from edge.history import schema as S

CHUNK = 20000
ROW_OVERHEAD = {"windows": 90, "thumbnails": 40, "events": 400}  # row header, other columns, index entries


@dataclass(frozen=True)
class Limits:
    max_age: float | None = None  # seconds
    max_bytes: int | None = None


@dataclass(frozen=True)
class Retention:
    windows: Limits = field(default_factory=Limits)
    thumbnails: Limits = field(default_factory=Limits)
    events: Limits = field(default_factory=Limits)
    interval: float = 60.0  # seconds between two passes of the writer

    @classmethod
    def from_settings(cls, s: Any) -> Retention:
        return cls(
            Limits(s.windows_max_age, int(s.windows_max_bytes)),
            Limits(s.thumbnails_max_age, int(s.thumbnails_max_bytes)),
            Limits(s.events_max_age, int(s.events_max_bytes)),
        )


def _table(name: str) -> tuple[Any, Any, Any]:
    """(table, its time column, its payload size expression)."""
    from sqlalchemy import func

    if name == "windows":
        t = S.windows
        return t, t.c.time, func.length(t.c.embedding) + func.coalesce(func.length(t.c.scores), 0)
    if name == "thumbnails":
        t = S.thumbnails
        return t, t.c.time, func.length(t.c.jpeg)
    t = S.events
    return t, t.c.time_start, func.length(t.c.action) + func.coalesce(func.length(t.c.clip), 0)


def estimate_bytes(conn: Any, name: str) -> tuple[int, float]:
    """(rows, estimated bytes) of one table."""
    import sqlalchemy as sa

    table, _, size = _table(name)
    rows = int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() or 0)
    if not rows:
        return 0, 0.0
    newest = sa.select(size.label("n")).order_by(table.c.id.desc() if name != "events" else table.c.time_start.desc())
    mean = conn.execute(sa.select(sa.func.avg(newest.limit(200).subquery().c.n))).scalar() or 0.0
    per = float(mean) + ROW_OVERHEAD[name]
    if name == "events":  # its phases: a few rows each
        phases = int(conn.execute(sa.select(sa.func.count()).select_from(S.event_phases)).scalar() or 0)
        per += 60.0 * phases / rows
    return rows, rows * per


def _delete(engine: Any, name: str, where: Any, limit: int | None = None) -> int:
    """Delete matching rows, oldest first, CHUNK per transaction (at most ``limit``)."""
    import sqlalchemy as sa

    table, tcol, _ = _table(name)
    key = table.c.id
    done = 0
    while limit is None or done < limit:
        n = CHUNK if limit is None else min(CHUNK, limit - done)
        with engine.begin() as conn:
            ids = [r[0] for r in conn.execute(sa.select(key).where(where).order_by(tcol).limit(n))]
            if not ids:
                break
            if name == "events":
                conn.execute(S.event_phases.delete().where(S.event_phases.c.event_id.in_(ids)))
            conn.execute(table.delete().where(key.in_(ids)))
        done += len(ids)
        if len(ids) < n:
            break
    return done


def prune(engine: Any, retention: Retention, now: float | None = None) -> dict[str, int]:
    """One pass over the three tables; returns the rows deleted per table."""
    import sqlalchemy as sa

    now = time.time() if now is None else now
    out: dict[str, int] = {}
    for name in ("windows", "thumbnails", "events"):
        lim: Limits = getattr(retention, name)
        _, tcol, _ = _table(name)
        deleted = 0
        if lim.max_age is not None:
            deleted += _delete(engine, name, tcol < now - lim.max_age)
        if lim.max_bytes is not None:
            with engine.connect() as conn:
                rows, size = estimate_bytes(conn, name)
            if size > lim.max_bytes and rows:
                excess = int(rows - rows * lim.max_bytes / size) + 1
                deleted += _delete(engine, name, sa.true(), excess)
        out[name] = deleted
    return out
