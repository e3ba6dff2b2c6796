"""Soak: concurrent clients against a 2-worker `semqa serve`, mixing questions with upserts and deletes.

16 plain client threads on loopback (``requests``, no retries: a 503 is an error like any other) send a
bounded number of requests: mostly questions, 20% writes: upserts of new documents and deletes of
documents they wrote before. At the end every acknowledged upsert that was not deleted must be searchable
(by its unique marker word) and readable, and every deleted document must be gone. Prints throughput and
latency percentiles; exits 1 on any error or lost write. ``--dataset scifact`` serves SciFact (5,183
abstracts, 18k passages) instead of the corpus.

    python bench/soak.py [--clients 16] [--requests 1600] [--workers 2] [--dataset corpus|scifact]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from common import REPO, SHARED, percentile, run_clients

from semqa.launch import running_server

KEY = "soak-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
QUESTIONS = [
    "In which city is the 2020 China Space Conference held?",
    "How many Long March launch attempts has China made?",
    "Which relay satellites upgraded the relay satellite system?",
    "Who attended the preparatory meeting in Beijing?",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=1600, help="in total, over all clients")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--write-share", type=float, default=0.2, help="share of requests that write")
    parser.add_argument("--dataset", choices=["corpus", "scifact"], default="corpus")
    args = parser.parse_args()

    lock = threading.Lock()
    latencies: dict[str, list[float]] = {"ask": [], "upsert": [], "delete": []}
    errors: list[str] = []
    alive: set[str] = set()  # acknowledged upserts not deleted since
    deleted: set[str] = set()

    with tempfile.TemporaryDirectory() as scratch:
        index_dir = Path(scratch) / "index"
        env = {
            "SEMQA_API_KEYS": KEY,
            "SEMQA_RATE_LIMIT": "",
            "SEMQA_WRITE_RATE_LIMIT": "",
            "SEMQA_QUIET": "1",
        }
        if args.dataset == "scifact":
            env["SEMQA_CORPUS"] = str(SHARED / "scifact" / "corpus.jsonl")
        else:
            shutil.copytree(REPO / "corpus", Path(scratch) / "corpus")
            env["SEMQA_CORPUS"] = str(Path(scratch) / "corpus")
        with running_server(
            ["--index-dir", str(index_dir), "--workers", str(args.workers)], env=env
        ) as server:

            def client(number: int, count: int) -> None:
                rng = random.Random(number)
                session = requests.Session()

                def send(method: str, path: str, **kwargs: object) -> requests.Response:
                    """As a plain client: once, whatever the answer."""
                    return session.request(method, server.url + path, timeout=120, **kwargs)

                mine: list[str] = []
                for i in range(count):
                    roll = rng.random()
                    started = time.perf_counter()
                    try:
                        if roll < args.write_share / 2 or (roll < args.write_share and not mine):
                            doc_id = f"soak/{number}/{i}"
                            marker = f"zq{number}x{i}marker"
                            body = {
                                "documents": [{"id": doc_id, "text": f"Soak note {marker} about module {i}."}]
                            }
                            response = send("POST", "/documents", json=body, headers=AUTH)
                            kind = "upsert"
                            if response.status_code == 200:
                                mine.append(doc_id)
                                with lock:
                                    alive.add(doc_id)
                        elif roll < args.write_share:
                            doc_id = mine.pop(rng.randrange(len(mine)))
                            response = send("DELETE", "/documents/" + doc_id, headers=AUTH)
                            kind = "delete"
                            if response.status_code == 200:
                                with lock:
                                    alive.discard(doc_id)
                                    deleted.add(doc_id)
                        else:
                            body = {"question": rng.choice(QUESTIONS), "top_k": 5}
                            response = session.post(server.url + "/ask", json=body, timeout=120)
                            kind = "ask"
                    except requests.RequestException as exc:
                        with lock:
                            errors.append(f"client {number}: {exc}")
                        continue
                    elapsed = (time.perf_counter() - started) * 1000
                    with lock:
                        latencies[kind].append(elapsed)
                        if response.status_code != 200:
                            errors.append(f"{kind} -> {response.status_code} {response.text[:200]}")

            per_client = args.requests // args.clients
            seconds = run_clients(lambda n: client(n, per_client), args.clients)

            lost = []
            for doc_id in sorted(alive):
                marker = "zq{}x{}marker".format(*doc_id.split("/")[1:])
                found = requests.post(
                    server.url + "/ask", json={"question": marker, "mode": "lexical", "top_k": 1}, timeout=60
                ).json()["passages"]
                readable = requests.get(server.url + "/documents/" + doc_id, timeout=60).status_code == 200
                if not found or found[0]["document_id"] != doc_id or not readable:
                    lost.append(doc_id)
            resurrected = [
                d
                for d in sorted(deleted)
                if requests.get(server.url + "/documents/" + d, timeout=60).status_code != 404
            ]

    total = sum(len(v) for v in latencies.values())
    print(
        f"{args.clients} clients, {args.workers} workers, {total} requests in {seconds:.1f} s: {total / seconds:.1f} req/s"
    )
    print("| kind | count | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    for kind, values in latencies.items():
        print(f"| {kind} | {len(values)} | {percentile(values, 50):.0f} | {percentile(values, 99):.0f} |")
    print(
        f"errors: {len(errors)}; acknowledged and kept: {len(alive)}, lost: {len(lost)}; deleted: {len(deleted)}, back: {len(resurrected)}"
    )
    for line in errors[:10]:
        print("  " + line)
    print(
        json.dumps(
            {
                "requests": total,
                "seconds": seconds,
                "errors": len(errors),
                "lost": lost,
                "resurrected": resurrected,
            }
        )
    )
    return 1 if errors or lost or resurrected else 0


if __name__ == "__main__":
    sys.exit(main())
