"""The text tower at the edge: the deploy folder's tokenizer (:mod:`cezsar.tokenize`) + text encoder (onnxruntime).

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
from cezsar.tokenize import SentenceTokenizer

BATCH = 32


class TextEncoder:
    def __init__(self, deploy_dir: str | Path, manifest: Manifest, threads: int | None = None) -> None:
        deploy_dir = Path(deploy_dir)
        tok_path = manifest.verified(deploy_dir, TOKENIZER)
        onnx_path = manifest.verified(deploy_dir, "text_encoder")
        self.tokenizer = SentenceTokenizer(tok_path, max_length=manifest.text_max_length)
        self.session: Any = ort_session(onnx_path, threads)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.dim = manifest.joint_dim
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self.encoded = 0  # strings actually run through the network (cache misses)

    def _run(self, sentences: list[str]) -> np.ndarray:
        out = self.session.run(None, self.tokenizer.feeds(sentences, self.inputs))[0].astype(np.float32)
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
