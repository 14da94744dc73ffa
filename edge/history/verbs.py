"""The history's verbs as library calls (cezsar/commands/history.py and ``cezsar actions backtest`` only
turn their arguments into one of these): open what they need, run, print a table or JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from cezsar.errors import CezsarError

PASSWORD_ENV = "CEZSAR_HISTORY_PASSWORD"  # a PostgreSQL password for the verbs, kept out of the URL


def _where(history: str | None, deploy: Path | None, config: Path | None) -> tuple[Any, Path]:
    """The history (a HistoryURL) and the deploy folder: the flags, else the site file's. A PostgreSQL
    password comes from the site file's password_env, else $CEZSAR_HISTORY_PASSWORD."""
    import os

    from edge.history.url import history_url

    env = PASSWORD_ENV
    if config is not None:
        from edge.settings import load_settings

        s = load_settings(config)
        if history is None and s.history is not None:
            history = s.history.location(s.outputs.media.dir if s.outputs.media is not None else None)
            env = s.history.password_env or env
        deploy = deploy or s.deploy
    if history is None:
        raise CezsarError("give --history (a file, a folder or a postgresql:// URL) or --config with a history section")
    if deploy is None:
        raise CezsarError("give --deploy (the deploy folder: its text tower and model hash), or --config")
    return history_url(history, os.environ.get(env)), Path(deploy)


def _service(where: Any, deploy: Path, threads: int | None, background: Sequence[str] = ()) -> Any:
    from edge.history.service import deploy_service
    from edge.history.store import open_store

    return deploy_service(open_store(where), deploy, threads, background)


@contextmanager
def _one_line() -> Iterator[None]:
    """A database failure mid-verb (a server gone, a disk full) as one line, not a traceback."""
    try:
        yield
    except CezsarError:
        raise
    except Exception as e:
        from sqlalchemy.exc import SQLAlchemyError

        from edge.history.store import describe_error

        if isinstance(e, SQLAlchemyError):
            raise CezsarError(f"history: {describe_error(e)}") from None
        raise


def _when(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def search(
    text: str,
    *,
    history: str | None,
    deploy: Path | None,
    config: Path | None = None,
    actions: Path | None = None,
    since: str | None = "24h",
    until: str | None = None,
    stream: str | None = None,
    limit: int = 20,
    as_json: bool = False,
    threads: int | None = None,
) -> None:
    """``cezsar search``: the best moments of the past for a sentence."""
    from rich.console import Console
    from rich.table import Table

    from edge.actions import load_actions

    where, folder = _where(history, deploy, config)
    background = load_actions(actions).background if actions is not None else ()
    svc = _service(where, folder, threads, background)
    try:
        with _one_line():
            out = svc.search(text, since=since, until=until, stream=stream, limit=limit)
    finally:
        svc.store.close()
    if as_json:
        print(json.dumps(out, ensure_ascii=False))
        return
    table = Table(
        title=f"“{out['text']}”: {len(out['moments'])} moment(s) in {out['windows']} windows, {out['seconds']} s"
    )
    for col in ("#", "stream", "start", "end", "score", "thumbnail / clip"):
        table.add_column(col)
    for i, m in enumerate(out["moments"], 1):
        ev = m.get("event") or {}
        media = (
            ev.get("clip")
            or ev.get("snapshot")
            or m.get("file")
            or (f"thumbnail {m['thumbnail']}" if m.get("thumbnail") else "-")
        )
        if m.get("file") and m.get("capture"):
            media = f"{m['file']} @ {m['capture'][0]:.1f}-{m['capture'][1]:.1f} s"
        stream_name = m["stream"] + (f"@{m['zone']}" if m.get("zone") else "")
        table.add_row(str(i), stream_name, _when(m["start"]), _when(m["end"]), f"{m['score']:.3f}", str(media))
    Console().print(table)


def backtest(
    actions: Path,
    *,
    history: str | None,
    deploy: Path | None,
    config: Path | None = None,
    since: str | None = "24h",
    until: str | None = None,
    stream: str | None = None,
    per_day: float | None = None,
    as_json: bool = False,
    threads: int | None = None,
) -> None:
    """``cezsar actions backtest``: the events an actions file would have fired over the stored windows."""
    from rich.console import Console
    from rich.table import Table

    from edge.actions import load_actions

    aset = load_actions(actions)
    where, folder = _where(history, deploy, config)
    svc = _service(where, folder, threads)
    try:
        with _one_line():
            out = svc.backtest(aset, since=since, until=until, stream=stream, per_day=per_day)
    finally:
        svc.store.close()
    if as_json:
        print(json.dumps(out, ensure_ascii=False))
        return
    con = Console()
    con.print(
        f"{actions}: {out['windows']} windows over {out['hours']:.1f} h in {out['seconds']} s "
        f"(stored scores: {', '.join(out['replayed']) or 'none'}; scored again: {', '.join(out['rescored']) or 'none'})"
    )
    if out.get("note"):
        con.print(out["note"])
    table = Table()
    for col in ("action", "events", "per day", "suggested threshold"):
        table.add_column(col)
    for n, k in out["count"].items():
        sug = (out.get("suggestion") or {}).get(n)
        s = "-" if not sug else f"{sug['threshold']:.3f} ({sug['per_day']}/day)"
        table.add_row(n, str(k), str(out["per_day"][n]), s)
    con.print(table)
    for e in out["events"]:
        con.print(
            f"  {_when(e['time_start'])}  {e['stream']}{'@' + e['zone'] if e['zone'] else ''}  {e['action']}  "
            f"{e['duration']:.1f} s  peak {e['peak']:.3f}  ({e['reason']})"
        )


def index(
    paths: Sequence[Path],
    *,
    history: str | None,
    deploy: Path | None,
    config: Path | None = None,
    stream: str | None = None,
    start: str | None = None,
    hop: int = 2,
    backend: str = "auto",
    precision: str = "auto",
    threads: int | None = None,
    embedding: str = "int8",
    progress: bool = True,
) -> dict[str, Any]:
    """``cezsar index``: recorded footage into the history (edge/history/footage.py), with a progress bar."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from cezsar.backends.registry import load_backend
    from cezsar.deploy.manifest import load_manifest
    from cezsar.video import probe
    from edge.embedder import WindowEmbedder
    from edge.history.footage import index_footage, video_files
    from edge.history.service import parse_time
    from edge.history.store import open_store

    where, folder = _where(history, deploy, config)
    files = video_files(paths)
    manifest = load_manifest(folder)
    loaded = load_backend(backend, precision, folder, manifest, threads)
    store = open_store(where)
    try:
        emb = WindowEmbedder(loaded.frame_encoder, loaded.temporal_head, manifest.window, hop, manifest.feature_dim)
        total = sum(probe(f).duration for f in files)
        cols = (TextColumn("indexing"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} s of video"))
        with _one_line(), Progress(*cols, TimeRemainingColumn(), disable=not progress) as bar:
            task = bar.add_task("index", total=total)
            out = index_footage(
                store,
                files,
                emb,
                manifest,
                stream=stream,
                start=parse_time(start, "--start"),
                encoding=embedding,
                tick=lambda s: bar.advance(task, s),
            )
    finally:
        store.close()
        loaded.close()
    rate = out["video_seconds"] / out["seconds"] if out["seconds"] else 0.0
    print(
        f"indexed {out['files']} file(s) ({out['skipped']} already done): {out['windows']} windows, "
        f"{out['video_seconds']:.0f} s of video in {out['seconds']:.1f} s ({rate:.1f}x real time)"
    )
    return out
