from __future__ import annotations

import numpy as np

from cezsar.deploy.manifest import load_manifest
from edge.actions import parse_actions
from edge.scorer import Scorer
from edge.text import TextEncoder
from tests.helpers.models import deploy_dir

SET = parse_actions(
    "background: [still, empty]\nactions:\n  - {name: a, descriptions: [a1, a2]}\n  - {name: b, descriptions: b1}\n"
)


def unit(v: list[float]) -> np.ndarray:
    x = np.asarray(v, dtype=np.float32)
    return x / np.linalg.norm(x)


def test_margin_over_the_best_background() -> None:
    a, b = unit([1, 0, 0, 0]), unit([0, 1, 0, 0])
    bg = np.stack([unit([0, 0, 1, 0]), unit([0, 0, 0, 1])])
    s = Scorer(SET, np.stack([a, b]), bg)
    w = np.stack([unit([2, 0, 1, 0]), unit([0, 0, 0, 1])])
    out = s.score(w)
    cos = w @ np.stack([a, b]).T
    best_bg = (w @ bg.T).max(axis=1)
    assert np.allclose(out.scores, cos - best_bg[:, None])
    assert out.scores[0, 0] > 0 > out.scores[1, 0]  # like action a / like the background
    assert s.names == ["a", "b"] and s.params["a"].threshold == SET.defaults.threshold


def test_score_does_not_depend_on_the_other_actions() -> None:
    a, b = unit([1, 0, 0]), unit([0, 1, 0])
    bg = unit([0, 0, 1])[None]
    one = parse_actions("actions:\n  - {name: a, descriptions: x}\n")
    w = unit([1, 0.5, 0.2])[None]
    s1 = Scorer(one, a[None], bg).score(w).scores[0, 0]
    s2 = Scorer(SET, np.stack([a, b]), bg).score(w).scores[0, 0]
    assert np.isclose(s1, s2)


def test_without_background_the_score_is_the_cosine() -> None:
    one = parse_actions("actions:\n  - {name: a, descriptions: x}\n")
    s = Scorer(one, unit([1, 1])[None], np.zeros((0, 2), np.float32))
    out = s.score(unit([1, 0])[None])
    assert out.background is None and np.isclose(out.scores[0, 0], np.sqrt(0.5))


def test_build_averages_the_descriptions_of_an_action() -> None:
    d = deploy_dir()
    text = TextEncoder(d, load_manifest(d))
    s = Scorer.build(SET, text)
    e = text.encode(["a1", "a2"]).mean(axis=0)
    assert np.allclose(s.action_emb[0], e / np.linalg.norm(e), atol=1e-6)
    assert s.background_emb.shape == (2, text.dim)


def test_exclusive_scores_are_the_margins_and_the_decisions_compete() -> None:
    """exclusive: true -> the scores stay margins over the background (one scale for both rules); the
    decisions let only the top action be on (tests/test_edge_decisions.py)."""
    from edge.actions import dump_actions

    body = "background: [still]\nactions:\n  - {name: a, descriptions: a1}\n  - {name: b, descriptions: b1}\n"
    ex = parse_actions("exclusive: true\n" + body)
    assert ex.exclusive and "exclusive: true" in dump_actions(ex)
    a, b, bg = unit([1, 0, 0]), unit([0, 1, 0]), unit([0, 0, 1])[None]
    w = np.stack([unit([1, 0.8, 0.1]), unit([0.1, 0.1, 1])])
    out = Scorer(ex, np.stack([a, b]), bg).score(w)
    plain = Scorer(parse_actions(body), np.stack([a, b]), bg).score(w)
    assert np.allclose(out.scores, plain.scores)


def test_exclusive_must_be_a_boolean() -> None:
    import pytest

    from edge.actions import ActionsError

    with pytest.raises(ActionsError, match="exclusive"):
        parse_actions("exclusive: 3\nactions: []\n", source="acts.yaml")
