"""Randomly initialised CLIP / SigLIP checkpoint folders in the file layout of the published ones.

For tests, speed benchmarks and the fine-tuning check on a machine without internet. Each folder holds
the files its published counterpart holds, with the same configuration keys, and random weights of a
tiny (or, for ``vit_b32_clip``, ViT-B/32) size; the loaders in :mod:`training.pretrained` read them by
the same code path as a downloaded checkpoint:

- ``make_clip`` (``openai/clip-vit-base-patch32``): ``config.json`` in the legacy layout of that
  repository (``text_config`` with ``bos_token_id`` 0, ``eos_token_id`` 2, ``pad_token_id`` 1, so the
  text tower pools at the highest token id, as the library does for those old configs; ``text_config_dict``
  and ``vision_config_dict`` null), ``model.safetensors``, ``vocab.json`` + ``merges.txt`` (a byte-level BPE
  with ``</w>`` word ends: the 256 byte symbols, the same with ``</w>``, the merges, then
  ``<|startoftext|>`` and ``<|endoftext|>`` last), the fast-tokenizer file transformers' ``CLIPTokenizer``
  makes of them, ``tokenizer_config.json`` and ``special_tokens_map.json`` in the old format, and the
  old-style ``preprocessor_config.json`` (``size`` 224 and ``crop_size`` 224 as integers, ``resample`` 3).
- ``make_siglip`` (``google/siglip-base-patch16-224``): ``config.json`` with only the keys that
  repository sets (everything else the library's defaults: 64 text positions, ``pad_token_id`` 1),
  ``model.safetensors``, ``spiece.model`` (a SentencePiece unigram model trained here, with T5's ids:
  ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, and its ``nmt_nfkc`` normalisation) and no fast-tokenizer file,
  ``tokenizer_config.json`` (``SiglipTokenizer``, ``do_lower_case``, ``model_max_length`` 64, pad ``</s>``),
  ``special_tokens_map.json`` and ``preprocessor_config.json`` (squash to 224 x 224, mean/std 0.5).
- ``make_st_clip`` (``sentence-transformers/clip-ViT-B-32``): ``modules.json`` naming ``0_CLIPModel/``
  (a ``make_clip`` folder) and ``config_sentence_transformers.json``.

Nothing here is pretrained: the weights are random.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# CLIP's pre-tokenizer split (transformers' CLIPTokenizer): special tokens, contractions, letters, digits, the rest
_CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""

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
    "At 10:30, 2 people enter the shop; one picks up 3 items.",
    "The customer pays 12.50 euros and leaves (quickly)!",
    "Is the door open? Yes - it's open 100%.",
]


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _added(content: str, lstrip: bool = False, normalized: bool = True) -> dict[str, Any]:
    return {"content": content, "lstrip": lstrip, "normalized": normalized, "rstrip": lstrip, "single_word": False}


# -- CLIP ------------------------------------------------------------------------------------------


def _byte_symbols() -> list[str]:
    """The 256 byte symbols of byte-level BPE in CLIP's vocabulary order (printable bytes as themselves)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(rest))]


def _clip_vocab(vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style BPE vocabulary of ``vocab_size`` entries, merges learnt on a small corpus."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    symbols = _byte_symbols()
    n_merges = vocab_size - 2 * len(symbols) - 2
    if n_merges < 1:
        raise ValueError(f"vocab_size {vocab_size}: a CLIP vocabulary needs more than {2 * len(symbols) + 2}")
    tok = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])  # fmt: skip
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=2 * len(symbols) + n_merges + 64,
        initial_alphabet=symbols,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 8, trainer=trainer)
    merges = [
        tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in json.loads(tok.to_str())["model"]["merges"]
    ]
    merges = merges[:n_merges]
    order = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {t: i for i, t in enumerate(order)}
    assert len(vocab) == len(order), "a merge made a token twice"
    return vocab, [(a, b) for a, b in merges]


def _clip_tokenizer_files(folder: Path, vocab_size: int) -> dict[str, int]:
    """vocab.json, merges.txt, the fast-tokenizer file, tokenizer_config.json, special_tokens_map.json; the vocab."""
    from transformers import CLIPTokenizer
    from transformers.tokenization_utils_base import FULL_TOKENIZER_FILE  # the checkpoint's fast-tokenizer file

    vocab, merges = _clip_vocab(vocab_size)
    _write_json(folder / "vocab.json", vocab)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    hf = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)  # type: ignore[arg-type]
    hf.backend_tokenizer.save(str(folder / FULL_TOKENIZER_FILE))
    special = {"bos_token": _added(BOS), "eos_token": _added(EOS), "unk_token": _added(EOS), "pad_token": EOS}
    _write_json(folder / "special_tokens_map.json", special)
    legacy = {k: {**v, "__type": "AddedToken"} if isinstance(v, dict) else v for k, v in special.items()}
    _write_json(
        folder / "tokenizer_config.json",
        {
            **legacy,
            "add_prefix_space": False,
            "errors": "replace",
            "do_lower_case": True,
            "model_max_length": 77,
            "special_tokens_map_file": "./special_tokens_map.json",
            "tokenizer_class": "CLIPTokenizer",
        },
    )
    return vocab


def clip_processor_config(image_size: int) -> dict[str, Any]:
    """``openai/clip-vit-base-patch32``'s preprocessor_config.json (the old feature-extractor form)."""
    return {
        "crop_size": image_size,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "resample": 3,
        "size": image_size,
    }


# the generation/label keys every sub-config of a 2021 PretrainedConfig wrote (their values are the defaults)
_LEGACY_KEYS: dict[str, Any] = {
    "_name_or_path": "", "add_cross_attention": False, "architectures": None, "bad_words_ids": None,
    "chunk_size_feed_forward": 0, "cross_attention_hidden_size": None, "decoder_start_token_id": None,
    "diversity_penalty": 0.0, "do_sample": False, "early_stopping": False, "encoder_no_repeat_ngram_size": 0,
    "finetuning_task": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
    "id2label": {"0": "LABEL_0", "1": "LABEL_1"}, "is_decoder": False, "is_encoder_decoder": False,
    "label2id": {"LABEL_0": 0, "LABEL_1": 1}, "length_penalty": 1.0, "max_length": 20, "min_length": 0,
    "no_repeat_ngram_size": 0, "num_beam_groups": 1, "num_beams": 1, "num_return_sequences": 1,
    "output_attentions": False, "output_hidden_states": False, "output_scores": False, "prefix": None,
    "problem_type": None, "pruned_heads": {}, "remove_invalid_values": False, "repetition_penalty": 1.0,
    "return_dict": True, "return_dict_in_generate": False, "sep_token_id": None, "task_specific_params": None,
    "temperature": 1.0, "tie_encoder_decoder": False, "tie_word_embeddings": True, "tokenizer_class": None,
    "top_k": 50, "top_p": 1.0, "torch_dtype": None, "torchscript": False, "transformers_version": "4.16.0.dev0",
    "use_bfloat16": False,
}  # fmt: skip


def _legacy_clip_config(text: dict[str, Any], vision: dict[str, Any], projection_dim: int, factor: float) -> dict:
    common = {"attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "quick_gelu", "initializer_factor": factor,
              "initializer_range": 0.02, "layer_norm_eps": 1e-05, "projection_dim": projection_dim}  # fmt: skip
    return {
        "_name_or_path": "",
        "architectures": ["CLIPModel"],
        "initializer_factor": factor,
        "logit_scale_init_value": 2.6592,
        "model_type": "clip",
        "projection_dim": projection_dim,
        "text_config": dict(sorted({**_LEGACY_KEYS, **common, "model_type": "clip_text_model", **text}.items())),
        "text_config_dict": None,
        "transformers_version": None,
        "vision_config": dict(
            sorted(
                {
                    **_LEGACY_KEYS,
                    **common,
                    "model_type": "clip_vision_model",
                    "bos_token_id": None,
                    "eos_token_id": None,
                    "pad_token_id": None,
                    **vision,
                }.items()
            )
        ),  # fmt: skip
        "vision_config_dict": None,
    }


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
    vocab_size: int = 600,
    seed: int = 0,
    initializer_factor: float = 1.0,
) -> Path:
    """A random CLIPModel folder in ``openai/clip-vit-base-patch32``'s layout (module docstring).

    ``initializer_factor`` scales the library's random init: at 1.0 a small random ViT's image embedding
    hardly depends on the image (the class token dominates; pairwise cosine ~0.99 on the synthetic world),
    at 3.0 it varies about as much as a trained CLIP's does (~0.8)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = _clip_tokenizer_files(folder, vocab_size)
    th = text_hidden or hidden
    text = {
        "vocab_size": len(vocab),
        "hidden_size": th,
        "intermediate_size": 4 * th,
        "num_hidden_layers": text_layers or layers,
        "num_attention_heads": text_heads or heads,
        "max_position_embeddings": 77,
        "bos_token_id": 0,  # the legacy ids of the published config: eos_token_id 2 makes the text tower
        "eos_token_id": 2,  # pool at the highest token id (<|endoftext|>, last in the vocabulary)
        "pad_token_id": 1,
    }
    vision = {
        "image_size": image_size,
        "patch_size": patch,
        "hidden_size": hidden,
        "intermediate_size": 4 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
    }
    legacy = _legacy_clip_config(text, vision, projection_dim, initializer_factor)
    cfg = CLIPConfig(
        text_config=legacy["text_config"],
        vision_config=legacy["vision_config"],
        projection_dim=projection_dim,
        initializer_factor=initializer_factor,
    )
    torch.manual_seed(seed)
    CLIPModel(cfg).save_pretrained(str(folder))
    _write_json(folder / "config.json", legacy)  # the published file's form, not today's save_pretrained one
    _write_json(folder / "preprocessor_config.json", clip_processor_config(image_size))
    return folder


# -- SigLIP ----------------------------------------------------------------------------------------


def _spiece_model(vocab_size: int) -> bytes:
    """A SentencePiece unigram model with T5's special ids and normalisation, trained on a small corpus."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS * 8),
        model_writer=buf,
        model_type="unigram",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        character_coverage=1.0,
        normalization_rule_name="nmt_nfkc",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    return buf.getvalue()


def siglip_processor_config(image_size: int) -> dict[str, Any]:
    """``google/siglip-base-patch16-224``'s preprocessor_config.json."""
    return {
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "SiglipImageProcessor",
        "image_std": [0.5, 0.5, 0.5],
        "processor_class": "SiglipProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"height": image_size, "width": image_size},
    }


def _siglip_tokenizer_files(folder: Path, vocab_size: int, text_length: int) -> None:
    (folder / "spiece.model").write_bytes(_spiece_model(vocab_size))
    eos, unk = _added("</s>", lstrip=True, normalized=False), _added("<unk>", lstrip=True, normalized=False)
    _write_json(folder / "special_tokens_map.json", {"eos_token": eos, "pad_token": eos, "unk_token": unk})
    _write_json(
        folder / "tokenizer_config.json",
        {
            "added_tokens_decoder": {"1": {**eos, "special": True}, "2": {**unk, "special": True}},
            "additional_special_tokens": [],
            "clean_up_tokenization_spaces": True,
            "do_lower_case": True,
            "eos_token": "</s>",
            "model_input_names": ["input_ids"],
            "model_max_length": text_length,
            "pad_token": "</s>",
            "processor_class": "SiglipProcessor",
            "sp_model_kwargs": {},
            "tokenizer_class": "SiglipTokenizer",
            "unk_token": "<unk>",
        },
    )


def make_siglip(
    folder: str | Path,
    image_size: int = 32,
    patch: int = 8,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    vocab_size: int = 200,
    text_length: int = 64,
    seed: int = 0,
) -> Path:
    """A random SiglipModel folder in ``google/siglip-base-patch16-224``'s layout (module docstring)."""
    import torch
    from transformers import SiglipConfig, SiglipModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _siglip_tokenizer_files(folder, vocab_size, text_length)
    import sentencepiece as spm

    pieces = spm.SentencePieceProcessor(model_file=str(folder / "spiece.model")).get_piece_size()
    text: dict[str, Any] = {
        "hidden_size": hidden,
        "intermediate_size": 4 * hidden,
        "model_type": "siglip_text_model",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,  # not in the published file (the default, 12, is its size)
        "vocab_size": pieces,
    }
    if text_length != 64:  # 64, the library's default, is what the published checkpoint uses
        text["max_position_embeddings"] = text_length
    vision = {
        "hidden_size": hidden,
        "image_size": image_size,
        "intermediate_size": 4 * hidden,
        "model_type": "siglip_vision_model",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "patch_size": patch,
    }
    torch.manual_seed(seed)
    SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).save_pretrained(str(folder))
    published = {
        "architectures": ["SiglipModel"],
        "initializer_factor": 1.0,
        "model_type": "siglip",
        "text_config": text,
        "torch_dtype": "float32",
        "transformers_version": "4.37.0.dev0",
        "vision_config": vision,
    }
    _write_json(folder / "config.json", published)
    _write_json(folder / "preprocessor_config.json", siglip_processor_config(image_size))
    return folder


# -- sentence-transformers CLIP --------------------------------------------------------------------


def make_st_clip(folder: str | Path, **kwargs: Any) -> Path:
    """A random sentence-transformers CLIP folder (``clip-ViT-B-32`` layout: modules.json + 0_CLIPModel/)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    make_clip(folder / "0_CLIPModel", **kwargs)
    modules = [{"idx": 0, "name": "0", "path": "0_CLIPModel", "type": "sentence_transformers.models.CLIPModel"}]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    versions = {"__version__": {"sentence_transformers": "2.0.0", "transformers": "4.7.0", "pytorch": "1.9.0+cu102"}}
    _write_json(folder / "config_sentence_transformers.json", versions)
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
