"""The history's tables (SQLAlchemy Core), the same on SQLite and PostgreSQL.

The schema is versioned by Alembic (edge/history/migrations): :func:`edge.history.store.open_store`
migrates an older file or database in place to :data:`HEAD`. These Table objects describe the newest
revision; each migration script spells out its own step and never imports them.

    cezsar_history  key/value: what this is (``format`` = cezsar-history), when it was made
    models          one row per model hash (embeddings of two models are not comparable)
    streams         stream names (a zone is a column of the window, not a stream)
    scorings        an action set as it scored windows: its file form and the order of its names
    windows         every window: wall time, capture span, stream, zone, model, embedding, scores
    events          every event: span, peak, media, action-set version, model; phases below
    event_phases    start / update / end of each event, with the score at that moment
    thumbnails      a small JPEG of each stream every few seconds
    recordings      recorded footage indexed with `cezsar index` (resumable: how far it got)
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

HEAD = "0002"
FORMAT = "cezsar-history"
TABLES = ("cezsar_history", "models", "streams", "scorings", "windows", "events", "event_phases")

metadata = MetaData()
RowId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite: the rowid itself

info = Table(
    "cezsar_history",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("hash", String(128), nullable=False, unique=True),
    Column("dim", Integer, nullable=False),
    Column("first_seen", Float, nullable=False),
)
streams = Table(
    "streams",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(160), nullable=False, unique=True),
)
scorings = Table(
    "scorings",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("digest", String(64), nullable=False, unique=True),
    Column("model_id", Integer, nullable=False),
    Column("actions", Text, nullable=False),  # JSON: the action set's file form (ActionSet.to_obj)
    Column("names", Text, nullable=False),  # JSON list: the order of the scores blob
    Column("created", Float, nullable=False),
)
windows = Table(
    "windows",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("stream_id", Integer, nullable=False),
    Column("zone", String(64)),
    Column("model_id", Integer, nullable=False),
    Column("time", Float, nullable=False),  # Unix time of the window's newest frame
    Column("start", Float, nullable=False),  # capture time of its first frame
    Column("end", Float, nullable=False),  # ... and of its last
    Column("scoring_id", Integer),
    Column("scores", LargeBinary),  # edge/history/codec.py
    Column("embedding", LargeBinary, nullable=False),  # edge/history/codec.py
    Column("recording_id", Integer),  # set for windows of indexed footage (revision 0002)
)
Index("ix_windows_time", windows.c.time)
Index("ix_windows_stream_time", windows.c.stream_id, windows.c.time)
events = Table(
    "events",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("stream_id", Integer, nullable=False),
    Column("zone", String(64)),
    Column("action", String(64), nullable=False),
    Column("model_id", Integer),
    Column("actions_version", Integer),
    Column("host", String(255)),
    Column("instance", String(64)),
    Column("clock", String(16)),
    Column("start", Float, nullable=False),  # capture times
    Column("end", Float),
    Column("time_start", Float, nullable=False),  # Unix time of the start (the start message's capture wall)
    Column("time_end", Float),
    Column("peak", Float, nullable=False),
    Column("peak_time", Float, nullable=False),
    Column("score", Float, nullable=False),
    Column("windows", Integer, nullable=False),
    Column("reason", String(32)),
    Column("snapshot", Text),
    Column("clip", Text),
    Column("media_written", Boolean),
)
Index("ix_events_time", events.c.time_start)
Index("ix_events_stream_time", events.c.stream_id, events.c.time_start)
event_phases = Table(
    "event_phases",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),
    Column("phase", String(8), nullable=False),
    Column("time", Float, nullable=False),
    Column("score", Float, nullable=False),
    Column("peak", Float, nullable=False),
)
Index("ix_event_phases_event", event_phases.c.event_id)
thumbnails = Table(
    "thumbnails",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("stream_id", Integer, nullable=False),
    Column("time", Float, nullable=False),
    Column("jpeg", LargeBinary, nullable=False),
    Column("recording_id", Integer),
)
Index("ix_thumbnails_stream_time", thumbnails.c.stream_id, thumbnails.c.time)
Index("ix_thumbnails_time", thumbnails.c.time)
recordings = Table(
    "recordings",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("path", Text, nullable=False, unique=True),
    Column("size", BigInteger, nullable=False),
    Column("mtime", Float, nullable=False),
    Column("stream_id", Integer, nullable=False),
    Column("model_id", Integer, nullable=False),
    Column("base_time", Float, nullable=False),  # Unix time of the file's capture time 0
    Column("duration", Float),
    Column("indexed_until", Float, nullable=False),  # capture time of the last stored window's end
    Column("windows", Integer, nullable=False),
    Column("done", Boolean, nullable=False),
)
