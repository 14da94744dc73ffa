"""Action datasets laid out as a folder per class (UCF-101, HMDB-51, Kinetics-400) as evaluation sets,
and the shared zero-shot split files.

``ROOT/<class>/<video>`` (any common video extension, searched recursively inside the class folder).
Class descriptions come from a JSON ``{"class name": ["description", ...]}`` when given (names matched
as split names are: ignoring case, spaces, underscores), else from the class name itself: the folder
name made readable ("ApplyEyeMakeup" -> "apply eye makeup", "riding_a_bike" -> "riding a bike") in a
few sentence templates. The shared splits (``shared/data/zsar_splits``) name classes only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cezsar.data.activitynet import VIDEO_EXTENSIONS
from cezsar.data.formats import EvalSet, EvalVideo, _name_key
from cezsar.errors import CezsarError
from cezsar.jsonfile import read_json

TEMPLATES = ("{}", "a video of a person {}", "someone is {}")

# Named splits of the shared folder (``--split truze``).
SPLIT_FILES = {
    "truze": "ucf101_truezsl_splits.json",
    "truze2": "ucf101_truezsl2.0_splits.json",
    "ucf101-hard": "ucf101_hard_cases_splits.json",
    "kinetics400": "kinetics400_splits.json",
}


def readable(name: str) -> str:
    s = re.sub(r"[_\-]+", " ", name)
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", s)
    return " ".join(s.lower().split())


def is_class_folder_dataset(root: str | Path) -> bool:
    root = Path(root)
    return root.is_dir() and not (root / "videos.jsonl").exists() and any(p.is_dir() for p in root.iterdir())


def read_class_folders(root: str | Path, descriptions: str | Path | None = None) -> EvalSet:
    """An :class:`EvalSet` from ``root/<class>/<videos>``: each video a whole-clip sample of its class."""
    root = Path(root)
    if not root.is_dir():
        raise CezsarError(f"{root}: dataset folder not found")
    given: dict[str, list[str]] = {}
    if descriptions is not None:
        obj = read_json(Path(descriptions))
        if not isinstance(obj, dict) or not all(
            isinstance(v, list) and v and all(isinstance(x, str) and x.strip() for x in v) for v in obj.values()
        ):
            raise CezsarError(f'{descriptions}: expected {{"class name": ["description", ...]}}')
        given = {_name_key(k): [x.strip() for x in v] for k, v in obj.items()}
    classes: dict[str, list[str]] = {}
    videos: list[EvalVideo] = []
    for d in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name):
        files = sorted(p for p in d.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
        if not files:
            continue
        name = d.name
        classes[name] = given.get(_name_key(name)) or [t.format(readable(name)) for t in TEMPLATES]
        videos.extend(EvalVideo(f.resolve(), name) for f in files)
    if not classes:
        raise CezsarError(f"{root}: no class folder with videos (expected ROOT/<class>/<video>.mp4)")
    return EvalSet(videos, classes)


def find_zsar_splits(start: str | Path | None = None) -> Path | None:
    """The shared split folder: $CEZSAR_SPLITS, else ``shared/data/zsar_splits`` beside or above the repo
    (CI checks the repo out with ``shared/`` beside it), searched up from ``start`` and from this file."""
    env = os.environ.get("CEZSAR_SPLITS")
    if env:
        return Path(env) if Path(env).is_dir() else None
    seeds = [Path(start).resolve()] if start is not None else []
    seeds += [Path.cwd().resolve(), Path(__file__).resolve()]
    for seed in seeds:
        for p in [seed, *seed.parents]:
            for cand in (p / "shared" / "data" / "zsar_splits", p / "data" / "zsar_splits"):
                if cand.is_dir() and any(cand.glob("*.json")):
                    return cand
    return None


def resolve_split(split: str | Path) -> Path:
    """A split file path, or a shared split name (truze, truze2, ucf101-hard, kinetics400)."""
    s = str(split)
    if s.lower() in SPLIT_FILES and not Path(s).exists():
        folder = find_zsar_splits()
        if folder is None:
            raise CezsarError(f"--split {s}: shared/data/zsar_splits not found (set CEZSAR_SPLITS)")
        return folder / SPLIT_FILES[s.lower()]
    return Path(split)
