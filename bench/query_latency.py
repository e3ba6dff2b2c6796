"""Query latency per mode over HTTP (gunicorn) beside the raw search time of the same queries, in one run.

For each dataset (the corpus; SciFact when ../shared is there) an index is built (embeddings come from the
cache), `semqa serve` is started, and every mode answers the same questions over HTTP and in process,
interleaved so that machine noise hits all alike. Beside them, per question: the question's encoding alone
(``encoder.encode([question])``, what every dense or hybrid answer starts with) and hybrid in process with
the fusion alone (``RetrievalConfig(ranker=None)``). So: HTTP p50 - encode p50 is everything but the model
call; HTTP - in process is what the HTTP layer costs; the per-question difference model - fusion is what
the ranking model costs.

    python bench/query_latency.py [--requests 200] [--no-scifact]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import requests
from common import REPO, SHARED, build_cached, corpus_questions, percentile

from indexer import IndexReader
from semqa.launch import running_server
from semqa.settings import MODES, Settings
from server.retrieval import Searcher, SearchOptions, configured_encoder
from server.retrieval.search import RetrievalConfig


def scifact_questions(limit: int) -> list[str]:
    with (SHARED / "scifact" / "queries_train.jsonl").open() as handle:
        return [json.loads(line)["text"] for line, _ in zip(handle, range(limit))]


def measure(
    name: str, corpus: Path, questions: list[str], args: argparse.Namespace
) -> list[dict[str, object]]:
    encoder = configured_encoder(Settings(), None)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        index_dir = Path(scratch) / "index"
        build_cached(corpus, index_dir, encoder)
        reader = IndexReader(
            index_dir,
            model_sha256=encoder.weights_sha256,
            dimension=encoder.dimension,
            backend=encoder.backend,
        )
        searcher = Searcher(encoder, reader)
        fusion_only = Searcher(encoder, reader, RetrievalConfig(ranker=None))
        batch = [questions[i % len(questions)] for i in range(args.requests)]
        timed: dict[str, list[float]] = {}

        def record(key: str, i: int, started: float) -> None:
            if i >= args.warmup:
                timed.setdefault(key, []).append((time.perf_counter() - started) * 1000)

        with running_server(
            ["--index-dir", str(index_dir), "--workers", "1"],
            # the limiter stays on (its cost is part of the request path), with a budget no run reaches
            env={"SEMQA_QUIET": "1", "SEMQA_RATE_LIMIT": "1000000 per minute"},
        ) as server:
            session = requests.Session()
            for i, question in enumerate(batch):
                started = time.perf_counter()
                encoder.encode([question])
                record("encode", i, started)
                for mode in MODES:
                    body = {"question": question, "top_k": args.top_k, "mode": mode}
                    started = time.perf_counter()
                    session.post(server.url + "/ask", json=body, timeout=60).raise_for_status()
                    record(f"http {mode}", i, started)
                    started = time.perf_counter()
                    searcher.search(question, args.top_k, SearchOptions(mode=mode))  # type: ignore[arg-type]
                    record(f"raw {mode}", i, started)
                started = time.perf_counter()
                fusion_only.search(question, args.top_k, SearchOptions(mode="hybrid"))
                record("raw fusion", i, started)
    encode = percentile(timed["encode"], 50)
    model_cost = [m - f for m, f in zip(timed["raw hybrid"], timed["raw fusion"], strict=True)]
    for mode in MODES:
        http, raw = timed[f"http {mode}"], timed[f"raw {mode}"]
        rows.append(
            {
                "dataset": name,
                "chunks": reader.view.store.chunk_count,
                "mode": mode,
                "http_p50": percentile(http, 50),
                "http_p95": percentile(http, 95),
                "raw_p50": percentile(raw, 50),
                "raw_p95": percentile(raw, 95),
                "encode_p50": encode if mode != "lexical" else 0.0,  # lexical mode embeds nothing
                "model_cost_p50": percentile(model_cost, 50) if mode == "hybrid" else None,
            }
        )
    return rows


def parse_request_arguments(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The options of the latency benchmarks (how many questions, warm-up, ``top_k``, which datasets)."""
    parser.add_argument("--requests", type=int, default=200, help="questions per mode and dataset")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--no-scifact", action="store_true")
    args = parser.parse_args()
    if args.requests <= args.warmup:
        parser.error("--requests must be larger than --warmup")
    return args


def main() -> None:
    args = parse_request_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    rows = measure("corpus", REPO / "corpus", corpus_questions(), args)
    if not args.no_scifact and (SHARED / "scifact").is_dir():
        rows += measure(
            "scifact", SHARED / "scifact" / "corpus.jsonl", scifact_questions(args.requests), args
        )
    print(f"{args.requests - args.warmup} timed questions per row, top_k={args.top_k}, 1 gunicorn worker")
    print(
        "| dataset | chunks | mode | HTTP p50 ms | HTTP p95 ms | in process p50 ms | in process p95 ms "
        "| encode p50 ms | HTTP - encode p50 ms | HTTP - in process p50 ms |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['dataset']} | {r['chunks']} | {r['mode']} | {r['http_p50']:.1f} | {r['http_p95']:.1f} | "
            f"{r['raw_p50']:.1f} | {r['raw_p95']:.1f} | {r['encode_p50']:.1f} | "
            f"{r['http_p50'] - r['encode_p50']:.1f} | {r['http_p50'] - r['raw_p50']:.1f} |"
        )
    for r in rows:
        if r["model_cost_p50"] is not None:
            print(
                f"{r['dataset']}: ranking model cost in process (p50 of model - fusion) {r['model_cost_p50']:+.2f} ms"
            )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
