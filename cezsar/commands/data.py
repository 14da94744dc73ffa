"""`cezsar synth` (the synthetic action world) and `cezsar import-activitynet`."""

from __future__ import annotations

from pathlib import Path

import typer


def synth_cmd(
    out_dir: Path = typer.Argument(..., help="Folder to write (replaced atomically if it exists)."),
    seed: int = typer.Option(0, "--seed", help="World seed: split, objects, captions."),
    train_clips: int | None = typer.Option(None, "--train-clips", help="Training clips per training class."),
    eval_clips: int | None = typer.Option(None, "--eval-clips", help="Evaluation clips per class (all classes)."),
    streams: bool = typer.Option(
        True, "--streams/--no-streams", help="Also render continuous streams with their truth (streams/)."
    ),
) -> None:
    """Render the synthetic compositional action world (captions, eval set, zero-shot split)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from cezsar.data import synthetic, synthset
    from cezsar.errors import CezsarError

    train_k = synthetic.TRAIN_CLIPS_PER_CLASS if train_clips is None else train_clips
    eval_k = synthetic.EVAL_CLIPS_PER_CLASS if eval_clips is None else eval_clips
    if train_k < 1 or eval_k < 1:
        raise CezsarError(f"--train-clips and --eval-clips must be >= 1 (got {train_k}, {eval_k})")
    console = Console(stderr=True)
    with Progress(
        TextColumn("rendering"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as prog:
        task = prog.add_task("render", total=None)

        def tick(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        s = synthset.synthesize(
            out_dir,
            seed=seed,
            train_clips_per_class=train_k,
            eval_clips_per_class=eval_k,
            progress=tick,
            streams=streams,
        )
    out = Console()
    table = Table(title=f"synthetic world -> {s['out_dir']}", show_header=False)
    table.add_row("seed", str(s["seed"]))
    table.add_row("classes", f"{s['classes']} ({len(s['training_classes'])} seen, {len(s['testing_classes'])} unseen)")
    table.add_row("training clips", f"{s['train_clips']} (captions.jsonl, {s['captions']} captions)")
    table.add_row("evaluation clips", f"{s['eval_clips']} (videos.jsonl, all classes)")
    table.add_row("unseen classes", ", ".join(s["testing_classes"]))
    for g in s["streams"]:
        table.add_row(
            f"streams/{g['group']}", f"{g['streams']} streams, {g['segments']} segments, {g['seconds']:.0f} s"
        )
    table.add_row("video size", f"{s['bytes'] / 1e6:.1f} MB")
    table.add_row("time", f"{s['seconds']:.1f} s")
    out.print(table)


def import_activitynet_cmd(
    json_path: Path = typer.Argument(..., help="ActivityNet Captions JSON (e.g. train.json)."),
    videos: Path = typer.Option(..., "--videos", help="Folder holding the videos (searched recursively)."),
    out: Path = typer.Option(..., "--out", help="Dataset folder to write captions.jsonl into."),
) -> None:
    """Convert ActivityNet Captions annotations into a caption-pair dataset (captions.jsonl)."""
    from rich.console import Console

    from cezsar.data.activitynet import import_activitynet

    s = import_activitynet(json_path, videos, out)
    console = Console()
    console.print(
        f"wrote {s['out']}: {s['captions']} captions from {s['videos']} videos"
        + (f"; {s['missing_videos']} videos not found under {videos} (skipped)" if s["missing_videos"] else "")
        + (
            f"; {s['skipped_segments']} unusable segments skipped (start >= end or no text)"
            if s["skipped_segments"]
            else ""
        ),
        soft_wrap=True,
        highlight=False,
    )


def import_msrvtt_cmd(
    json_path: Path = typer.Argument(..., help="MSR-VTT annotation JSON (videos + sentences)."),
    videos: Path = typer.Option(..., "--videos", help="Folder holding video0.mp4 ... (searched recursively)."),
    out: Path = typer.Option(..., "--out", help="Dataset folder to write captions.jsonl into."),
    split: str | None = typer.Option(None, help="Keep only the videos of this split (train, validate, test)."),
) -> None:
    """Convert MSR-VTT annotations into a caption-pair dataset (captions.jsonl)."""
    from cezsar.data.captions_import import import_msrvtt

    _report(import_msrvtt(json_path, videos, out, split=split), videos)


def import_webvid_cmd(
    csv_path: Path = typer.Argument(..., help="WebVid-style CSV (videoid,name,page_dir,...)."),
    videos: Path = typer.Option(..., "--videos", help="Folder holding the videos (page_dir/videoid.mp4 or anywhere)."),
    out: Path = typer.Option(..., "--out", help="Dataset folder to write captions.jsonl into."),
) -> None:
    """Convert a WebVid-style CSV into a caption-pair dataset (captions.jsonl)."""
    from cezsar.data.captions_import import import_webvid

    _report(import_webvid(csv_path, videos, out), videos)


def _report(s: dict, videos: Path) -> None:
    from rich.console import Console

    Console().print(
        f"wrote {s['out']}: {s['captions']} captions from {s['videos']} videos"
        + (f"; {s['missing_videos']} videos not found under {videos} (skipped)" if s["missing_videos"] else ""),
        soft_wrap=True,
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("synth")(synth_cmd)
    app.command("import-activitynet")(import_activitynet_cmd)
    app.command("import-msrvtt")(import_msrvtt_cmd)
    app.command("import-webvid")(import_webvid_cmd)
