"""The text tower of a trained model as one exportable torch module: the sentence model (its
transformer, pooling, Dense and Normalize, or an image-text checkpoint's own text tower) and the trained
TextHead, with its tokenizer file, exported and checked against PyTorch (used by converter.export)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.backends.onnxruntime import ort_session
from cezsar.deploy import layout
from cezsar.errors import CezsarError
from cezsar.tokenize import SentenceTokenizer

log = logging.getLogger("cezsar.export")

PARITY_SENTENCES = [
    "a person waves both hands above the head",
    "someone is riding a bicycle down a steep hill",
    "A dog jumps to catch a frisbee in the park.",
    "two people shake hands",
    "the chef chops vegetables on a wooden board while talking to the camera",
    "Jumping jacks!",
    "a small red ball rolls slowly from left to right across the floor",
    "x",
]


# -- the text tower as one torch module ---------------------------------------------------------


def _pooling_modes(module: Any) -> list[str]:
    """Pooling modes of a sentence-transformers Pooling module (v2-v6 config styles)."""
    cfg = module.get_config_dict() if hasattr(module, "get_config_dict") else {}
    mode = cfg.get("pooling_mode", getattr(module, "pooling_mode", None))
    if isinstance(mode, str):
        return [mode]
    if isinstance(mode, (list, tuple)):
        return [str(m) for m in mode]
    order = ["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]
    keys = {
        "cls": "pooling_mode_cls_token",
        "max": "pooling_mode_max_tokens",
        "mean": "pooling_mode_mean_tokens",
        "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
        "weightedmean": "pooling_mode_weightedmean_tokens",
        "lasttoken": "pooling_mode_lasttoken",
    }
    return [m for m in order if cfg.get(keys[m], getattr(module, keys[m], False))]


def build_text_tower(st: Any, text_head: Any, text_input: str = "pooled", layer: int = 0) -> tuple[Any, dict[str, Any]]:
    """sentence-transformers model + text head -> (torch module (input_ids, attention_mask) -> embedding, info).

    Reads the modules of the sentence model (modules.json order): Transformer, Pooling, optional
    Dense and Normalize. Anything else cannot be exported faithfully and is refused. With the per-token
    text input (``text_input`` "tokens") the head reads the transformer's hidden states at ``layer``
    (training.model.token_states, as in training); pooling, Dense and Normalize are then unused.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    transformer: Any = None
    pooling: list[str] = []
    dense: list[nn.Module] = []
    normalize = False
    names = []
    for module in st:
        kind = type(module).__name__
        names.append(kind)
        if kind == "Transformer":
            transformer = module.auto_model
        elif kind == "Pooling":
            pooling = _pooling_modes(module)
        elif kind == "Dense":
            dense.append(module)
        elif kind == "Normalize":
            normalize = True
        else:
            raise CezsarError(
                f"text model: module {kind} cannot be exported (supported: Transformer, Pooling, Dense, Normalize)"
            )
    if transformer is None or not pooling:
        raise CezsarError(f"text model: expected a Transformer and a Pooling module, found {names}")
    unsupported = [m for m in pooling if m not in ("cls", "max", "mean", "mean_sqrt_len_tokens")]
    if unsupported:
        raise CezsarError(f"text model: pooling mode {unsupported[0]!r} is not supported by the exporter")
    if hasattr(transformer, "set_attn_implementation"):
        try:
            transformer.set_attn_implementation("eager")
        except Exception:  # noqa: BLE001 - keep the model's own attention if it cannot switch
            log.debug("text model: cannot switch to eager attention")
    from training.model import token_states, transformer_inputs

    per_token = text_input == "tokens"

    class TextTower(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer
            self.dense = nn.ModuleList(dense)
            self.head = text_head

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            if per_token:
                return self.head.pool(token_states(self.transformer, input_ids, attention_mask, layer), attention_mask)
            out = self.transformer(**transformer_inputs(self.transformer, input_ids, attention_mask))
            h = out[0] if isinstance(out, (tuple, list)) else out.last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            parts = []
            for mode in pooling:
                if mode == "cls":
                    parts.append(h[:, 0])
                elif mode == "max":
                    parts.append(h.masked_fill(m == 0, -1e9).max(dim=1).values)
                else:
                    count = m.sum(dim=1).clamp(min=1e-9)
                    total = (h * m).sum(dim=1)
                    parts.append(total / (count if mode == "mean" else count.sqrt()))
            x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
            for d in self.dense:
                x = d({"sentence_embedding": x})["sentence_embedding"]
            if normalize:
                x = F.normalize(x, dim=-1)
            return self.head(x)

    info: dict[str, Any] = {"modules": names, "pooling": pooling, "normalize": normalize, "dense": len(dense)}
    if per_token:
        info = {"modules": names, "input": "tokens", "layer": layer}
    return TextTower().eval(), info


def save_tokenizer(st: Any, path: Path) -> dict[str, Any]:
    """Write the sentence model's fast tokenizer to ``path``, set up as sentence-transformers uses it."""
    from tokenizers import Tokenizer, normalizers

    hf = st.tokenizer
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise CezsarError(f"text model: its tokenizer has no fast (tokenizers) version; cannot write {path.name}")
    tok = Tokenizer.from_str(backend.to_str())
    max_length = int(st.max_seq_length or hf.model_max_length)
    lowercase = bool(getattr(st[0], "do_lower_case", False))
    if lowercase:  # sentence-transformers lowercases before tokenizing; bake it into the tokenizer
        norm = tok.normalizer
        tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), norm] if norm else [normalizers.Lowercase()])
    pad_id = int(hf.pad_token_id if hf.pad_token_id is not None else 0)
    pad_token = str(hf.pad_token or "[PAD]")
    tok.enable_truncation(max_length=max_length)
    tok.enable_padding(direction="right", pad_id=pad_id, pad_token=pad_token)  # pad to the longest in the batch
    tok.save(str(path))
    return {
        "max_length": max_length,
        "padding": "longest",
        "padding_side": "right",
        "pad_id": pad_id,
        "truncation": True,
        "lowercase_in_tokenizer": lowercase,
        "inputs": ["input_ids", "attention_mask"],
        "dtype": "int64",
        "note": f"{path.name} already truncates and pads: encode_batch(), then ids and attention_mask as int64",
    }


class TextExport:
    """One model's text tower on its way to the deploy folder: the torch module, its reference
    embeddings of real sentences (through the training path), its vocabulary for random probes."""

    def __init__(
        self, tower: Any, info: dict[str, Any], vocab: int, joint: int, ref_sentences: np.ndarray, st: Any
    ) -> None:
        self.tower, self.info, self.vocab, self.joint = tower, info, vocab, joint
        self.ref_sentences, self.st = ref_sentences, st
        self.id_low = min(1000, vocab // 2)  # random token ids: ordinary tokens, inside the vocabulary
        self.max_length = 0

    def export(self, folder: Path, opset: int) -> dict[str, Any]:
        """Write the text encoder and the tokenizer into ``folder``; returns the manifest's text info."""
        import torch

        from converter.export import _check_io, export_onnx

        files = layout.export_files(layout.PARTS)
        path = folder / files["text_encoder"]
        with torch.no_grad():
            ids = torch.randint(self.id_low, max(self.id_low + 1, self.vocab - 1), (2, 9))
            mask = torch.ones_like(ids)
            mask[1, 6:] = 0
            dyn = {"input_ids": {0: "B", 1: "L"}, "attention_mask": {0: "B", 1: "L"}, "embedding": {0: "B"}}
            names = ["input_ids", "attention_mask"]
            export_onnx(self.tower, (ids, mask), path, opset, names, "embedding", dyn, ["B", self.joint])
        _check_io(path, {"input_ids": ["?", "?"], "attention_mask": ["?", "?"], "embedding": ["?", self.joint]})
        tok_path = folder / files[layout.TOKENIZER]
        own = getattr(self.st, "save_tokenizer", None)  # an image-text checkpoint's tower writes its own
        tok_info = own(tok_path) if own is not None else save_tokenizer(self.st, tok_path)
        self.max_length = int(tok_info["max_length"])
        return {**self.info, **tok_info}

    def parity(self, folder: Path, rng: np.random.Generator, parity: Any) -> None:
        """onnxruntime vs PyTorch: random token ids at two batch shapes (with padding), and real sentences."""
        import torch

        files = layout.export_files(layout.PARTS)
        tx = ort_session(folder / files["text_encoder"])
        with torch.no_grad():
            for b, length in ((1, 5), (3, 17)):
                ids_np = rng.integers(self.id_low, max(self.id_low + 1, self.vocab - 1), size=(b, length))
                ids_np = ids_np.astype(np.int64)
                ids_np[:, 0] = 101 if self.vocab > 102 else ids_np[:, 0]
                mask_np = np.ones_like(ids_np)
                for i in range(1, b):
                    mask_np[i, length - 3 * i :] = 0
                ref = self.tower(torch.from_numpy(ids_np), torch.from_numpy(mask_np)).numpy()
                parity.add("random", ref, tx.run(None, {"input_ids": ids_np, "attention_mask": mask_np})[0])
            toks = SentenceTokenizer(folder / files[layout.TOKENIZER])(PARITY_SENTENCES)
            parity.add("sentences", self.ref_sentences, tx.run(None, toks)[0])


def text_tower(cfg: Any, model: Any) -> TextExport:
    """The text tower of ``model`` (a CEZSAR model of config ``cfg``), checked to give the joint size."""
    import torch

    from training.model import SentenceEncoder

    text = SentenceEncoder.for_config(cfg)
    st = text.model
    st.eval()
    # Reference embeddings of real sentences through the training path (sentence-transformers' own
    # tokenizer and attention), computed before the export switches attention to "eager".
    with torch.no_grad():
        ref_sentences = model.encode_text(text.encode(PARITY_SENTENCES)).numpy()
    if hasattr(st, "export_tower"):  # text tower of an image-text checkpoint (training/pretrained.py)
        tower, info = st.export_tower(model.text_head)
        vocab = int(st.vocab_size)
    else:
        tower, info = build_text_tower(st, model.text_head, cfg.text_input, cfg.text_layer)
        vocab = int(getattr(getattr(st[0].auto_model, "config", None), "vocab_size", 1000))
    probe = tower(torch.ones((1, 2), dtype=torch.long), torch.ones((1, 2), dtype=torch.long))
    if probe.shape[-1] != cfg.joint_dim:
        raise CezsarError(
            f"text model '{cfg.text_model}': tower gives {probe.shape[-1]} dims, model expects {cfg.joint_dim}"
        )
    return TextExport(tower, {**info, "model": cfg.text_model}, vocab, int(cfg.joint_dim), ref_sentences, st)
