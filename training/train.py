"""Contrastive training of the CEZSAR model: align clips with their captions, push apart sampled
unrelated captions (triplet, as in the paper) or in-batch captions plus the sampled ones (InfoNCE,
the default; see docs/ablation.md for why).

The settings (:class:`~training.recipe.TrainConfig`, the recipes ``default`` and ``paper``, and which of
flag, dataset.json, probe and recipe wins) are :mod:`training.recipe`'s. Per-video hard negatives
(``share_negatives=False``), a sentence-distance false-negative filter (``negatives.fn_distance``) and a
cosine schedule are options.

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cezsar.atomic import write_json, write_text
from cezsar.errors import CezsarError
from cezsar.preprocess import Preprocess
from training import distributed
from training.calibrate_scores import calibrate_trained
from training.clips import ClipBank, Segment, build_bank, shift_clips, to_tensor
from training.featstore import ShardedBank
from training.idle import caption_bank
from training.idle import extend as extend_idle
from training.losses import InfoNCELoss, make_loss
from training.model import CezsarModel, ModelConfig, SentenceEncoder, TextBank
from training.negatives import paraphrase_mask, sample_negatives
from training.recipe import SCHEDULES, TrainConfig
from training.stream import ClipBatches, WindowDraw, batch_loader

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainResult", "train"]


def _cosine_factor(epoch: float, epochs: int, warmup: float = 1.0) -> float:
    """Learning-rate factor at ``epoch`` (fractional): linear warm-up over ``warmup`` epochs, then cosine to 0."""
    if epoch < warmup:
        return max(epoch / warmup, 0.05)
    t = (epoch - warmup) / max(epochs - warmup, 1e-9)
    return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


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
    bank_bytes = n_segments * 4 * cfg.model.frames * pre.size * pre.size * 3
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
        try:
            model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
        except RuntimeError:
            raise CezsarError(
                f"{self.dir}: saved by a run of another model (its layers differ from these settings'); resume "
                "with the settings of the interrupted run, or train again without --resume"
            ) from None
        loss.load_state_dict({k[5:]: v for k, v in t.items() if k.startswith("loss.")})
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in t.items():
            if k.startswith("opt."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v
        opt.load_state_dict({"state": state, "param_groups": info.pop("param_groups")})
        return info


def _build_model(cfg: TrainConfig) -> tuple[CezsarModel, Preprocess, SentenceEncoder]:
    """The model to train: the ``init`` folder's (fine-tuning; its frames and fps become the run's), or a
    new one from ``cfg.model`` (a pretrained backbone's own preprocessing replacing the crop settings)."""
    if cfg.init:  # fine-tune a model folder: its towers, heads, preprocessing and text model
        model = CezsarModel.load(cfg.init)
        mcfg = model.config
        mcfg.frames, mcfg.fps = cfg.model.frames, cfg.model.fps
        return model, mcfg.pre, SentenceEncoder.for_config(mcfg)
    from training.pretrained import checkpoint_preprocess

    want = cfg.model
    pre = checkpoint_preprocess(want.backbone) or want.pre
    text_input = cfg.resolved_text_input()
    text = SentenceEncoder(want.text_model, text_input, want.text_layer)
    mcfg = replace(
        want,
        text_input=text_input,
        text_token_dropout=want.text_token_dropout if text_input == "tokens" else 0.0,
        text_dim=text.dim,
        preprocess=pre.to_dict(),
    )
    model = CezsarModel(mcfg, backbone_pretrained=cfg.pretrained, backbone_checkpoint=cfg.backbone_checkpoint)
    return model, pre, text


class _Data:
    """The run's captions, their text-head inputs and sampled negatives, the train/validation split, and the
    clips: a feature store (frozen), a decoded bank (end2end) or DataLoader-decoded batches (streamed)."""

    def __init__(self, records: list[Any], text: SentenceEncoder, cfg: TrainConfig, model: ModelConfig) -> None:
        self.cfg, self.frames, self.fps = cfg, model.frames, model.fps
        self.captions = [r.caption for r in records]
        self.groups = [f"{r.video}:{r.start}:{r.end}" for r in records]
        # issue 21: the idle captions follow the run's captions in the text bank, all in one group
        self.idle, texts, text_groups = caption_bank(cfg.idle_fraction, self.captions, self.groups, cfg.end2end)
        self.sent = TextBank(text, texts)
        self.neg = sample_negatives(self.sent.pooled, cfg.negatives, group=[hash(g) for g in text_groups])
        self.unit = torch.nn.functional.normalize(self.sent.pooled, dim=-1)  # per-video negatives' filter
        self.train_idx, self.val_idx = _split_by_group(self.groups, cfg.val_fraction, cfg.seed)
        self.segs = [Segment(Path(r.video), r.start, r.end) for r in records]
        # identical captions share an id, the captions of one clip a group id: InfoNCE does not treat them as
        # each other's negatives (ids, not hashes: they must agree across torchrun ranks)
        self.cid = torch.from_numpy(_ids(texts))
        self.gid = torch.from_numpy(_ids(text_groups))
        self.bank: ClipBank | ShardedBank | None = None
        self.skipped: list[dict[str, Any]] = []
        self.bad_seen: dict[str, dict[str, Any]] = {}  # streamed end2end: videos that failed to decode
        self.streamed = False

    def load_clips(self, mode: str, model: CezsarModel, pre: Preprocess, progress: bool) -> None:
        cfg = self.cfg
        self.pre, self.mode = pre, mode
        if mode == "frozen":
            for p in model.frame_encoder.parameters():
                p.requires_grad_(False)
            # issue 12: sharded on-disk feature store, split across ranks, read memory-mapped
            from training.featstore import frozen_features

            bank, fstats = frozen_features(
                model.frame_encoder,
                self.segs,
                pre,
                self.fps,
                self.frames,
                cache_dir=Path(cfg.feature_cache) if cfg.feature_cache else None,
                workers=cfg.workers,
                shard_segments=cfg.shard_segments,
                progress=progress,
            )
            self.bank, self.skipped = bank, fstats.bad
            for b in self.skipped:
                log.warning("skipped undecodable video %s (%d captions): %s", b["video"], len(b["ids"]), b["error"])
            ok = set(bank.available.tolist())
            self.train_idx = np.array([i for i in self.train_idx if i in ok], dtype=np.int64)
            self.val_idx = np.array([i for i in self.val_idx if i in ok], dtype=np.int64)
        elif not _stream(cfg, len(self.segs), pre):
            self.bank = build_bank(self.segs, self.fps, self.frames, pre, progress=progress)
        else:
            self.streamed = True
            log.info("end2end: streaming clips through a DataLoader (%d workers)", cfg.workers)

    def batches(self, idx_list: list[np.ndarray], epoch: int, train_mode: bool) -> Iterator[tuple[np.ndarray, Any]]:
        """(segment ids, model inputs) per batch: from the bank/store, or decoded by DataLoader workers."""
        rng_for = WindowDraw(self.cfg.seed, epoch, train_mode)  # per-sample draws, whatever the batch split
        if not self.streamed:
            assert self.bank is not None
            for idx in idx_list:
                window = np.stack([self.bank.window(int(i), self.frames, rng_for(i)) for i in idx])
                yield idx, (torch.from_numpy(window).float() if self.mode == "frozen" else to_tensor(window, self.pre))
            return
        ds = ClipBatches(self.segs, idx_list, self.fps, self.frames, self.pre, rng_for)
        for b in batch_loader(ds, self.cfg.workers):
            for bad in b.bad:
                if bad.video not in self.bad_seen:
                    log.warning("skipping undecodable video %s: %s", bad.video, bad.error)
                    self.bad_seen[bad.video] = {"video": bad.video, "error": bad.error, "ids": []}
                seen = self.bad_seen[bad.video]
                seen["ids"] = sorted(set(seen["ids"]) | set(bad.ids))
            yield b.idx, b.inputs

    def skipped_summary(self) -> list[dict[str, Any]]:
        """One entry per video that could not be decoded (a whole video, or some of its segments)."""
        by_video: dict[str, dict[str, Any]] = {}
        for b in self.skipped + list(self.bad_seen.values()):
            e = by_video.setdefault(b["video"], {"video": b["video"], "error": b["error"], "captions": 0})
            e["captions"] += len(b["ids"])
        return list(by_video.values())


def _ids(values: list[str]) -> np.ndarray:
    return np.unique(np.array(values, dtype=object), return_inverse=True)[1].astype(np.int64)


class _Steps:
    """One batch's loss (train or validation) with the negatives the loss takes, on this rank's device."""

    def __init__(self, model: CezsarModel, data: _Data, cfg: TrainConfig, mode: str, dinfo: Any, dev: Any) -> None:
        self.model, self.data, self.cfg, self.mode, self.dinfo, self.dev = model, data, cfg, mode, dinfo, dev
        self.loss_fn = make_loss(cfg.loss, margin=cfg.margin).to(dev)
        self.objective: torch.nn.Module = _Objective(model, self.loss_fn, mode, cfg.negatives.fn_distance)
        self.step_fn: torch.nn.Module = self.objective
        if dinfo.enabled:  # issue 12: DDP averages the gradients of the ranks
            from torch.nn.parallel import DistributedDataParallel

            ids = [dev.index] if dev.type == "cuda" else None
            self.step_fn = DistributedDataParallel(self.objective, device_ids=ids)
        head = [p for n, p in model.named_parameters() if not n.startswith("frame_encoder.") and p.requires_grad]
        groups: list[dict[str, Any]] = [{"params": head + list(self.loss_fn.parameters()), "lr": cfg.lr}]
        if mode == "end2end":
            groups.append({"params": list(model.frame_encoder.parameters()), "lr": cfg.resolved_backbone_lr()})
        self.opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        self.base_lrs = [cfg.lr] + ([cfg.resolved_backbone_lr()] if mode == "end2end" else [])  # not the resumed lr

    def _negatives(self, idx: np.ndarray, t: torch.Tensor, train_mode: bool, epoch: int) -> tuple[Any, Any]:
        """(negatives' text-head inputs, per-video negatives that are false negatives or None)."""
        d, cfg = self.data, self.cfg
        if not isinstance(self.loss_fn, InfoNCELoss):
            return d.sent[d.neg[idx].reshape(-1)], None  # the paper's N negatives per positive: one triplet each
        # per-sample generators keyed by (seed, epoch, sample): the same draws whatever the batch split
        gens = [np.random.default_rng([cfg.seed, epoch, int(i), 1]) for i in idx] if train_mode else None
        if cfg.share_negatives:  # one drawn negative per positive, shared by the batch (the default)
            col = np.array([g.integers(0, d.neg.shape[1]) for g in gens]) if gens else np.zeros(len(idx), np.int64)
            return d.sent[d.neg[idx, col]], None  # (B, D)
        k = max(1, min(cfg.extra_negatives, d.neg.shape[1]))  # per video: its own k automatic negatives
        if gens:
            cols = np.stack([g.permutation(d.neg.shape[1])[:k] for g in gens])
        else:
            cols = np.tile(np.arange(k), (len(idx), 1))
        extra = torch.from_numpy(d.neg[np.asarray(idx)[:, None], cols])  # (B, k)
        close = 1.0 - torch.einsum("bd,bkd->bk", d.unit[t], d.unit[extra]) < max(cfg.negatives.fn_distance, 1e-5)
        return d.sent[extra], close | (d.gid[extra] == d.gid[t][:, None])  # (B, k, D), (B, k)

    def __call__(self, idx: np.ndarray, inputs: torch.Tensor, train_mode: bool, epoch: int = 0) -> torch.Tensor:
        d, cfg, dev = self.data, self.cfg, self.dev
        if train_mode and d.idle is not None:  # issue 21: the batch's still and straddling windows
            rng = np.random.default_rng([cfg.seed, epoch, int(idx[0]), 3])
            inputs, idx = extend_idle(inputs, idx, d.idle, rng, d.pre if self.mode == "end2end" else None)
        t = torch.from_numpy(np.asarray(idx, dtype=np.int64))
        negs, extra_ex = self._negatives(idx, t, train_mode, epoch)
        if train_mode and self.mode == "end2end" and cfg.augment_shift > 0:
            most = int(round(cfg.augment_shift * inputs.shape[-1]))
            shifts = np.stack([np.random.default_rng([cfg.seed, epoch, int(i), 2]).integers(-most, most + 1, 2)
                               for i in idx])  # fmt: skip
            inputs = shift_clips(inputs, shifts)
        fn = self.step_fn if train_mode else self.objective
        return fn(
            inputs.to(dev, non_blocking=True),
            d.sent[t].to(dev),
            negs.to(dev),
            d.cid[t].to(dev),
            d.gid[t].to(dev),
            d.sent.pooled[t].to(dev),
            None if extra_ex is None else extra_ex.to(dev),
            train_mode and self.dinfo.enabled,
        )


def _train_epoch(steps: _Steps, sampler: Any, epoch: int) -> float:
    """One epoch's optimisation steps; returns the ranks' mean training loss."""
    cfg, data, dinfo, opt = steps.cfg, steps.data, steps.dinfo, steps.opt
    bs = cfg.batch_size
    steps.model.train()
    if steps.mode == "frozen":
        steps.model.frame_encoder.eval()
    sampler.set_epoch(epoch)  # this rank's share of one permutation shared by all ranks
    perm = data.train_idx[np.array(list(sampler), dtype=np.int64)]
    # whole batches only (the incomplete last one is dropped; a new permutation each epoch), so the global
    # batches of W ranks x B are those of one process with W x B, whatever W
    perm = perm[: (len(perm) // bs) * bs or len(perm)]
    losses = []
    n_steps = max(1, -(-len(perm) // bs))  # every rank runs the same number of steps (equal shares)
    for step_i, (idx, inputs) in enumerate(
        data.batches([perm[i : i + bs] for i in range(0, len(perm), bs)], epoch, True)
    ):
        if len(idx) < 2 and not dinfo.enabled:
            continue
        if cfg.schedule == "cosine":
            for g, base in zip(opt.param_groups, steps.base_lrs, strict=True):
                g["lr"] = base * _cosine_factor(epoch + step_i / n_steps, cfg.epochs)
        loss = steps(idx, inputs, True, epoch)
        opt.zero_grad(set_to_none=True)
        # all-gathered InfoNCE: every rank holds the global loss and DDP averages, so scale back up
        (loss * (dinfo.world if isinstance(steps.loss_fn, InfoNCELoss) else 1)).backward()
        torch.nn.utils.clip_grad_norm_(steps.model.parameters(), 5.0)
        opt.step()
        losses.append(loss.item())
        if cfg.step_log:
            _log_step(cfg.step_log, dinfo, epoch, loss.item())
    return distributed.mean_across_ranks(float(np.mean(losses)) if losses else math.nan)


def _epochs(steps: _Steps, state: _State, resume: dict[str, Any] | None, t0: float, progress: bool) -> dict[str, Any]:
    """The epoch loop (early stopping, time budget, resume state after each epoch); returns
    {"history", "best", "best_state"}."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    from torch.utils.data import DistributedSampler

    cfg, data, dinfo, model = steps.cfg, steps.data, steps.dinfo, steps.model
    run: dict[str, Any] = {"history": [], "best": {"val_loss": math.inf, "epoch": -1}, "best_state": None}
    start = 0
    if resume is not None:
        start, run["history"], run["best"] = resume["epoch"] + 1, resume["history"], resume["best"]
        if run["best"]["epoch"] >= 0:
            run["best_state"] = {k: v.clone() for k, v in model.state_dict().items()}
        log.info("resuming at epoch %d", start)
    cosine = cfg.schedule == "cosine"
    positions: Any = range(len(data.train_idx))  # DistributedSampler only needs len()
    sampler: DistributedSampler = DistributedSampler(
        positions, num_replicas=dinfo.world, rank=dinfo.rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    val_batches = [data.val_idx[i : i + cfg.batch_size] for i in range(0, len(data.val_idx), cfg.batch_size)]
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"), TimeRemainingColumn()]
    with Progress(*columns, disable=not (progress and dinfo.is_main)) as bar:
        task = bar.add_task("training", total=cfg.epochs, completed=start, info="")
        for epoch in range(start, cfg.epochs):
            train_loss = _train_epoch(steps, sampler, epoch)
            model.eval()
            with torch.no_grad():
                vl = [steps(idx, x, False).item() for idx, x in data.batches(val_batches, epoch, False) if len(idx)]
            val_loss = float(np.mean(vl)) if vl else train_loss
            rec = {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "seconds": round(time.time() - t0, 2),
            }
            run["history"].append(rec)
            best = run["best"]
            # cosine: the schedule ends at lr 0 and the last epoch is the model (a noisy validation loss
            # picked under-trained early epochs); constant: early stopping on the validation loss
            if cosine or val_loss < best["val_loss"] - 1e-4:
                best = run["best"] = {"val_loss": val_loss, "epoch": epoch}
                run["best_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if dinfo.is_main:  # issue 12: rank 0 writes
                state.save(model, steps.loss_fn, steps.opt, {"epoch": epoch, "history": run["history"], "best": best})
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
    return run


def train(
    data_dir: str | Path, out_dir: str | Path, cfg: TrainConfig, resume: bool = False, progress: bool = True
) -> TrainResult:
    """Train on the caption dataset ``data_dir`` with ``cfg`` (:func:`training.recipe.resolve` makes one from
    flags and the dataset) and write the model folder ``out_dir`` (rank 0 under torchrun)."""
    from cezsar.data.formats import read_captions, trained_on

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    mode = cfg.resolved_mode()
    cfg.check_end2end()
    if cfg.schedule not in SCHEDULES:
        raise CezsarError(f"--schedule {cfg.schedule!r}: expected one of {', '.join(SCHEDULES)}")
    dinfo = distributed.setup(cfg.device)  # issue 12: torchrun sets WORLD_SIZE > 1
    dev = torch.device(distributed.rank_device(cfg.device, dinfo))

    records = read_captions(data_dir)
    if len(records) < 4:
        raise CezsarError(f"{data_dir / 'captions.jsonl'}: only {len(records)} captions; need at least 4 to train")
    model, pre, text = _build_model(cfg)
    model.to(dev)
    data = _Data(records, text, cfg, model.config)
    data.load_clips(mode, model, pre, progress)
    steps = _Steps(model, data, cfg, mode, dinfo, dev)
    state = _State(out_dir)
    info = state.load(model, steps.loss_fn, steps.opt) if resume else None
    if resume and info is None:
        raise CezsarError(f"{out_dir}: nothing to resume (no .resume/state.json)")
    run = _epochs(steps, state, info, t0, progress)

    if run["best_state"] is not None:
        model.load_state_dict(run["best_state"])
    model.eval()
    best, history = run["best"], run["history"]
    result = TrainResult(int(best["epoch"]), float(best["val_loss"]), len(history), round(time.time() - t0, 1), history)
    result.skipped = data.skipped_summary()
    meta = {
        "data": str(data_dir),
        "mode": mode,
        "config": replace(cfg, model=model.config).to_record(),
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "epochs_run": result.epochs_run,
        "seconds": result.seconds,
        "n_captions": len(records),
        "world_size": dinfo.world,
        "skipped_videos": result.skipped,
        "trained_on": trained_on(data_dir, data.captions),  # what its actions should stay near
    }
    if dinfo.is_main:
        model.cpu()
        model.save(out_dir, extra=meta)
        write_text(out_dir / "log.jsonl", "".join(json.dumps(h) + "\n" for h in history))
        import shutil

        shutil.rmtree(state.dir, ignore_errors=True)
        if cfg.calibrate:  # issue 21: the score calibration, on validation streams of seen classes
            calibrate_trained(out_dir, data_dir, model, text, (records, data.val_idx), cfg.seed)
    distributed.teardown()
    return result
