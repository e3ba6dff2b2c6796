"""Question latency per interface (in process, HTTP, MCP over stdio and HTTP) and batched vs sequential HTTP.

An index of the corpus is built (embeddings come from the cache), then `semqa serve --workers 1`,
`semqa mcp --http` and `semqa mcp` over stdio (launched by the MCP SDK's stdio client) are started, one
MCP session each kept open. Every question is asked through every interface in hybrid mode, interleaved
and in a rotating order so that machine noise hits all alike; each interface's p50 is compared with the
in-process p50 of the same run. After every group of questions, the group is asked once as one
`POST /query` and once as sequential `POST /ask` calls (alternating which goes first).

    python bench/interfaces.py [--requests 110] [--warmup 10] [--group-size 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
import requests
from common import REPO, build_cached, corpus_questions, percentile
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from semqa.launch import running_server
from semqa.settings import Settings
from server.retrieval import Searcher, configured_encoder, load_searcher

INTERFACES = ("in process", "HTTP /ask", "MCP stdio", "MCP HTTP")
TOOL = "search_passages"


def ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


async def measure(questions: list[str], args: argparse.Namespace) -> dict[str, Any]:
    encoder = configured_encoder(Settings(), None)
    env = {"SEMQA_QUIET": "1"}
    with tempfile.TemporaryDirectory() as scratch:
        index_dir = Path(scratch) / "index"
        build_cached(REPO / "corpus", index_dir, encoder)
        # The servers' own loader (one FAISS thread, settings' retrieval config), on the encoder loaded above.
        searcher = load_searcher(Settings(quiet=True, index_dir=index_dir), encoder)
        chunks = searcher.view.store.chunk_count
        stdio_params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "semqa.cli", "mcp", "--index-dir", str(index_dir)],
            env=env,
            cwd=REPO,
        )
        index_args = ["--index-dir", str(index_dir)]
        with (
            running_server([*index_args, "--workers", "1"], env=env) as http_server,
            running_server(["--http", *index_args], env=env, command="mcp") as mcp_server,
            (Path(scratch) / "mcp-stdio.log").open("w") as stdio_log,
        ):
            http_client = httpx2.AsyncClient(timeout=60)
            async with (
                http_client,
                stdio_client(stdio_params, errlog=stdio_log) as (stdio_read, stdio_write),
                ClientSession(stdio_read, stdio_write) as stdio_session,
                streamable_http_client(mcp_server.url + "/mcp", http_client=http_client) as (read, write),
                ClientSession(read, write) as http_session,
            ):
                for session in (stdio_session, http_session):
                    await session.initialize()
                    await session.list_tools()  # as an assistant does; caches the output schema
                timed = await run(questions, args, searcher, http_server.url, stdio_session, http_session)
    return {**timed, "chunks": chunks}


async def run(
    questions: list[str],
    args: argparse.Namespace,
    searcher: Searcher,
    url: str,
    stdio_session: ClientSession,
    http_session: ClientSession,
) -> dict[str, Any]:
    """Every call is timed until its parsed answer is in hand; the blocking calls (in process, HTTP)
    run inside the event loop, which is fine for one request at a time."""
    http = requests.Session()

    def ask(question: str) -> list[str]:
        body = {"question": question, "top_k": args.top_k, "mode": "hybrid"}
        response = http.post(url + "/ask", json=body, timeout=60)
        response.raise_for_status()
        return [p["chunk_id"] for p in response.json()["passages"]]

    async def tool(session: ClientSession, question: str) -> list[str]:
        result = await session.call_tool(TOOL, {"question": question, "top_k": args.top_k})
        if result.is_error:
            raise RuntimeError(result.content[0].text)
        return [p["chunk_id"] for p in result.structured_content["passages"]]

    async def call(interface: str, question: str) -> list[str]:
        if interface == "in process":
            return [str(p.chunk.chunk_id) for p in searcher.search(question, args.top_k)]
        if interface == "HTTP /ask":
            return ask(question)
        return await tool(stdio_session if interface == "MCP stdio" else http_session, question)

    def batch(group: list[str]) -> list[list[str]]:
        body = {"queries": [{"query": q, "top_k": args.top_k} for q in group]}
        response = http.post(url + "/query", json=body, timeout=60)
        response.raise_for_status()
        return [[r["id"] for r in result["results"]] for result in response.json()["results"]]

    asked = [questions[i % len(questions)] for i in range(args.requests)]
    timings: dict[str, list[float]] = {name: [] for name in INTERFACES}
    groups: dict[str, list[float]] = {"batch": [], "sequential": []}
    differing = 0  # questions (or groups) whose chunk ids differ between interfaces
    for i, question in enumerate(asked):
        order = INTERFACES[i % len(INTERFACES) :] + INTERFACES[: i % len(INTERFACES)]
        answers = set()
        for interface in order:
            started = time.perf_counter()
            ids = await call(interface, question)
            elapsed = ms_since(started)
            answers.add(tuple(ids))
            if i >= args.warmup:
                timings[interface].append(elapsed)
        differing += len(answers) > 1
        if (i + 1) % args.group_size:
            continue
        group = asked[i + 1 - args.group_size : i + 1]  # the questions just asked: batched and one by one
        kinds = ("batch", "sequential") if (i // args.group_size) % 2 else ("sequential", "batch")
        group_answers = []
        for kind in kinds:
            started = time.perf_counter()
            group_answers.append(batch(group) if kind == "batch" else [ask(q) for q in group])
            elapsed = ms_since(started)
            if i + 1 - args.group_size >= args.warmup:
                groups[kind].append(elapsed)
        differing += group_answers[0] != group_answers[1]
    return {"timings": timings, "groups": groups, "differing": differing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=110, help="questions per interface")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--group-size", type=int, default=10, help="questions per POST /query")
    args = parser.parse_args()
    if args.requests <= args.warmup:
        parser.error("--requests must be larger than --warmup")
    if not 1 <= args.group_size <= Settings().max_batch_queries:
        parser.error(f"--group-size must be 1 to {Settings().max_batch_queries} (max_batch_queries)")
    started = time.perf_counter()
    result = asyncio.run(measure(corpus_questions(), args))
    timings, groups = result["timings"], result["groups"]
    base = percentile(timings["in process"], 50)
    rows = [
        {
            "interface": name,
            "p50": percentile(values, 50),
            "p95": percentile(values, 95),
            "ratio": percentile(values, 50) / base,
        }
        for name, values in timings.items()
    ]
    batch = {kind: percentile(values, 50) for kind, values in groups.items()}
    pairs = sorted(b / s for b, s in zip(groups["batch"], groups["sequential"], strict=True))
    print(
        f"corpus ({result['chunks']} chunks), hybrid, top_k={args.top_k}: {len(timings['in process'])} "
        f"timed questions per interface after {args.warmup} warm-up ones; 1 gunicorn worker"
    )
    print("| interface | p50 ms | p95 ms | p50 / in-process p50 |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['interface']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['ratio']:.2f} |")
    print()
    print(f"{len(groups['batch'])} timed groups of {args.group_size} questions")
    print(f"| {args.group_size} questions | p50 ms per group | p50 ms per question |")
    print("|---|---:|---:|")
    print(
        f"| one POST /query | {batch['batch']:.1f} | {batch['batch'] / args.group_size:.1f} |\n"
        f"| sequential POST /ask | {batch['sequential']:.1f} | {batch['sequential'] / args.group_size:.1f} |"
    )
    print(
        f"batch p50 / sequential p50 = {batch['batch'] / batch['sequential']:.2f}; "
        f"median of per-group ratios = {percentile(pairs, 50):.2f} (range {pairs[0]:.2f}-{pairs[-1]:.2f})"
    )
    print(f"answers differing between interfaces: {result['differing']}")
    print(f"runtime {time.perf_counter() - started:.0f} s")
    print(
        json.dumps(
            {
                "chunks": result["chunks"],
                "interfaces": rows,
                "group_size": args.group_size,
                "batch_p50": batch["batch"],
                "sequential_p50": batch["sequential"],
                "batch_ratio": batch["batch"] / batch["sequential"],
                "group_ratios": pairs,
                "differing": result["differing"],
            }
        )
    )


if __name__ == "__main__":
    main()
