"""Zero-shot evaluation: nearest class description in the joint space (cosine, k=1).

Each class is represented by the mean of its descriptions' text embeddings (a prototype, built by
:mod:`cezsar.zeroshot` as the converter and the edge build it). A fixed
split file evaluates on its testing classes; random splits draw N classes per run over R runs and
report the mean and standard deviation, as in the paper's protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cezsar import zeroshot
from cezsar.errors import CezsarError
from training.clips import Segment, build_bank, to_tensor
from training.model import CezsarModel, SentenceEncoder


@dataclass
class EvalReport:
    top1: float
    top1_std: float
    chance: float
    n_classes: int
    n_videos: int
    runs: int
    per_run: list[float]
    classes: list[str]
    confusion: np.ndarray  # (C, C) counts summed over runs, rows = true class

    def to_dict(self) -> dict[str, Any]:
        return {
            "top1": round(self.top1, 4),
            "top1_std": round(self.top1_std, 4),
            "chance": round(self.chance, 4),
            "n_classes": self.n_classes,
            "n_videos": self.n_videos,
            "runs": self.runs,
            "per_run": [round(x, 4) for x in self.per_run],
        }


@torch.no_grad()
def class_prototypes(
    model: CezsarModel, text: SentenceEncoder, classes: dict[str, list[str]], names: list[str]
) -> np.ndarray:
    """(C, J) prototypes of the classes ``names``, from each one's descriptions in ``classes``."""
    per_class = [model.encode_text(text.encode(classes[name])).numpy() for name in names]
    return zeroshot.class_prototypes(per_class, dim=model.config.joint_dim)


@torch.no_grad()
def video_embeddings(
    model: CezsarModel, segments: list[Segment], batch: int = 16, progress: bool = True
) -> torch.Tensor:
    cfg = model.config
    pre = cfg.pre
    bank = build_bank(segments, cfg.fps, cfg.frames, pre, progress=progress)
    out = []
    for i in range(0, len(bank), batch):
        clips = bank.batch(range(i, min(len(bank), i + batch)), cfg.frames)
        out.append(model.encode_video(to_tensor(clips, pre)))
    return torch.cat(out)


def evaluate(
    model_dir: str | Path,
    data_dir: str | Path,
    split: str | Path | None = None,
    runs: int = 1,
    classes_per_run: int | None = None,
    seed: int = 0,
    progress: bool = True,
    descriptions: str | Path | None = None,
) -> EvalReport:
    from cezsar.data import folders
    from cezsar.data.formats import read_eval_set, read_split

    model = CezsarModel.load(model_dir)
    # videos.jsonl + classes/, or a folder per class (UCF-101, HMDB-51, Kinetics-400 layouts)
    if folders.is_class_folder_dataset(data_dir):
        evalset = folders.read_class_folders(data_dir, descriptions)
    else:
        evalset = read_eval_set(data_dir)
    all_names = list(evalset.classes)
    pool = all_names
    if split is not None:
        split = folders.resolve_split(split)
        pool = list(read_split(split, all_names).testing)
        if not pool:
            raise CezsarError(f"{split}: no testing classes")
    videos = [v for v in evalset.videos if v.label in set(pool)]
    if not videos:
        raise CezsarError(f"{data_dir}/videos.jsonl: no video of the evaluated classes")
    n = classes_per_run or len(pool)
    if n < 2 or n > len(pool):
        raise CezsarError(f"--classes-per-run {n}: must be between 2 and {len(pool)} (classes available)")
    if runs < 1:
        raise CezsarError("--runs must be >= 1")

    text = SentenceEncoder.for_config(model.config)
    protos = class_prototypes(model, text, evalset.classes, pool)
    emb = video_embeddings(model, [Segment(Path(v.path), v.start, v.end) for v in videos], progress=progress)
    sims = zeroshot.cosine_scores(emb.numpy(), protos)  # (V, C)
    labels = np.array([pool.index(v.label) for v in videos])

    rng = np.random.default_rng(seed)
    confusion = np.zeros((len(pool), len(pool)), dtype=np.int64)
    accs = []
    for r in range(runs):
        chosen = np.sort(rng.choice(len(pool), size=n, replace=False)) if n < len(pool) else np.arange(len(pool))
        mask = np.isin(labels, chosen)
        if not mask.any():
            continue
        pred = zeroshot.predict(sims[mask], among=chosen)
        true = labels[mask]
        accs.append(float(np.mean(pred == true)))
        confusion += zeroshot.confusion(true, pred, len(pool))
        del r
    if not accs:
        raise CezsarError("no run had any video of its classes; use more videos or fewer runs")
    return EvalReport(
        top1=float(np.mean(accs)),
        top1_std=float(np.std(accs)),
        chance=1.0 / n,
        n_classes=n,
        n_videos=int(len(videos)),
        runs=len(accs),
        per_run=accs,
        classes=pool,
        confusion=confusion,
    )


def confusion_png(report: EvalReport, path: str | Path, cell: int = 28) -> None:
    """Write the confusion matrix (rows: true, columns: predicted, row-normalised) as a PNG."""
    import cv2

    from cezsar.atomic import atomic_path

    c = report.confusion.astype(np.float64)
    norm = c / np.maximum(c.sum(1, keepdims=True), 1)
    k = len(report.classes)
    label_w = 8 * max(len(s) for s in report.classes) + 10
    h, w = label_w + k * cell + 10, label_w + k * cell + 10
    img = np.full((h, w, 3), 255, np.uint8)
    heat = cv2.applyColorMap((255 - norm * 255).astype(np.uint8), cv2.COLORMAP_BONE)
    heat = cv2.resize(heat, (k * cell, k * cell), interpolation=cv2.INTER_NEAREST)
    img[label_w : label_w + k * cell, label_w : label_w + k * cell] = heat
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i, name in enumerate(report.classes):
        y = label_w + i * cell + cell // 2 + 4
        cv2.putText(img, name, (4, y), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
        for j in range(k):
            if c[i, j]:
                color = (255, 255, 255) if norm[i, j] > 0.5 else (0, 0, 0)
                cv2.putText(img, str(int(c[i, j])), (label_w + j * cell + 4, y), font, 0.3, color, 1, cv2.LINE_AA)
    # predicted-class labels, written vertically
    strip = np.full((cell * k, label_w, 3), 255, np.uint8)
    for j, name in enumerate(report.classes):
        cv2.putText(strip, name, (4, j * cell + cell // 2 + 4), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    img[:label_w, label_w : label_w + k * cell] = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), img):
            raise CezsarError(f"{path}: cannot write PNG")
