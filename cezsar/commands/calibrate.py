"""``cezsar calibrate``: build an INT8 calibration set from a video, a folder or a camera."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from cezsar.errors import CezsarError


def calibrate_cmd(
    deploy: Path = typer.Option(..., "--deploy", help="Deploy folder (its manifest gives the preprocessing)."),
    source: str = typer.Option(..., "--source", help="Video file, folder of videos/images, or camera index/URL."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .npz."),
    frames: int = typer.Option(512, "--frames", help="Frames to collect, spread over time and files."),
    min_frames: int = typer.Option(32, "--min-frames", help="Refuse a set with fewer frames than this."),
    interval: float = typer.Option(0.5, "--interval", help="Camera: seconds between captured frames."),
    timeout: float | None = typer.Option(None, "--timeout", help="Camera: give up after this many seconds."),
) -> None:
    """Collect calibration frames, preprocessed exactly as the runtime does, into an .npz."""
    from calibration.calibrate import build_calibration_set

    try:
        cal = build_calibration_set(
            source, out, deploy_dir=deploy, frames=frames, min_frames=min_frames, interval=interval, timeout=timeout
        )
    except CezsarError as e:
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(2) from None
    s = cal.frames.shape
    extra = f", skipped {len(cal.skipped)} unreadable file(s)" if cal.skipped else ""
    print(f"wrote {out}: {s[0]} frames {s[2]}x{s[3]} from {len(cal.sources)} source(s){extra}")


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_cmd)
