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
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cezsar.atomic import write_json, write_text
from cezsar.errors import CezsarError
from cezsar.preprocess import Preprocess
from training import distributed
from training.clips import ClipBank, Segment, build_bank, shift_clips, to_tensor
from training.featstore import ShardedBank
from training.losses import InfoNCELoss, make_loss
from training.model import (
    DEFAULT_TEXT_MODEL,
    TEXT_INPUTS,
    TOKEN_DROPOUT,
    CezsarModel,
    ModelConfig,
    SentenceEncoder,
    TextBank,
)
from training.negatives import NegativeConfig, paraphrase_mask, sample_negatives
from training.stream import ClipBatches, WindowDraw, batch_loader

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
        return {
            "loss": "infonce",
            "share_negatives": True,
            "extra_negatives": 1,
            "text_input": "auto",  # per-token word-embedding states for sentence-transformers models
            # a fixed length with cosine decay, the last epoch kept: early stopping on the seen classes'
            # validation loss stopped runs at a noisy plateau, far from their best unseen top-1
            "schedule": "cosine",
            "negatives": negatives,
        }
    if recipe == "paper":
        # the paper: triplet margin loss (Euclidean, margin 1.0), 10 automatic negatives per positive
        # drawn from the cosine-distance window 0 < d < 0.8, no false-negative filter; the text head
        # projects the pooled sentence embedding
        return {
            "loss": "triplet",
            "margin": 1.0,
            "text_input": "pooled",
            "schedule": "constant",  # early stopping on the validation loss
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
    # end2end: random translation of each training clip (all its frames alike), at most this fraction of
    # the crop size in x and y (0: none). The frozen mode's features are computed once, unaugmented.
    augment_shift: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    patience: int = 6
    # cosine (warm-up, decay, last epoch; the default recipe) | constant (early stopping on validation loss)
    schedule: str = "cosine"
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
    # issue 12: data pipeline (frozen mode: DataLoader workers decoding for the feature store)
    workers: int = 0
    feature_cache: str | None = None  # feature store root (default: the clip cache, $CEZSAR_CACHE)
    shard_segments: int = 512
    stream: bool | None = None  # end2end: DataLoader-streamed clips (None: auto, see _stream)
    bank_limit_gb: float = 4.0
    device: str = "cpu"  # cpu | cuda (under torchrun: cuda:LOCAL_RANK)
    step_log: str | None = None  # JSONL of every training step's loss (rank 0; the ranks' mean)
    init: str | None = None  # a model folder to fine-tune (cezsar init / an earlier training run)
    # the text head's input (issue 10, docs/ablation.md): auto = per-token states of the sentence model's
    # word-embedding layer for sentence-transformers models, the pooled embedding for image-text towers
    text_input: str = "auto"  # auto | tokens | pooled
    text_layer: int = 0
    text_token_dropout: float = TOKEN_DROPOUT

    def resolved_text_input(self) -> str:
        from training.pretrained import is_pretrained_name

        if self.text_input == "auto":
            return "pooled" if is_pretrained_name(self.text_model) else "tokens"
        if self.text_input not in TEXT_INPUTS:
            raise CezsarError(f"--text-input {self.text_input!r}: expected auto, {' or '.join(TEXT_INPUTS)}")
        return self.text_input

    def resolved_backbone_lr(self) -> float:
        """end2end: the frame encoder's learning rate (0 keeps it as it is; None follows ``lr``)."""
        return self.lr if self.backbone_lr is None else self.backbone_lr

    def check_end2end(self) -> None:
        """Bad end2end settings (``--backbone-lr``, ``--augment-shift``) fail here, before any work."""
        if self.backbone_lr is not None and self.backbone_lr < 0:
            raise CezsarError(f"--backbone-lr {self.backbone_lr}: must be >= 0")
        if not 0.0 <= self.augment_shift < 0.5:
            raise CezsarError(f"--augment-shift {self.augment_shift}: expected a fraction of the crop in [0, 0.5)")

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
    skipped: list[dict[str, Any]] = field(default_factory=list)  # videos that could not be decoded


class _Objective(torch.nn.Module):
    """One batch's loss from its inputs: what DDP wraps (every trained parameter is used in forward)."""

    def __init__(self, model: CezsarModel, loss_fn: torch.nn.Module, mode: str, fn_distance: float = 0.0) -> None:
        super().__init__()
        self.model, self.loss_fn, self.mode, self.fn_distance = model, loss_fn, mode, fn_distance

    def forward(
        self,
        inputs: torch.Tensor,
        pos: torch.Tensor,
        negs: torch.Tensor,
        cid: torch.Tensor,
        gid: torch.Tensor,
        raw: torch.Tensor,
        extra_ex: torch.Tensor | None,
        gather: bool,
    ) -> torch.Tensor:
        """``pos``: the positives' text-head inputs (:class:`TextBank` rows); ``negs``: (B, W) negatives shared
        by the batch, (B, K, W) per video, or (B*K, W) for the triplet loss. ``cid``/``gid``: caption and
        clip ids (equal ids: not a negative of each other); ``raw``: the positives' sentence embeddings (the
        false-negative filter's distances); ``extra_ex`` (B, K): per-video negatives that are false negatives."""
        m = self.model
        video = m.temporal_head(inputs) if self.mode == "frozen" else m.encode_video(inputs)
        p = m.encode_text(pos)
        if not isinstance(self.loss_fn, InfoNCELoss):
            n = m.encode_text(negs)
            k = len(n) // len(p)
            return self.loss_fn(video.repeat_interleave(k, 0), p.repeat_interleave(k, 0), n)
        n = m.encode_text(negs.reshape(-1, negs.shape[-1])).view(*negs.shape[:-1], -1)
        extra = None if extra_ex is None else extra_ex.to(torch.uint8)
        if gather:  # issue 12: negatives from every rank (CLIP-style), gradient through the local rows
            video, p, n, cid, gid, raw = (distributed.gather_with_grad(x) for x in (video, p, n, cid, gid, raw))
            extra = None if extra is None else distributed.gather_with_grad(extra)
        exclude = (cid[:, None] == cid[None, :]) | (gid[:, None] == gid[None, :])
        if self.fn_distance > 0:
            exclude |= paraphrase_mask(raw, raw, self.fn_distance)
        if extra is not None:
            exclude = torch.cat([exclude, extra.bool()], dim=1)
        else:
            exclude = torch.cat([exclude, torch.zeros((len(p), len(n)), dtype=torch.bool, device=p.device)], dim=1)
        return self.loss_fn(video, p, n, exclude=exclude)


def _log_step(path: str, dinfo: distributed.DistInfo, epoch: int, loss: float) -> None:
    value = distributed.mean_across_ranks(loss)
    if dinfo.is_main:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"epoch": epoch, "loss": value}) + "\n")


def _stream(cfg: TrainConfig, n_segments: int, pre: Preprocess) -> bool:
    """End2end: stream clips (DataLoader) instead of caching every decoded crop in RAM? ``cfg.stream``
    decides; unset, stream when workers are asked for or when the bank would exceed ``bank_limit_gb``."""
    if cfg.stream is not None:
        return cfg.stream
    bank_bytes = n_segments * 4 * cfg.frames * pre.size * pre.size * 3
    return cfg.workers > 0 or bank_bytes > cfg.bank_limit_gb * 1e9


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
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        tensors.update({f"loss.{k}": v.detach().cpu().contiguous() for k, v in loss.state_dict().items()})
        osd = opt.state_dict()
        for pid, st in osd["state"].items():
            for k, v in st.items():
                tensors[f"opt.{pid}.{k}"] = (v.cpu() if torch.is_tensor(v) else torch.tensor(v)).contiguous()
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

    from cezsar.data.formats import read_captions

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    mode = cfg.resolved_mode()
    cfg.check_end2end()
    dinfo = distributed.setup(cfg.device)  # issue 12: torchrun sets WORLD_SIZE > 1
    dev = torch.device(distributed.rank_device(cfg.device, dinfo))

    records = read_captions(data_dir)
    if len(records) < 4:
        raise CezsarError(f"{data_dir / 'captions.jsonl'}: only {len(records)} captions; need at least 4 to train")
    if cfg.init:  # fine-tune a model folder: its towers, heads, preprocessing and text model
        model = CezsarModel.load(cfg.init)
        mcfg = model.config
        mcfg.frames, mcfg.fps = cfg.frames, cfg.fps
        cfg.backbone, cfg.text_model = mcfg.backbone, mcfg.text_model
        pre = mcfg.pre
        text = SentenceEncoder.for_config(mcfg)
    else:
        from training.pretrained import checkpoint_preprocess

        pre = checkpoint_preprocess(cfg.backbone) or Preprocess(size=cfg.image_size, resize=cfg.resize)
        text_input = cfg.resolved_text_input()
        text = SentenceEncoder(cfg.text_model, text_input, cfg.text_layer)
        mcfg = ModelConfig(
            text_input=text_input,
            text_layer=cfg.text_layer,
            text_token_dropout=cfg.text_token_dropout if text_input == "tokens" else 0.0,
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
    model.to(dev)

    captions = [r.caption for r in records]
    sent = TextBank(text, captions)
    groups = [f"{r.video}:{r.start}:{r.end}" for r in records]
    neg = sample_negatives(sent.pooled, cfg.negatives, group=[hash(g) for g in groups])
    unit = torch.nn.functional.normalize(sent.pooled, dim=-1)  # per-video negatives' false-negative test
    train_idx, val_idx = _split_by_group(groups, cfg.val_fraction, cfg.seed)

    segs = [Segment(Path(r.video), r.start, r.end) for r in records]
    bank: ClipBank | ShardedBank
    skipped: list[dict[str, Any]] = []
    bad_seen: dict[str, dict[str, Any]] = {}  # streamed end2end: videos that failed to decode
    if mode == "frozen":
        for p in model.frame_encoder.parameters():
            p.requires_grad_(False)
        # issue 12: sharded on-disk feature store, split across ranks, read memory-mapped
        from training.featstore import frozen_features

        cache = Path(cfg.feature_cache) if cfg.feature_cache else None
        bank, fstats = frozen_features(
            model.frame_encoder,
            segs,
            pre,
            cfg.fps,
            cfg.frames,
            cache_dir=cache,
            workers=cfg.workers,
            shard_segments=cfg.shard_segments,
            progress=progress,
        )
        skipped = fstats.bad
        for b in skipped:
            log.warning("skipped undecodable video %s (%d captions): %s", b["video"], len(b["ids"]), b["error"])
        ok = set(bank.available.tolist())
        train_idx = np.array([i for i in train_idx if i in ok], dtype=np.int64)
        val_idx = np.array([i for i in val_idx if i in ok], dtype=np.int64)
    elif not _stream(cfg, len(segs), pre):
        bank = build_bank(segs, cfg.fps, cfg.frames, pre, progress=progress)

    loss_fn = make_loss(cfg.loss, margin=cfg.margin).to(dev)
    head_params = [p for n, p in model.named_parameters() if not n.startswith("frame_encoder.") and p.requires_grad]
    groups_opt: list[dict[str, Any]] = [{"params": head_params + list(loss_fn.parameters()), "lr": cfg.lr}]
    if mode == "end2end":
        groups_opt.append({"params": list(model.frame_encoder.parameters()), "lr": cfg.resolved_backbone_lr()})
    opt = torch.optim.AdamW(groups_opt, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    objective: torch.nn.Module = _Objective(model, loss_fn, mode, cfg.negatives.fn_distance)
    step_fn: torch.nn.Module = objective
    if dinfo.enabled:  # issue 12: DDP averages the gradients of the ranks
        from torch.nn.parallel import DistributedDataParallel

        step_fn = DistributedDataParallel(objective, device_ids=[dev.index] if dev.type == "cuda" else None)

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
        log.info("resuming at epoch %d", start_epoch)

    # identical captions share an id, the captions of one clip a group id: InfoNCE does not treat them as
    # each other's negatives (ids, not hashes: they must agree across torchrun ranks)
    cid = torch.from_numpy(np.unique(np.array(captions, dtype=object), return_inverse=True)[1].astype(np.int64))
    gid = torch.from_numpy(np.unique(np.array(groups, dtype=object), return_inverse=True)[1].astype(np.int64))
    fn_distance = cfg.negatives.fn_distance
    draw = WindowDraw  # issue 12: per-sample draws keyed by (seed, epoch, sample), whatever the batch split
    streamed = mode == "end2end" and _stream(cfg, len(segs), pre)
    if streamed:
        log.info("end2end: streaming clips through a DataLoader (%d workers)", cfg.workers)

    def batches(idx_list: list[np.ndarray], epoch: int, train_mode: bool) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """(segment ids, model inputs) per batch: from the bank/store, or decoded by DataLoader workers."""
        rng_for = draw(cfg.seed, epoch, train_mode)
        if not streamed:
            for idx in idx_list:
                window = np.stack([bank.window(int(i), cfg.frames, rng_for(i)) for i in idx])
                yield idx, (torch.from_numpy(window).float() if mode == "frozen" else to_tensor(window, pre))
            return
        ds = ClipBatches(segs, idx_list, cfg.fps, cfg.frames, pre, rng_for)
        for b in batch_loader(ds, cfg.workers):
            for bad in b.bad:
                if bad.video not in bad_seen:
                    log.warning("skipping undecodable video %s: %s", bad.video, bad.error)
                    bad_seen[bad.video] = {"video": bad.video, "error": bad.error, "ids": []}
                bad_seen[bad.video]["ids"] = sorted(set(bad_seen[bad.video]["ids"]) | set(bad.ids))
            yield b.idx, b.inputs

    def run_batch(idx: np.ndarray, inputs: torch.Tensor, train_mode: bool, epoch: int = 0) -> torch.Tensor:
        t = torch.from_numpy(np.asarray(idx, dtype=np.int64))
        extra_ex: torch.Tensor | None = None
        if isinstance(loss_fn, InfoNCELoss):
            # per-sample generators keyed by (seed, epoch, sample): the same draws whatever the batch split
            gens = [np.random.default_rng([cfg.seed, epoch, int(i), 1]) for i in idx] if train_mode else None
            if cfg.share_negatives:  # one drawn negative per positive, shared by the batch (the default)
                col = np.array([g.integers(0, neg.shape[1]) for g in gens]) if gens else np.zeros(len(idx), np.int64)
                negs = sent[neg[idx, col]]  # (B, D)
            else:  # per video: its own k automatic negatives
                k = max(1, min(cfg.extra_negatives, neg.shape[1]))
                if gens:
                    cols = np.stack([g.permutation(neg.shape[1])[:k] for g in gens])
                else:
                    cols = np.tile(np.arange(k), (len(idx), 1))
                extra = torch.from_numpy(neg[np.asarray(idx)[:, None], cols])  # (B, k)
                negs = sent[extra]  # (B, k, D)
                close = 1.0 - torch.einsum("bd,bkd->bk", unit[t], unit[extra]) < max(fn_distance, 1e-5)
                extra_ex = close | (gid[extra] == gid[t][:, None])
        else:
            negs = sent[neg[idx].reshape(-1)]  # the paper's N negatives per positive: one triplet each
        fn = step_fn if train_mode else objective
        if train_mode and mode == "end2end" and cfg.augment_shift > 0:
            most = int(round(cfg.augment_shift * inputs.shape[-1]))
            shifts = np.stack([np.random.default_rng([cfg.seed, epoch, int(i), 2]).integers(-most, most + 1, 2)
                               for i in idx])  # fmt: skip
            inputs = shift_clips(inputs, shifts)
        return fn(
            inputs.to(dev, non_blocking=True),
            sent[t].to(dev),
            negs.to(dev),
            cid[t].to(dev),
            gid[t].to(dev),
            sent.pooled[t].to(dev),
            None if extra_ex is None else extra_ex.to(dev),
            train_mode and dinfo.enabled,
        )

    if cfg.schedule not in SCHEDULES:
        raise CezsarError(f"--schedule {cfg.schedule!r}: expected one of {', '.join(SCHEDULES)}")
    cosine = cfg.schedule == "cosine"
    base_lrs = [cfg.lr] + ([cfg.resolved_backbone_lr()] if mode == "end2end" else [])  # not the resumed lr
    bs = cfg.batch_size
    from torch.utils.data import DistributedSampler

    positions: Any = range(len(train_idx))  # DistributedSampler only needs len()
    sampler: DistributedSampler = DistributedSampler(
        positions, num_replicas=dinfo.world, rank=dinfo.rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    val_batches = [val_idx[i : i + bs] for i in range(0, len(val_idx), bs)]
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"), TimeRemainingColumn()]
    with Progress(*columns, disable=not (progress and dinfo.is_main)) as bar:
        task = bar.add_task("training", total=cfg.epochs, completed=start_epoch, info="")
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            if mode == "frozen":
                model.frame_encoder.eval()
            sampler.set_epoch(epoch)  # this rank's share of one permutation shared by all ranks
            perm = train_idx[np.array(list(sampler), dtype=np.int64)]
            # whole batches only (the incomplete last one is dropped; a new permutation each epoch), so
            # the global batches of W ranks x B are those of one process with W x B, whatever W
            perm = perm[: (len(perm) // bs) * bs or len(perm)]
            losses = []
            # every rank runs the same number of steps (DistributedSampler gives equal shares)
            n_steps = max(1, -(-len(perm) // bs))
            train_batches = batches([perm[i : i + bs] for i in range(0, len(perm), bs)], epoch, True)
            for step_i, (idx, inputs) in enumerate(train_batches):
                if len(idx) < 2 and not dinfo.enabled:
                    continue
                if cosine:
                    step = epoch + step_i / n_steps  # in epochs
                    for g, base in zip(opt.param_groups, base_lrs, strict=True):
                        g["lr"] = base * _cosine_factor(step, cfg.epochs)
                loss = run_batch(idx, inputs, True, epoch)
                opt.zero_grad(set_to_none=True)
                # all-gathered InfoNCE: every rank holds the global loss and DDP averages, so scale back up
                (loss * (dinfo.world if isinstance(loss_fn, InfoNCELoss) else 1)).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
                losses.append(loss.item())
                if cfg.step_log:
                    _log_step(cfg.step_log, dinfo, epoch, loss.item())
            model.eval()
            with torch.no_grad():
                vl = [run_batch(idx, x, False).item() for idx, x in batches(val_batches, epoch, False) if len(idx)]
            train_loss = distributed.mean_across_ranks(float(np.mean(losses)) if losses else math.nan)
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
            if dinfo.is_main:  # issue 12: rank 0 writes
                state.save(model, loss_fn, opt, {"epoch": epoch, "history": history, "best": best})
                with open(state.dir / "log.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps(rec) + "\n")
            bar.update(task, advance=1, info=f"train {train_loss:.4f}  val {val_loss:.4f}  best@{best['epoch']}")
            if not cosine and epoch - best["epoch"] >= cfg.patience:
                log.info("early stop at epoch %d (best %d)", epoch, best["epoch"])
                break
            over = bool(cfg.max_minutes and (time.time() - t0) / 60 > cfg.max_minutes)
            if distributed.mean_across_ranks(float(over)) > 0:  # the ranks stop together
                log.info("time budget reached at epoch %d", epoch)
                break

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result = TrainResult(int(best["epoch"]), float(best["val_loss"]), len(history), round(time.time() - t0, 1), history)
    skipped += list(bad_seen.values())
    by_video: dict[str, dict[str, Any]] = {}
    for b in skipped:  # one entry per video (a whole video, or some of its segments)
        e = by_video.setdefault(b["video"], {"video": b["video"], "error": b["error"], "captions": 0})
        e["captions"] += len(b["ids"])
    skipped_summary = list(by_video.values())
    meta = {
        "data": str(data_dir),
        "mode": mode,
        "config": {**asdict(cfg), "negatives": asdict(cfg.negatives)},
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "epochs_run": result.epochs_run,
        "seconds": result.seconds,
        "n_captions": len(records),
        "world_size": dinfo.world,
        "skipped_videos": skipped_summary,
    }
    if dinfo.is_main:
        model.cpu()
        model.save(out_dir, extra=meta)
        write_text(out_dir / "log.jsonl", "".join(json.dumps(h) + "\n" for h in history))
        import shutil

        shutil.rmtree(state.dir, ignore_errors=True)
    distributed.teardown()
    result.skipped = skipped_summary
    return result
