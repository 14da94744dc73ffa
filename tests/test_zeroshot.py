"""cezsar.zeroshot: prototypes, cosine scores, top-k and confusion (the numpy core of evaluation,
the quantization top-1 check and the edge scorer)."""

from __future__ import annotations

import numpy as np
import pytest

from cezsar import zeroshot as Z
from cezsar.errors import CezsarError


def test_prototype_is_the_renormalised_mean_of_unit_embeddings() -> None:
    # the long vector must not outweigh the short one: each description counts once
    e = np.array([[10.0, 0.0, 0.0], [0.0, 0.5, 0.0]], dtype=np.float32)
    p = Z.class_prototype(e)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p, np.array([1, 1, 0]) / np.sqrt(2), atol=1e-7)
    # already-unit rows (what the text towers return): the plain mean, renormalised, as before the move
    rng = np.random.default_rng(0)
    u = Z.unit(rng.standard_normal((5, 16))).astype(np.float32)
    m = u.mean(axis=0)
    np.testing.assert_allclose(p := Z.class_prototype(u), m / np.linalg.norm(m), atol=1e-6)
    assert np.isclose(np.linalg.norm(p), 1.0, atol=1e-6)


def test_prototypes_shapes_and_errors() -> None:
    assert Z.class_prototypes([], dim=4).shape == (0, 4)
    assert Z.class_prototypes([np.eye(3)[:2], np.eye(3)[2:]]).shape == (2, 3)
    with pytest.raises(CezsarError, match="no classes"):
        Z.class_prototypes([])
    with pytest.raises(CezsarError, match="expected 4"):
        Z.class_prototypes([np.eye(3)], dim=4)
    with pytest.raises(CezsarError, match="got shape"):
        Z.class_prototype(np.zeros((0, 3)))


def test_cosine_scores_ignore_scale() -> None:
    protos = np.eye(3, dtype=np.float32)
    emb = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, -2.0]], dtype=np.float32)
    s = Z.cosine_scores(emb, 5 * protos)
    np.testing.assert_allclose(s, [[0.6, 0.8, 0.0], [0.0, 0.0, -1.0]], atol=1e-6)
    with pytest.raises(CezsarError, match="do not match"):
        Z.cosine_scores(emb, np.eye(2))


def test_predict_topk_and_accuracy() -> None:
    s = np.array([[0.1, 0.9, 0.5, 0.0], [0.7, 0.2, 0.8, 0.1], [0.3, 0.3, 0.1, 0.2]])
    labels = np.array([2, 0, 1])
    assert Z.predict(s).tolist() == [1, 2, 0]  # a tie goes to the lower index, like np.argmax
    assert Z.top_k(s, 2).tolist() == [[1, 2], [2, 0], [0, 1]]
    assert Z.top1_accuracy(s, labels) == 0.0
    assert Z.topk_accuracy(s, labels, k=2) == 1.0
    # N-way among a subset: the predictions still index all classes
    among = np.array([0, 2, 3])
    assert Z.predict(s, among).tolist() == [2, 2, 0]
    assert Z.top1_accuracy(s, labels, among=among) == pytest.approx(1 / 3)
    assert Z.top_k(s, 3, among).tolist() == [[2, 0, 3], [2, 0, 3], [0, 3, 2]]
    with pytest.raises(CezsarError, match="between 1 and the 3"):
        Z.top_k(s, 4, among)
    with pytest.raises(CezsarError, match="2 labels"):
        Z.top1_accuracy(s, labels[:2])


def test_confusion_counts_rows_true_columns_predicted() -> None:
    c = Z.confusion([0, 0, 1, 2, 2], [0, 1, 1, 2, 0], 3)
    assert c.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert c.dtype == np.int64 and c.sum() == 5
