"""Pretrained image-text towers (CLIP, SigLIP) through Hugging Face ``transformers``.

Names (frame encoders with ``--backbone`` / ``--frame-encoder``, text towers with ``--text-model`` /
``--text-tower``):

- ``hf-clip:REF``: a CLIP checkpoint (``openai/clip-vit-base-patch32``, ``laion/CLIP-ViT-B-32-laion2B-s34B-b79K``,
  ...). Frame encoder: the vision tower with its visual projection (``CLIPVisionModelWithProjection``),
  image embedding L2-normalised. Text tower: the text tower with its text projection, L2-normalised.
- ``hf-siglip:REF``: a SigLIP checkpoint (``google/siglip-base-patch16-224``, ...). Frame encoder: the
  vision tower's pooled (attention-pooling head) output; text tower: the text tower's pooled output;
  both L2-normalised. SigLIP text was trained on fixed-length input (padded to the model's maximum,
  no attention mask), so its tokenizer pads to that length and the tower ignores the mask.
- ``st-clip:REF``: a sentence-transformers CLIP model (``sentence-transformers/clip-ViT-B-32``): its
  ``modules.json`` names a CLIPModel folder, which is then read as ``hf-clip``.

REF is a local folder (offline) or a hub name, fetched into the ``huggingface_hub`` cache (needs
internet and ``HF_HUB_OFFLINE=0``; the ``cezsar`` command sets it to 1 unless told otherwise).

The image processor classes of transformers 5 need torchvision, so the checkpoint's
``preprocessor_config.json`` is read here into :class:`cezsar.preprocess.Preprocess` (size, resize
mode, crop, mean/std, resampling filter; Pillow's antialiased resize and the truncated long side, as
transformers' PIL processors do); it travels in the model config and the deploy manifest, and the
torch-free edge preprocesses from it. Tokenizers come from the checkpoint's fast-tokenizer file (or the
transformers fast tokenizer converted from a slow one; SigLIP's ``spiece.model`` is converted by
:mod:`training.siglip_tokenizer` and checked against transformers' slow tokenizer) and are used through
the ``tokenizers`` library, in training exactly as at the edge.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cezsar.errors import CezsarError
from cezsar.preprocess import Preprocess

log = logging.getLogger(__name__)

KINDS = {"hf-clip": "clip", "hf-siglip": "siglip", "st-clip": "clip"}
# preprocessor_config.json's ``resample`` (PIL.Image.Resampling numbers) -> cezsar.preprocess filter names
_INTERPOLATION = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "area", 5: "hamming"}
_NO_DOWNLOAD = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "*.onnx_data", "onnx/*", "openvino/*", "*.tflite", "*.gguf"]


def split_name(name: str) -> tuple[str, str] | None:
    """``hf-clip:REF`` -> ("hf-clip", "REF"); None for names of other families."""
    prefix, sep, ref = name.partition(":")
    if not sep or prefix not in KINDS:
        return None
    if not ref:
        raise CezsarError(f"'{name}': give a hub name or a local folder after '{prefix}:'")
    return prefix, ref


def is_pretrained_name(name: str) -> bool:
    return split_name(name) is not None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CezsarError(f"{path}: unreadable JSON ({e})") from None
    if not isinstance(obj, dict):
        raise CezsarError(f"{path}: expected a JSON object")
    return obj


def _fetch(ref: str) -> Path:
    """A hub name -> its local snapshot folder (the hub cache; downloads only when online)."""
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(ref, ignore_patterns=[*_NO_DOWNLOAD, "*.bin", "*.pt"]))
        if not any(folder.rglob("*.safetensors")):  # older repos ship only PyTorch .bin weights
            folder = Path(snapshot_download(ref, ignore_patterns=_NO_DOWNLOAD))
        return folder
    except Exception as e:  # noqa: BLE001 - any hub failure is one line naming the checkpoint
        raise CezsarError(
            f"checkpoint '{ref}': not a local folder, and not in the Hugging Face cache or not downloadable "
            f"({type(e).__name__}); with internet set HF_HUB_OFFLINE=0, or pass a downloaded folder"
        ) from None


@dataclass(frozen=True)
class Checkpoint:
    """A resolved checkpoint: the folder of the transformers model and which family it is."""

    name: str  # as given, e.g. "hf-clip:openai/clip-vit-base-patch32"
    kind: str  # clip | siglip
    folder: Path

    @property
    def config(self) -> dict[str, Any]:
        return _read_json(self.folder / "config.json")


def resolve(name: str) -> Checkpoint:
    parts = split_name(name)
    if parts is None:
        raise CezsarError(f"'{name}': not a pretrained image-text name (use {', '.join(p + ':REF' for p in KINDS)})")
    prefix, ref = parts
    local = Path(ref).expanduser()
    if local.is_dir():
        folder = local.resolve()
    elif ref.startswith((".", "/", "~")) or local.exists():
        raise CezsarError(f"{ref}: checkpoint folder not found")
    else:
        folder = _fetch(ref)
    if prefix == "st-clip":
        mpath = folder / "modules.json"
        if not mpath.is_file():
            raise CezsarError(f"{folder}: not a sentence-transformers model folder (no modules.json)")
        try:
            modules = json.loads(mpath.read_text(encoding="utf-8"))
            sub = next(m["path"] for m in modules if str(m.get("type", "")).endswith("CLIPModel"))
        except (ValueError, StopIteration, KeyError, TypeError):
            raise CezsarError(f"{mpath}: names no CLIPModel module (is this a sentence-transformers CLIP?)") from None
        folder = folder / sub
    if not (folder / "config.json").is_file():
        raise CezsarError(f"{folder}: not a transformers checkpoint (no config.json)")
    kind = KINDS[prefix]
    model_type = str(_read_json(folder / "config.json").get("model_type", ""))
    if not model_type.startswith(kind) or model_type.startswith("siglip2"):
        raise CezsarError(f"{folder}: config.json has model_type {model_type!r}; '{prefix}:' expects a {kind} model")
    return Checkpoint(name, kind, folder)


# -- preprocessing from preprocessor_config.json ------------------------------------------------


def _square(value: Any, key: str, path: Path) -> tuple[str, int]:
    """A processor ``size``/``crop_size`` value -> ("shortest_edge" | "exact", pixels)."""
    if isinstance(value, (int, float)):
        return "shortest_edge", int(value)
    if isinstance(value, dict):
        if "shortest_edge" in value:
            return "shortest_edge", int(value["shortest_edge"])
        if "height" in value and "width" in value:
            if int(value["height"]) != int(value["width"]):
                raise CezsarError(f"{path}: {key} {value} is not square; only square model inputs are supported")
            return "exact", int(value["height"])
    raise CezsarError(f"{path}: unsupported {key} {value!r} (expected shortest_edge or height == width)")


def preprocess_from_folder(folder: str | Path) -> Preprocess:
    """The checkpoint's ``preprocessor_config.json`` as a :class:`Preprocess` (no transformers needed)."""
    path = Path(folder) / "preprocessor_config.json"
    if not path.is_file():
        raise CezsarError(f"{Path(folder)}: no preprocessor_config.json (the checkpoint's image preprocessing)")
    cfg = _read_json(path)
    cfg = cfg.get("image_processor", cfg)  # processor_config.json style nests it
    if cfg.get("do_rescale", True) and abs(float(cfg.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        raise CezsarError(f"{path}: rescale_factor {cfg.get('rescale_factor')} is not 1/255")
    mean = [float(x) for x in cfg.get("image_mean", [0.0, 0.0, 0.0])] if cfg.get("do_normalize", True) else [0.0] * 3
    std = [float(x) for x in cfg.get("image_std", [1.0, 1.0, 1.0])] if cfg.get("do_normalize", True) else [1.0] * 3
    if len(mean) != 3 or len(std) != 3:
        raise CezsarError(f"{path}: image_mean/image_std must have 3 values")
    mode, resize = _square(cfg.get("size", 224), "size", path)
    if cfg.get("do_center_crop", False) and "crop_size" in cfg:
        _, crop = _square(cfg["crop_size"], "crop_size", path)
    elif mode == "exact":
        crop = resize
    else:
        log.warning("%s: resize to a shortest edge of %d without a crop; centre-cropping a square", path, resize)
        crop = resize
    resample = int(cfg.get("resample", 3))
    if resample not in _INTERPOLATION:
        raise CezsarError(f"{path}: resample {resample} is not a Pillow filter (0-5)")
    if mode == "shortest_edge" and crop > resize:
        raise CezsarError(f"{path}: crop_size {crop} is larger than the resized shortest edge {resize}")
    # the processor's own algorithm: Pillow's resize (antialiased) of the long side truncated to an
    # integer, then the centre crop (transformers' PIL image processors; tests/test_preprocess_reference.py)
    return Preprocess(
        size=crop,
        resize=resize,
        mean=(mean[0], mean[1], mean[2]),
        std=(std[0], std[1], std[2]),
        resize_mode="shorter" if mode == "shortest_edge" else "squash",
        interpolation=_INTERPOLATION[resample],
        resampler="pil",
        size_rounding="truncate",
    )


def checkpoint_preprocess(name: str) -> Preprocess | None:
    """The preprocessing a pretrained frame encoder expects; None for other backbones."""
    if not is_pretrained_name(name):
        return None
    return preprocess_from_folder(resolve(name).folder)


# -- frame encoder --------------------------------------------------------------------------------


class ImageTower(nn.Module):
    """(N, 3, S, S) normalised frames -> (N, D) L2-normalised image embeddings of a CLIP/SigLIP vision tower."""

    def __init__(self, kind: str, model: nn.Module) -> None:
        super().__init__()
        self.kind = kind
        self.model = model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=frames)
        emb = out.image_embeds if self.kind == "clip" else out.pooler_output
        return F.normalize(emb, dim=-1)


def _load_part(ck: Checkpoint, part: str) -> Any:
    """The vision or text tower of the checkpoint, with its projection, eager attention (exportable), eval mode.

    The sub-config is taken from the composite config explicitly (with CLIP's top-level projection_dim),
    so checkpoints whose projection size differs from the library default load correctly."""
    import transformers
    from transformers.utils import logging as hf_logging

    classes = {
        ("clip", "vision"): ("CLIPConfig", "CLIPVisionModelWithProjection"),
        ("clip", "text"): ("CLIPConfig", "CLIPTextModelWithProjection"),
        ("siglip", "vision"): ("SiglipConfig", "SiglipVisionModel"),
        ("siglip", "text"): ("SiglipConfig", "SiglipTextModel"),
    }
    config_name, model_name = classes[(ck.kind, part)]
    model_cls = getattr(transformers, model_name)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the other tower's weights are "unexpected" here, by design
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        raw = ck.config
        if raw.get("model_type") in ("clip", "siglip"):
            full = getattr(transformers, config_name).from_pretrained(str(ck.folder))
            sub = getattr(full, f"{part}_config")
            if ck.kind == "clip":
                sub.projection_dim = full.projection_dim
            model = model_cls.from_pretrained(str(ck.folder), config=sub, attn_implementation="eager")
        else:  # a single-tower checkpoint (e.g. clip_vision_model)
            model = model_cls.from_pretrained(str(ck.folder), attn_implementation="eager")
    except Exception as e:  # noqa: BLE001 - one line naming the folder
        raise CezsarError(f"{ck.folder}: cannot load the {part} tower ({type(e).__name__}: {e})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    return model.eval()


def create_image_tower(name: str, pretrained: bool = True) -> tuple[nn.Module, int]:
    """Backbone registry entry for ``hf-clip:``, ``hf-siglip:`` and ``st-clip:`` (always the checkpoint's weights)."""
    ck = resolve(name)
    model = _load_part(ck, "vision")
    dim = int(model.config.projection_dim if ck.kind == "clip" else model.config.hidden_size)
    return ImageTower(ck.kind, model), dim


# -- text tower -----------------------------------------------------------------------------------


def _token(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return str(value) if value else None


def _base_tokenizer(ck: Checkpoint, tcfg: dict[str, Any]) -> tuple[Any, bool]:
    """The checkpoint's tokenizer as a ``tokenizers.Tokenizer``; True when converted from SigLIP's spiece.model."""
    from tokenizers import Tokenizer
    from transformers.tokenization_utils_base import FULL_TOKENIZER_FILE  # the checkpoint's fast-tokenizer file

    from training.siglip_tokenizer import SPIECE, convert

    if ck.kind == "siglip" and (ck.folder / SPIECE).is_file():  # google/siglip-*: the slow tokenizer's rules
        return convert(ck.folder, lowercase=bool(tcfg.get("do_lower_case", True))), True
    tj = ck.folder / FULL_TOKENIZER_FILE
    if tj.is_file():
        return Tokenizer.from_file(str(tj)), False
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(ck.folder))
        return Tokenizer.from_str(hf.backend_tokenizer.to_str()), False
    except Exception as e:  # noqa: BLE001
        raise CezsarError(
            f"{ck.folder}: no {FULL_TOKENIZER_FILE} and no fast tokenizer can be made ({type(e).__name__}); "
            "save the tokenizer with a fast tokenizer first"
        ) from None


def load_tokenizer(ck: Checkpoint, max_positions: int, pad_token_id: int | None) -> tuple[Any, dict[str, Any]]:
    """The checkpoint's tokenizer as a ``tokenizers.Tokenizer`` set up for its text tower, and its settings.

    A SigLIP ``spiece.model`` is converted (:mod:`training.siglip_tokenizer`) and its token ids compared with
    transformers' slow SiglipTokenizer's on probe sentences; a difference is refused."""
    tcfg: dict[str, Any] = {}
    for fname in ("special_tokens_map.json", "tokenizer_config.json"):
        if (ck.folder / fname).is_file():
            tcfg.update(_read_json(ck.folder / fname))
    tok, converted = _base_tokenizer(ck, tcfg)
    model_max = int(tcfg.get("model_max_length") or max_positions)
    max_length = min(max_positions, model_max) if model_max > 0 else max_positions
    pad = _token(tcfg.get("pad_token")) or (_token(tcfg.get("eos_token")) if ck.kind == "clip" else None)
    pad_id = tok.token_to_id(pad) if pad else None
    if pad_id is None:
        pad_id = int(pad_token_id or 0)
        pad = tok.id_to_token(pad_id) or "<pad>"
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    if ck.kind == "siglip":  # trained on fixed-length text
        tok.enable_padding(direction="right", pad_id=pad_id, pad_token=pad, length=max_length)
    else:
        tok.enable_padding(direction="right", pad_id=pad_id, pad_token=pad)
    info: dict[str, Any] = {
        "max_length": max_length,
        "padding": "max_length" if ck.kind == "siglip" else "longest",
        "padding_side": "right",
        "pad_id": int(pad_id),
        "truncation": True,
        "inputs": ["input_ids", "attention_mask"],
        "dtype": "int64",
        "note": "the tokenizer file already truncates and pads: encode_batch(), then ids and attention_mask as int64",
    }
    if converted:
        from training.siglip_tokenizer import check_against_slow

        n = check_against_slow(lambda s: [e.ids for e in tok.encode_batch(s)], ck.folder, max_length,
                               f"{ck.folder / 'spiece.model'} converted to a tokenizers file")  # fmt: skip
        rules = "ASCII punctuation removed, whitespace collapsed"
        rules = ("lowercase, " if tcfg.get("do_lower_case", True) else "") + rules
        info["converted_from"] = f"spiece.model ({rules})"
        info["checked_against"] = {"tokenizer": "transformers SiglipTokenizer", "probe_sentences": n}
    return tok, info


class TextTower(nn.Module):
    """(input_ids, attention_mask) int64 -> (N, D) L2-normalised text embeddings of a CLIP/SigLIP text tower."""

    def __init__(self, kind: str, model: nn.Module) -> None:
        super().__init__()
        self.kind = kind
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.kind == "clip":
            emb = self.model(input_ids=input_ids, attention_mask=attention_mask).text_embeds
        else:
            # SigLIP was trained without an attention mask (fixed-length padding): reproduce that. The mask
            # stays an input of the exported graph, so every text tower has the same inputs at the edge.
            emb = self.model(input_ids=input_ids).pooler_output
            emb = emb + 0.0 * attention_mask[:, :1].to(emb.dtype)
        return F.normalize(emb, dim=-1)


class HeadedTextTower(nn.Module):
    def __init__(self, tower: TextTower, head: nn.Module) -> None:
        super().__init__()
        self.tower = tower
        self.head = head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.tower(input_ids, attention_mask))


class PretrainedTextEncoder:
    """The text tower of an image-text checkpoint behind the parts of the SentenceTransformer API that
    training, evaluation and export use (``encode``, ``get_sentence_embedding_dimension``), plus
    :meth:`export_tower` and :meth:`save_tokenizer` for ``cezsar export``."""

    def __init__(self, name: str) -> None:
        ck = resolve(name)
        self.name = name
        self.checkpoint = ck
        model = _load_part(ck, "text")
        self.dim = int(model.config.projection_dim if ck.kind == "clip" else model.config.hidden_size)
        for p in model.parameters():
            p.requires_grad_(False)
        self.tower = TextTower(ck.kind, model).eval()
        self.vocab_size = int(model.config.vocab_size)
        self.tokenizer, self.tokenizer_info = load_tokenizer(
            ck, int(model.config.max_position_embeddings), getattr(model.config, "pad_token_id", None)
        )

    def eval(self) -> PretrainedTextEncoder:
        return self

    def get_sentence_embedding_dimension(self) -> int:
        return self.dim

    def tokenize(self, sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer.encode_batch(sentences)
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
        return ids, mask

    @torch.no_grad()
    def encode(self, sentences: list[str], batch_size: int = 64, **_: Any) -> torch.Tensor:
        out = [torch.zeros((0, self.dim))]
        for i in range(0, len(sentences), batch_size):
            ids, mask = self.tokenize(list(sentences[i : i + batch_size]))
            out.append(self.tower(ids, mask).float())
        return torch.cat(out)

    def export_tower(self, head: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
        info = {"modules": [f"{self.checkpoint.kind} text tower", "Normalize"], "checkpoint": self.name}
        return HeadedTextTower(self.tower, head).eval(), info

    def save_tokenizer(self, path: Path) -> dict[str, Any]:
        """Write the tokenizer file (``cezsar export``). A converted SigLIP spiece.model is checked again as
        the edge reads the file (cezsar.tokenize) against transformers' slow SiglipTokenizer; one line if any
        probe sentence differs."""
        self.tokenizer.save(str(path))
        if "converted_from" in self.tokenizer_info:
            from cezsar.tokenize import SentenceTokenizer
            from training.siglip_tokenizer import check_against_slow

            edge = SentenceTokenizer(path)
            check_against_slow(lambda s: edge(s)["input_ids"].tolist(), self.checkpoint.folder,
                               int(self.tokenizer_info["max_length"]), f"exported {path.name}")  # fmt: skip
        return dict(self.tokenizer_info)


def same_space(frame_encoder: str, text_model: str) -> bool:
    """True when both towers are the two halves of one image-text checkpoint (one embedding space)."""
    a, b = split_name(frame_encoder), split_name(text_model)
    if a is None or b is None:
        return False
    ca, cb = resolve(frame_encoder), resolve(text_model)
    return ca.folder == cb.folder
