"""Fixtures of the fault tests: one exported deploy folder for the whole session.

``CEZSAR_TEST_DEPLOY=DIR`` uses an already exported deploy folder instead (e.g. while the model code
changes under you and the bundled model cannot be exported)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@pytest.fixture(scope="session")
def deploy() -> Path:
    if os.environ.get("CEZSAR_TEST_DEPLOY"):
        return Path(os.environ["CEZSAR_TEST_DEPLOY"])
    from test_edge_support import deploy_dir

    return deploy_dir()


@pytest.fixture(scope="session")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 s at 8 fps, 64 px: a file source that outlives every test that plays it in real time."""
    from faultkit import write_video

    return write_video(tmp_path_factory.mktemp("videos") / "long.avi", 480)


@pytest.fixture(scope="session")
def short_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from faultkit import write_video

    return write_video(tmp_path_factory.mktemp("videos") / "short.avi", 40)
