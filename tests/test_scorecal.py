"""Calibrated scores (issue 21): the logistic fit, the file format and the Scorer that applies it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cezsar.errors import CezsarError
from cezsar.scorecal import (
    CALIBRATED_DEFAULTS,
    Logistic,
    ScoreCalibration,
    fit_logistic,
    load_calibration,
    margins,
    save_calibration,
    score_mode,
)
from edge.actions import parse_actions
from edge.scorer import Scorer


def unit(v: list[float]) -> np.ndarray:
    x = np.asarray(v, dtype=np.float32)
    return x / np.linalg.norm(x)


def test_fit_recovers_a_known_logistic_map() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 0.2, 20000)
    true = Logistic(12.0, -1.5)
    y = rng.random(len(x)) < true(x)
    got = fit_logistic(x, y, weight=np.full(len(x), 1.0 / len(x)))
    assert abs(got.a - 12.0) < 1.0 and abs(got.b + 1.5) < 0.15
    assert abs(got.inverse(0.5) - 1.5 / 12.0) < 0.02


def test_balanced_fit_puts_one_half_between_the_classes() -> None:
    # 10x more negatives than positives: the balanced map still crosses 0.5 midway
    x = np.concatenate([np.full(100, 0.3), np.full(1000, -0.1)]) + np.random.default_rng(1).normal(0, 0.1, 1100)
    y = np.concatenate([np.ones(100), np.zeros(1000)])
    m = fit_logistic(x, y)
    assert 0.0 < m.inverse(0.5) < 0.2


def test_fit_refuses_scores_that_do_not_separate() -> None:
    with pytest.raises(CezsarError, match="positive and negative"):
        fit_logistic(np.zeros(5), np.ones(5))
    with pytest.raises(CezsarError, match="do not separate"):
        fit_logistic(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1, 1, 0, 0]))


def calibration() -> ScoreCalibration:
    maps = {"margin": Logistic(10.0, 0.0), "cosine": Logistic(5.0, -2.0)}
    thresholds = {"margin": 0.6, "margin+exclusive": 0.4}
    return ScoreCalibration(maps, CALIBRATED_DEFAULTS.to_dict(), thresholds, {"fitted_on": "x"})


def test_file_round_trip_and_clear_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = save_calibration(tmp_path / "calibration.json", calibration())
    back = load_calibration(p)
    assert back.maps == calibration().maps and back.thresholds == {"margin": 0.6, "margin+exclusive": 0.4}
    assert back.params("margin").threshold == 0.6 and back.params("margin", exclusive=True).threshold == 0.4
    assert back.params("cosine", exclusive=True).threshold == CALIBRATED_DEFAULTS.threshold
    bad = json.loads(p.read_text())
    bad["maps"]["margin"]["a"] = -1
    p.write_text(json.dumps(bad))
    with pytest.raises(CezsarError, match=r"calibration.json: invalid score calibration \(margin: slope"):
        load_calibration(p)
    p.write_text('{"format": "other"}')
    with pytest.raises(CezsarError, match="not a cezsar score calibration"):
        load_calibration(p)
    p.write_text("{")
    with pytest.raises(CezsarError, match="invalid JSON"):
        load_calibration(p)


def test_margins_are_the_scorer_rules() -> None:
    a, b = unit([1, 0, 0, 0]), unit([0, 1, 0, 0])
    bg = np.stack([unit([0, 0, 1, 0]), unit([0, 0, 0, 1])])
    w = np.stack([unit([2, 1, 1, 0]), unit([0, 0, 0, 1])])
    raw, cos, best = margins(w, np.stack([a, b]), bg)
    assert best is not None and np.allclose(raw, cos - best[:, None])
    only, _, none = margins(w, np.stack([a, b]), None)
    assert none is None and np.allclose(only, cos)
    assert score_mode(True) == "margin" and score_mode(False) == "cosine"


def test_scorer_maps_margins_to_probabilities_and_takes_the_calibrated_defaults() -> None:
    aset = parse_actions(
        "background: [still]\nactions:\n  - {name: a, descriptions: x}\n"
        "  - {name: b, descriptions: y, threshold: 0.8}\n"
    )
    s = Scorer(aset, np.stack([unit([1, 0, 0]), unit([0, 1, 0])]), unit([0, 0, 1])[None], calibration())
    w = np.stack([unit([1, 0, 0.1]), unit([0, 0, 1])])
    out = s.score(w)
    raw, _, _ = margins(w, s.action_emb, s.background_emb)
    assert np.allclose(out.scores, 1 / (1 + np.exp(-10 * raw)), atol=1e-6)
    assert out.scores[0, 0] > 0.9 and out.scores[1, 0] < 0.1
    assert s.mode == "margin" and s.params["a"].threshold == 0.6  # the calibration's threshold of the mode
    assert s.params["b"].threshold == 0.8  # the file's own value wins
    assert s.params["a"].min_duration == CALIBRATED_DEFAULTS.min_duration
    # the file's defaults: override the calibration's
    own = parse_actions("defaults: {threshold: 0.3}\nbackground: [s]\nactions:\n  - {name: a, descriptions: x}\n")
    assert Scorer(own, unit([1, 0, 0])[None], unit([0, 0, 1])[None], calibration()).params["a"].threshold == 0.3
    ex = parse_actions("exclusive: true\nbackground: [s]\nactions:\n  - {name: a, descriptions: x}\n")
    se = Scorer(ex, unit([1, 0, 0])[None], unit([0, 0, 1])[None], calibration())
    assert se.mode == "margin" and se.params["a"].threshold == 0.4  # the exclusive decisions' threshold
    no_bg = parse_actions("actions:\n  - {name: a, descriptions: x}\n")
    sc = Scorer(no_bg, unit([1, 0, 0])[None], np.zeros((0, 3), np.float32), calibration())
    assert sc.mode == "cosine" and np.isclose(sc.score(unit([1, 0, 0])[None]).scores[0, 0], 1 / (1 + np.exp(-3)))


def test_uncalibrated_scorer_is_unchanged() -> None:
    aset = parse_actions("background: [still]\nactions:\n  - {name: a, descriptions: x}\n")
    s = Scorer(aset, unit([1, 0, 0])[None], unit([0, 0, 1])[None])
    w = unit([1, 0, 0.5])[None]
    assert np.isclose(s.score(w).scores[0, 0], w[0, 0] - w[0, 2]) and s.params["a"].threshold == 0.05
