"""The score calibration of a model (issue 21): fitted on rendered streams of seen classes, written into the
model folder, copied into the deploy folder by the export, applied by the edge; old folders still run."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from cezsar.data.synthetic import IDLE, parse_class_name
from cezsar.data.synthset import compositional_split
from cezsar.data.synthstreams import write_stream_group
from cezsar.deploy.layout import CALIBRATION, calibration_name
from cezsar.deploy.manifest import load_manifest
from cezsar.scorecal import load_calibration
from edge.scorer import deploy_calibration
from tests.helpers.models import trained_model_dir
from training.calibrate_scores import MIN_THRESHOLD

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = trained_model_dir()
    if src is None:
        pytest.skip("needs the trained demo model (a random model's scores separate nothing)")
    from training.calibrate_scores import calibrate

    root = tmp_path_factory.mktemp("cal")
    training, _ = compositional_split(0)
    seen = [c for c in training if parse_class_name(c)[1] != IDLE][:10]
    write_stream_group(root / "world" / "streams" / "seen", "seen", seen, seed=0, repeats=1)
    model = root / "model"
    shutil.copytree(src, model)
    assert calibrate(model, root / "world") == model / calibration_name()
    return model


def test_calibration_is_fitted_on_the_seen_streams(calibrated: Path) -> None:
    cal = load_calibration(calibrated / calibration_name())
    assert all(m.a > 0 for m in cal.maps.values())
    assert set(cal.thresholds) == {"margin", "margin+exclusive", "cosine", "cosine+exclusive"}
    assert all(MIN_THRESHOLD <= t < 1 for t in cal.thresholds.values())
    assert "streams/seen" in cal.info["fitted_on"] and cal.info["actions"] == 10
    # the margin of a window that shows its action maps above the threshold, an idle window's below
    m = cal.maps["margin"]
    assert m.inverse(cal.thresholds["margin"]) > m.inverse(0.05)


def test_export_copies_the_calibration_and_the_edge_applies_it(calibrated: Path, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    from converter.export import export_model

    export_model(calibrated, tmp_path / "deploy")
    m = load_manifest(tmp_path / "deploy")
    assert m.files[CALIBRATION] == calibration_name() and calibration_name() in m.sha256
    cal = deploy_calibration(tmp_path / "deploy", m)
    assert cal is not None and cal.to_dict() == json.loads((calibrated / calibration_name()).read_text())
    # a tampered calibration is refused at start (the manifest's digest)
    (tmp_path / "deploy" / calibration_name()).write_text(json.dumps({**cal.to_dict(), "thresholds": {}}))
    with pytest.raises(Exception, match="does not match"):
        deploy_calibration(tmp_path / "deploy", m)
    # a deploy folder from before calibrated scores: raw margins, one warning
    del m.files[CALIBRATION]
    with caplog.at_level(logging.WARNING):
        assert deploy_calibration(tmp_path / "deploy", m) is None
    assert sum("no score calibration" in r.message for r in caplog.records) == 1


def test_calibrated_scores_are_probabilities(calibrated: Path) -> None:
    from cezsar.scorecal import margins

    cal = load_calibration(calibrated / calibration_name())
    raw = np.linspace(-1, 1, 21)
    p = cal.apply(raw, "margin")
    assert np.all(np.diff(p) > 0) and p[0] < 0.05 and p[-1] > 0.95
    assert margins(np.eye(2), np.eye(2), None)[0].shape == (2, 2)


def test_default_threshold_never_below_one_half(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where event F1 peaks at a low probability, the default stays at 0.5: it never calls an event the
    calibrated model thinks more likely absent."""
    import training.calibrate_scores as cs
    from cezsar.events import ScoredStream
    from cezsar.scorecal import CALIBRATED_DEFAULTS

    ends = np.arange(2.0, 60.0, 0.5)
    scores = np.where((ends > 20.0) & (ends < 30.0), 0.3, 0.05)[:, None]
    stream = ScoredStream("s", 60.0, ends - 1.0, ends, ["a"], scores, [{"action": "a", "start": 19.0, "end": 30.0}])
    th, curve = cs._choose_threshold([stream], CALIBRATED_DEFAULTS, exclusive=True)
    assert max(curve, key=lambda c: c["f1"])["threshold"] < 0.3 and th == MIN_THRESHOLD
    monkeypatch.setattr(cs, "MIN_THRESHOLD", 0.0)
    assert cs._choose_threshold([stream], CALIBRATED_DEFAULTS, exclusive=True)[0] < 0.3  # F1's own choice
