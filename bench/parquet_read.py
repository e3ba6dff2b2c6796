"""How fast `semqa index` reads a Parquet file of embedded passages (indexer/parquet.py), per million rows.

The file is made here: ``--rows`` passages of four per document, each a sentence of text with a random unit
vector of dimension 384, the minimal columns (``document_id``, ``text``, ``vector``: offsets follow from the
join rule), then read back with every check; the rows are timed from opening the file to the last vector.

    python bench/parquet_read.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from indexer.parquet import read_passages

DIMENSION = 384


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    n = args.rows
    rng = np.random.default_rng(0)
    values = rng.standard_normal(n * DIMENSION, dtype=np.float32)
    offsets = pa.array(
        np.arange(0, n * DIMENSION + 1, DIMENSION, dtype=np.int32)
    )  # list<float32>: int32 offsets
    table = pa.table(
        {
            "document_id": [f"doc-{i // 4}" for i in range(n)],
            "text": [f"Passage {i} of a document about launch vehicles, orbits and crews." for i in range(n)],
            "vector": pa.ListArray.from_arrays(offsets, pa.array(values)),
        }
    )
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "passages.parquet"
        pq.write_table(table, path)
        del table, values
        started, cpu = time.perf_counter(), time.process_time()
        passages = read_passages([path], model_sha256="", dimension=DIMENSION, backend="torch")
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
        size = path.stat().st_size
    assert len(passages.chunks) == n and passages.vectors.shape == (n, DIMENSION)
    print("| rows | file MB | read s | CPU s | rows/s |\n|---:|---:|---:|---:|---:|")
    print(f"| {n:,} | {size / 1e6:.0f} | {seconds:.1f} | {cpu_seconds:.1f} | {n / seconds:,.0f} |")
    print(json.dumps({"rows": n, "bytes": size, "seconds": seconds, "cpu_seconds": cpu_seconds}))


if __name__ == "__main__":
    main()
