"""``GET /media/...``: the event snapshots and clips that edge/media.py writes (no symlinks followed,
nothing outside the folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class MediaRoutes:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    def attach(self, app: Any) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        app.router.add_static("/media/", self.dir, follow_symlinks=False)
