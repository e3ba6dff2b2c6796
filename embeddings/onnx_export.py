"""ONNX exports of the verified weights, made locally once and kept in the cache folder.

Layout::

    <cache_dir>/onnx/<weights sha256[:16]>-<backend>/      a sentence-transformers folder that loads with
        export.json                                         backend="onnx": what it was made from, and the
        onnx/model.onnx  (or onnx/model_qint8_<cpu>.onnx)   size + sha256 of every file in it
        config.json, tokenizer.json, modules.json, ...

An export is written into a temporary folder beside its final place and renamed into place, all under a
file lock per export: two processes that need the same export at once (two gunicorn workers starting) make
it once, and a process killed mid-export leaves nothing that looks finished. Every load checks the export's
files against ``export.json``; an export that fails the check (a file changed, truncated or missing) is
logged, removed and made again from the verified weights, which are the only source of truth.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from embeddings.backends import INT8
from embeddings.files import file_lock, file_sha256, fsync

log = logging.getLogger(__name__)

EXPORTS = "onnx"
RECORD = "export.json"
# The recipe of each kind of export; one recorded with another is made again. int8: 2 left some MatMuls in
# float32 (``float32_matmuls``), 3 only the first half of the layers' down-projections among them. float32
# has not changed since 2 (which only marked the int8 change).
FLOAT32_FORMAT = 2
INT8_FORMAT = 3


def record_format(identity: str) -> int:
    """The recipe format this semqa makes exports of backend ``identity`` with."""
    return INT8_FORMAT if identity.startswith(INT8) else FLOAT32_FORMAT


def vectors_recipe(identity: str) -> int | None:
    """Which recipe made the vectors of backend ``identity``, where recipes differ in their vectors: the
    int8 export's format; None for the float32 family (torch and every float32 export agree to 2.5e-7)."""
    return INT8_FORMAT if identity.startswith(INT8) else None


def recipe_mismatch(index_recipe: int | None, identity: str) -> str | None:
    """Why an index whose int8 vectors ``index_recipe`` made is not quite what backend ``identity`` encodes
    (None if it is). Not a refusal: the recipes' vectors agree to cosine 0.99 or better (BENCHMARKS.md),
    close enough to serve and write, not close enough to call the same model."""
    serving = vectors_recipe(identity)
    if serving is None or index_recipe == serving:
        return None
    made = (
        f"format {index_recipe}"
        if index_recipe is not None
        else "a format it did not record (built before it was)"
    )
    return (
        f"the index's vectors were made by the int8 export of {made} and this semqa encodes with format "
        f"{serving}: they agree to cosine 0.99 or better, so it is served, but `semqa index` re-embeds every "
        "passage with this model (from an index built before, the next build does so by itself)"
    )


FLOAT32_FILE = "onnx/model.onnx"


class ExportError(RuntimeError):
    """The model cannot be exported to ONNX (an architecture the exporter does not support, for one)."""


@dataclass(frozen=True)
class Export:
    path: Path  # the sentence-transformers folder
    file_name: str  # the ONNX file in it, relative (what model_kwargs["file_name"] takes)


def export_path(cache_dir: Path, weights_sha256: str, identity: str) -> Path:
    return cache_dir / EXPORTS / f"{weights_sha256[:16]}-{identity}"


def ensure_export(
    model_dir: Path, weights_sha256: str, identity: str, quantization: str, cache_dir: Path
) -> Export:
    """The verified export of the model in ``model_dir`` (whose weights have ``weights_sha256``) for the
    backend ``identity``, made first if it is missing or fails verification."""
    final = export_path(cache_dir, weights_sha256, identity)
    final.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(final.parent / f".{final.name}.lock"):
        problem = verify_export(final, weights_sha256)
        if problem is None:
            return _read(final)
        if final.exists():
            log.warning("ONNX export %s %s; exporting it again from the verified weights", final, problem)
            _remove(final)
        for stale in final.parent.glob(f".tmp-{final.name}-*"):  # left by a process killed mid-export
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
        try:
            if identity.startswith(INT8):
                file_name = _export_int8(model_dir, weights_sha256, quantization, cache_dir, tmp)
            else:
                file_name = _export_float32(model_dir, tmp)
            _write_record(tmp, weights_sha256, identity, quantization, file_name)
            os.rename(tmp, final)
            fsync(final.parent)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("exported %s (%s) to %s", model_dir, identity, final)
        return _read(final)


def verify_export(path: Path, weights_sha256: str) -> str | None:
    """What is wrong with the export in ``path`` (a phrase), or None when every file it records is there
    with its recorded size and sha256 and it was made from weights ``weights_sha256``."""
    record_path = path / RECORD
    if not record_path.is_file():
        return "is missing" if not path.exists() else f"has no {RECORD}"
    try:
        record = json.loads(record_path.read_text())
        files: dict[str, dict[str, Any]] = record["files"]
        made_from, file_name = record["weights_sha256"], record["file"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"has an unreadable {RECORD} ({exc})"
    expected = record_format(str(record.get("backend", "")))
    if record.get("format") != expected:
        return f"was made by another recipe (format {record.get('format')}, this semqa makes {expected})"
    if made_from != weights_sha256:
        return f"was made from other weights ({made_from[:12]}, expected {weights_sha256[:12]})"
    if file_name not in files:
        return f"does not record its ONNX file {file_name}"
    for name, expected in files.items():
        file = path / name
        if not file.is_file() or file.stat().st_size != expected["bytes"]:
            return f"has {name} missing or truncated"
        if file_sha256(file) != expected["sha256"]:
            return f"has {name} corrupt (sha256 mismatch)"
    return None


def _read(path: Path) -> Export:
    return Export(path=path, file_name=json.loads((path / RECORD).read_text())["file"])


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """sentence-transformers warns that an exported model should be saved and that it found no ONNX file
    to load, and the tracer that what it traced is constant: all expected here, so silenced while exporting."""
    loggers = [
        logging.getLogger(n)
        for n in ("sentence_transformers.backend.utils", "sentence_transformers.backend.load")
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _export_float32(model_dir: Path, target: Path) -> str:
    from sentence_transformers import SentenceTransformer

    try:
        with _quiet_exporter():
            model = SentenceTransformer(
                str(model_dir),
                device="cpu",
                backend="onnx",
                local_files_only=True,
                model_kwargs={"export": True},
            )
            model.save_pretrained(str(target))
    except Exception as exc:  # the exporter raises many types; every one means "cannot export this model"
        raise ExportError(f"{model_dir} cannot be exported to ONNX: {exc}") from exc
    if not (target / FLOAT32_FILE).is_file():
        raise ExportError(f"exporting {model_dir} to ONNX wrote no {FLOAT32_FILE}")
    return FLOAT32_FILE


def float32_matmuls(onnx_file: Path) -> list[str]:
    """The MatMul nodes of a float32 export that int8 leaves in float32: those without a weight (attention's
    scores and its weighted sum, both operands activations) and, in the first half of the layers, those
    whose weight narrows the width (the feed-forward's down-projection, whose input is the GELU's output).

    Dynamic quantisation scales each activation tensor as a whole, so a tensor with a few very large
    values loses the precision of all the others; the GELU's outputs are such a tensor, and quantising a
    down-projection costs the most precision in the early layers. Measured on all-MiniLM-L6-v2 (200
    NFCorpus abstracts against float32, BENCHMARKS.md "Encoder backends"): quantising one layer's
    down-projection alone adds 0.0009, 0.0005 and 0.0007 to the mean cosine distance in layers 0-2 and
    0.0002, 0.0001 and 0.0001 in layers 3-5; those of layers 3-5 together add 0.0003 and make the encoder
    1.18x faster. Every MatMul in int8 lost 0.0054 nDCG@10 on SciFact (hybrid), over issue 10's 0.005."""
    import onnx

    graph = onnx.load(str(onnx_file), load_external_data=False).graph
    weights = {w.name: tuple(w.dims) for w in graph.initializer}
    activations, narrowing = [], []
    for node in graph.node:  # in graph order: a layer's nodes come before the next layer's
        if node.op_type != "MatMul":
            continue
        shapes = [weights[name] for name in node.input if name in weights]
        if not shapes:
            activations.append(node.name)
        elif len(shapes[0]) == 2 and shapes[0][0] > shapes[0][1]:
            narrowing.append(node.name)
    return activations + narrowing[: (len(narrowing) + 1) // 2]


def _export_int8(
    model_dir: Path, weights_sha256: str, quantization: str, cache_dir: Path, target: Path
) -> str:
    """The float32 export (made first if needed) quantised with sentence-transformers' dynamic
    quantisation helper, with optimum's configuration for ``quantization`` (``avx512_vnni``, ``avx2``,
    ...), every MatMul but ``float32_matmuls`` in int8."""
    from optimum.onnxruntime.configuration import AutoQuantizationConfig
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.backend import export_dynamic_quantized_onnx_model

    base = ensure_export(model_dir, weights_sha256, "onnx", "", cache_dir)
    shutil.copytree(
        base.path, target, dirs_exist_ok=True, ignore=lambda _, names: {RECORD, "model.onnx"} & set(names)
    )
    try:
        model = SentenceTransformer(
            str(base.path),
            device="cpu",
            backend="onnx",
            local_files_only=True,
            model_kwargs={"file_name": base.file_name},
        )
        config = getattr(AutoQuantizationConfig, quantization)(
            is_static=False, nodes_to_exclude=float32_matmuls(base.path / base.file_name)
        )
        export_dynamic_quantized_onnx_model(model, config, str(target), file_suffix=f"qint8_{quantization}")
    except Exception as exc:
        raise ExportError(
            f"the ONNX export of {model_dir} cannot be quantised ({quantization}): {exc}"
        ) from exc
    written = sorted((target / "onnx").glob("*.onnx"))
    if len(written) != 1:
        raise ExportError(f"quantising {model_dir} wrote {len(written)} ONNX files, expected one")
    return written[0].relative_to(target).as_posix()


def _write_record(
    folder: Path, weights_sha256: str, identity: str, quantization: str, file_name: str
) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    record = {
        "format": record_format(identity),
        "backend": identity,
        "quantization": quantization or None,
        "weights_sha256": weights_sha256,
        "file": file_name,
        "exported_with": {p: version(p) for p in ("sentence-transformers", "optimum-onnx", "onnxruntime")},
        "files": {
            p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
            for p in files
        },
    }
    (folder / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True))
    for path in [*files, folder / RECORD, *(p for p in folder.rglob("*") if p.is_dir()), folder]:
        fsync(path)


def _remove(path: Path) -> None:
    """Move a failed export out of the way at once (a rename), then delete it."""
    aside = path.with_name(f".tmp-{path.name}-stale")
    shutil.rmtree(aside, ignore_errors=True)
    os.rename(path, aside)
    shutil.rmtree(aside, ignore_errors=True)
