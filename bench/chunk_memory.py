"""Chunking one long document: peak memory and time, a section at a time (as served) against the whole text
at once (``SECTION_CHARS`` set past the text's length), each in a process of its own, in one run.

The text is made of the white paper's words in random order (its vocabulary, no sentence punctuation: the
case that becomes word windows), with a line break every 15 words or none (``--lines``).

    python bench/chunk_memory.py [--chars 1e6,5e6] [--lines]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

from common import REPO


def measure(chars: int, lines: bool, whole: bool) -> dict[str, float]:
    """In this process: chunk a ``chars``-long text; the chunks, the seconds, the resident memory before
    chunking and the process's peak (which may be an earlier one, the model's loading)."""
    from indexer import chunking
    from indexer.chunking import ChunkingConfig, chunk_document
    from indexer.documents import Document
    from semqa.settings import Settings
    from server.retrieval import configured_encoder

    encoder = configured_encoder(Settings(), None)
    words = (REPO / "corpus" / "004_7eff6b0a2d74b62d.txt").read_text().split()
    rng = random.Random(0)
    picked = [rng.choice(words) for _ in range(chars // 6 + 1)]
    separator = iter(lambda: "\n" if lines and rng.random() < 1 / 15 else " ", None)
    text = "".join(w + next(separator) for w in picked)[:chars]
    if whole:
        chunking.SECTION_CHARS = len(text) + 1
    resident = int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20
    started = time.perf_counter()
    chunks = chunk_document(Document("long", text), encoder, ChunkingConfig())
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"chunks": len(chunks), "seconds": seconds, "resident_mb": resident, "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", default="1e6,5e6", help="text lengths, comma-separated")
    parser.add_argument("--lines", action="store_true", help="a line break every 15 words or so")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        chars, whole = args.child.split(":")
        print(json.dumps(measure(int(chars), args.lines, whole == "whole")))
        return
    print("| characters | chunked | chunks | seconds | resident before, MB | peak, MB | peak - before, MB |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for chars in (int(float(c)) for c in args.chars.split(",")):
        for how in ("sections", "whole"):
            child = [
                sys.executable,
                __file__,
                "--child",
                f"{chars}:{how}",
                *(["--lines"] if args.lines else []),
            ]
            result = json.loads(subprocess.run(child, capture_output=True, text=True, check=True).stdout)
            before, peak = result["resident_mb"], result["peak_mb"]
            print(
                f"| {chars:,} | {how} | {result['chunks']} | {result['seconds']:.1f} | {before:.0f} | {peak:.0f} "
                f"| {peak - before:.0f} |"
            )


if __name__ == "__main__":
    main()
