"""Measure every fusion method and weight on the development sets, beside dense and lexical alone.

One index per dataset (embeddings from the cache), question vectors computed once, then every
configuration is evaluated through the real ``Searcher``. Prints one table.

    python bench/fusion_sweep.py [--chunk-tokens 128] [--chunk-overlap 32] [--candidates 100]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from common import SHARED

from embeddings import load_encoder
from semqa import evaluation
from semqa.cli import _eval_search, _scratch_searcher
from semqa.settings import Settings
from server.retrieval import RetrievalConfig, Searcher


class MemoEncoder:
    """The real encoder, remembering question vectors across configurations."""

    def __init__(self, encoder):  # type: ignore[no-untyped-def]
        self._encoder = encoder
        self._memo: dict[str, np.ndarray] = {}

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._encoder, name)

    def encode(self, texts: Sequence[str], **kwargs: object) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if missing:
            self._memo.update(zip(missing, self._encoder.encode(missing), strict=True))
        return np.stack([self._memo[t] for t in texts])


def configurations(candidates: int) -> list[tuple[str, str, RetrievalConfig]]:
    single = RetrievalConfig(candidates=candidates)
    configs = [("dense", "dense", single), ("lexical", "lexical", single)]
    for fusion in ("rrf", "minmax", "zscore"):
        for alpha in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
            config = RetrievalConfig(fusion=fusion, alpha=alpha, candidates=candidates)
            configs.append((f"{fusion} a={alpha}", "hybrid", config))
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk-tokens", type=int, default=128)
    parser.add_argument("--chunk-overlap", type=int, default=32)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--corpus", type=Path, default=Path("corpus"))
    args = parser.parse_args()
    settings = Settings(chunk_tokens=args.chunk_tokens, chunk_overlap=args.chunk_overlap, quiet=True)
    encoder = MemoEncoder(load_encoder())
    rows: dict[str, dict[str, float]] = {}
    questions = evaluation.read_questions(SHARED / "dev_questions.tsv")
    with _scratch_searcher(settings, [args.corpus], encoder) as base:  # type: ignore[arg-type]
        for name, mode, config in configurations(args.candidates):
            searcher = Searcher(base.encoder, base.reader, config)
            rows.setdefault(name, {}).update(
                {
                    f"dev {k}": v
                    for k, v in evaluation.evidence_metrics(questions, _eval_search(searcher, mode)).items()
                }
            )
    scifact = evaluation.read_beir(SHARED / "scifact", "train")
    with _scratch_searcher(settings, [scifact.corpus], encoder) as base:  # type: ignore[arg-type]
        for name, mode, config in configurations(args.candidates):
            searcher = Searcher(base.encoder, base.reader, config)
            metrics = evaluation.beir_metrics(scifact, _eval_search(searcher, mode, beir=True))
            rows[name].update({f"scifact {k}": v for k, v in metrics.items()})
    columns = ["dev R@1", "dev R@5", "dev MRR@10", "dev highlight", "scifact nDCG@10", "scifact Recall@100"]
    print(f"chunk_tokens={args.chunk_tokens} overlap={args.chunk_overlap} candidates={args.candidates}")
    print("| configuration | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for name, metrics in rows.items():
        print(f"| {name} | " + " | ".join(f"{metrics.get(c, float('nan')):.4f}" for c in columns) + " |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
