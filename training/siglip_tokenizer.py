"""SigLIP's SentencePiece tokenizer (``spiece.model``) as a ``tokenizers`` file, checked against transformers.

``google/siglip-*`` checkpoints ship ``spiece.model`` and no fast-tokenizer file; transformers tokenizes them
with its slow ``SiglipTokenizer``, which, before SentencePiece sees the text, lowercases it, deletes ASCII
punctuation (``string.punctuation``), collapses whitespace runs to one space and strips the end, and then
appends ``</s>``. Its way of encoding (``"▁" + text``, SentencePiece on ``"<unk>" + that``, the ``<unk>``
pieces dropped) amounts to SentencePiece on the canonical text with one ``▁`` in front and no dummy
prefix of its own; a leading space of the text survives as a separate ``▁``.

:func:`convert` builds the same pipeline from ``tokenizers`` pieces: normalizers (prepend ``▁``,
lowercase, delete punctuation, collapse whitespace, strip the end; then the model's own SentencePiece
normalisation: its precompiled character map, extra-whitespace removal, spaces to ``▁``), the unigram
model with the model's pieces and scores, and ``$A </s>``. No pre-tokenizer: like SentencePiece, the
unigram search runs over the whole text. :func:`check_against_slow` compares token ids with the slow
tokenizer on :data:`PROBES` (punctuation, case, digits, whitespace, non-ASCII, text past the model's
length) and refuses with one line naming the first sentence that differs. ``cezsar init`` runs it when it
loads the tokenizer, ``cezsar export`` on the tokenizer file it wrote to the deploy folder.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cezsar.errors import CezsarError

SPIECE = "spiece.model"
META = "\u2581"  # SentencePiece's word-start symbol
_LONG = (
    "A person walks into the kitchen, opens the fridge, takes out a bottle of milk, pours a glass, "
    "puts the bottle back, closes the door, drinks the milk slowly while looking out of the window, "
    "then washes the glass and leaves the room through the door on the left."
)
PROBES: tuple[str, ...] = (
    "a person falls to the floor",
    "A Person Falls To The Floor",
    "A PERSON FALLS TO THE FLOOR!",
    "someone is lying on the ground, and does not move.",
    "a man walks from left to right...",
    "a woman waves both hands above her head?!",
    "it's a dog; it isn't a cat",
    "don't touch the shelf",
    "the customer's bag (red) is left behind",
    "two people shake hands - a greeting",
    "a person runs 100 metres",
    "at 10:30 the door opens",
    "2 people enter, 3 people leave",
    "pays 12.50 euros",
    "room #4 is empty",
    "50% of the shelf is empty",
    "a@b.c sends an email",
    "x = y + 1",
    "a/b/c",
    "under_score and back\\slash",
    "quotes \"like this\" and 'this'",
    "brackets [a] {b} <c>",
    "tilde ~ caret ^ pipe |",
    "`backticks` and $dollars",
    "multiple   spaces   between   words",
    "  leading spaces",
    "trailing spaces   ",
    "\ttabs\tand\nnewlines\r\nmixed",
    "no-break\u00a0space and em\u2003space",
    "ideographic\u3000space",
    "café crème brûlée",
    "naïve façade",
    "straße",
    "İstanbul",
    "ΑΘΗΝΑ αθηνα",
    "日本語のテキスト",
    "emoji 🙂 in text",
    "full\uff01width\uff1f punctuation\uff0c",
    "ligature ﬁ and ﬂ",
    "superscript x² and ½",
    "en–dash and em—dash",
    "“curly quotes” and ‘single’",
    "ellipsis… and bullet •",
    "zero\u200bwidth space",
    "!!!",
    "...",
    "",
    " ",
    "a",
    "A.",
    "UPPER lower MiXeD",
    "numbers 0123456789",
    "3.14159 and 2,718",
    "word" * 30,
    _LONG,
    _LONG.upper(),
    " ".join([_LONG] * 3),
    "a person falls to the floor " * 12,
)


def _python_whitespace_class() -> str:
    """A regex class of exactly the characters Python's ``re`` ``\\s`` (``str.isspace``) matches."""
    chars = [c for c in map(chr, range(0x110000)) if c.isspace()]
    return "[" + "".join(f"\\x{{{ord(c):x}}}" for c in chars) + "]"


def _proto(path: Path) -> Any:
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError:
        raise CezsarError(
            f"{path}: reading a SentencePiece model needs the sentencepiece package (pip install sentencepiece; "
            "it comes with cezsar's train extra)"
        ) from None
    try:
        return sentencepiece_model_pb2.ModelProto.FromString(path.read_bytes())  # type: ignore[attr-defined]
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends: one line
        raise CezsarError(f"{path}: not a SentencePiece model ({type(e).__name__})") from None


def convert(folder: Path, lowercase: bool = True) -> Any:
    """``folder``/spiece.model -> a ``tokenizers.Tokenizer`` that encodes as the slow SiglipTokenizer (no
    truncation or padding set: the caller sets them)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import Unigram

    path = folder / SPIECE
    proto = _proto(path)
    spec, trainer = proto.normalizer_spec, proto.trainer_spec
    if trainer.model_type != 1:  # UNIGRAM
        raise CezsarError(f"{path}: a SentencePiece model of type {trainer.model_type}; SigLIP's is unigram (1)")
    if trainer.treat_whitespace_as_suffix:
        raise CezsarError(f"{path}: treat_whitespace_as_suffix is not supported")
    vocab = [(p.piece, p.score) for p in proto.pieces]
    tok = Tokenizer(Unigram(vocab, unk_id=trainer.unk_id, byte_fallback=trainer.byte_fallback))
    punct = "[" + "".join("\\" + c for c in string.punctuation) + "]"
    steps: list[Any] = [normalizers.Prepend(META)]
    if lowercase:
        steps.append(normalizers.Lowercase())
    steps += [
        normalizers.Replace(Regex(punct), ""),
        normalizers.Replace(Regex(_python_whitespace_class() + "+"), " "),
        normalizers.Replace(Regex(r" \z"), ""),
    ]
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:  # the text does not start here (the slow tokenizer's "<unk>" does)
        steps += [normalizers.Replace(Regex(" {2,}"), " "), normalizers.Replace(Regex(r" +\z"), "")]
    if spec.escape_whitespaces:
        steps.append(normalizers.Replace(" ", META))
    tok.normalizer = normalizers.Sequence(steps)
    tok.decoder = decoders.Metaspace(replacement=META, prepend_scheme="always")
    eos = next((i for i, p in enumerate(proto.pieces) if p.piece == "</s>"), trainer.eos_id)
    if eos < 0:
        raise CezsarError(f"{path}: no </s> piece to end sentences with")
    tok.add_special_tokens([AddedToken(proto.pieces[eos].piece, special=True, normalized=False)])
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {proto.pieces[eos].piece}", special_tokens=[(proto.pieces[eos].piece, eos)]
    )
    return tok


def slow_tokenizer(folder: Path) -> Any:
    """transformers' slow SiglipTokenizer of the folder (needs sentencepiece)."""
    try:
        from transformers import SiglipTokenizer
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            return SiglipTokenizer.from_pretrained(str(folder))
        finally:
            hf_logging.set_verbosity(verbosity)
    except ImportError:
        raise CezsarError(
            f"{folder}: checking the SigLIP tokenizer needs the sentencepiece package (pip install sentencepiece; "
            "it comes with cezsar's train extra)"
        ) from None
    except Exception as e:  # noqa: BLE001 - any loading failure is one line naming the folder
        raise CezsarError(f"{folder}: transformers' SiglipTokenizer cannot load it ({type(e).__name__}: {e})") from None


def check_against_slow(
    encode: Callable[[list[str]], Sequence[Sequence[int]]], folder: Path, max_length: int, what: str
) -> int:
    """Token ids of ``encode`` (padded to ``max_length``) == the slow SiglipTokenizer's on :data:`PROBES`;
    returns the number of sentences compared, or raises one line naming the first that differs."""
    slow = slow_tokenizer(folder)
    probes = list(PROBES)
    want = slow(probes, padding="max_length", max_length=max_length, truncation=True)["input_ids"]
    got = encode(probes)
    for sentence, a, b in zip(probes, want, got, strict=True):
        if list(a) != list(b):
            raise CezsarError(
                f"{what}: token ids differ from transformers' SiglipTokenizer on {sentence[:60]!r} "
                f"({list(b)[:12]}... vs {list(a)[:12]}...); not using it"
            )
    return len(probes)
