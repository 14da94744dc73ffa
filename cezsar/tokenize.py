"""The deploy folder's tokenizer file (``tokenizers`` library) as numpy feeds for the text encoder.

No torch. The converter writes the tokenizer file already set up as the sentence model tokenizes
(lowercasing, truncation at the manifest's ``text_max_length``, right padding to the longest sentence of
a batch); a file without truncation or padding gets them here, so a batch always comes out rectangular.
Both the converter (parity check, quantization top-1) and the edge text encoder tokenize through this.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cezsar.errors import CezsarError

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
TOKEN_TYPE_IDS = "token_type_ids"


class SentenceTokenizer:
    """A ``tokenizers`` file -> ``{"input_ids", "attention_mask"}`` int64 arrays of shape (N, longest)."""

    def __init__(self, path: str | Path, max_length: int | None = None) -> None:
        self.path = Path(path)
        self.tokenizer: Any = _load(self.path)
        if self.tokenizer.truncation is None and max_length is not None:
            self.tokenizer.enable_truncation(max_length=int(max_length))
        if self.tokenizer.padding is None:
            self.tokenizer.enable_padding()

    def __call__(self, sentences: Sequence[str]) -> dict[str, np.ndarray]:
        enc = self.tokenizer.encode_batch(list(sentences))
        return {
            INPUT_IDS: np.asarray([e.ids for e in enc], dtype=np.int64),
            ATTENTION_MASK: np.asarray([e.attention_mask for e in enc], dtype=np.int64),
        }

    def feeds(self, sentences: Sequence[str], inputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Tokens for a session whose inputs are ``inputs`` (BERT-style ``token_type_ids`` are zeros)."""
        toks = self(sentences)
        toks[TOKEN_TYPE_IDS] = np.zeros_like(toks[INPUT_IDS])
        unknown = [name for name in inputs if name not in toks]
        if unknown:
            raise CezsarError(
                f"text encoder input {unknown[0]!r} is not a tokenizer output ({', '.join(sorted(toks))})"
            )
        return {name: toks[name] for name in inputs}


def _load(path: Path) -> Any:
    from tokenizers import Tokenizer

    if not path.is_file():
        raise CezsarError(f"{path}: tokenizer file not found")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception
        raise CezsarError(f"{path}: not a tokenizers file ({e})") from None


def token_counts(path: str | Path, sentences: Sequence[str]) -> list[int]:
    """How many tokens each sentence takes before truncation, special tokens included: one longer than
    the manifest's ``text_max_length`` loses its end (``cezsar actions check --deploy`` warns)."""
    tok = _load(Path(path))
    tok.no_truncation()
    tok.no_padding()
    return [len(e.ids) for e in tok.encode_batch(list(sentences))]
