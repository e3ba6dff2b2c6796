"""Encoder backends: their names, the int8 quantisation that suits this CPU, and which backends' vectors
may be mixed in one index.

``torch`` runs the model's weights as they are; ``onnx`` runs an ONNX export of the same weights in
onnxruntime (same float32 arithmetic, other kernels); ``onnx-int8`` runs a dynamically quantised copy of
that export (int8 weights, activations quantised per call), built for the CPU's instruction set.

The running backend's identity (``Encoder.backend``) names the quantisation too, ``onnx-int8-avx512_vnni``
or ``onnx-int8-avx2``: the two are different int8 models, whose vectors differ from each other about as much
as from float32.
"""

from __future__ import annotations

import platform
from collections.abc import Collection
from pathlib import Path
from typing import Literal, get_args

Backend = Literal["torch", "onnx", "onnx-int8"]
BACKENDS: tuple[str, ...] = get_args(Backend)
INT8 = "onnx-int8"
# The setting's default: the backend an existing index was built with, and for a new index the fastest
# backend within 0.005 nDCG@10 of torch on both BEIR sets (BENCHMARKS.md "Encoder backends").
AUTO = "auto"
BackendSetting = Literal["auto", "torch", "onnx", "onnx-int8"]
NEW_INDEX_BACKEND = INT8

# Vectors within one family are interchangeable. Measured on 522 SciFact passages and their sentence spans
# (bench/encoder_backends.py, BENCHMARKS.md): torch and onnx differ by at most 2.5e-7 per component (cosine
# 1.000000); the int8 model differs from float32 by up to 0.035 (cosine down to 0.981), and the AVX2 and
# AVX-512 VNNI int8 models differ from each other by up to 0.043 (cosine 0.973), so each int8 model is a
# family of its own.
FLOAT32_FAMILY = ("torch", "onnx")


def check_backend(name: str) -> str:
    """``name`` if it is a backend setting; otherwise a ``ValueError`` listing the valid ones."""
    if name not in BACKENDS:
        raise ValueError(f"unknown encoder backend {name!r}; valid backends: {', '.join(BACKENDS)}")
    return name


def resolve_backend(setting: str, index_backend: str | None, new_index: str = NEW_INDEX_BACKEND) -> str:
    """The backend to run for the ``backend`` setting: itself, or for ``auto`` the backend setting that
    built the index this process serves or writes (``index_backend``, the identity its store records), so
    that an index keeps its vectors' family without anybody naming it; a new index gets ``new_index``."""
    if setting != AUTO:
        return check_backend(setting)
    return backend_setting(index_backend) if index_backend else new_index


def quantization_target(cpu_flags: Collection[str], machine: str) -> str:
    """The sentence-transformers dynamic-quantisation config for a CPU with these ``/proc/cpuinfo`` flags
    on this ``platform.machine()``: the widest int8 instruction set it has."""
    if machine.lower() in {"aarch64", "arm64"}:
        return "arm64"
    if "avx512_vnni" in cpu_flags or "avx512vnni" in cpu_flags:
        return "avx512_vnni"
    if "avx512f" in cpu_flags and "avx512bw" in cpu_flags:
        return "avx512"
    return "avx2"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The instruction-set flags of this machine's first CPU (empty where ``/proc/cpuinfo`` is absent)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in {"flags", "Features"}:
            return set(value.split())
    return set()


def this_cpu_quantization() -> str:
    return quantization_target(cpu_flags(), platform.machine())


def backend_id(backend: str, quantization: str = "") -> str:
    """The identity of a running backend: the setting, plus the quantisation for int8."""
    return f"{backend}-{quantization}" if backend == INT8 else backend


def backend_setting(identity: str) -> str:
    """The ``backend`` setting that runs a backend identity (``onnx-int8-avx2`` -> ``onnx-int8``)."""
    return INT8 if identity.startswith(INT8) else identity


def compatible_setting(identity: str) -> str:
    """The fastest backend setting whose vectors mix with those ``identity`` made: onnx for torch's."""
    return "onnx" if vector_family(identity) == vector_family("torch") else backend_setting(identity)


def vector_family(identity: str) -> str:
    return "float32" if identity in FLOAT32_FAMILY else identity


def compatible(index_backend: str, serving_backend: str) -> bool:
    """Whether questions encoded by ``serving_backend`` may be searched against (and passages added to) an
    index whose vectors ``index_backend`` computed."""
    return vector_family(index_backend) == vector_family(serving_backend)


def incompatibility(index_backend: str, serving_backend: str) -> str | None:
    """Why an index built with ``index_backend`` cannot be served by ``serving_backend``; None if it can."""
    if compatible(index_backend, serving_backend):
        return None
    built, serving = backend_setting(index_backend), backend_setting(serving_backend)
    remedy = (
        f"rebuild it here with `semqa index --backend {serving}` (int8 models differ per CPU)"
        if built == serving
        else f"serve it with SEMQA_BACKEND={built} (--backend {built}), or rebuild it with "
        f"`semqa index --backend {serving}`"
    )
    return (
        f"the index was built with encoder backend {index_backend} but this process encodes with "
        f"{serving_backend}, and their vectors differ (torch and onnx are interchangeable, each int8 model "
        f"is compatible only with itself): {remedy}"
    )
