"""Resident memory per gunicorn worker, for the corpus and for SciFact, two workers each.

RSS counts every page a worker touches, shared or not; PSS splits shared pages between the processes
that map them, so the PSS of the workers adds up to what they really cost together. The FAISS file is
memory-mapped, so its pages are shared (and counted once in the PSS sum).

    python bench/memory.py
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import requests
from common import SHARED, build_cached, rollup, worker_pids

from semqa.launch import running_server
from semqa.settings import Settings
from server.retrieval import configured_encoder


def measure(name: str, corpus: Path) -> dict[str, object]:
    encoder = configured_encoder(Settings(), None)
    with tempfile.TemporaryDirectory() as scratch:
        index_dir = Path(scratch) / "index"
        report = build_cached(corpus, index_dir, encoder)
        faiss_mb = (report.generation_dir / "dense" / "dense.faiss").stat().st_size / 2**20
        with running_server(
            ["--index-dir", str(index_dir), "--workers", "2"], env={"SEMQA_RATE_LIMIT": ""}
        ) as server:
            for _ in range(20):  # touch the index in both workers
                requests.post(server.url + "/ask", json={"question": "What causes disease?"}, timeout=60)
            stats = [rollup(pid) for pid in worker_pids(server.process.pid)]
    return {
        "dataset": name,
        "chunks": report.chunks,
        "faiss_mb": round(faiss_mb, 1),
        "rss_mb": [round(s["Rss"] / 1024) for s in stats],
        "pss_mb": [round(s["Pss"] / 1024) for s in stats],
        "shared_mb": [round((s["Shared_Clean"] + s["Shared_Dirty"]) / 1024) for s in stats],
    }


def main() -> None:
    rows = [measure("corpus", Path("corpus"))]
    if (SHARED / "scifact").is_dir():
        rows.append(measure("scifact", SHARED / "scifact" / "corpus.jsonl"))
    print(
        "| dataset | chunks | dense.faiss MB | RSS per worker MB | PSS per worker MB | shared per worker MB |"
    )
    print("|---|---:|---:|---|---|---|")
    for r in rows:
        print(
            f"| {r['dataset']} | {r['chunks']} | {r['faiss_mb']} | {r['rss_mb']} | {r['pss_mb']} | {r['shared_mb']} |"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
