"""Questions while documents are being written: `POST /ask` latency beside concurrent upserts, per thread count.

A `semqa serve` (one worker) on a copy of the corpus index takes ``--writers`` plain clients each upserting
``--per-writer`` documents of ``--words`` words, one at a time, while one more client asks a question every
``--ask-every`` seconds (0.05) until the writers are done. Every document is new text (a run's own slice of SciFact's abstracts at a
random offset), and each server has an embedding cache of its own, empty but for the model's ONNX export, so
every passage is embedded: no cache hit makes a write cheap. Clients are
plain ``requests`` calls with no retry, as an outside client sends them. Each thread count of
``--threads`` serves the same load in turn, rounds alternating the order, so that machine noise hits all
alike; reported per thread count: the answers' status codes (any 503 is a write a plain client lost), the
questions' p50 / p90 / max, and the writes' wall time.

With ``--askers N`` there are no writers: N clients ask the dev questions at once, ``--questions-each``
each after an untimed warm-up round (every thread of the server touched), and what is reported is the
questions answered a second and the p50 / p99: what more threads cost when only questions come. Rate
limits are off in both loads.

    python bench/write_load.py [--threads 4,32] [--writers 8] [--words 3000] [--per-writer 3] [--rounds 2]
                               [--ask-every 0.05]
    python bench/write_load.py --askers 8 [--questions-each 60] [--threads 4,32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests
from common import REPO, SHARED, build_cached, corpus_questions, percentile, run_clients

from semqa.launch import running_server
from semqa.settings import Settings
from server.retrieval import configured_encoder

KEY = "bench-write-load"
QUESTION = {"question": "Where is the 2020 China Space Conference held?"}


def abstract_words() -> list[str]:
    with (SHARED / "scifact" / "corpus.jsonl").open() as handle:
        return " ".join(json.loads(line)["text"] for line in handle).split()


def one_load(url: str, words: list[str], args: argparse.Namespace) -> dict[str, object]:
    """The writers and the asker against one running server; what each saw."""
    codes: Counter[str] = Counter()
    asked: list[float] = []
    asked_codes: Counter[str] = Counter()
    offset = random.randrange(len(words))
    auth = {"Authorization": f"Bearer {KEY}"}

    def writer(number: int) -> None:
        for k in range(args.per_writer):
            start = (offset + (number * args.per_writer + k) * args.words) % (len(words) - args.words)
            document = {"id": f"load/{number}/{k}", "text": " ".join(words[start : start + args.words])}
            try:
                answer = requests.post(url + "/documents", json={"documents": [document]}, headers=auth)
                codes[str(answer.status_code)] += 1
            except requests.RequestException as exc:
                codes[type(exc).__name__] += 1

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(args.writers)]
    started = time.perf_counter()
    for thread in writers:
        thread.start()
    while any(thread.is_alive() for thread in writers):
        sent = time.perf_counter()
        answer = requests.post(url + "/ask", json=QUESTION)
        asked.append((time.perf_counter() - sent) * 1000)
        asked_codes[str(answer.status_code)] += 1
        time.sleep(args.ask_every)
    wall = time.perf_counter() - started
    return {"writes": dict(codes), "asks": dict(asked_codes), "asked_ms": asked, "wall_s": wall}


def ask_load(url: str, questions: list[str], args: argparse.Namespace) -> dict[str, object]:
    """``args.askers`` clients asking at once, a warm-up round and then the timed one."""
    asked: list[float] = []
    codes: Counter[str] = Counter()

    def asker(number: int) -> None:
        for k in range(args.questions_each):
            sent = time.perf_counter()
            question = questions[(number + k) % len(questions)]
            answer = requests.post(url + "/ask", json={"question": question})
            asked.append((time.perf_counter() - sent) * 1000)
            codes[str(answer.status_code)] += 1

    for _ in ("warm-up", "timed"):
        asked.clear()
        codes.clear()
        wall = run_clients(asker, args.askers)
    return {"asks": dict(codes), "asked_ms": list(asked), "per_s": len(asked) / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="4,32", help="thread counts per worker to compare")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--words", type=int, default=3000, help="words per document")
    parser.add_argument("--per-writer", type=int, default=3, help="documents each writer upserts")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ask-every", type=float, default=0.05, help="seconds between questions")
    parser.add_argument("--askers", type=int, default=0, help="no writers: this many clients asking at once")
    parser.add_argument("--questions-each", type=int, default=60, help="with --askers: questions per client")
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    words = [] if args.askers else abstract_words()
    questions = corpus_questions()
    settings = Settings()
    encoder = configured_encoder(settings, None)  # makes the ONNX export, if the cache has none yet
    results: dict[int, list[dict[str, object]]] = {t: [] for t in counts}
    with tempfile.TemporaryDirectory() as scratch:
        built = Path(scratch) / "built"
        build_cached(REPO / "corpus", built, encoder)
        for round_number in range(args.rounds):
            for threads in counts if round_number % 2 == 0 else counts[::-1]:
                run = Path(scratch) / f"run-{round_number}-{threads}"
                shutil.copytree(built, run / "index")
                (run / "cache").mkdir()
                (run / "cache" / "onnx").symlink_to(settings.cache_dir / "onnx")
                env = {
                    "SEMQA_API_KEYS": KEY,
                    "SEMQA_QUIET": "1",
                    "SEMQA_CACHE_DIR": str(run / "cache"),
                    "SEMQA_RATE_LIMIT": "",
                    "SEMQA_WRITE_RATE_LIMIT": "",
                }
                arguments = ["--index-dir", str(run / "index"), "--threads", str(threads)]
                with running_server(arguments, env=env) as server:
                    load = (
                        ask_load(server.url, questions, args)
                        if args.askers
                        else one_load(server.url, words, args)
                    )
                    results[threads].append(load)
                shutil.rmtree(run)
    if args.askers:
        title = f"{args.askers} clients asking at once, {args.questions_each} questions each"
        header = "| threads per worker | answered | questions a second, per round | p50 ms | p99 ms |\n|---:|---|---|---:|---:|"

        def row(runs: list[dict[str, object]], asked: list[float]) -> str:
            rates = " / ".join(f"{run['per_s']:.0f}" for run in runs)
            return f"{summed(runs, 'asks')} | {rates} | {percentile(asked, 50):.0f} | {percentile(asked, 99):.0f}"

    else:
        title = (
            f"{args.writers} writers x {args.per_writer} documents of {args.words} words, one question every "
            f"{args.ask_every * 1000:.0f} ms meanwhile"
        )
        header = (
            "| threads per worker | writes answered | questions answered | question p50 ms | p90 ms | max ms "
            "| writes' wall s |\n|---:|---|---|---:|---:|---:|---:|"
        )

        def row(runs: list[dict[str, object]], asked: list[float]) -> str:
            walls = " / ".join(f"{run['wall_s']:.1f}" for run in runs)
            return (
                f"{summed(runs, 'writes')} | {summed(runs, 'asks')} | {percentile(asked, 50):.0f} | "
                f"{percentile(asked, 90):.0f} | {max(asked):.0f} | {walls}"
            )

    print(f"{title}, {args.rounds} rounds\n\n{header}")
    for threads, runs in results.items():
        asked = [ms for run in runs for ms in run["asked_ms"]]  # type: ignore[attr-defined]
        print(f"| {threads} | {row(runs, asked)} |")


def summed(runs: list[dict[str, object]], key: str) -> dict[str, int]:
    """The status codes of ``key`` over all ``runs``, counted."""
    total: Counter[str] = Counter()
    for run in runs:
        total.update(run[key])  # type: ignore[arg-type]
    return dict(total)


if __name__ == "__main__":
    main()
