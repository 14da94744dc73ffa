"""The history store on real SQLite files (edge/history): codec, schema migration in place, refusing
foreign or damaged files without touching them, the writer (queue, drops, events with phases,
thumbnails), retention by age and size, password redaction. No model needed."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from edge.history import codec
from edge.history.retention import Limits, Retention, prune
from edge.history.store import HistoryError, open_store
from edge.history.url import history_url, redact
from edge.history.writer import HistoryWriter
from tests.helpers.history import DIM, MODEL, aset, event, result, unit


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _writer(path: Path, **kw: object) -> HistoryWriter:
    return HistoryWriter(history_url(path), MODEL, DIM, **kw).start()  # type: ignore[arg-type]


def test_codec_round_trip_and_scores_exact() -> None:
    rng = np.random.default_rng(0)
    x = unit(rng, 200, 512)
    for enc, tol in (("int8", 0.01), ("fp16", 1e-3)):
        blobs = [codec.encode_embedding(v, enc) for v in x]
        y = codec.decode_many(blobs)
        cos = (x * y).sum(1) / np.linalg.norm(y, axis=1)
        assert cos.min() > 1 - tol, (enc, cos.min())
        assert len(blobs[0]) == (517 if enc == "int8" else 1025)
    # what the live decisions saw (rounded to 4 decimals) comes back as the same float
    vals = {f"a{i}": round(float(v), 4) for i, v in enumerate(rng.uniform(-1.5, 1.5, 300))}
    names = list(vals) + ["absent"]
    back = codec.decode_scores(codec.encode_scores(vals, names), len(names))
    assert [float(v) for v in back[:-1]] == list(vals.values())
    assert np.isnan(back[-1])


def test_new_file_is_wal_and_migrates_an_old_revision_in_place(tmp_path: Path) -> None:
    from alembic import command

    from edge.history.store import _alembic_config, _sqlite_engine

    old = tmp_path / "old.sqlite"
    engine = _sqlite_engine(old)
    with engine.begin() as conn:  # a history made by an older cezsar: revision 0001, one window
        command.upgrade(_alembic_config(conn), "0001")
        conn.exec_driver_sql("INSERT INTO cezsar_history VALUES ('format', 'cezsar-history')")
        conn.exec_driver_sql("INSERT INTO models (id, hash, dim, first_seen) VALUES (1, 'h', 4, 0)")
        conn.exec_driver_sql("INSERT INTO streams (id, name) VALUES (1, 'cam')")
        conn.exec_driver_sql(
            "INSERT INTO windows (stream_id, model_id, time, start, \"end\", embedding) VALUES (1, 1, 5, 1, 2, x'01')"
        )
    engine.dispose()
    store = open_store(old)
    store.close()
    con = sqlite3.connect(old)
    assert con.execute("SELECT version_num FROM alembic_version").fetchone() == ("0002",)
    assert con.execute("SELECT time, recording_id FROM windows").fetchall() == [(5.0, None)]
    assert "recordings" in {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
    assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    con.close()


@pytest.mark.parametrize("kind", ["text", "foreign", "damaged", "newer"])
def test_a_file_it_cannot_use_gets_one_line_and_is_left_untouched(tmp_path: Path, kind: str) -> None:
    p = tmp_path / "h.sqlite"
    if kind == "text":
        p.write_text("these are my notes, not a database\n" * 100)
    elif kind == "foreign":
        con = sqlite3.connect(p)
        con.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        con.execute("INSERT INTO invoices VALUES (1, 9.5)")
        con.commit()
        con.close()
    else:
        open_store(p).close()
        if kind == "damaged":  # a valid header, then garbage over the schema pages
            data = bytearray(p.read_bytes())
            data[100:8000] = b"\xa5" * 7900
            p.write_bytes(bytes(data))
        else:
            con = sqlite3.connect(p)
            con.execute("UPDATE alembic_version SET version_num = '9999'")
            con.commit()
            con.close()
    before = _sha(p)
    siblings = sorted(x.name for x in tmp_path.iterdir())
    with pytest.raises(HistoryError) as e:
        open_store(p)
    msg = e.value.message
    assert "\n" not in msg and str(p) in msg and "untouched" in msg, msg
    assert _sha(p) == before
    assert sorted(x.name for x in tmp_path.iterdir()) == siblings  # no -wal/-shm appeared


def test_writer_keeps_windows_events_phases_and_thumbnails(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    w = _writer(tmp_path / "h.sqlite", thumbnails=1.0)
    a = aset("fall", "wave")
    embs = unit(rng, 30)
    for i, e in enumerate(embs):
        w.window(result("cam" if i % 2 else "cam@door", 10.0 + i, e, {"fall": 0.1234 + i / 1e4}), a)
    w.publish("event.cam", event("e1", "start", 100.0))
    w.publish("event.cam", event("e1", "update", 101.0, peak=0.5))
    w.publish("event.cam", event("e1", "end", 102.0, end=101.5, reason="score", media={"snapshot": "e1.jpg"}))
    w.publish("media.cam", {"type": "media", "event": "e1", "stream": "cam", "clip": "e1.mp4", "written": True})
    w.publish("scores.cam", {"type": "scores"})  # not kept
    frame = np.zeros((240, 320, 3), np.uint8)
    for t in (0.0, 0.5, 1.0, 2.5):
        w.tap("cam", t, frame)
    w.close()
    st = w.stats()
    assert st["written"] == {"windows": 30, "events": 3, "media": 1, "thumbnails": 3}, st
    assert st["dropped"] == 0 and st["connected"] and st["unsent"] == 0
    con = sqlite3.connect(tmp_path / "h.sqlite")
    assert con.execute("SELECT count(*), count(DISTINCT scoring_id) FROM windows").fetchone() == (30, 1)
    assert con.execute("SELECT count(*) FROM windows WHERE zone = 'door'").fetchone() == (15,)
    ev = con.execute('SELECT action, start, "end", peak, reason, snapshot, clip, media_written FROM events').fetchall()
    assert ev == [("fall", 100.0, 101.5, 0.3, "score", "e1.jpg", "e1.mp4", 1)]
    assert [r[0] for r in con.execute("SELECT phase FROM event_phases ORDER BY id")] == ["start", "update", "end"]
    jpeg = con.execute("SELECT jpeg FROM thumbnails").fetchone()[0]
    assert jpeg[:2] == b"\xff\xd8"
    # the stored scores give back exactly what the decisions saw
    names = __import__("json").loads(con.execute("SELECT names FROM scorings").fetchone()[0])
    blob = con.execute("SELECT scores FROM windows ORDER BY id LIMIT 1").fetchone()[0]
    assert codec.decode_scores(blob, len(names))[0] == 0.1234
    con.close()


def test_a_batch_of_event_messages_leaves_what_one_message_at_a_time_leaves(tmp_path: Path) -> None:
    """The store folds an event's start and updates of one batch into one upsert: the rows must be the
    ones that writing each message in its own transaction leaves (None keeps what is stored; the end
    sets everything; an event may start in one batch and end in the next)."""
    from edge.history.store import Batch

    msgs = [
        event("a", "start", 10.0, media={"snapshot": "a.jpg"}),
        event("b", "start", 10.5, zone="door", stream="cam2"),
        event("a", "update", 11.0, peak=0.6),
        {**event("a", "update", 12.0), "peak": 0.55, "reason": "ignored until the end", "snapshot": None},
        event("b", "update", 12.5, peak=0.9),
        event("a", "end", 13.0, end=12.8, reason="score"),
        event("c", "start", 14.0),
        {**event("b", "update", 15.0), "windows": 7},
        event("d", "start", 15.5, media={"snapshot": "d.jpg"}),  # still open when the run stops
        {**event("d", "update", 15.8, peak=0.7), "windows": 9, "host": None},
    ]
    later = [event("b", "end", 16.0, end=15.5, reason="stream_end"), event("c", "end", 17.0, end=16.0)]

    def rows(path: Path, batches: list[list[dict[str, object]]]) -> tuple[list[tuple[object, ...]], ...]:
        st = open_store(path)
        for msgs_ in batches:
            b = Batch()
            b.events = list(msgs_)
            st.write(b, MODEL, DIM)
        st.close()
        con = sqlite3.connect(path)
        cols = [r[1] for r in con.execute("PRAGMA table_info(events)") if r[1] != "stream_id"]
        named = ", ".join(f'e."{c}"' for c in cols)  # the stream by name: ids follow the order streams came
        q = f"SELECT {named}, s.name FROM events e JOIN streams s ON s.id = e.stream_id ORDER BY e.id"
        ev = con.execute(q).fetchall()
        ph = con.execute("SELECT event_id, phase, time, score, peak FROM event_phases ORDER BY id").fetchall()
        con.close()
        return ev, ph

    one_by_one = rows(tmp_path / "one.sqlite", [[m] for m in msgs + later])
    batched = rows(tmp_path / "batch.sqlite", [msgs, later])
    assert batched == one_by_one
    ev = {r[0]: r for r in one_by_one[0]}
    assert set(ev) == {"a", "b", "c", "d"} and len(one_by_one[1]) == len(msgs) + len(later)


def test_full_queue_drops_and_counts_never_blocks(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    w = HistoryWriter(history_url(tmp_path / "h.sqlite"), MODEL, DIM, capacity=10)  # not started: nothing drains
    e = unit(rng, 1)[0]
    t0 = time.perf_counter()
    for i in range(500):
        w.window(result("cam", float(i), e, {}), None)
    assert time.perf_counter() - t0 < 1.0
    assert w.dropped["windows"] == 490 and w.queue.qsize() == 10


def test_retention_by_age_and_size_per_table(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    now = time.time()
    w = _writer(tmp_path / "h.sqlite", thumbnails=0.5)
    for i, e in enumerate(unit(rng, 400)):
        w.window(result("cam", float(i), e, {}, wall=now - 400 + i), None, "media")
    for i in range(20):
        w.publish("event.cam", event(f"e{i}", "start", now - 400 + 20 * i))
    frame = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
    for i in range(40):
        w.tap("cam", float(i), frame)
    w.close()
    store = open_store(tmp_path / "h.sqlite")
    con = sqlite3.connect(tmp_path / "h.sqlite")
    assert con.execute("SELECT count(*) FROM thumbnails").fetchone() == (40,)
    # age: windows older than 100 s go; events and thumbnails have their own limits
    got = prune(store.engine, Retention(windows=Limits(max_age=100.0)), now=now)
    assert got["windows"] == 300 and got["events"] == 0 and got["thumbnails"] == 0
    assert con.execute("SELECT min(time) FROM windows").fetchone()[0] >= now - 100
    got = prune(store.engine, Retention(events=Limits(max_age=200.0)), now=now)
    assert got["events"] == 10
    assert con.execute("SELECT count(*) FROM event_phases").fetchone() == (10,)
    # size: the thumbnails beyond the limit, oldest first
    size = sum(len(r[0]) for r in con.execute("SELECT jpeg FROM thumbnails"))
    prune(store.engine, Retention(thumbnails=Limits(max_bytes=size // 4)), now=now)
    kept = con.execute("SELECT count(*), min(id) FROM thumbnails").fetchone()
    assert 5 <= kept[0] <= 11 and kept[1] > 29, kept
    store.close()
    con.close()


def test_postgres_password_never_shown() -> None:
    h = history_url("postgresql://cezsar:hunter2-secret@db.example:5432/site")
    for text in (h.redacted(), str(h), repr(h)):
        assert "hunter2" not in text and "***" in text
    assert "hunter2" in h.url  # the engine gets it
    h2 = history_url("postgresql://cezsar@db/site", password="from-env-secret")
    assert "from-env-secret" in h2.url and "from-env-secret" not in h2.redacted()
    assert "s3cr" not in redact("could not connect to postgresql://u:s3cr@h/db: refused")
    w = HistoryWriter(h, MODEL, DIM)
    assert "hunter2" not in str(w.stats())


def test_settings_section_and_auto_location(tmp_path: Path) -> None:
    from edge.settings import settings_from

    s = settings_from(history="auto", media=str(tmp_path / "media"), history_embedding="fp16")
    assert s.history is not None and s.history.embedding == "fp16"
    assert s.history.location(s.outputs.media.dir if s.outputs.media else None) == str(tmp_path / "history.sqlite")
    assert history_url(tmp_path).path == tmp_path / "history.sqlite"  # a folder: the file in it
