"""Query latency over HTTP (gunicorn) beside the raw encode+search time of the same queries, in one run.

The difference of the p50s is what the HTTP layer costs (parsing, validation, JSON, the socket).

    python bench/query_latency.py [--requests 200]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from pathlib import Path

import requests

from embeddings import load_encoder
from indexer import ChunkingConfig, build_index, load_version
from semqa.launch import running_server
from server import Searcher

REPO = Path(__file__).resolve().parent.parent
DEV = REPO.parent / "shared" / "eval" / "dev_questions.tsv"
SAMPLE = REPO / "tests" / "data" / "questions_sample.tsv"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def questions() -> list[str]:
    path = DEV if DEV.is_file() else SAMPLE
    with path.open(newline="") as handle:
        return [row["question"] for row in csv.DictReader(handle, delimiter="\t")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args()
    qs = questions()
    batch = [qs[i % len(qs)] for i in range(args.requests)]

    with tempfile.TemporaryDirectory() as scratch:
        index_dir = Path(scratch) / "index"
        encoder = load_encoder()
        build_index([REPO / "corpus"], index_dir=index_dir, encoder=encoder, chunking=ChunkingConfig())
        searcher = Searcher(
            encoder, load_version(index_dir, model_sha256=encoder.weights_sha256, dimension=encoder.dimension)
        )
        with running_server(
            ["--index-dir", str(index_dir), "--workers", "1"], env={"SEMQA_QUIET": "1"}
        ) as server:
            session = requests.Session()
            for q in qs:  # warm up both paths
                session.post(
                    server.url + "/ask", json={"question": q, "top_k": args.top_k}
                ).raise_for_status()
                searcher.search(q, args.top_k)
            http, raw = [], []
            for q in batch:  # interleaved so noise hits both alike
                started = time.perf_counter()
                session.post(
                    server.url + "/ask", json={"question": q, "top_k": args.top_k}
                ).raise_for_status()
                http.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                searcher.search(q, args.top_k)
                raw.append((time.perf_counter() - started) * 1000)
    rows = {"HTTP POST /ask (gunicorn, 1 worker)": http, "raw encode + search, in process": raw}
    print(f"| path ({args.requests} queries, top_k={args.top_k}) | p50 ms | p95 ms |")
    print("|---|---:|---:|")
    for name, values in rows.items():
        print(f"| {name} | {percentile(values, 50):.1f} | {percentile(values, 95):.1f} |")
    overhead = statistics.median(http) - statistics.median(raw)
    print(f"| HTTP overhead (p50 difference) | **{overhead:.1f}** | |")
    print(
        json.dumps(
            {
                "http_ms": [percentile(http, 50), percentile(http, 95)],
                "raw_ms": [percentile(raw, 50), percentile(raw, 95)],
            }
        )
    )


if __name__ == "__main__":
    main()
