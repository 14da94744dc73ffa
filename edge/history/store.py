"""The history store: open (check, migrate), the ids it keeps, and one transaction per batch of writes.

    store = open_store("history.sqlite")          # or "postgresql://user@host/db"
    store.write(Batch(windows=[...], events=[...]))

Opening checks before it changes anything: a file that is not SQLite, an SQLite file of something
else, a corrupt one or one from a newer cezsar gets one line (:class:`HistoryError`) and is left as it
was. A cezsar history of an older revision is migrated in place (Alembic, edge/history/migrations);
on PostgreSQL the migration holds an advisory lock, so boxes that start together migrate once.

SQLite runs in WAL mode with ``synchronous=NORMAL``: a committed batch survives ``kill -9`` of the
process; the writer (edge/history/writer.py) commits at least every half second.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cezsar.errors import CezsarError
from edge.history import schema as S
from edge.history.url import HistoryURL, history_url, redact

log = logging.getLogger("cezsar.history")
logging.getLogger("alembic").setLevel(logging.WARNING)  # the store says what migrated, in one line

SQLITE_HEADER = b"SQLite format 3\x00"
PAGE_SIZE = 16384  # rows of ~0.6 kB (int8) and ~1.1 kB (fp16) waste little of a page
PG_LOCK = 0x63657A73  # "cezs": the advisory lock held while migrating


class HistoryError(CezsarError):
    """The history cannot be used as it is (one line; nothing was changed)."""


class HistoryUnavailable(CezsarError):
    """The history cannot be reached or written now (a server down, a disk full): worth retrying."""


def _sqlalchemy() -> Any:
    try:
        import sqlalchemy
    except ModuleNotFoundError:
        raise CezsarError("the history needs SQLAlchemy and Alembic: pip install 'cezsar[history]'") from None
    return sqlalchemy


# ---------------------------------------------------------------------------------------------- checks


def check_sqlite_file(path: Path) -> str | None:
    """Raise HistoryError when ``path`` is not a usable cezsar history; return its Alembic revision
    (None: a new or empty file). Reads only."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    where = f"history {path}"
    if path.is_dir():
        raise HistoryError(f"{where}: is a folder")
    with path.open("rb") as f:
        head = f.read(len(SQLITE_HEADER))
    if head != SQLITE_HEADER:
        raise HistoryError(f"{where}: not an SQLite file (a cezsar history is one); left untouched")
    # without a -wal file beside it, "immutable" reads with no lock and no side file (nothing appears
    # beside a file that is not ours); with one (a history that was running), a read-only open sees it
    wal = path.with_name(path.name + "-wal").exists()
    try:
        con = sqlite3.connect(f"file:{path}?{'mode=ro' if wal else 'immutable=1'}", uri=True, timeout=10)
    except sqlite3.Error as e:
        raise HistoryError(f"{where}: cannot be opened ({e}); left untouched") from None
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            return None
        if "cezsar_history" not in tables or "alembic_version" not in tables:
            shown = ", ".join(sorted(tables)[:6]) + (" ..." if len(tables) > 6 else "")
            raise HistoryError(f"{where}: an SQLite file of something else (tables: {shown}); left untouched")
        fmt = con.execute("SELECT value FROM cezsar_history WHERE key='format'").fetchone()
        if fmt is None or fmt[0] != S.FORMAT:
            raise HistoryError(f"{where}: not a cezsar history (format {fmt and fmt[0]!r}); left untouched")
        rev = con.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError as e:
        raise HistoryError(f"{where}: damaged or not a database ({e}); left untouched") from None
    finally:
        con.close()
    revision = None if rev is None else str(rev[0])
    _check_revision(revision, where)
    return revision


def _known_revisions() -> list[str]:
    from alembic.script import ScriptDirectory

    return [s.revision for s in ScriptDirectory.from_config(_alembic_config(None)).walk_revisions()]


def _check_revision(revision: str | None, where: str) -> None:
    if revision is not None and revision not in _known_revisions():
        raise HistoryError(
            f"{where}: schema revision {revision} is not one this cezsar knows (newest {S.HEAD}): "
            "written by a newer cezsar? left untouched"
        )


def _alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.attributes["connection"] = connection
    return cfg


# ---------------------------------------------------------------------------------------------- the store


@dataclass
class WindowRow:
    stream: str  # the stream (a zone is ``zone``)
    zone: str | None
    time: float  # Unix time of the newest frame
    start: float
    end: float
    embedding: bytes  # edge/history/codec.py
    scores: bytes | None = None
    scoring: int | None = None  # a scorings id (HistoryStore.scoring_id)
    recording: int | None = None


@dataclass
class Batch:
    windows: list[WindowRow] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # event message payloads, in order
    media: list[dict[str, Any]] = field(default_factory=list)  # media message payloads
    thumbnails: list[tuple[str, float, bytes]] = field(default_factory=list)  # (stream, time, jpeg)
    recording: int | None = None  # the recording (indexed footage) its thumbnails belong to
    offsets: dict[str, float] = field(default_factory=dict)  # stream -> wall - capture time (media clock)

    def __len__(self) -> int:
        return len(self.windows) + len(self.events) + len(self.media) + len(self.thumbnails)


class HistoryStore:
    """An open history (thread-safe: the writer thread writes, HTTP and CLI threads read)."""

    def __init__(self, where: HistoryURL, engine: Any) -> None:
        self.where, self.engine = where, engine
        self.kind = where.kind
        self._ids: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HistoryStore({self.where.redacted()})"

    def close(self) -> None:
        self.engine.dispose()

    # -- ids: each made in its own committed transaction, before the batch that uses it ----------------
    def _get_or_add(self, table: Any, key_col: str, key: str, values: dict[str, Any]) -> int:
        cached = self._ids.get((table.name, key))
        if cached is not None:
            return cached
        sa = _sqlalchemy()
        col = table.c[key_col]
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(table.c.id).where(col == key)).first()
            if row is None:
                conn.execute(_insert(conn, table).values({key_col: key, **values}).on_conflict_do_nothing())
                row = conn.execute(sa.select(table.c.id).where(col == key)).first()
        with self._lock:  # cached once committed: a rolled-back batch never leaves an id behind
            self._ids[(table.name, key)] = int(row[0])
        return int(row[0])

    def model_id(self, model_hash: str, dim: int) -> int:
        return self._get_or_add(S.models, "hash", model_hash, {"dim": int(dim), "first_seen": time.time()})

    def stream_id(self, name: str) -> int:
        return self._get_or_add(S.streams, "name", name, {})

    def scoring_id(self, model_hash: str, dim: int, actions: dict[str, Any], names: list[str]) -> int:
        """The scorings row of an action set (its file form) as it scored windows of this model."""
        body = json.dumps({"actions": actions, "names": names}, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(f"{model_hash}\n{body}".encode()).hexdigest()
        mid = self.model_id(model_hash, dim)
        values = {"model_id": mid, "actions": json.dumps(actions), "names": json.dumps(names), "created": time.time()}
        return self._get_or_add(S.scorings, "digest", digest, values)

    def prepare(self, batch: Batch, model_hash: str, dim: int) -> int:
        """Make the ids a batch needs (model, streams) before its transaction; returns the model's."""
        for name in {w.stream for w in batch.windows} | {str(p.get("stream")) for p in batch.events}:
            self.stream_id(name)
        for name, _, _ in batch.thumbnails:
            self.stream_id(name)
        return self.model_id(model_hash, dim)

    # -- writes -------------------------------------------------------------------------------------
    def write(self, batch: Batch, model_hash: str, dim: int) -> None:
        """One transaction: the batch's windows, events, media and thumbnails (all or nothing)."""
        mid = self.prepare(batch, model_hash, dim)
        with self.engine.begin() as conn:
            self.write_in(conn, batch, mid)

    def write_in(self, conn: Any, batch: Batch, mid: int) -> None:
        """:meth:`write` inside the caller's transaction (:meth:`prepare` first)."""
        if batch.windows:
            sid = self.stream_id
            rows = [
                (sid(w.stream), w.zone, mid, w.time, w.start, w.end, w.scoring, w.scores, w.embedding, w.recording)
                for w in batch.windows
            ]
            _insert_rows(conn, S.windows, _WINDOW_COLUMNS, rows)
        if batch.events:
            self._events(conn, batch.events, mid, batch.offsets)
        for p in batch.media:
            self._media(conn, p)
        if batch.thumbnails:
            thumbs = [(self.stream_id(s), t, j, batch.recording) for s, t, j in batch.thumbnails]
            _insert_rows(conn, S.thumbnails, ("stream_id", "time", "jpeg", "recording_id"), thumbs)

    def _events(self, conn: Any, payloads: list[dict[str, Any]], model_id: int, offsets: dict[str, float]) -> None:
        """Every event message of the batch in two upserts and one insert of phases, each one statement
        over many rows (a statement per message cost a millisecond of the writer's GIL each). An event's
        start and updates come before its end, so the upserts of the other phases run first; they are
        folded into one row per event first (what the upserts one after the other would leave)."""
        rows = [self._event_row(p, model_id, offsets) for p in payloads]
        for end in (False, True):
            part = [r for r, p in zip(rows, payloads, strict=True) if (p.get("phase") == "end") == end]
            if part:
                conn.execute(_event_upsert(conn, end), part if end else _folded(part))
        phases = [
            (r["id"], str(p.get("phase")), float(p.get("time") or time.time()), r["score"], r["peak"])
            for r, p in zip(rows, payloads, strict=True)
        ]
        _insert_rows(conn, S.event_phases, ("event_id", "phase", "time", "score", "peak"), phases)

    def _event_row(self, p: dict[str, Any], model_id: int, offsets: dict[str, float]) -> dict[str, Any]:
        stream = str(p.get("stream"))
        start, end = float(p["start"]), p.get("end")
        if p.get("clock") == "wall":
            t0, t1 = start, end
        else:  # media time: placed as the stream's windows are (HistoryWriter._time)
            off = offsets.get(f"{stream}@{p['zone']}" if p.get("zone") else stream)
            if off is None:
                off = float(p.get("captured_at") or p.get("time") or time.time()) - float(p.get("peak_time", start))
            t0, t1 = start + off, None if end is None else float(end) + off
        media: dict[str, Any] = p["media"] if isinstance(p.get("media"), dict) else {}
        return {
            "id": str(p["id"]),
            "stream_id": self.stream_id(stream),
            "zone": p.get("zone"),
            "action": str(p.get("action")),
            "model_id": model_id,
            "actions_version": p.get("actions_version"),
            "host": p.get("host"),
            "instance": p.get("instance"),
            "clock": p.get("clock"),
            "start": start,
            "end": end,
            "time_start": t0,
            "time_end": t1,
            "peak": float(p.get("peak", 0.0)),
            "peak_time": float(p.get("peak_time", start)),
            "score": float(p.get("score", 0.0)),
            "windows": int(p.get("windows", 0)),
            "reason": p.get("reason"),
            "snapshot": media.get("snapshot"),
            "clip": media.get("clip"),
        }

    def _media(self, conn: Any, p: dict[str, Any]) -> None:
        values: dict[str, Any] = {"media_written": bool(p.get("written"))}
        for k in ("snapshot", "clip"):
            if p.get(k):
                values[k] = p[k]
        conn.execute(S.events.update().where(S.events.c.id == str(p.get("event"))).values(**values))


_EVENT_KEPT = {"id", "stream_id", "zone", "action", "model_id", "actions_version", "host", "instance", "clock"}
_EVENT_KEPT |= {"start", "time_start", "media_written"}  # set once, by the first message of an event
_EVENT_AT_END = {"snapshot", "clip", "reason", "end", "time_end"}  # set by the end message only


def _folded(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An event's start and update rows as one: the first's columns that only an insert sets, the last
    value that is not None of the others (the upserts keep what is stored where a message has None)."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        have = out.get(r["id"])
        if have is None:
            out[r["id"]] = dict(r)
            continue
        for k, v in r.items():
            if v is not None and k not in _EVENT_KEPT and k not in _EVENT_AT_END:
                have[k] = v
    return list(out.values())


@functools.cache
def _event_upsert_for(dialect: str, end: bool) -> Any:
    """The upsert of an event message: an end message sets every later column (a None too); the others
    set the columns they carry (a None keeps what is stored) and leave the end's columns alone. Built
    once per dialect (building it, and its cache key, cost the writer about a millisecond a batch)."""
    import sqlalchemy as sa

    ins = _insert_for(dialect, S.events)
    cols = [c.name for c in S.events.columns if c.name not in _EVENT_KEPT]
    if end:
        set_ = {c: ins.excluded[c] for c in cols}
    else:
        set_ = {c: sa.func.coalesce(ins.excluded[c], S.events.c[c]) for c in cols if c not in _EVENT_AT_END}
    return ins.on_conflict_do_update(index_elements=["id"], set_=set_)


def _event_upsert(conn: Any, end: bool) -> Any:
    return _event_upsert_for(conn.dialect.name, end)


SQLITE_ROWS_PER_INSERT = 500


_WINDOW_COLUMNS = (
    "stream_id",
    "zone",
    "model_id",
    "time",
    "start",
    "end",
    "scoring_id",
    "scores",
    "embedding",
    "recording_id",
)


def _insert_rows(conn: Any, table: Any, cols: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    """Many rows (tuples in ``cols``' order). On SQLite a few multi-row INSERTs, SQLITE_ROWS_PER_INSERT
    rows a statement: no per-row work in SQLAlchemy, and one GIL hand-over per statement where the sqlite3
    module's executemany has one per row (the runtime's main thread pays for each); elsewhere one
    SQLAlchemy executemany."""
    if conn.dialect.name != "sqlite":
        conn.execute(table.insert(), [dict(zip(cols, r, strict=True)) for r in rows])
        return
    one = "(" + ",".join("?" * len(cols)) + ")"
    names = ",".join(f'"{c}"' for c in cols)
    for i in range(0, len(rows), SQLITE_ROWS_PER_INSERT):
        part = rows[i : i + SQLITE_ROWS_PER_INSERT]
        sql = f'INSERT INTO "{table.name}" ({names}) VALUES ' + ",".join([one] * len(part))
        conn.exec_driver_sql(sql, tuple(itertools.chain.from_iterable(part)))


def _insert(conn: Any, table: Any) -> Any:
    """INSERT with ON CONFLICT (the dialect's own)."""
    return _insert_for(conn.dialect.name, table)


def _insert_for(dialect: str, table: Any) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    return (postgresql if dialect == "postgresql" else sqlite).insert(table)


# ---------------------------------------------------------------------------------------------- opening


def _sqlite_engine(path: Path) -> Any:
    sa = _sqlalchemy()
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 30, "check_same_thread": False})
    fresh = not path.exists() or path.stat().st_size == 0

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi: Any, record: Any) -> None:
        cur = dbapi.cursor()
        if fresh:
            cur.execute(f"PRAGMA page_size={PAGE_SIZE}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    return engine


def _pg_engine(where: HistoryURL) -> Any:
    sa = _sqlalchemy()
    try:
        import psycopg  # noqa: F401
    except ModuleNotFoundError:
        raise CezsarError("a PostgreSQL history needs psycopg: pip install 'cezsar[history]'") from None
    return sa.create_engine(where.url, pool_pre_ping=True, connect_args={"connect_timeout": 5})


def migrate(engine: Any, where: str) -> str:
    """Bring the schema to HEAD (in place); returns the revision it was at ('' for a new one)."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    sa = _sqlalchemy()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK})
            names = set(sa.inspect(conn).get_table_names())
            if names & set(S.TABLES) and "cezsar_history" not in names:
                raise HistoryError(f"history {where}: the database has tables of something else; left untouched")
        before = MigrationContext.configure(conn).get_current_revision() or ""
        _check_revision(before or None, f"history {where}")
        if before != S.HEAD:
            command.upgrade(_alembic_config(conn), "head")
            log.info("history %s: schema %s -> %s", where, before or "new", S.HEAD)
        marker = _insert(conn, S.info).values(key="format", value=S.FORMAT).on_conflict_do_nothing()
        conn.execute(marker)
        created = _insert(conn, S.info).values(key="created", value=str(time.time())).on_conflict_do_nothing()
        conn.execute(created)
    return before


def open_store(location: str | Path | HistoryURL, password: str | None = None) -> HistoryStore:
    """Check, open and migrate a history; raises HistoryError (one line, nothing changed: not usable as
    it is) or HistoryUnavailable (one line: cannot be reached or written now; the writer retries)."""
    where = location if isinstance(location, HistoryURL) else history_url(location, password)
    if where.kind == "sqlite":
        assert where.path is not None
        check_sqlite_file(where.path)
        engine = _sqlite_engine(where.path)
    else:
        engine = _pg_engine(where)
    try:
        migrate(engine, where.redacted())
    except HistoryError:
        engine.dispose()
        raise
    except Exception as e:  # noqa: BLE001 - the database's own error, as one line
        engine.dispose()
        raise HistoryUnavailable(f"history {where.redacted()}: {describe_error(e)}") from None
    return HistoryStore(where, engine)


def describe_error(e: BaseException) -> str:
    """One line for a database error, without a password."""
    text = str(getattr(e, "orig", None) or e).strip().splitlines()
    return redact(f"{type(getattr(e, 'orig', None) or e).__name__}: {text[0] if text else ''}")[:300]


def rows_of(result: Iterable[Any]) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in result]
