"""What the benchmark scripts share: where things are, the questions they ask, percentiles.

The scripts run as ``python bench/<name>.py``, so this folder is on their import path.
"""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Callable
from pathlib import Path

from embeddings import EmbeddingCache, Encoder
from indexer import BuildReport, ChunkingConfig, build_index
from semqa.settings import Settings

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "eval"  # development data beside the repository, when present
SAMPLE = REPO / "tests" / "data" / "questions_sample.tsv"


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``; 0.0 for none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else 0.0


def run_clients(client: Callable[[int], None], count: int) -> float:
    """``client(0)`` ... ``client(count - 1)``, each on its own thread, all at once; the seconds they took."""
    threads = [threading.Thread(target=client, args=(n,)) for n in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def rollup(pid: int) -> dict[str, int]:
    """kB figures of /proc/<pid>/smaps_rollup (Rss, Pss, Shared_Clean, ...)."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0])
    return fields


def worker_pids(master: int) -> list[int]:
    """The gunicorn workers of a `semqa serve` master."""
    return [int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()]


def dev_questions_path() -> Path:
    """The dev questions about the default corpus (the repository's small sample without ../shared)."""
    return SHARED / "dev_questions.tsv" if (SHARED / "dev_questions.tsv").is_file() else SAMPLE


def corpus_questions() -> list[str]:
    """The text of every dev question (see ``dev_questions_path``)."""
    with dev_questions_path().open(newline="") as handle:
        return [row["question"] for row in csv.DictReader(handle, delimiter="\t")]


def build_cached(corpus: Path, index_dir: Path, encoder: Encoder) -> BuildReport:
    """An index of ``corpus`` with the default chunking, its embeddings taken from (and added to) the
    default embedding cache, so that a benchmark's index costs no model time after the first run."""
    return build_index(
        [corpus],
        index_dir=index_dir,
        encoder=encoder,
        chunking=ChunkingConfig(),
        cache=EmbeddingCache(Settings().cache_dir, encoder),
    )
