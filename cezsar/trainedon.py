"""What a model was trained on, so that actions far outside it are flagged before anyone relies on them.

Training records it in the model's config.json (``training.trained_on``) and the export copies it into
the deploy manifest (``extra.trained_on``):

- ``dataset``: the dataset's name (dataset.json ``name``, else the folder's name);
- ``domain``: one line on what its videos show (dataset.json ``domain``), when the dataset says;
- ``captions``: how many captions trained the model;
- ``vocabulary``: the words of those captions (lowercased, stemmed, the most frequent first, at most
  :data:`MAX_WORDS`).

A model started from an image-text checkpoint without training (``cezsar init``) records the checkpoint
and no vocabulary: its text side is open, and nothing is flagged.

:func:`unfamiliar_actions` flags an action when fewer than half of the words of its descriptions ever
appeared in a training caption: a model that learned coloured shapes moving knows nothing of "a person
falls to the floor", and a threshold cannot fix that. The check is lexical (word stems, no synonyms), so
it says "probably outside", never "inside".
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

MAX_WORDS = 10000
KNOWN_FRACTION = 0.5  # an action is flagged below this fraction of known words

_WORD = re.compile(r"[a-z]+")
_STOP = frozenset(
    "a an the and or but of to in on at by for from with into onto over under up down is are was were be "
    "been being it its this that these those there here which who whom whose what when where while as "
    "than then very so too not no some any each every one two his her their our your my we they he she "
    "you i me them us has have had do does did can could will would may might shall should must just "
    "also only still again".split()
)
_SUFFIXES = ("ing", "ed", "es", "s")


def stem(word: str) -> str:
    """A crude English stem, enough to match 'moves', 'moving' and 'moved' with 'move', 'spinning' with
    'spin', 'falls' with 'fall'."""
    for suf in _SUFFIXES:
        if word.endswith(suf) and len(word) - len(suf) >= 3 and not (suf == "s" and word.endswith("ss")):
            word = word[: -len(suf)]
            break
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouls":
        word = word[:-1]
    return word


def _content(text: str) -> Iterator[tuple[str, str]]:
    """(stem, word as written) of each of ``text``'s words that carry meaning (no articles, pronouns,
    auxiliaries, ...)."""
    for w in _WORD.findall(text.lower()):
        if w not in _STOP and len(w) > 1:
            yield stem(w), w


def content_words(text: str) -> list[str]:
    """The stems of ``text``'s words that carry meaning."""
    return [s for s, _ in _content(text)]


def vocabulary(captions: Iterable[str], limit: int = MAX_WORDS) -> list[str]:
    """The content-word stems of ``captions``, the most frequent first (ties alphabetical)."""
    counts: Counter[str] = Counter()
    for c in captions:
        counts.update(content_words(c))
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]


def record(dataset: str, captions: Sequence[str], domain: str | None = None) -> dict[str, Any]:
    """The ``trained_on`` entry of a model trained on ``captions`` of ``dataset``."""
    out: dict[str, Any] = {"dataset": dataset, "captions": len(captions), "vocabulary": vocabulary(captions)}
    if domain:
        out["domain"] = domain
    return out


def describe(trained_on: Mapping[str, Any]) -> str:
    """'cezsar-synthetic (one coloured shape ...; 960 captions)' for a warning line."""
    bits = [str(trained_on.get("domain") or "")] if trained_on.get("domain") else []
    if trained_on.get("captions"):
        bits.append(f"{trained_on['captions']} captions")
    return f"{trained_on.get('dataset', '?')}" + (f" ({'; '.join(bits)})" if bits else "")


def unfamiliar_actions(
    actions: Iterable[tuple[str, Sequence[str]]], trained_on: Mapping[str, Any] | None
) -> list[tuple[str, list[str], float]]:
    """(action name, its unknown words, the known fraction) for each action whose descriptions use
    mostly words the training captions never had; [] when the model records no vocabulary."""
    vocab = (trained_on or {}).get("vocabulary")
    if not vocab:
        return []
    known = set(vocab)
    out = []
    for name, texts in actions:
        words: dict[str, str] = {}  # stem -> the word as written (first seen)
        for t in texts:
            for s, w in _content(t):
                words.setdefault(s, w)
        if not words:
            continue
        frac = sum(s in known for s in words) / len(words)
        if frac < KNOWN_FRACTION:
            out.append((name, [w for s, w in words.items() if s not in known], frac))
    return out


def warning(name: str, unknown: Sequence[str], trained_on: Mapping[str, Any]) -> str:
    shown = ", ".join(unknown[:6]) + (", ..." if len(unknown) > 6 else "")
    return (
        f"action '{name}': its words ({shown}) never appear in the captions the model was trained on, "
        f"{describe(trained_on)}; its scores will likely mean little (train on captions that describe it)"
    )
