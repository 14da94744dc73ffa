"""Randomly initialised CLIP / SigLIP checkpoint folders in the exact on-disk layout of a downloaded one.

For tests, speed benchmarks and the fine-tuning check on a machine without internet: the folder holds
``config.json`` + ``model.safetensors`` (``save_pretrained``), a fast tokenizer (transformers' file, built
with the ``tokenizers`` library: byte-level BPE for CLIP, WordPiece for SigLIP) and a
``preprocessor_config.json`` written the way the Hugging Face processors write it. The loaders in
:mod:`training.pretrained` read these folders by the same code path as a real checkpoint.

Nothing here is pretrained: the weights are random. ``vit_b32`` sizes give a ViT-B/32 at 224 px for
speed measurements.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

_CORPUS = [
    "a person falls to the floor",
    "someone is lying on the ground and does not move",
    "a man walks from left to right",
    "a woman waves both hands above her head",
    "a red circle moves up",
    "a blue square moves down slowly",
    "a green triangle rotates",
    "two shapes swap places",
    "a video of a person running",
    "nothing happens in the scene",
]


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _bpe_tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<|endoftext|>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|startoftext|>", "<|endoftext|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    bos, eos = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)]
    )
    return tok


def _wordpiece_tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"])
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos)])
    return tok


def _save_tokenizer(tok: Any, folder: Path, max_length: int, **special: str) -> None:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_length, **special)
    fast.save_pretrained(str(folder))


def make_clip(
    folder: str | Path,
    image_size: int = 32,
    patch: int = 8,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    projection_dim: int = 32,
    text_hidden: int | None = None,
    text_heads: int | None = None,
    text_layers: int | None = None,
    vocab_size: int = 300,
    seed: int = 0,
    initializer_factor: float = 1.0,
) -> Path:
    """A random CLIPModel folder (vision + text towers + projections), as ``openai/clip-vit-*`` ships it.

    ``initializer_factor`` scales the library's random init: at 1.0 a small random ViT's image embedding
    hardly depends on the image (the class token dominates; pairwise cosine ~0.99 on the synthetic world),
    at 3.0 it varies about as much as a trained CLIP's does (~0.8)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = _bpe_tokenizer(vocab_size)
    th = text_hidden or hidden
    cfg = CLIPConfig(
        text_config={
            "vocab_size": tok.get_vocab_size(),
            "hidden_size": th,
            "intermediate_size": 4 * th,
            "num_hidden_layers": text_layers or layers,
            "num_attention_heads": text_heads or heads,
            "max_position_embeddings": 77,
            "bos_token_id": tok.token_to_id("<|startoftext|>"),
            "eos_token_id": tok.token_to_id("<|endoftext|>"),
            "pad_token_id": tok.token_to_id("<|endoftext|>"),
            "initializer_factor": initializer_factor,
        },
        vision_config={
            "image_size": image_size,
            "patch_size": patch,
            "hidden_size": hidden,
            "intermediate_size": 4 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "initializer_factor": initializer_factor,
        },
        projection_dim=projection_dim,
        initializer_factor=initializer_factor,
    )
    torch.manual_seed(seed)
    CLIPModel(cfg).save_pretrained(str(folder))
    _save_tokenizer(
        tok,
        folder,
        77,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    _write_json(
        folder / "preprocessor_config.json",
        {
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": True,
            "size": {"shortest_edge": image_size},
            "resample": 3,
            "do_center_crop": True,
            "crop_size": {"height": image_size, "width": image_size},
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": CLIP_MEAN,
            "image_std": CLIP_STD,
            "do_convert_rgb": True,
        },
    )
    return folder


def make_siglip(
    folder: str | Path,
    image_size: int = 32,
    patch: int = 8,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    vocab_size: int = 300,
    text_length: int = 32,
    seed: int = 0,
) -> Path:
    """A random SiglipModel folder, as ``google/siglip-*`` ships it (fixed-length text, squashed images)."""
    import torch
    from transformers import SiglipConfig, SiglipModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = _wordpiece_tokenizer(vocab_size)
    cfg = SiglipConfig(
        text_config={
            "vocab_size": tok.get_vocab_size(),
            "hidden_size": hidden,
            "intermediate_size": 4 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "max_position_embeddings": text_length,
            "pad_token_id": tok.token_to_id("<pad>"),
            "eos_token_id": tok.token_to_id("</s>"),
        },
        vision_config={
            "image_size": image_size,
            "patch_size": patch,
            "hidden_size": hidden,
            "intermediate_size": 4 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
        },
    )
    torch.manual_seed(seed)
    SiglipModel(cfg).save_pretrained(str(folder))
    _save_tokenizer(tok, folder, text_length, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    _write_json(
        folder / "preprocessor_config.json",
        {
            "image_processor_type": "SiglipImageProcessor",
            "do_resize": True,
            "size": {"height": image_size, "width": image_size},
            "resample": 3,
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
        },
    )
    return folder


def make_st_clip(folder: str | Path, **kwargs: Any) -> Path:
    """A random sentence-transformers CLIP folder (``clip-ViT-B-32`` layout: modules.json + 0_CLIPModel/)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    make_clip(folder / "0_CLIPModel", **kwargs)
    modules = [{"idx": 0, "name": "0", "path": "0_CLIPModel", "type": "sentence_transformers.models.CLIPModel"}]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    return folder


def vit_b32_clip(folder: str | Path, seed: int = 0) -> Path:
    """ViT-B/32 at 224 px (CLIP sizes: width 768, 12 layers, 12 heads, projection 512), random weights."""
    return make_clip(
        folder,
        image_size=224,
        patch=32,
        hidden=768,
        layers=12,
        heads=12,
        projection_dim=512,
        text_hidden=512,
        text_heads=8,
        text_layers=2,
        vocab_size=1000,
        seed=seed,
    )
