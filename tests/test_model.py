"""The embedding model: offline loading, weight verification, normalised batch encoding."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from embeddings import DEFAULT_MODEL_SHA256, ModelError, load_encoder
from embeddings.model import default_model_path, verify_weights


def test_packaged_weights_have_the_published_hash(encoder):
    assert encoder.weights_sha256 == DEFAULT_MODEL_SHA256
    assert encoder.name == "all-MiniLM-L6-v2" and encoder.dimension == 384 and encoder.max_seq_length == 256
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_wrong_hash_is_a_clear_error():
    with pytest.raises(ModelError, match="sha256"):
        verify_weights(default_model_path(), "0" * 64)


def test_tampered_weights_are_refused(tmp_path: Path):
    # A copy of the model folder whose weights differ by one byte.
    source = default_model_path()
    for item in source.rglob("*"):
        target = tmp_path / item.relative_to(source)
        if item.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif item.name != "model.safetensors":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(item)
    data = bytearray((source / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (tmp_path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="expected"):
        load_encoder(str(tmp_path), DEFAULT_MODEL_SHA256)


def test_missing_model_folder(tmp_path: Path):
    with pytest.raises(ModelError, match="does not exist"):
        load_encoder(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="model.safetensors"):
        load_encoder(str(tmp_path))


def test_encode_is_a_normalised_batch_function(encoder):
    texts = ["The rocket launched.", "A cake recipe with flour.", "The rocket lifted off."]
    vectors = encoder.encode(texts, batch_size=2)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 2] > sims[0, 1]
    assert np.allclose(
        encoder.encode([texts[1]])[0], vectors[1], atol=1e-5
    )  # order and batching don't matter
    assert encoder.encode([]).shape == (0, 384)
