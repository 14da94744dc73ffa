"""Contrastive training of the CEZSAR model: align clips with their captions, push apart sampled
unrelated captions (triplet, as in the paper) or in-batch captions plus the sampled ones (InfoNCE,
the default; see docs/ablation.md for why).

Two recipes: ``default`` (InfoNCE over the batch's captions plus one automatic negative per positive,
shared by the batch; identical captions masked), the best measured in docs/ablation.md, and ``paper``
(the paper's triplet loss with 10 automatic negatives per positive in the cosine-distance window
0 < d < 0.8, margin 1.0, nothing filtered). Per-video hard negatives (``share_negatives=False``), a
sentence-distance false-negative filter (``negatives.fn_distance``) and a cosine schedule are options.

Two modes: ``frozen`` extracts per-frame features of a frozen backbone once and trains the heads on
them (minutes, even for big backbones); ``end2end`` also trains the backbone on cached, decoded
frames (the ``tiny`` backbone trains from scratch this way). ``auto`` picks end2end for ``tiny`` and
frozen otherwise.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cezsar.atomic import write_json, write_text
from cezsar.errors import CezsarError
from cezsar.preprocess import Preprocess
from training.clips import ClipBank, Segment, build_bank, extract_features, to_tensor
from training.losses import InfoNCELoss, make_loss
from training.model import DEFAULT_TEXT_MODEL, CezsarModel, ModelConfig, SentenceEncoder
from training.negatives import NegativeConfig, paraphrase_mask, sample_negatives

log = logging.getLogger(__name__)


DEFAULT_FN_DISTANCE = 0.0  # the sentence-distance false-negative filter is off by default (docs/ablation.md)
RECIPES = ("default", "paper")


SCHEDULES = ("constant", "cosine")


def _cosine_factor(epoch: float, epochs: int, warmup: float = 1.0) -> float:
    """Learning-rate factor at ``epoch`` (fractional): linear warm-up over ``warmup`` epochs, then cosine to 0."""
    if epoch < warmup:
        return max(epoch / warmup, 0.05)
    t = (epoch - warmup) / max(epochs - warmup, 1e-9)
    return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def recipe_settings(recipe: str) -> dict[str, Any]:
    """TrainConfig fields (and ``negatives`` fields under "negatives") that a recipe sets."""
    if recipe == "default":
        # the best measured (docs/ablation.md): in-batch InfoNCE plus one automatic negative per positive,
        # shared by the batch; identical captions masked. Per-video hard negatives and the sentence-distance
        # false-negative filter were measured and did not help.
        negatives = {"mode": "auto", "min_distance": 0.0, "max_distance": 0.8, "fn_distance": DEFAULT_FN_DISTANCE}
        return {"loss": "infonce", "share_negatives": True, "extra_negatives": 1, "negatives": negatives}
    if recipe == "paper":
        # the paper: triplet margin loss (Euclidean, margin 1.0), 10 automatic negatives per positive
        # drawn from the cosine-distance window 0 < d < 0.8, no false-negative filter
        return {
            "loss": "triplet",
            "margin": 1.0,
            "negatives": {"mode": "auto", "count": 10, "min_distance": 0.0, "max_distance": 0.8, "fn_distance": 0.0},
        }
    raise CezsarError(f"--recipe {recipe!r}: expected one of {', '.join(RECIPES)}")


@dataclass
class TrainConfig:
    backbone: str = "tiny"
    pretrained: bool = False
    backbone_checkpoint: str | None = None
    mode: str = "auto"  # auto | frozen | end2end
    loss: str = "infonce"  # infonce | triplet (paper)
    negatives: NegativeConfig = field(default_factory=lambda: NegativeConfig(fn_distance=DEFAULT_FN_DISTANCE))
    extra_negatives: int = 1  # infonce: sampled negatives per positive added to its denominator
    margin: float = 1.0  # triplet margin (Euclidean distance on unit vectors, as in the paper)
    share_negatives: bool = True  # infonce: one sampled negative per positive, shared by the batch (the default)
    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-4
    backbone_lr: float | None = None  # end2end: backbone learning rate (default: lr)
    weight_decay: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.99)
    patience: int = 6
    schedule: str = "constant"  # constant (early stopping on validation loss) | cosine (warm-up, decay, last epoch)
    frames: int = 16
    fps: float = 1.0
    image_size: int = 224
    resize: int = 256
    val_fraction: float = 0.1
    seed: int = 0
    text_model: str = DEFAULT_TEXT_MODEL
    d_model: int = 256
    joint_dim: int = 128
    dropout: float = 0.1
    threads: int | None = None
    max_minutes: float | None = None

    def resolved_mode(self) -> str:
        if self.mode == "auto":
            return "end2end" if self.backbone == "tiny" else "frozen"
        if self.mode not in ("frozen", "end2end"):
            raise CezsarError(f"--mode {self.mode!r}: expected auto, frozen or end2end")
        return self.mode


@dataclass
class TrainResult:
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    seconds: float
    history: list[dict[str, Any]]


def _split_by_group(groups: list[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    uniq = sorted(set(groups))
    rng = np.random.default_rng(seed)
    rng.shuffle(uniq)
    n_val = max(1, int(round(len(uniq) * fraction))) if len(uniq) > 1 and fraction > 0 else 0
    val_groups = set(uniq[:n_val])
    idx = np.arange(len(groups))
    is_val = np.array([g in val_groups for g in groups])
    return idx[~is_val], idx[is_val]


class _State:
    """Resume state in OUT/.resume/: weights and optimizer tensors (safetensors) + scalars (JSON)."""

    def __init__(self, out: Path) -> None:
        self.dir = out / ".resume"

    def save(self, model: torch.nn.Module, loss: torch.nn.Module, opt: torch.optim.Optimizer, info: dict) -> None:
        from safetensors.torch import save_file

        from cezsar.atomic import atomic_path

        self.dir.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
        tensors.update({f"loss.{k}": v.detach().contiguous() for k, v in loss.state_dict().items()})
        osd = opt.state_dict()
        for pid, st in osd["state"].items():
            for k, v in st.items():
                tensors[f"opt.{pid}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).contiguous()
        with atomic_path(self.dir / "state.safetensors") as tmp:
            save_file(tensors, str(tmp))
        write_json(self.dir / "state.json", {**info, "param_groups": osd["param_groups"]})

    def load(self, model: torch.nn.Module, loss: torch.nn.Module, opt: torch.optim.Optimizer) -> dict | None:
        from safetensors.torch import load_file

        if not (self.dir / "state.json").is_file():
            return None
        info = json.loads((self.dir / "state.json").read_text())
        t = load_file(str(self.dir / "state.safetensors"))
        model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
        loss.load_state_dict({k[5:]: v for k, v in t.items() if k.startswith("loss.")})
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in t.items():
            if k.startswith("opt."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v
        opt.load_state_dict({"state": state, "param_groups": info.pop("param_groups")})
        return info


def train(
    data_dir: str | Path, out_dir: str | Path, cfg: TrainConfig, resume: bool = False, progress: bool = True
) -> TrainResult:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from training.data import read_captions

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t0 = time.time()
    mode = cfg.resolved_mode()

    records = read_captions(data_dir)
    if len(records) < 4:
        raise CezsarError(f"{data_dir / 'captions.jsonl'}: only {len(records)} captions; need at least 4 to train")
    pre = Preprocess(size=cfg.image_size, resize=cfg.resize)
    text = SentenceEncoder(cfg.text_model)
    mcfg = ModelConfig(
        backbone=cfg.backbone,
        frames=cfg.frames,
        fps=cfg.fps,
        d_model=cfg.d_model,
        dropout=cfg.dropout,
        joint_dim=cfg.joint_dim,
        text_model=cfg.text_model,
        text_dim=text.dim,
        preprocess=pre.to_dict(),
    )
    model = CezsarModel(mcfg, backbone_pretrained=cfg.pretrained, backbone_checkpoint=cfg.backbone_checkpoint)

    captions = [r.caption for r in records]
    sent = text.encode(captions)
    groups = [f"{r.video}:{r.start}:{r.end}" for r in records]
    neg = sample_negatives(sent, cfg.negatives, group=[hash(g) for g in groups])
    train_idx, val_idx = _split_by_group(groups, cfg.val_fraction, cfg.seed)

    segs = [Segment(Path(r.video), r.start, r.end) for r in records]
    bank: ClipBank = build_bank(segs, cfg.fps, cfg.frames, pre, progress=progress)
    if mode == "frozen":
        for p in model.frame_encoder.parameters():
            p.requires_grad_(False)
        bank = extract_features(model.frame_encoder, bank, pre, progress=progress)

    loss_fn = make_loss(cfg.loss, margin=cfg.margin)
    head_params = [p for n, p in model.named_parameters() if not n.startswith("frame_encoder.") and p.requires_grad]
    groups_opt: list[dict[str, Any]] = [{"params": head_params + list(loss_fn.parameters()), "lr": cfg.lr}]
    if mode == "end2end":
        groups_opt.append({"params": list(model.frame_encoder.parameters()), "lr": cfg.backbone_lr or cfg.lr})
    opt = torch.optim.AdamW(groups_opt, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)

    state = _State(out_dir)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"val_loss": math.inf, "epoch": -1}
    best_state: dict[str, torch.Tensor] | None = None
    start_epoch = 0
    if resume:
        info = state.load(model, loss_fn, opt)
        if info is None:
            raise CezsarError(f"{out_dir}: nothing to resume (no .resume/state.json)")
        start_epoch, history, best = info["epoch"] + 1, info["history"], info["best"]
        best_state = {k: v.clone() for k, v in model.state_dict().items()} if best["epoch"] >= 0 else None
        rng = np.random.default_rng(cfg.seed + start_epoch)
        log.info("resuming at epoch %d", start_epoch)

    group_ids = torch.tensor([hash(g) for g in groups])
    fn_distance = cfg.negatives.fn_distance

    def exclude_mask(idx: np.ndarray, extra: np.ndarray) -> torch.Tensor:
        """(B, B + K): column j is not a negative of video i (same clip, or a paraphrase of its caption).
        ``extra`` (B, K): video i's own extra negatives."""
        same_clip = group_ids[idx][:, None] == group_ids[idx][None, :]
        in_batch = same_clip | paraphrase_mask(sent[idx], sent[idx], fn_distance)
        if extra.shape[1] == 0:
            return in_batch
        unit = torch.nn.functional.normalize(sent.float(), dim=-1)
        own = 1.0 - torch.einsum("bd,bkd->bk", unit[idx], unit[torch.from_numpy(extra)]) < max(fn_distance, 1e-5)
        own |= group_ids[torch.from_numpy(extra)] == group_ids[idx][:, None]
        return torch.cat([in_batch, own], dim=1)

    def run_batch(idx: np.ndarray, train_mode: bool) -> torch.Tensor:
        window = bank.batch(idx, cfg.frames, rng if train_mode else None)
        if mode == "frozen":
            video = model.temporal_head(torch.from_numpy(window).float())
        else:
            video = model.encode_video(to_tensor(window, pre))
        pos = model.encode_text(sent[idx])
        if isinstance(loss_fn, InfoNCELoss) and cfg.share_negatives:
            # before issue 10 (the bundled demo model): one drawn negative per positive, shared by the batch
            col = rng.integers(0, neg.shape[1], size=len(idx)) if train_mode else np.zeros(len(idx), dtype=int)
            shared = neg[idx, col]
            ex = exclude_mask(idx, np.zeros((len(idx), 0), dtype=np.int64))
            ex = torch.cat([ex, torch.zeros((len(idx), len(shared)), dtype=torch.bool)], dim=1)
            return loss_fn(video, pos, model.encode_text(sent[shared]), exclude=ex)
        if isinstance(loss_fn, InfoNCELoss):
            k = min(cfg.extra_negatives, neg.shape[1])
            if train_mode:
                cols = np.argsort(rng.random((len(idx), neg.shape[1])), axis=1)[:, :k]
                extra = neg[idx[:, None], cols]
            else:
                extra = neg[idx, :k]
            texts = model.encode_text(sent[extra.reshape(-1)]).view(len(idx), k, -1) if k > 0 else None
            return loss_fn(video, pos, texts, exclude=exclude_mask(idx, extra))
        # the paper's N negatives per positive: one triplet each
        k = neg.shape[1]
        negative = model.encode_text(sent[neg[idx].reshape(-1)])
        return loss_fn(video.repeat_interleave(k, 0), pos.repeat_interleave(k, 0), negative)

    if cfg.schedule not in SCHEDULES:
        raise CezsarError(f"--schedule {cfg.schedule!r}: expected one of {', '.join(SCHEDULES)}")
    cosine = cfg.schedule == "cosine"
    base_lrs = [cfg.lr] + ([cfg.backbone_lr or cfg.lr] if mode == "end2end" else [])  # not the resumed lr
    bs = cfg.batch_size
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"), TimeRemainingColumn()]
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("training", total=cfg.epochs, completed=start_epoch, info="")
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            if mode == "frozen":
                model.frame_encoder.eval()
            perm = rng.permutation(train_idx)
            losses = []
            for i in range(0, len(perm), bs):
                idx = perm[i : i + bs]
                if len(idx) < 2:
                    continue
                if cosine:
                    step = epoch + i / len(perm)  # in epochs
                    for g, base in zip(opt.param_groups, base_lrs, strict=True):
                        g["lr"] = base * _cosine_factor(step, cfg.epochs)
                loss = run_batch(idx, True)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
                losses.append(loss.item())
            model.eval()
            with torch.no_grad():
                vl = (
                    [run_batch(val_idx[i : i + bs], False).item() for i in range(0, len(val_idx), bs)]
                    if len(val_idx)
                    else []
                )
            train_loss = float(np.mean(losses)) if losses else math.nan
            val_loss = float(np.mean(vl)) if vl else train_loss
            rec = {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "seconds": round(time.time() - t0, 2),
            }
            history.append(rec)
            # cosine: the schedule ends at lr 0 and the last epoch is the model (a noisy validation
            # loss picked under-trained early epochs); constant: early stopping on the validation loss
            improved = cosine or val_loss < best["val_loss"] - 1e-4
            if improved:
                best = {"val_loss": val_loss, "epoch": epoch}
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            state.save(model, loss_fn, opt, {"epoch": epoch, "history": history, "best": best})
            with open(state.dir / "log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
            bar.update(task, advance=1, info=f"train {train_loss:.4f}  val {val_loss:.4f}  best@{best['epoch']}")
            if not cosine and epoch - best["epoch"] >= cfg.patience:
                log.info("early stop at epoch %d (best %d)", epoch, best["epoch"])
                break
            if cfg.max_minutes and (time.time() - t0) / 60 > cfg.max_minutes:
                log.info("time budget reached at epoch %d", epoch)
                break

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result = TrainResult(int(best["epoch"]), float(best["val_loss"]), len(history), round(time.time() - t0, 1), history)
    meta = {
        "data": str(data_dir),
        "mode": mode,
        "config": {**asdict(cfg), "negatives": asdict(cfg.negatives)},
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "epochs_run": result.epochs_run,
        "seconds": result.seconds,
        "n_captions": len(records),
    }
    model.save(out_dir, extra=meta)
    write_text(out_dir / "log.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    import shutil

    shutil.rmtree(state.dir, ignore_errors=True)
    return result
