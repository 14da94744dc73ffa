"""`cezsar index` and `cezsar search`: recorded footage into the history, and a sentence over the past
(edge/history/verbs.py; docs/history.md). `cezsar actions backtest` is in cezsar/commands/actions.py."""

from __future__ import annotations

from pathlib import Path

import typer

HISTORY_OPT = typer.Option(
    None,
    "--history",
    help="The history: SQLite file, folder or postgresql://user@host/db (password: $CEZSAR_HISTORY_PASSWORD).",
)
DEPLOY_OPT = typer.Option(None, "--deploy", help="Deploy folder: its text tower and model (default: --config's).")
CONFIG_OPT = typer.Option(None, "--config", help="Site file: its history and deploy folder.")
THREADS_OPT = typer.Option(None, "--threads", help="onnxruntime threads (default: its own).")


def index(
    paths: list[Path] = typer.Argument(..., help="Video files or folders of them."),
    history: str = HISTORY_OPT,
    deploy: Path = DEPLOY_OPT,
    config: Path = CONFIG_OPT,
    stream: str = typer.Option(None, "--stream", help="Stream name for every file (default: each file's name)."),
    start: str = typer.Option(
        None, "--start", help="When the footage starts (ISO time; default: file time - duration)."
    ),
    hop: int = typer.Option(2, "--hop", min=1, help="Sampled frames between two windows."),
    backend: str = typer.Option("auto", "--backend", help="Inference backend."),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32, fp16 or int8."),
    threads: int = THREADS_OPT,
    embedding: str = typer.Option("int8", "--embedding", help="How embeddings are kept: int8 or fp16."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Embed recorded footage into the history, as fast as the machine allows (resumable)."""
    from edge.history import verbs

    verbs.index(
        paths,
        history=history,
        deploy=deploy,
        config=config,
        stream=stream,
        start=start,
        hop=hop,
        backend=backend,
        precision=precision,
        threads=threads,
        embedding=embedding,
        progress=progress,
    )


def search(
    text: str = typer.Argument(..., help="A sentence, e.g. 'a person falls'."),
    history: str = HISTORY_OPT,
    deploy: Path = DEPLOY_OPT,
    config: Path = CONFIG_OPT,
    actions: Path = typer.Option(None, "--actions", help="Actions file whose background the scores subtract."),
    since: str = typer.Option("24h", "--since", help="From: 24h, 30m, 7d ago, an ISO time or Unix seconds; '' = all."),
    until: str = typer.Option(None, "--until", help="To (same forms; default: now)."),
    stream: str = typer.Option(None, "--stream", help="Only this stream."),
    limit: int = typer.Option(20, "--limit", min=1, max=500, help="Moments to list."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    threads: int = THREADS_OPT,
) -> None:
    """Search the past by a sentence: the best moments (stream, start-end, score, thumbnail or clip)."""
    from edge.history import verbs

    verbs.search(
        text,
        history=history,
        deploy=deploy,
        config=config,
        actions=actions,
        since=since or None,
        until=until,
        stream=stream,
        limit=limit,
        as_json=as_json,
        threads=threads,
    )


def register(app: typer.Typer) -> None:
    app.command("index")(index)
    app.command("search")(search)
