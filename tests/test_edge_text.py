from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from cezsar.deploy.manifest import load_manifest
from edge.text import TextEncoder
from tests.helpers.models import deploy_dir, model_dir


@pytest.fixture(scope="module")
def text() -> TextEncoder:
    d = deploy_dir()
    return TextEncoder(d, load_manifest(d))


def test_embeddings_are_unit_and_cached(text: TextEncoder) -> None:
    a = text.encode(["a shape spinning", "something moving left"])
    assert a.shape == (2, text.dim) and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    before = text.encoded
    b = text.encode(["something moving left", "a shape spinning", "a shape spinning"])
    assert text.encoded == before  # all from the cache
    assert np.allclose(b[0], a[1]) and np.allclose(b[1], a[0])
    text.encode(["a brand new description"])
    assert text.encoded == before + 1


def test_batching_does_not_change_embeddings(text: TextEncoder) -> None:
    s = ["x", "a much longer description of an object moving slowly up the frame while it spins"]
    together = text.encode(s)
    text.forget([])
    alone = np.stack([text.encode([x])[0] for x in s])
    assert np.allclose(together, alone, atol=1e-5)


def test_matches_the_training_text_tower(text: TextEncoder) -> None:
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch not installed")
    from training.model import CezsarModel, SentenceEncoder

    model = CezsarModel.load(model_dir())
    st = SentenceEncoder(model.config.text_model)
    s = ["a shape spinning", "something growing bigger"]
    ref = model.encode_text(st.encode(s)).detach().numpy()
    assert np.allclose(text.encode(s), ref, atol=1e-4)
