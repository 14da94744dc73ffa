"""cezsar.tokenize: tokenizer.json -> int64 feeds, padded and truncated, without torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cezsar.errors import CezsarError
from cezsar.tokenize import SentenceTokenizer


def _plain_tokenizer(path: Path) -> Path:
    """A word-level tokenizer.json with neither truncation nor padding configured."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1, "a": 2, "circle": 3, "moving": 4, "left": 5, "spins": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))
    return path


def test_pads_to_the_longest_and_truncates(tmp_path: Path) -> None:
    t = SentenceTokenizer(_plain_tokenizer(tmp_path / "tokenizer.json"), max_length=3)
    out = t(["a circle moving left", "spins", "a zebra"])
    assert set(out) == {"input_ids", "attention_mask"}
    assert out["input_ids"].dtype == np.int64 and out["attention_mask"].dtype == np.int64
    assert out["input_ids"].tolist() == [[2, 3, 4], [6, 0, 0], [2, 1, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]


def test_feeds_follow_the_session_inputs(tmp_path: Path) -> None:
    t = SentenceTokenizer(_plain_tokenizer(tmp_path / "tokenizer.json"))
    f = t.feeds(["a circle", "spins"], ["input_ids", "token_type_ids", "attention_mask"])
    assert list(f) == ["input_ids", "token_type_ids", "attention_mask"]
    assert f["token_type_ids"].tolist() == [[0, 0], [0, 0]]
    assert list(t.feeds(["a"], ["attention_mask"])) == ["attention_mask"]
    with pytest.raises(CezsarError, match="'pixel_values' is not a tokenizer output"):
        t.feeds(["a"], ["pixel_values"])


def test_bad_files_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CezsarError, match="tokenizer file not found"):
        SentenceTokenizer(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CezsarError, match=r"bad\.json: not a tokenizers file"):
        SentenceTokenizer(bad)


def test_token_counts_are_before_truncation(tmp_path: Path) -> None:
    from cezsar.tokenize import token_counts

    path = _plain_tokenizer(tmp_path / "tokenizer.json")
    truncated = SentenceTokenizer(path, max_length=3)(["a circle moving left"])["input_ids"]
    assert truncated.shape == (1, 3)  # what the text encoder reads
    assert token_counts(path, ["a circle moving left", "spins", "a zebra"]) == [4, 1, 2]  # what was written
