"""The text tower at the edge: the deploy folder's tokenizer (``tokenizers``) + text encoder (onnxruntime).

No torch. Embeddings are cached per description string, so editing an actions file only encodes
the descriptions that are new. The exported tokenizer already truncates (manifest.text_max_length)
and pads to the longest sentence of a batch.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.backends.onnxruntime import ort_session
from cezsar.deploy.layout import TOKENIZER
from cezsar.deploy.manifest import Manifest
from cezsar.errors import CezsarError

BATCH = 32


class TextEncoder:
    def __init__(self, deploy_dir: str | Path, manifest: Manifest, threads: int | None = None) -> None:
        from tokenizers import Tokenizer

        deploy_dir = Path(deploy_dir)
        tok_path = manifest.verified(deploy_dir, TOKENIZER)
        onnx_path = manifest.verified(deploy_dir, "text_encoder")
        try:
            self.tokenizer = Tokenizer.from_file(str(tok_path))
        except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception
            raise CezsarError(f"{tok_path}: not a tokenizers file ({e})") from None
        if self.tokenizer.truncation is None:
            self.tokenizer.enable_truncation(max_length=manifest.text_max_length)
        if self.tokenizer.padding is None:
            self.tokenizer.enable_padding()
        self.session: Any = ort_session(onnx_path, threads)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.dim = manifest.joint_dim
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self.encoded = 0  # strings actually run through the network (cache misses)

    def _run(self, sentences: list[str]) -> np.ndarray:
        enc = self.tokenizer.encode_batch(sentences)
        ids = np.asarray([e.ids for e in enc], dtype=np.int64)
        feeds = {
            "input_ids": ids,
            "attention_mask": np.asarray([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.zeros_like(ids),
        }
        out = self.session.run(None, {k: feeds[k] for k in self.inputs})[0].astype(np.float32)
        norm = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norm, 1e-12)

    def encode(self, sentences: Sequence[str]) -> np.ndarray:
        """(N, J) L2-normalised embeddings, from the cache where possible."""
        with self._lock:
            todo = [s for s in dict.fromkeys(sentences) if s not in self._cache]
            for i in range(0, len(todo), BATCH):
                chunk = todo[i : i + BATCH]
                for s, e in zip(chunk, self._run(chunk), strict=True):
                    self._cache[s] = e
                self.encoded += len(chunk)
            if not sentences:
                return np.zeros((0, self.dim), dtype=np.float32)
            return np.stack([self._cache[s] for s in sentences])

    def forget(self, keep: Sequence[str]) -> None:
        """Drop cached strings not in ``keep`` (bounded memory over many edits)."""
        with self._lock:
            keep_set = set(keep)
            for s in [s for s in self._cache if s not in keep_set]:
                del self._cache[s]
