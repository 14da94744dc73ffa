"""SigLIP's spiece.model as a tokenizers file (issue 24): token ids equal transformers' slow SiglipTokenizer.

Two SentencePiece models, both trained here with T5's ids and normalisation (what SigLIP ships): the tiny
checkpoint's (small vocabulary: many characters are <unk>) and one trained on the probe sentences
themselves (every character known, so the unigram search and the normalisation are exercised on real pieces).
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from cezsar.errors import CezsarError
from training.siglip_tokenizer import PROBES, check_against_slow, convert, slow_tokenizer


@pytest.fixture(scope="module")
def siglip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.random_checkpoints import make_siglip

    return make_siglip(tmp_path_factory.mktemp("sig") / "siglip")


@pytest.fixture(scope="module")
def rich(siglip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoint's tokenizer files with a SentencePiece model that knows every probe character."""
    import sentencepiece as spm

    folder = tmp_path_factory.mktemp("rich")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(siglip / name, folder / name)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(PROBES) * 3), model_writer=buf, model_type="unigram", vocab_size=400,
        hard_vocab_limit=False, character_coverage=1.0, normalization_rule_name="nmt_nfkc",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2,
    )  # fmt: skip
    (folder / "spiece.model").write_bytes(buf.getvalue())
    return folder


def _encode(tok, length: int = 64):  # type: ignore[no-untyped-def]
    tok.enable_truncation(max_length=length)
    tok.enable_padding(length=length, pad_id=1, pad_token="</s>")
    return lambda sentences: [e.ids for e in tok.encode_batch(sentences)]


@pytest.mark.parametrize("which", ["checkpoint", "rich"])
def test_ids_equal_the_slow_tokenizer(siglip: Path, rich: Path, which: str) -> None:
    folder = siglip if which == "checkpoint" else rich
    assert len(PROBES) >= 50
    assert check_against_slow(_encode(convert(folder)), folder, 64, "converted") == len(PROBES)
    slow = slow_tokenizer(folder)
    ids = slow(list(PROBES), padding="max_length", max_length=64, truncation=True)["input_ids"]
    assert sum(1 in row[:-1] and row[-1] == 1 for row in ids) > 40  # </s> then padding: short texts
    assert any(row[-1] == 1 and 1 not in row[:-1] for row in ids)  # cut at 64: </s> last (long texts)
    if which == "rich":  # the probes really are tokenized, not <unk>
        assert sum(t == 2 for row in ids for t in row) < len(PROBES)


def test_a_plain_conversion_differs(rich: Path) -> None:
    """Without the slow tokenizer's lowercasing and punctuation removal, the ids differ (the issue's finding)."""
    from sentencepiece import sentencepiece_model_pb2
    from transformers.convert_slow_tokenizer import SpmConverter

    proto = sentencepiece_model_pb2.ModelProto.FromString((rich / "spiece.model").read_bytes())
    plain = SpmConverter.build_tokenizer_from_spm_proto(proto, [(p.piece, p.score) for p in proto.pieces])
    from tokenizers import processors

    plain.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    slow = slow_tokenizer(rich)
    want = slow(list(PROBES), padding="max_length", max_length=64, truncation=True)["input_ids"]
    differ = sum(a != b for a, b in zip(want, _encode(plain)(list(PROBES)), strict=True))
    assert differ >= 20, differ
    with pytest.raises(CezsarError, match=r"^plain: token ids differ from transformers' SiglipTokenizer on "):
        check_against_slow(_encode(plain), rich, 64, "plain")


def test_init_and_export_refuse_a_tokenizer_that_differs(siglip: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from tokenizers import normalizers

    import training.siglip_tokenizer as st
    from training.pretrained import PretrainedTextEncoder

    enc = PretrainedTextEncoder(f"hf-siglip:{siglip}")
    enc.tokenizer.normalizer = normalizers.Sequence([])  # what export writes no longer canonicalises
    with pytest.raises(CezsarError, match=r"exported tokenizer\.json: token ids differ"):
        enc.save_tokenizer(tmp_path / "tokenizer.json")
    real = st.convert
    monkeypatch.setattr(st, "convert", lambda folder, lowercase=True: real(folder, lowercase=False))
    with pytest.raises(CezsarError, match=r"spiece\.model converted to a tokenizers file: token ids differ"):
        PretrainedTextEncoder(f"hf-siglip:{siglip}")


def test_unreadable_spiece_model_is_one_line(siglip: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(siglip, bad)
    (bad / "spiece.model").write_bytes(b"not a model")
    with pytest.raises(CezsarError, match=r"spiece\.model: not a SentencePiece model"):
        convert(bad)
    assert json.loads((siglip / "tokenizer_config.json").read_text())["tokenizer_class"] == "SiglipTokenizer"
