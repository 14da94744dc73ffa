"""Training settings: the recipes, :class:`TrainConfig`, and :func:`resolve`, the one place that decides
which value of a setting wins.

A :class:`TrainConfig` holds the training run's own settings and, in ``model``, the
:class:`~training.model.ModelConfig` of the model it builds (backbone, frames T, fps, preprocessing,
heads, text model): the model's fields exist once, in ModelConfig. Before training, ``model.text_input``
may be "auto" (chosen from the text model, :meth:`TrainConfig.resolved_text_input`).

Two recipes (:func:`recipe_settings`): ``default`` (InfoNCE over the batch's captions plus one automatic
negative per positive, shared by the batch; identical captions masked), the best measured in
docs/ablation.md, and ``paper`` (the paper's triplet loss with 10 automatic negatives per positive in the
cosine-distance window 0 < d < 0.8, margin 1.0, nothing filtered).

The record a trained model folder keeps of its run (``config.json`` ``training.config``) is the flat
mapping of :meth:`TrainConfig.to_record`, the same keys as before ModelConfig was nested here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from cezsar.errors import CezsarError
from cezsar.preprocess import Preprocess
from training.idle import DEFAULT_FRACTION as DEFAULT_IDLE_FRACTION
from training.model import TEMPORALS, TEXT_INPUTS, TOKEN_DROPOUT, ModelConfig
from training.negatives import NegativeConfig

log = logging.getLogger(__name__)

DEFAULT_FN_DISTANCE = 0.0  # the sentence-distance false-negative filter is off by default (docs/ablation.md)
RECIPES = ("default", "paper")
SCHEDULES = ("constant", "cosine")
LOSSES = ("triplet", "infonce")
NEGATIVE_MODES = ("auto", "random")


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
            # an appearance part plus a motion part (issue 21): unseen pairs of a seen shape and a seen
            # motion on the synthetic worlds' streams (docs/live.md)
            "temporal": "factored",
            # each training clip shifted at random by up to 10% of the crop (issue 21): with the factored head,
            # unseen stream F1 0.818 -> 0.87 on the synthetic worlds (docs/live.md)
            "augment_shift": 0.1,
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
            "temporal": "joint",  # one transformer over the frame features, as the reference design
            "augment_shift": 0.0,
            "schedule": "constant",  # early stopping on the validation loss
            "negatives": {"mode": "auto", "count": 10, "min_distance": 0.0, "max_distance": 0.8, "fn_distance": 0.0},
            "idle_fraction": 0.0,  # the paper trains on captioned clips only
        }
    raise CezsarError(f"--recipe {recipe!r}: expected one of {', '.join(RECIPES)}")


def default_model() -> ModelConfig:
    """The model a training run builds unless told otherwise: ModelConfig's defaults (tiny backbone, 16
    frames at 1 fps, 224-px crops of 256), the text input chosen from the text model, and the per-token
    text head's token dropout (docs/ablation.md)."""
    return ModelConfig(text_input="auto", text_token_dropout=TOKEN_DROPOUT)


def model_config(image_size: int = 224, resize: int = 256, **fields: Any) -> ModelConfig:
    """:func:`default_model` with ModelConfig ``fields`` replaced and a ``image_size``-px crop of a
    ``resize``-px shorter side (a pretrained backbone's own preprocessing replaces it in training)."""
    return replace(default_model(), preprocess=Preprocess(size=image_size, resize=resize).to_dict(), **fields)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=default_model)  # the model to build (or, with init, its T/fps)
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
    val_fraction: float = 0.1
    seed: int = 0
    threads: int | None = None
    max_minutes: float | None = None
    # issue 12: data pipeline (frozen mode: DataLoader workers decoding for the feature store)
    workers: int = 0
    feature_cache: str | None = None  # feature store root (default: the clip cache, $CEZSAR_CACHE)
    shard_segments: int = 512
    stream: bool | None = None  # end2end: DataLoader-streamed clips (None: auto, see training.train._stream)
    bank_limit_gb: float = 4.0
    device: str = "cpu"  # cpu | cuda (under torchrun: cuda:LOCAL_RANK)
    step_log: str | None = None  # JSONL of every training step's loss (rank 0; the ranks' mean)
    init: str | None = None  # a model folder to fine-tune (cezsar init / an earlier training run)
    # issue 21: still and straddling windows made from each batch's clips, as a fraction of the batch
    # (training/idle.py); 0 trains on the captioned clips alone
    idle_fraction: float = DEFAULT_IDLE_FRACTION
    calibrate: bool = True  # issue 21: fit the score calibration (calibration.json) after training

    @property
    def end2end(self) -> bool:
        return self.resolved_mode() == "end2end"

    def resolved_text_input(self) -> str:
        """The text head's input (issue 10, docs/ablation.md): auto = per-token states of the sentence
        model's word-embedding layer for sentence-transformers models, the pooled embedding for image-text
        towers."""
        from training.pretrained import is_pretrained_name

        text_input = self.model.text_input
        if text_input == "auto":
            return "pooled" if is_pretrained_name(self.model.text_model) else "tokens"
        if text_input not in TEXT_INPUTS:
            raise CezsarError(f"--text-input {text_input!r}: expected auto, {' or '.join(TEXT_INPUTS)}")
        return text_input

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
            return "end2end" if self.model.backbone == "tiny" else "frozen"
        if self.mode not in ("frozen", "end2end"):
            raise CezsarError(f"--mode {self.mode!r}: expected auto, frozen or end2end")
        return self.mode

    def to_record(self) -> dict[str, Any]:
        """The run's settings as the model folder records them (``training.config``): the training fields and
        the model fields it set, in one flat mapping (``image_size``/``resize`` for the preprocessing)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("model", "negatives")}
        m = self.model
        out.update(
            negatives=asdict(self.negatives),
            backbone=m.backbone,
            frames=m.frames,
            fps=m.fps,
            image_size=m.pre.size,
            resize=m.pre.resize,
            text_model=m.text_model,
            d_model=m.d_model,
            joint_dim=m.joint_dim,
            dropout=m.dropout,
            text_input=m.text_input,
            text_layer=m.text_layer,
            text_token_dropout=m.text_token_dropout,
            temporal=m.temporal,
        )
        return out


# -- which value wins ---------------------------------------------------------------------------------

# the `cezsar train` flags that are not a field of TrainConfig or ModelConfig
FLAG_SETTINGS = ("negatives", "neg_count", "neg_min", "neg_max", "fn_distance", "image_size", "resize")
# ModelConfig fields a training run may set (the others come from the backbone, the text model or init)
MODEL_SETTINGS = tuple(f.name for f in fields(ModelConfig) if f.name not in ("feature_dim", "text_dim", "preprocess"))
SAMPLING = ("frames", "fps", "image_size", "resize")
# given as 0 (or ""), these count as not given, as the train command has always read them
_ZERO_UNSET = ("frames", "fps", "image_size", "resize", "epochs", "lr", "loss", "negatives", "schedule", "text_input")
# what the train command falls back to where a recipe does not set a setting
_RECIPE_BASE = {"share_negatives": False, "extra_negatives": 1, "margin": 1.0, "schedule": "constant",
                "text_input": "auto", "temporal": "joint", "augment_shift": 0.0,
                "idle_fraction": DEFAULT_IDLE_FRACTION}  # fmt: skip


def settings() -> tuple[str, ...]:
    """Every key :func:`resolve` accepts in ``overrides``."""
    train = (f.name for f in fields(TrainConfig) if f.name not in ("model", "negatives"))
    return tuple(dict.fromkeys((*FLAG_SETTINGS, *train, *MODEL_SETTINGS)))


def _first(key: str, *sources: Mapping[str, Any]) -> Any:
    """The value of ``key`` in the first source that has it (KeyError when none has)."""
    for source in sources:
        if key in source:
            return source[key]
    raise KeyError(key)


def _given(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    given = dict(overrides or {})
    unknown = sorted(set(given) - set(settings()))
    if unknown:
        raise CezsarError(f"unknown training setting(s) {', '.join(unknown)} (known: {', '.join(settings())})")
    return {k: v for k, v in given.items() if v is not None and not (k in _ZERO_UNSET and not v)}


def _data_defaults(data: Path, flags: dict[str, Any], seed: int, report: Callable[[str], None]) -> dict[str, Any]:
    """dataset.json's settings, with the sampling settings it lacks (and no flag gives) probed from the clips."""
    from cezsar.data.formats import read_captions, read_dataset_defaults

    records = read_captions(data)  # bad data fails here, before anything is printed or created
    d = read_dataset_defaults(data)
    if all(k in flags or k in d for k in SAMPLING):
        return d
    from training.probe import probe_clips

    found = probe_clips([(r.video, r.start, r.end) for r in records], seed=seed)
    filled = {k: v for k, v in found.defaults().items() if k not in flags and k not in d}
    report(f"no dataset.json sampling settings; {found.describe()} (using {filled}; flags override)")
    return {**found.defaults(), **d}


def resolve(
    data: str | Path,
    recipe: str = "default",
    overrides: Mapping[str, Any] | None = None,
    report: Callable[[str], None] | None = None,
) -> TrainConfig:
    """The settings of a training run on the caption dataset ``data``: the one place that decides.

    ``overrides``: the settings given explicitly (the ``cezsar train`` flags by their Python names,
    ``negatives`` being the mode, plus any TrainConfig or ModelConfig field, see :func:`settings`); None
    means not given, and so does 0 for frames, fps, image_size, resize, epochs and lr. Per setting, the
    first source that has it wins:

    - frames, fps, image_size, resize: override > ``dataset.json`` > probe of the clips (run only when
      one of them is in neither; ``report`` says what it chose);
    - epochs, lr: override > ``dataset.json`` > 40 epochs, lr 1e-4;
    - the negatives' cosine-distance window (neg_min, neg_max): override > ``dataset.json`` > the recipe;
    - loss, negatives (mode), fn_distance, margin, share_negatives, extra_negatives, schedule, text_input,
      temporal, augment_shift, neg_count, idle_fraction: override > the recipe > the train command's
      fallbacks (per-video negatives, 1 extra negative, margin 1.0, constant schedule, auto text input, the
      joint temporal head, no shift augmentation, 10 negatives, idle windows 0.2 of the batch);
    - everything else: override > the TrainConfig / ModelConfig default;
    - ``init`` (a model folder to fine-tune): its backbone, text model, preprocessing and heads replace
      whatever the sources above said about them (frames and fps stay as resolved).

    Bad data, a bad value or an unknown key fails here with one line, before anything is loaded.
    """
    data = Path(data)
    flags = _given(overrides)
    rec = {**_RECIPE_BASE, **recipe_settings(recipe)}
    rneg = rec.pop("negatives")
    seed = int(flags.get("seed", 0))
    d = _data_defaults(data, flags, seed, report or log.info)
    picked = ("loss", "schedule", "margin", "share_negatives", "extra_negatives", "idle_fraction", "augment_shift")
    pick = {k: _first(k, flags, rec) for k in picked}
    mode = _first("negatives", flags, {"negatives": rneg["mode"]})
    if mode not in NEGATIVE_MODES:
        raise CezsarError(f"--negatives {mode!r}: expected auto or random")
    if pick["loss"] not in LOSSES:
        raise CezsarError(f"--loss {pick['loss']!r}: expected triplet or infonce")
    window = {"neg_min": rneg.get("min_distance", 0.0), "neg_max": rneg.get("max_distance", 0.8)}
    neg = NegativeConfig(
        mode=mode,
        count=int(_first("neg_count", flags, {"neg_count": rneg.get("count", 10)})),
        min_distance=float(_first("neg_min", flags, d, window)),
        max_distance=float(_first("neg_max", flags, d, window)),
        seed=seed,
        fn_distance=float(_first("fn_distance", flags, {"fn_distance": rneg["fn_distance"]})),
    )
    sampling = {"frames": int(_first("frames", flags, d)), "fps": float(_first("fps", flags, d)),
                "text_input": str(_first("text_input", flags, rec)),
                "temporal": str(_first("temporal", flags, rec))}  # fmt: skip
    model = model_config(
        image_size=int(_first("image_size", flags, d)),
        resize=int(_first("resize", flags, d)),
        **{k: flags[k] for k in MODEL_SETTINGS if k in flags and k not in sampling},
        **sampling,
    )
    fallback = {"epochs": 40, "lr": 1e-4}
    explicit: dict[str, Any] = {"epochs": int(_first("epochs", flags, d, fallback)),
                                "lr": float(_first("lr", flags, d, fallback))}  # fmt: skip
    train_keys = {f.name for f in fields(TrainConfig)} - {"model", "negatives", *explicit}
    cfg = TrainConfig(**pick, **{k: v for k, v in flags.items() if k in train_keys and k not in pick}, **explicit,
                      model=model, negatives=neg)  # fmt: skip
    for key in ("backbone_checkpoint", "feature_cache", "init"):
        value = getattr(cfg, key)
        setattr(cfg, key, str(value) if value is not None else None)
    if cfg.model.temporal not in TEMPORALS:
        raise CezsarError(f"--temporal {cfg.model.temporal!r}: expected one of {', '.join(TEMPORALS)}")
    cfg.check_end2end()  # bad values fail before anything is loaded or printed
    if cfg.init is not None:
        from training.model import read_config

        icfg = read_config(cfg.init)  # a bad folder fails here, before training starts
        cfg.model = replace(icfg, frames=model.frames, fps=model.fps)
    return cfg
