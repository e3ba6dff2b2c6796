"""semqa beside txtai on SciFact, in one run: build documents/s, and query p50/p95 ms and nDCG@10.

txtai lives in its own virtualenv outside the repository (made on first use: torch==2.13.0 first, so that pip
does not resolve a CUDA build, then txtai 9.14 and faiss-cpu; never a project dependency) and is driven by
bench/peer_txtai_driver.py with txtai's defaults and the same model folder semqa loads (the packaged
all-MiniLM-L6-v2, a local path: nothing is downloaded).

Builds: each round builds semqa (`semqa index`, default settings, a fresh embedding cache so that it embeds
everything; the one-time ONNX export of the weights is made once beforehand and copied in) and txtai
(``Embeddings(path=MODEL, content=True)``, ``index`` + ``save``) on the same documents, in alternating order;
documents/s is the median over the rounds, of the whole process (start, model load, build, save) and of the
build alone as each tool reports it. txtai's hybrid index (its BM25 scoring beside the vectors) is built once.

Queries: the first ``--queries`` SciFact train queries (with relevance judgements), ten documents each:
semqa `POST /ask` to a running `semqa serve` (one worker; top_k 10, group_by_document, as its BEIR evaluation
asks), semqa in process (the same search), and txtai in process (``embeddings.search``), dense and hybrid,
each question asked of every system in turn (rotating order) so that machine noise hits all alike; p50/p95
are medians over the rounds. "txtai dense, every IVF cell" is a quality reference (exact search over the same
vectors), not a default.

    python bench/peer_txtai.py [--docs N] [--rounds 3] [--build-rounds N] [--queries 300]
                               [--venv /work/txtai-venv] [--lock FILE] [--json OUT]

``--build-rounds 1`` times the queries over ``--rounds`` rounds after one build of each (a query run after
a change to the search path only; its build figures are then one round's).

``--lock FILE`` takes an exclusive flock on FILE around each CPU-heavy step (install, each build, the query
rounds), so that other benchmarks that take the same lock never overlap them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import requests
from common import REPO, SHARED, percentile

from embeddings.files import file_lock
from embeddings.model import default_model_path
from embeddings.onnx_export import EXPORTS
from semqa.evaluation import ndcg_at_k, read_beir
from semqa.launch import running_server
from semqa.settings import Settings
from server.retrieval import SearchOptions, configured_encoder, load_searcher

DRIVER = Path(__file__).resolve().parent / "peer_txtai_driver.py"
TXTAI_PINS = ("txtai==9.14.*", "txtai>=9,<10")  # the version the issue compares with, else the nearest 9.x
TOP_K = 10
WARMUP = 10
ENCODE_ONLY = "semqa question encode alone"  # timed beside the searches; no ranking, so no nDCG
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

Ask = Callable[[str], tuple[float, list[str]]]  # question -> (ms, document ids best first)


def cpu_turn(lock: Path | None) -> AbstractContextManager[None]:
    """Hold ``lock`` (an exclusive flock) for the duration, when one is given."""
    return nullcontext() if lock is None else file_lock(lock)


def txtai_version(python: Path) -> str | None:
    probe = subprocess.run(
        [str(python), "-c", "import faiss, txtai.version as v; print(v.__version__)"],
        check=False,
        capture_output=True,
        text=True,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def ensure_venv(venv: Path, lock: Path | None) -> tuple[Path, str]:
    """txtai's python and version, installing it into ``venv`` first when it is not there."""
    python = venv / "bin" / "python"
    if python.is_file() and (version := txtai_version(python)):
        return python, version
    with cpu_turn(lock):
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "torch==2.13.0"], check=True)  # first: the CPU build, not CUDA
        for pin in TXTAI_PINS:
            if subprocess.run([*pip, pin, "faiss-cpu"], check=False).returncode == 0:
                break
        else:
            raise SystemExit(f"could not install txtai into {venv} ({' or '.join(TXTAI_PINS)})")
    version = txtai_version(python)
    if not version:
        raise SystemExit(f"txtai installed into {venv} but does not import")
    return python, version


def write_subset(source: Path, target: Path, limit: int | None) -> set[str]:
    """Copy the first ``limit`` records (all when None) of a BEIR corpus.jsonl; their ids."""
    ids = set()
    with source.open(encoding="utf-8") as src, target.open("w", encoding="utf-8") as out:
        for line in src:
            if not line.strip():
                continue
            if limit is not None and len(ids) >= limit:
                break
            ids.add(str(json.loads(line)["_id"]))
            out.write(line)
    return ids


def questions_for(doc_ids: set[str], limit: int) -> tuple[list[tuple[str, str]], dict[str, dict[str, int]]]:
    """The first ``limit`` train queries with a relevant document among ``doc_ids``, and their judgements
    restricted to those documents."""
    data = read_beir(SHARED / "scifact", "train")
    qrels = {q: {d: g for d, g in rel.items() if d in doc_ids} for q, rel in data.qrels.items()}
    chosen = [(q, text) for q, text in data.queries.items() if any(g > 0 for g in qrels[q].values())]
    return chosen[:limit], qrels


def timed_run(command: list[str], what: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """``command`` run offline with its output captured, and its wall time in seconds; stops the benchmark
    if it fails."""
    started = time.perf_counter()
    done = subprocess.run(command, check=False, capture_output=True, text=True, env={**os.environ, **OFFLINE})
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{what} failed:\n{done.stderr}")
    return done, wall


def build_semqa(corpus: Path, index_dir: Path, cache_dir: Path, exports: Path) -> dict[str, Any]:
    """`semqa index` with default settings into an empty embedding cache (the ONNX export copied in)."""
    cache_dir.mkdir(parents=True)
    if exports.is_dir():
        shutil.copytree(exports, cache_dir / EXPORTS)
    command = [sys.executable, "-m", "semqa.cli", "index", str(corpus), "--index-dir", str(index_dir)]
    done, wall = timed_run([*command, "--cache-dir", str(cache_dir), "--quiet"], "semqa index")
    report = re.search(
        r"indexed (\d+) documents into (\d+) chunks \((\d+) embedded.*?, ([\d.]+) s,", done.stderr
    )
    if not report:
        raise SystemExit(f"semqa index printed no report:\n{done.stderr}")
    documents, chunks, embedded, seconds = report.groups()
    return {
        "documents": int(documents),
        "chunks": int(chunks),
        "embedded": int(embedded),
        "build_s": float(seconds),
        "process_s": wall,
    }


def build_txtai(python: Path, corpus: Path, out: Path, model: Path, hybrid: bool = False) -> dict[str, Any]:
    command = [str(python), str(DRIVER), "build", str(corpus), str(out), str(model)]
    done, wall = timed_run(command + (["--hybrid"] if hybrid else []), "txtai build")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "documents": report["documents"],
        "build_s": report["seconds"],
        "process_s": wall,
        "config": report["config"],
    }


class TxtaiSearch:
    """The driver's search loop in txtai's virtualenv, one JSON line per question each way."""

    def __init__(self, python: Path, dense: Path, hybrid: Path) -> None:
        self.process = subprocess.Popen(
            [str(python), str(DRIVER), "search", str(dense), str(hybrid)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **OFFLINE},
        )
        self.config = json.loads(self._line())

    def _line(self) -> str:
        stdout: IO[str] = self.process.stdout  # type: ignore[assignment]
        line = stdout.readline()
        if not line:
            raise SystemExit(f"txtai search exited {self.process.wait()}")
        return line

    def asker(self, index: str, exact: bool = False) -> Ask:
        def ask(question: str) -> tuple[float, list[str]]:
            stdin: IO[str] = self.process.stdin  # type: ignore[assignment]
            stdin.write(
                json.dumps({"index": index, "query": question, "limit": TOP_K, "exact": exact}) + "\n"
            )
            stdin.flush()
            answer = json.loads(self._line())
            return answer["ms"], [str(i) for i in answer["ids"]]

        return ask

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def http_asker(session: requests.Session, url: str, mode: str) -> Ask:
    def ask(question: str) -> tuple[float, list[str]]:
        body = {"question": question, "top_k": TOP_K, "mode": mode, "group_by_document": True}
        started = time.perf_counter()
        response = session.post(url + "/ask", json=body, timeout=60)
        ms = (time.perf_counter() - started) * 1000
        response.raise_for_status()
        return ms, [p["document_id"] for p in response.json()["passages"]]

    return ask


def timed(search: Callable[[str], list[str]]) -> Ask:
    def ask(question: str) -> tuple[float, list[str]]:
        started = time.perf_counter()
        ids = search(question)
        return (time.perf_counter() - started) * 1000, ids

    return ask


def run_queries(
    systems: dict[str, Ask],
    questions: list[tuple[str, str]],
    qrels: dict[str, dict[str, int]],
    rounds: int,
) -> list[dict[str, Any]]:
    """Every question asked of every system in turn (the order rotates per question), ``rounds`` times after
    a warm-up; per system the median over rounds of each round's p50 and p95, and nDCG@10 (deterministic)."""
    names = list(systems)
    for _, question in questions[:WARMUP]:
        for name in names:
            systems[name](question)
    timings: dict[str, list[list[float]]] = {name: [] for name in names}
    ndcg: dict[str, list[float]] = {}
    for _ in range(rounds):
        per_round: dict[str, list[float]] = {name: [] for name in names}
        ndcg = {name: [] for name in names}
        for i, (query_id, question) in enumerate(questions):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                ms, ids = systems[name](question)
                per_round[name].append(ms)
                ndcg[name].append(ndcg_at_k(list(dict.fromkeys(ids)), qrels[query_id], 10))
        for name in names:
            timings[name].append(per_round[name])
    rows = []
    for name in names:
        rows.append(
            {
                "system": name,
                "p50_ms": statistics.median(percentile(t, 50) for t in timings[name]),
                "p95_ms": statistics.median(percentile(t, 95) for t in timings[name]),
                "p50_ms_rounds": [percentile(t, 50) for t in timings[name]],
                "nDCG@10": None if name == ENCODE_ONLY else statistics.fmean(ndcg[name]),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, help="only the first N SciFact documents (a quick check)")
    parser.add_argument("--rounds", type=int, default=3, help="query rounds, and build rounds (default 3)")
    parser.add_argument("--build-rounds", type=int, help="build rounds, if not --rounds")
    parser.add_argument("--queries", type=int, default=300, help="SciFact train queries (default 300)")
    parser.add_argument("--venv", type=Path, default=Path("/work/txtai-venv"), help="txtai's virtualenv")
    parser.add_argument("--lock", type=Path, help="flock this file around each CPU-heavy step")
    parser.add_argument(
        "--json", type=Path, default=REPO / ".semqa" / "bench" / "peer_txtai.json", help="where to write JSON"
    )
    args = parser.parse_args()
    if not (SHARED / "scifact" / "corpus.jsonl").is_file():
        raise SystemExit(f"needs the SciFact train split in {SHARED / 'scifact'}")
    build_rounds = args.build_rounds or args.rounds
    python, version = ensure_venv(args.venv, args.lock)
    model = default_model_path()
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "txtai": version,
        "model": str(model),
        "rounds": args.rounds,
        "build_rounds": build_rounds,
    }
    with tempfile.TemporaryDirectory(prefix="peer-txtai-") as scratch_name:
        scratch = Path(scratch_name)
        corpus = scratch / "corpus.jsonl"
        doc_ids = write_subset(SHARED / "scifact" / "corpus.jsonl", corpus, args.docs)
        questions, qrels = questions_for(doc_ids, args.queries)
        results |= {"documents": len(doc_ids), "queries": len(questions)}
        # Untimed warm-up of both (page cache, imports); semqa's also makes the ONNX export once.
        seed = scratch / "seed.jsonl"
        write_subset(corpus, seed, 20)
        with cpu_turn(args.lock):
            build_semqa(seed, scratch / "seed-semqa", scratch / "seed-cache", scratch / "none")
            build_txtai(python, seed, scratch / "seed-txtai", model)
        exports = scratch / "seed-cache" / EXPORTS
        builds: dict[str, list[dict[str, Any]]] = {"semqa": [], "txtai": []}
        results["builds"] = builds
        for r in range(build_rounds):
            order = ["semqa", "txtai"] if r % 2 == 0 else ["txtai", "semqa"]
            for engine in order:
                with cpu_turn(args.lock):
                    if engine == "semqa":
                        run = build_semqa(corpus, scratch / f"semqa-{r}", scratch / f"cache-{r}", exports)
                    else:
                        run = build_txtai(python, corpus, scratch / f"txtai-{r}", model)
                builds[engine].append(run)
                print(f"round {r + 1} {engine}: {json.dumps(run)}", file=sys.stderr, flush=True)
                save(results, args.json)  # a run cut short keeps the rounds it finished
        with cpu_turn(args.lock):
            hybrid_build = build_txtai(python, corpus, scratch / "txtai-hybrid", model, hybrid=True)
        results["txtai_hybrid_build"] = hybrid_build
        last = build_rounds - 1
        settings = Settings(index_dir=scratch / f"semqa-{last}", cache_dir=scratch / f"cache-{last}")
        with cpu_turn(args.lock):
            encoder = configured_encoder(settings, settings.index_dir)
            searcher = load_searcher(settings, encoder)
            txtai = TxtaiSearch(python, scratch / f"txtai-{last}", scratch / "txtai-hybrid")
            # No rate limit: one benchmark client asks faster than a client's default budget (600 a minute).
            env = {
                "SEMQA_QUIET": "1",
                "SEMQA_CACHE_DIR": str(settings.cache_dir),
                "SEMQA_RATE_LIMIT": "",
                **OFFLINE,
            }
            serve = ["--index-dir", str(settings.index_dir), "--workers", "1"]
            with running_server(serve, env=env) as server, requests.Session() as session:

                def in_process(mode: str) -> Ask:
                    options = SearchOptions(mode=mode, group_by_document=True)  # type: ignore[arg-type]
                    return timed(lambda q: [p.chunk.document_id for p in searcher.search(q, TOP_K, options)])

                def encode_only(question: str) -> list[str]:
                    encoder.encode([question])
                    return []

                systems: dict[str, Ask] = {
                    "semqa /ask over HTTP, hybrid": http_asker(session, server.url, "hybrid"),
                    "semqa /ask over HTTP, dense": http_asker(session, server.url, "dense"),
                    "semqa in process, hybrid": in_process("hybrid"),
                    "semqa in process, dense": in_process("dense"),
                    "txtai in process, hybrid": txtai.asker("hybrid"),
                    "txtai in process, dense": txtai.asker("dense"),
                    "txtai in process, dense, every IVF cell": txtai.asker("dense", exact=True),
                    ENCODE_ONLY: timed(encode_only),
                }
                results["txtai_search_config"] = txtai.config
                results["queries_rows"] = run_queries(systems, questions, qrels, args.rounds)
            txtai.close()
    results["semqa_backend"] = encoder.backend
    print_tables(results)
    save(results, args.json)
    print(f"\nJSON: {args.json}")


def save(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")


def docs_per_s(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(run["documents"] / run[key] for run in runs)


def print_tables(results: dict[str, Any]) -> None:
    builds = results["builds"]
    print(
        f"SciFact train, {results['documents']} documents, {results['queries']} queries, txtai "
        f"{results['txtai']}, semqa backend {results['semqa_backend']}, medians of {results['rounds']} rounds"
    )
    print("\n| build | documents/s, whole process | documents/s, build alone | rounds |")
    print("|---|---:|---:|---:|")
    rows = [
        ("semqa `semqa index` (default settings)", builds["semqa"]),
        ("txtai `Embeddings(path=MODEL, content=True)`", builds["txtai"]),
        ("txtai hybrid (`hybrid=True`)", [results["txtai_hybrid_build"]]),
    ]
    for name, runs in rows:
        print(
            f"| {name} | {docs_per_s(runs, 'process_s'):.1f} | {docs_per_s(runs, 'build_s'):.1f} | {len(runs)} |"
        )
    for key in ("process_s", "build_s"):
        ratio = docs_per_s(builds["semqa"], key) / docs_per_s(builds["txtai"], key)
        print(f"\nsemqa / txtai documents/s ({key.removesuffix('_s')}): {ratio:.2f}x", end="")
    print(f"\n\n| queries (top {TOP_K} documents) | p50 ms | p95 ms | nDCG@10 |")
    print("|---|---:|---:|---:|")
    for row in results["queries_rows"]:
        quality = "-" if row["nDCG@10"] is None else f"{row['nDCG@10']:.3f}"
        print(f"| {row['system']} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {quality} |")


if __name__ == "__main__":
    main()
