"""txtai's side of bench/peer_txtai.py, run with the python of txtai's own virtualenv (txtai is not a project
dependency), configured as txtai's documentation shows and otherwise left at its defaults.

    python peer_txtai_driver.py build CORPUS.jsonl OUT MODEL_DIR [--hybrid]
        Embeddings(path=MODEL_DIR, content=True[, hybrid=True]), index() of every abstract, save(OUT); prints
        one JSON line: documents, seconds of index() + save(), and the configuration txtai chose.
    python peer_txtai_driver.py search DENSE_INDEX HYBRID_INDEX
        Loads both saved indexes, then answers JSON lines on stdin ({"index", "query", "limit", "exact"})
        with JSON lines on stdout ({"ms": embeddings.search time, "ids": [...]}). "exact" probes every IVF
        cell (a quality reference only, not a default).

Documents are indexed as txtai's own BEIR benchmark (examples/benchmarks.py) indexes them: (id, "title. text",
None), each in one vector, cut at txtai's ``maxlength`` (reported; the tokenizer's 512 tokens, not the
model's max_seq_length of 256). This file imports nothing from semqa.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def document_rows(corpus: Path) -> Iterator[tuple[str, str, None]]:
    """(id, "title. text", None) for every abstract of a BEIR corpus.jsonl."""
    with corpus.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                text = f"{row['title']}. {row['text']}" if row.get("title") else row["text"]
                yield str(row["_id"]), text, None


def chosen_config(embeddings: Any) -> dict[str, Any]:
    """What txtai picked by itself: ANN backend, its index components, nprobe, the sparse scoring."""
    config = embeddings.config
    ann = embeddings.ann
    return {
        "backend": config.get("backend"),
        "components": (config.get("build") or {}).get("settings", {}).get("components"),
        "nprobe": ann.nprobe() if hasattr(ann, "nprobe") else None,
        "scoring": config.get("scoring"),
        "maxlength": getattr(embeddings.model.model, "maxlength", None),
        "count": embeddings.count(),
    }


def build(corpus: Path, out: Path, model: str, hybrid: bool) -> None:
    from txtai import Embeddings

    embeddings = Embeddings(path=model, content=True, **({"hybrid": True} if hybrid else {}))
    rows = list(document_rows(corpus))
    started = time.perf_counter()
    embeddings.index(rows)
    embeddings.save(str(out))
    seconds = time.perf_counter() - started
    print(json.dumps({"documents": len(rows), "seconds": seconds, "config": chosen_config(embeddings)}))


def search(indexes: dict[str, Path]) -> None:
    from txtai import Embeddings

    loaded = {}
    for name, path in indexes.items():
        loaded[name] = Embeddings()
        loaded[name].load(str(path))
    print(json.dumps({name: chosen_config(e) for name, e in loaded.items()}), flush=True)
    for line in sys.stdin:
        ask = json.loads(line)
        embeddings = loaded[ask["index"]]
        settings = embeddings.config.setdefault(embeddings.config["backend"], {})
        if ask.get("exact"):  # every IVF cell probed: exact search over the same vectors
            settings["nprobe"] = getattr(embeddings.ann.backend, "nlist", 1)
        started = time.perf_counter()
        results = embeddings.search(ask["query"], ask["limit"])
        ms = (time.perf_counter() - started) * 1000
        settings.pop("nprobe", None)
        print(json.dumps({"ms": ms, "ids": [r["id"] for r in results]}), flush=True)


def main() -> None:
    command, *args = sys.argv[1:]
    if command == "build":
        build(Path(args[0]), Path(args[1]), args[2], "--hybrid" in args[3:])
    elif command == "search":
        search({"dense": Path(args[0]), "hybrid": Path(args[1])})
    else:
        raise SystemExit(f"unknown command {command!r}: build or search")


if __name__ == "__main__":
    main()
