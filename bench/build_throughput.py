"""Index build throughput beside raw model.encode throughput on the same chunks, in one run.

The build (read, chunk, embed without cache, write FAISS + chunk store, publish) should run at >= 0.9 of
the raw encoder's speed: everything but embedding must be noise. Rounds alternate which of the two
runs first, so that machine noise (and any warm-up) hits both alike; medians are reported, and the ratio
is the median of the per-round ratios.

    python bench/build_throughput.py [--corpus corpus] [--scifact-docs 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from indexer import ChunkingConfig, build_index, read_corpus
from indexer.chunking import chunk_document
from semqa.settings import Settings
from server.retrieval import configured_encoder

SCIFACT = Path(__file__).resolve().parent.parent.parent / "shared" / "eval" / "scifact" / "corpus.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("corpus"))
    parser.add_argument(
        "--scifact-docs", type=int, default=300, help="also index this many SciFact abstracts (0: none)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        paths = [args.corpus]
        if args.scifact_docs and SCIFACT.is_file():
            sample = Path(scratch) / "scifact.jsonl"
            with SCIFACT.open() as source:
                sample.write_text("".join(line for _, line in zip(range(args.scifact_docs), source)))
            paths.append(sample)
        encoder = configured_encoder(Settings(), None)
        config = ChunkingConfig()
        texts = [c.text for d in read_corpus(paths).documents for c in chunk_document(d, encoder, config)]
        encoder.encode(texts[:64])  # warm up
        raw: list[float] = []
        build: list[float] = []

        def run_raw() -> None:
            started = time.perf_counter()
            encoder.encode(texts)
            raw.append(len(texts) / (time.perf_counter() - started))

        def run_build() -> None:
            index_dir = Path(scratch) / f"index{len(build)}"
            report = build_index(paths, index_dir=index_dir, encoder=encoder, chunking=config)
            assert report.chunks == len(texts)
            build.append(report.chunks_per_second)

        for round_ in range(args.rounds):
            for step in (run_raw, run_build) if round_ % 2 == 0 else (run_build, run_raw):
                step()
    raw_m, build_m = statistics.median(raw), statistics.median(build)
    ratio = statistics.median(b / r for b, r in zip(build, raw, strict=True))
    print(f"| what | chunks | chunks/s (median of {args.rounds}) |")
    print("|---|---:|---:|")
    print(f"| raw `encoder.encode` | {len(texts)} | {raw_m:.1f} |")
    print(f"| `semqa index` pipeline (no cache) | {len(texts)} | {build_m:.1f} |")
    print(f"| ratio build / raw (median of per-round ratios) | | **{ratio:.3f}** |")
    print(json.dumps({"chunks": len(texts), "raw_cps": raw, "build_cps": build, "ratio": ratio}))


if __name__ == "__main__":
    main()
