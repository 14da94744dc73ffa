"""Transitional: scripts/bench_stream.py imports the benchmark helpers under this name; they are
``cezsar.app.bench`` (``from cezsar.app import bench as bc``). Remove this file once it does."""

from cezsar.app.bench import *  # noqa: F403
