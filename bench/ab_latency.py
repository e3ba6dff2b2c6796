"""`POST /ask` latency of this checkout against another commit's, in one run, on the same index.

These machines are noisy: `bench/query_latency.py` moved by a third between two runs an hour apart with
no change to the code. A change to the request path is judged here instead: a `semqa serve` of each
commit (one worker each, the other commit's from a `git worktree` of it), both on the same index, asked
the same questions in turn by one `requests` session each, the order alternating per question, so that
noise hits both alike. Reported per dataset and mode: each server's p50, the ratio, and the median of the
per-question differences. The index is built by this checkout's code, so the base commit must read its
format; with ``--own-index`` each commit serves an index its own code built (`semqa index` from its
checkout, embeddings from the same cache), which is how a change to the index's format is judged.

    python bench/ab_latency.py --base <commit> [--requests 200] [--no-scifact] [--own-index]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from common import REPO, SHARED, build_cached, corpus_questions, percentile
from query_latency import parse_request_arguments, scifact_questions

from semqa.launch import running_server
from semqa.settings import MODES, Settings
from server.retrieval import configured_encoder


def measure(
    name: str, corpus: Path, questions: list[str], base_tree: Path, args: argparse.Namespace
) -> list[dict[str, object]]:
    encoder = configured_encoder(Settings(), None)
    with tempfile.TemporaryDirectory() as scratch:
        index_dir = base_index = Path(scratch) / "index"
        build_cached(corpus, index_dir, encoder)
        del encoder
        # The limiter stays on (its cost is part of the request path), with a budget no run reaches.
        # The cache as an absolute path: the base runs from its worktree, where a relative one is empty.
        env = {
            "SEMQA_QUIET": "1",
            "SEMQA_RATE_LIMIT": "1000000 per minute",
            "SEMQA_CACHE_DIR": str(Settings().cache_dir.resolve()),
        }
        if args.own_index:
            base_index = Path(scratch) / "base-index"
            command = [
                sys.executable,
                "-m",
                "semqa.cli",
                "index",
                str(corpus),
                "--index-dir",
                str(base_index),
            ]
            subprocess.run(command, cwd=base_tree, env={**os.environ, **env}, check=True)
        with (
            running_server(
                ["--index-dir", str(base_index), "--workers", "1"], env=env, cwd=base_tree
            ) as base,
            running_server(["--index-dir", str(index_dir), "--workers", "1"], env=env) as head,
        ):
            servers = {"base": (base.url, requests.Session()), "head": (head.url, requests.Session())}
            timed: dict[tuple[str, str], list[float]] = {}
            for i in range(args.requests):
                question = questions[i % len(questions)]
                for mode in MODES:
                    order = ["base", "head"] if i % 2 == 0 else ["head", "base"]
                    for which in order:
                        url, session = servers[which]
                        body = {"question": question, "top_k": args.top_k, "mode": mode}
                        started = time.perf_counter()
                        session.post(url + "/ask", json=body, timeout=60).raise_for_status()
                        if i >= args.warmup:
                            timed.setdefault((which, mode), []).append((time.perf_counter() - started) * 1000)
    rows = []
    for mode in MODES:
        before, after = timed[("base", mode)], timed[("head", mode)]
        rows.append(
            {
                "dataset": name,
                "mode": mode,
                "base_p50": percentile(before, 50),
                "head_p50": percentile(after, 50),
                "median_difference": statistics.median(h - b for h, b in zip(after, before, strict=True)),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare this checkout with")
    parser.add_argument(
        "--own-index", action="store_true", help="the base serves an index built by its own code"
    )
    args = parse_request_arguments(parser)
    with tempfile.TemporaryDirectory(prefix="semqa-base-") as tree:
        base_tree = Path(tree) / "checkout"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(base_tree), args.base], check=True
        )
        try:
            rows = measure("corpus", REPO / "corpus", corpus_questions(), base_tree, args)
            if not args.no_scifact and (SHARED / "scifact").is_dir():
                scifact = SHARED / "scifact" / "corpus.jsonl"
                rows += measure("scifact", scifact, scifact_questions(args.requests), base_tree, args)
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(base_tree)], check=True
            )
    print(f"{args.requests - args.warmup} timed questions per row, top_k={args.top_k}, base {args.base}")
    print("| dataset | mode | base p50 ms | this checkout p50 ms | ratio | median paired difference ms |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['dataset']} | {r['mode']} | {r['base_p50']:.1f} | {r['head_p50']:.1f} | "
            f"{r['head_p50'] / r['base_p50']:.2f} | {r['median_difference']:+.1f} |"  # type: ignore[operator]
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
