"""The Ray build's overhead against the single-process build on the same documents, and a scaling table.

Both builds index the same SciFact abstracts with the embedding cache off, so embedding is really timed;
rounds alternate which build runs first. The Ray build runs on a local Ray instance with this machine's cores
(one CPU actor per core); Ray's start-up is timed once and reported apart, since a cluster is up before a
build. From the Ray runs come the per-actor throughput (passages embedded per second of actor time: chunking,
embedding, writing the shard) and the driver's serial time per passage (the final build from the shards:
reading them, FAISS, BM25, publishing). The scaling table is computed from those two measured figures,
assuming actors scale linearly (shards are independent), the final build grows linearly with passages, and
fixed costs (start-up, a few tens of seconds) are left out:

    hours(N, k) = (N / (k * per_actor_rate) + N * serial_seconds_per_passage) / 3600

The GPU row is a projection from a published ratio, not a measurement (there is no GPU here): see GPU_RATIO.

    python bench/ray_build.py [--docs 600] [--rounds 1] [--backend onnx-int8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

from common import SHARED

from embeddings import load_encoder
from embeddings.backends import BACKENDS, NEW_INDEX_BACKEND
from indexer import ChunkingConfig, build_index
from indexer.ray_build import RayOptions, build_index_with_ray, ray_session
from semqa.settings import Settings

SCIFACT = SHARED / "scifact" / "corpus.jsonl"
# sentence-transformers' published speeds for all-MiniLM-L6-v2: 14,200 sentences/s on a V100 GPU against
# 750 on CPU (sbert.net, pretrained models table). Applied to this machine's measured single-process rate,
# so "one GPU actor" reads as "about 19 times this 2-core machine": an order of magnitude, not a measurement
# (their figures are for short sentences, ours are 128-token passages, and their CPU is not named).
GPU_RATIO = 14_200 / 750
SIZES = (1_000_000, 10_000_000)
WORKERS = (1, 4, 16, 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=600, help="SciFact abstracts to index")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=NEW_INDEX_BACKEND,
        help="encoder backend (default: a new index's)",
    )
    args = parser.parse_args()

    # The ONNX exports come from (and are made once into) the configured cache folder.
    load = partial(load_encoder, "", "", backend=args.backend, cache_dir=Settings().cache_dir)
    encoder = load()
    chunking = ChunkingConfig()
    local: list[float] = []  # chunks/s
    distributed: list[float] = []
    per_actor: list[float] = []  # passages per second of actor time
    serial: list[float] = []  # driver seconds per passage
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        sample = scratch / "scifact.jsonl"
        with SCIFACT.open() as source:
            sample.write_text("".join(line for _, line in zip(range(args.docs), source)))
        started = time.perf_counter()
        with ray_session(""):
            ray_start = time.perf_counter() - started

            def run_local(round_: int) -> int:
                report = build_index(
                    [sample], index_dir=scratch / f"local{round_}", encoder=encoder, chunking=chunking
                )
                local.append(report.chunks / report.seconds)
                return report.chunks

            def run_ray(round_: int) -> int:
                result = build_index_with_ray(
                    [sample],
                    index_dir=scratch / f"ray{round_}",
                    encoder=encoder,
                    load_encoder=partial(load, 1),
                    chunking=chunking,
                    options=RayOptions(),
                    cache_dir=scratch / f"ray-cache{round_}",  # fresh: no finished shards
                    use_cache=False,
                )
                report = result.build
                distributed.append(report.chunks / report.seconds)
                per_actor.append(report.embedded / result.actor_seconds)
                serial.append(result.final_seconds / report.chunks)
                return report.chunks

            for round_ in range(args.rounds):
                steps = (run_local, run_ray) if round_ % 2 == 0 else (run_ray, run_local)
                chunks = max(step(round_) for step in steps)  # the same count from both
    local_m, ray_m = statistics.median(local), statistics.median(distributed)
    rate, overhead = statistics.median(per_actor), statistics.median(serial)
    cores = os.cpu_count() or 1
    print(f"Measured on {args.docs} SciFact abstracts ({chunks} passages), cache off, {cores} cores, "
          f"median of {args.rounds} round(s); Ray start-up {ray_start:.1f} s (not in the builds).\n")  # fmt: skip
    print("| build | passages/s | ratio to single-process |")
    print("|---|---:|---:|")
    print(f"| single process (`semqa index`) | {local_m:.1f} | 1.00 |")
    print(f"| Ray, local instance, {cores} CPU actors | {ray_m:.1f} | {ray_m / local_m:.2f} |")
    print(f"\nBackend {encoder.backend}. Per-actor rate {rate:.1f} passages/s (1 CPU, 1 thread), driver serial part "
          f"{overhead * 1000:.2f} ms/passage.\n")  # fmt: skip
    print("| workers | " + " | ".join(f"hours for {n // 1_000_000}M passages" for n in SIZES) + " |")
    print("|---|" + "---:|" * len(SIZES))
    for k in WORKERS:
        print(
            f"| {k} CPU | "
            + " | ".join(f"{(n / (k * rate) + n * overhead) / 3600:.1f}" for n in SIZES)
            + " |"
        )
    gpu = local_m * GPU_RATIO
    print(
        "| 1 GPU (projected) | " + " | ".join(f"{(n / gpu + n * overhead) / 3600:.1f}" for n in SIZES) + " |"
    )
    print(json.dumps({
        "docs": args.docs, "passages": chunks, "ray_start_s": ray_start, "local_cps": local, "ray_cps": distributed,
        "per_actor_cps": per_actor, "serial_s_per_passage": serial, "gpu_ratio": GPU_RATIO,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
