"""Zero-shot classification in the joint space, in numpy: class prototypes, cosine scores, accuracy.

A class (or an edge action) is described by several sentences. Its prototype is the mean of their
L2-normalised text embeddings, normalised again (a prompt ensemble: paraphrases average out each
other's wording). A video is assigned the class of the nearest prototype by cosine. Training's
evaluation, the converter's INT8 top-1 check and the edge scorer all build prototypes here, so the
three agree on what a class embedding is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from cezsar.errors import CezsarError

EPS = 1e-12  # smallest norm divided by (as torch.nn.functional.normalize): a zero vector stays zero


def unit(x: ArrayLike, axis: int = -1) -> np.ndarray:
    """``x`` divided by its L2 norm along ``axis`` (at least ``EPS``)."""
    a = np.asarray(x)
    return a / np.maximum(np.linalg.norm(a, axis=axis, keepdims=True), EPS)


def class_prototype(embeddings: ArrayLike) -> np.ndarray:
    """(D,) float32: the renormalised mean of the normalised (N, D) embeddings of one class's descriptions."""
    e = np.asarray(embeddings, dtype=np.float32)
    if e.ndim != 2 or len(e) == 0:
        raise CezsarError(f"class prototype: expected (descriptions, dim) embeddings, got shape {e.shape}")
    return unit(unit(e).mean(axis=0)).astype(np.float32)


def class_prototypes(per_class: Sequence[ArrayLike], dim: int | None = None) -> np.ndarray:
    """(C, D) float32 prototypes, one per class, from each class's (N_c, D) description embeddings.

    ``dim`` gives the shape of an empty result ((0, dim)); with classes it must match their width.
    """
    if not per_class:
        if dim is None:
            raise CezsarError("class prototypes: no classes and no embedding size")
        return np.zeros((0, dim), dtype=np.float32)
    protos = np.stack([class_prototype(e) for e in per_class])
    if dim is not None and protos.shape[1] != dim:
        raise CezsarError(f"class prototypes: embeddings have {protos.shape[1]} dimensions, expected {dim}")
    return protos


def cosine_scores(embeddings: ArrayLike, prototypes: ArrayLike) -> np.ndarray:
    """(N, C) cosine of each (N, D) embedding to each (C, D) prototype (both renormalised)."""
    e = unit(np.asarray(embeddings, dtype=np.float32))
    p = unit(np.asarray(prototypes, dtype=np.float32))
    if e.ndim != 2 or p.ndim != 2 or e.shape[1] != p.shape[1]:
        raise CezsarError(f"cosine scores: shapes {e.shape} and {p.shape} do not match as (N, D), (C, D)")
    return e @ p.T


def _among(scores: np.ndarray, among: ArrayLike | None) -> np.ndarray:
    if among is None:
        return np.arange(scores.shape[1])
    idx = np.asarray(among, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise CezsarError("zero-shot: no candidate classes")
    return idx


def top_k(scores: ArrayLike, k: int = 1, among: ArrayLike | None = None) -> np.ndarray:
    """(N, k) class indices of the k best scores of each row, best first (ties: the lower index).

    ``among``: restrict the candidates to these class indices (a random subset of the classes, as in
    the N-way protocol); the result still indexes all classes.
    """
    s = np.asarray(scores)
    cand = _among(s, among)
    if not 1 <= k <= len(cand):
        raise CezsarError(f"top-k: k={k} must be between 1 and the {len(cand)} candidate classes")
    order = np.argsort(-s[:, cand], axis=1, kind="stable")[:, :k]
    return cand[order]


def predict(scores: ArrayLike, among: ArrayLike | None = None) -> np.ndarray:
    """(N,) index of the best class of each row (ties: the lower index), optionally among some classes."""
    s = np.asarray(scores)
    cand = _among(s, among)
    return cand[np.argmax(s[:, cand], axis=1)]


def topk_accuracy(scores: ArrayLike, labels: ArrayLike, k: int = 1, among: ArrayLike | None = None) -> float:
    """Fraction of rows whose true class (``labels``, class indices) is among their k best."""
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    s = np.asarray(scores)
    if len(y) != len(s) or len(y) == 0:
        raise CezsarError(f"accuracy: {len(s)} score rows but {len(y)} labels")
    if k == 1:
        return float(np.mean(predict(s, among) == y))
    return float(np.mean((top_k(s, k, among) == y[:, None]).any(axis=1)))


def top1_accuracy(scores: ArrayLike, labels: ArrayLike, among: ArrayLike | None = None) -> float:
    return topk_accuracy(scores, labels, 1, among)


def confusion(labels: ArrayLike, predicted: ArrayLike, n_classes: int) -> np.ndarray:
    """(C, C) int64 counts; rows are the true class, columns the predicted one."""
    out = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(out, (np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return out
