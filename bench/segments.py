"""The index engine at 10k, 100k and 1M passages: build, disk, memory, questions, writes, compaction, recall.

Passages: real text with vectors from real embeddings plus noise. The seed is every passage of SciFact and
NFCorpus (../shared/eval, about 28k passages) with its all-MiniLM-L6-v2 vector, read from an index of both
built first (embeddings from the cache). Passage i of a size-n corpus is seed passage i mod 28k, document
``p<i>``, and its vector is the seed's plus Gaussian noise of standard deviation ``NOISE / sqrt(384)`` per
dimension, normalised again (cosine to its seed about 0.89), so that copies of one seed are near but
distinct. They are written as Parquet (document_id, text, vector) and indexed with ``semqa index``, as a
corpus embedded elsewhere would be. Questions: SciFact train and NFCorpus test queries, really embedded.

For each size, in one run: ``semqa index`` time and disk size; in process, per mode, question p50/p95 with
the question vectors given (search alone) and the dense base's search beside exact (flat) search over the
same vectors, with recall@10 of the base against exact for the same question vectors; ``semqa serve
--workers 2``: /ask p50/p95 per mode over HTTP, RSS and PSS per worker; upsert p50/p99 of one-line
documents whose text is already in the embedding cache (so the embedding is not what is timed), delete p50;
with the disk each write added; then ``semqa compact`` time.

    SEMQA_CACHE_DIR=/work/semqa-cache python bench/segments.py [--sizes 10000 100000 1000000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import requests
from common import SHARED, percentile, rollup, worker_pids

from embeddings import load_encoder
from indexer import IndexReader
from indexer.dense import DenseIndex, SearchEffort
from indexer.layout import STORE
from indexer.store import Store
from semqa.launch import running_server
from semqa.settings import MODES
from server.retrieval import Searcher, SearchOptions

NOISE = 0.5
EF_SWEEP = (64, 128, 256, 512)
SERVED_CANDIDATES = 100  # the dense side's candidates for one question at top_k 10
DIMENSION = 384


def semqa(*args: str, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "semqa.cli", *args], check=True, env={**os.environ, **(env or {})})
    return time.perf_counter() - started


def seed_passages(work: Path) -> tuple[list[str], np.ndarray]:
    """Every SciFact and NFCorpus passage with its vector (an index of both, built once and kept)."""
    index_dir = work / "seed-index"
    if not (index_dir / STORE).exists():
        semqa(
            "index",
            str(SHARED / "scifact" / "corpus.jsonl"),
            str(SHARED / "nfcorpus" / "corpus.jsonl"),
            "--index-dir",
            str(index_dir),
            "--quiet",
        )
    store = Store(index_dir / STORE)
    seq = store.latest()
    texts = [text for _, _, _, text in store.live_texts(seq)]
    vectors = np.concatenate([v for _, v in store.live_vectors(seq)])
    return texts, vectors


def questions() -> list[str]:
    out = []
    for path in (SHARED / "scifact" / "queries_train.jsonl", SHARED / "nfcorpus" / "queries_test.jsonl"):
        out += [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
    return out


def write_corpus(path: Path, size: int, texts: list[str], seeds: np.ndarray) -> None:
    rng = np.random.default_rng(size)
    writer = None
    for start in range(0, size, 100_000):
        rows = np.arange(start, min(size, start + 100_000))
        vectors = seeds[rows % len(seeds)] + rng.standard_normal((len(rows), DIMENSION)).astype(
            np.float32
        ) * (NOISE / np.sqrt(DIMENSION))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        table = pa.table(
            {
                "document_id": [f"p{i}" for i in rows],
                "text": [texts[i % len(texts)] for i in rows],
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DIMENSION).cast(
                    pa.list_(pa.float32())
                ),
            }
        )
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()


def disk_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def exact_top(store: Store, queries: np.ndarray, k: int) -> list[set[int]]:
    """The exact top ``k`` chunk ids per query over every live vector (numpy, in blocks)."""
    best_ids = np.zeros((len(queries), 0), np.int64)
    best = np.zeros((len(queries), 0), np.float32)
    for ids, vectors in store.live_vectors(store.latest(), batch=100_000):
        scores = np.concatenate([best, queries @ vectors.T], axis=1)
        pool = np.concatenate([best_ids, np.broadcast_to(ids, (len(queries), len(ids)))], axis=1)
        keep = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        best, best_ids = np.take_along_axis(scores, keep, 1), np.take_along_axis(pool, keep, 1)
    return [set(row.tolist()) for row in best_ids]


def in_process(index_dir: Path, encoder, asked: list[str], vectors: np.ndarray) -> dict[str, object]:
    reader = IndexReader(
        index_dir, model_sha256=encoder.weights_sha256, dimension=encoder.dimension, backend=encoder.backend
    )
    searcher = Searcher(encoder, reader)
    view = reader.view
    out: dict[str, object] = {"kind": view.manifest.kind, "factory": view.manifest.factory}
    for mode in MODES:
        times = []
        for question, vector in zip(asked, vectors, strict=True):
            started = time.perf_counter()
            searcher.search_batch([question], 10, SearchOptions(mode=mode), vectors=vector[None, :])  # type: ignore[arg-type]
            times.append((time.perf_counter() - started) * 1000)
        out[f"{mode}_p50"], out[f"{mode}_p95"] = percentile(times, 50), percentile(times, 95)
    base, exact = [], []
    flat = None
    if view.manifest.factory != "Flat":  # the baseline: exact float32 search over the same vectors
        ids, live = view.dense.live()
        flat = DenseIndex.build(live, ids, "Flat")
    for vector in vectors:
        started = time.perf_counter()
        view.dense.search(vector[None, :], 10)
        base.append((time.perf_counter() - started) * 1000)
        if flat is not None:
            started = time.perf_counter()
            flat.search(vector[None, :], 10)
            exact.append((time.perf_counter() - started) * 1000)
    out["dense_search_p50"] = percentile(base, 50)
    out["exact_search_p50"] = percentile(exact, 50) if exact else out["dense_search_p50"]
    truth = exact_top(reader.store, vectors, 10)
    found = [set(ids.tolist()) for ids, _ in view.dense.search(vectors, 10)]
    out["recall@10"] = float(np.mean([len(f & t) / 10 for f, t in zip(found, truth, strict=True)]))
    if view.manifest.kind == "hnsw":  # recall and time of the base at other efSearch values
        for ef in EF_SWEEP:
            dense = DenseIndex(view.dense.base, view.dense.base_alive, view.dense.segments, SearchEffort(ef))
            times = []
            for vector in vectors:
                started = time.perf_counter()
                dense.search(vector[None, :], SERVED_CANDIDATES)  # what a question asks of the dense side
                times.append((time.perf_counter() - started) * 1000)
            found = [set(ids[:10].tolist()) for ids, _ in dense.search(vectors, SERVED_CANDIDATES)]
            recall = float(np.mean([len(f & t) / 10 for f, t in zip(found, truth, strict=True)]))
            out[f"ef{ef}"] = {"recall@10": recall, "search_p50": percentile(times, 50)}
    return out


def over_http(index_dir: Path, asked: list[str], texts: list[str]) -> dict[str, object]:
    env = {
        "SEMQA_API_KEYS": "k",
        "SEMQA_RATE_LIMIT": "",
        "SEMQA_WRITE_RATE_LIMIT": "",
        "SEMQA_COMPACT_AFTER": "0",
    }
    auth = {"Authorization": "Bearer k"}
    out: dict[str, object] = {}
    with running_server(["--index-dir", str(index_dir), "--workers", "2"], env=env) as server:
        session = requests.Session()
        for mode in MODES:
            times = []
            for question in asked:
                started = time.perf_counter()
                session.post(
                    server.url + "/ask", json={"question": question, "mode": mode}, timeout=60
                ).raise_for_status()
                times.append((time.perf_counter() - started) * 1000)
            out[f"http_{mode}_p50"], out[f"http_{mode}_p95"] = percentile(times, 50), percentile(times, 95)
        for question in asked:  # on new connections, so that both workers answer some
            requests.post(server.url + "/ask", json={"question": question}, timeout=60).raise_for_status()
        memory = [rollup(pid) for pid in worker_pids(server.process.pid)]
        out["rss_mb"] = [round(m["Rss"] / 1024) for m in memory]
        out["pss_mb"] = [round(m["Pss"] / 1024) for m in memory]
        # Anonymous memory is each worker's own; the rest of its PSS is mapped files (the FAISS base, tantivy,
        # SQLite), page cache any worker that touches the same pages shares.
        out["anon_mb"] = [round(m["Anonymous"] / 1024) for m in memory]
        # Warm the write path (each worker loads its write encoder at its first write) and the cache.
        for i in range(6):
            session.post(
                server.url + "/documents",
                json={"documents": [{"id": f"warm{i}", "text": texts[i]}]},
                headers=auth,
                timeout=120,
            ).raise_for_status()
        upserts, deletes = [], []
        disk_before = disk_mb(index_dir)
        for i in range(60):
            body = {"documents": [{"id": f"w{i}", "text": texts[i % 6]}]}  # cached text: the commit is timed
            started = time.perf_counter()
            session.post(server.url + "/documents", json=body, headers=auth, timeout=120).raise_for_status()
            upserts.append((time.perf_counter() - started) * 1000)
        for i in range(60):
            started = time.perf_counter()
            session.delete(f"{server.url}/documents/w{i}", headers=auth, timeout=120).raise_for_status()
            deletes.append((time.perf_counter() - started) * 1000)
        # What 120 one-passage writes added on disk (store rows, WAL, tantivy segments), per write.
        out["disk_kb_per_write"] = (disk_mb(index_dir) - disk_before) * 1024 / 120
        out["upsert_p50"], out["upsert_p99"] = percentile(upserts, 50), percentile(upserts, 99)
        out["delete_p50"] = percentile(deletes, 50)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "semqa-bench-segments")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--reuse", action="store_true", help="measure indexes already built in --work")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    encoder = load_encoder()
    texts, seeds = seed_passages(args.work)
    asked = questions()[: args.questions]
    vectors = encoder.encode(asked)
    rows = []
    for size in args.sizes:
        corpus = args.work / f"passages-{size}.parquet"
        if not corpus.exists():
            write_corpus(corpus, size, texts, seeds)
        index_dir = args.work / f"index-{size}"
        row: dict[str, object] = {"passages": size}
        if not (args.reuse and index_dir.exists()):
            subprocess.run(["rm", "-rf", str(index_dir)], check=True)
            row["build_s"] = semqa("index", str(corpus), "--index-dir", str(index_dir), "--quiet")
        row["disk_mb"] = disk_mb(index_dir)
        row.update(in_process(index_dir, encoder, asked, vectors))
        row.update(over_http(index_dir, asked[:100], texts))
        row["compact_s"] = semqa("compact", "--index-dir", str(index_dir))
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
