"""float16 vectors as float32, exactly and fast: the store's and the evidence files' sentence vectors are
widened here."""

from __future__ import annotations

import numpy as np

# torch splits an element-wise operation across its threads above this many elements (at::internal::GRAIN_SIZE)
SERIAL_CAST = 32_768


def widen(halves: np.ndarray) -> np.ndarray:
    """float16 rows (a writable array: torch shares its memory) as float32 rows, exactly. numpy casts
    float16 one element at a time (about 2 ns each: 0.2 ms for the 260 sentence vectors of a SciFact
    question's candidates); torch's cast uses the CPU's conversion instructions, and torch is loaded in
    every process that searches (sentence-transformers imports it whatever the backend). The cast goes in
    slices that torch runs on the calling thread (``SERIAL_CAST``): on torch's thread pool, a request would
    wait for those threads to get a core while other requests' encodings hold both (measured up to 5 ms
    with the other core busy, against about 30 us in slices)."""
    import torch

    if not halves.size:
        return np.zeros(halves.shape, np.float32)
    source = torch.from_numpy(halves).reshape(-1)
    out = torch.empty(len(source), dtype=torch.float32)
    for start in range(0, len(source), SERIAL_CAST):
        out[start : start + SERIAL_CAST].copy_(source[start : start + SERIAL_CAST])
    return out.numpy().reshape(halves.shape)
