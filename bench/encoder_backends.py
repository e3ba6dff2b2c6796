"""Encoder backends side by side, in one run: vector agreement, answer quality, build speed, question speed.

For each backend (torch, onnx, onnx-int8):

- agreement: passage and sentence-span vectors of real SciFact passages against torch's (max |difference|
  per component, lowest and mean cosine), and between the two int8 models (this CPU's and the other one);
- quality: `semqa eval`'s own code path (a scratch index per data set, embeddings from the shared cache) on
  the dev questions (MRR@10), SciFact train and NFCorpus test (nDCG@10), dense and hybrid; plus a torch index
  searched with the backend's question vectors (what serving a torch index with that backend would give);
- build: `semqa index` (build_index, no cache) of the first --docs SciFact abstracts, documents/s and
  passages/s, against raw torch sentence-transformers `encode` of the same abstracts (title + text, default
  settings), rounds interleaved, medians;
- questions: single-question `encode` (what POST /ask does) of every dev question, p50 per backend.

The verdict: the fastest backend (build passages/s) whose nDCG@10 loss against torch is at most 0.005 on both
BEIR sets in both modes.

    SEMQA_CACHE_DIR=/work/semqa-cache python bench/encoder_backends.py [--docs 300] [--rounds 3]
        [--backends torch,onnx,onnx-int8] [--no-quality] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import REPO, SHARED, corpus_questions, dev_questions_path, percentile

from embeddings import Encoder, load_encoder
from embeddings.backends import BACKENDS
from embeddings.model import default_model_path
from indexer import ChunkingConfig, build_index, read_corpus
from indexer.chunking import chunk_document, quotable_sentences
from semqa import evaluation
from semqa.cli import _eval_search, _scratch_searcher
from semqa.settings import Settings
from server.retrieval import RetrievalConfig, Searcher

MAX_LOSS = 0.005
MODES = ("dense", "hybrid")
SCIFACT = SHARED / "scifact"
NFCORPUS = SHARED / "nfcorpus"


def encoders(names: list[str], settings: Settings) -> dict[str, Encoder]:
    return {
        name: load_encoder(backend=name, cache_dir=settings.cache_dir, threads=settings.torch_threads)
        for name in names
    }


def sample_passages(docs: int, encoder: Encoder) -> tuple[list[str], list[list[tuple[int, int]]]]:
    texts = [
        c.text
        for d in read_corpus([SCIFACT / "corpus.jsonl"]).documents[:docs]
        for c in chunk_document(d, encoder, ChunkingConfig())
    ]
    return texts, [quotable_sentences(t) for t in texts]


def agreement(
    found: dict[str, tuple[np.ndarray, list[np.ndarray]]], left: str, right: str
) -> dict[str, float]:
    (a, a_spans), (b, b_spans) = found[left], found[right]
    cosine = (a * b).sum(axis=1)
    spans_a, spans_b = np.vstack(a_spans), np.vstack(b_spans)
    return {
        "max_abs": float(np.abs(a - b).max()),
        "min_cosine": float(cosine.min()),
        "mean_cosine": float(cosine.mean()),
        "span_max_abs": float(np.abs(spans_a - spans_b).max()),
        "span_min_cosine": float((spans_a * spans_b).sum(axis=1).min()),
    }


def measure_agreement(enc: dict[str, Encoder], settings: Settings, docs: int) -> dict[str, dict[str, float]]:
    texts, spans = sample_passages(docs, enc["torch"])
    found = {name: e.encode_spans(texts, spans) for name, e in enc.items()}
    rows = {f"{name} vs torch": agreement(found, name, "torch") for name in enc if name != "torch"}
    for name, e in enc.items():  # the same passages batched otherwise (7 at a time, not 32)
        found[f"{name}/7"] = e.encode_spans(texts, spans, batch_size=7)
        rows[f"{name}, batches of 7 vs 32"] = agreement(found, f"{name}/7", name)
    if "onnx-int8" in enc:  # the other int8 model: are two int8 models interchangeable with each other?
        mine = enc["onnx-int8"].backend.removeprefix("onnx-int8-")
        other = "avx2" if mine != "avx2" else "avx512_vnni"
        second = load_encoder(backend="onnx-int8", cache_dir=settings.cache_dir, quantization=other)
        found[second.backend] = second.encode_spans(texts, spans)
        rows[f"{second.backend} vs torch"] = agreement(found, second.backend, "torch")
        rows[f"{second.backend} vs {enc['onnx-int8'].backend}"] = agreement(
            found, second.backend, "onnx-int8"
        )
    return {"passages": {"count": len(texts)}, **rows}  # type: ignore[dict-item]


def quality(enc: dict[str, Encoder], settings: Settings) -> dict[str, dict[str, float]]:
    """row -> metric -> value: one row per backend, and ``<backend> on torch index`` rows."""
    results: dict[str, dict[str, float]] = {}
    config = RetrievalConfig(
        settings.fusion, settings.fusion_alpha, settings.highlight_alpha, settings.candidates
    )
    sets: list[tuple[str, Path, evaluation.BeirSet | None]] = [("dev", settings.corpus, None)]
    for label, folder, split in (("scifact", SCIFACT, "train"), ("nfcorpus", NFCORPUS, "test")):
        if (folder / "corpus.jsonl").is_file():
            sets.append((label, folder, evaluation.read_beir(folder, split)))
    questions = evaluation.read_questions(dev_questions_path())

    def measure(row: str, label: str, searcher: Searcher, beir: evaluation.BeirSet | None) -> None:
        for mode in MODES:
            search = _eval_search(searcher, mode, beir=beir is not None)
            if beir is None:
                metrics = evaluation.evidence_metrics(questions, search)
                for key in ("MRR@10", "R@1", "highlight") if mode == "hybrid" else ("MRR@10",):
                    results.setdefault(row, {})[f"dev/{mode}/{key}"] = metrics[key]
            else:
                value = evaluation.beir_metrics(beir, search)["nDCG@10"]
                results.setdefault(row, {})[f"{label}/{mode}/nDCG@10"] = value

    for label, corpus, beir in sets:
        paths = [corpus if beir is None else beir.corpus]
        with _scratch_searcher(settings, paths, enc["torch"]) as torch_searcher:
            measure("torch", label, torch_searcher, beir)
            for name, encoder in enc.items():
                if name == "torch":
                    continue
                with _scratch_searcher(settings, paths, encoder) as own:
                    measure(name, label, own, beir)
                # The torch index searched with this backend's question vectors.
                measure(
                    f"{name} on torch index", label, Searcher(encoder, torch_searcher.reader, config), beir
                )
                print(f"quality {label} {name}: {results[name]}", flush=True)
    return results


def timing(enc: dict[str, Encoder], docs: int, rounds: int, batch_size: int) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    raw_model = SentenceTransformer(str(default_model_path()), device="cpu", local_files_only=True)
    with tempfile.TemporaryDirectory() as scratch:
        sample = Path(scratch) / "scifact.jsonl"
        with (SCIFACT / "corpus.jsonl").open() as source:
            sample.write_text("".join(line for _, line in zip(range(docs), source)))
        documents = read_corpus([sample]).documents
        raw_texts = [f"{d.title}\n{d.text}" if d.title else d.text for d in documents]
        raw_model.encode(raw_texts[:32])
        for encoder in enc.values():
            encoder.encode(raw_texts[:32])
        raw: list[float] = []
        built: dict[str, list[tuple[float, float]]] = {name: [] for name in enc}
        for round_ in range(rounds):
            steps: list[str] = ["raw", *enc]
            for step in steps if round_ % 2 == 0 else steps[::-1]:
                started = time.perf_counter()
                if step == "raw":
                    raw_model.encode(raw_texts)
                    raw.append(len(documents) / (time.perf_counter() - started))
                    continue
                report = build_index(
                    [sample],
                    index_dir=Path(scratch) / f"{step}-{round_}",
                    encoder=enc[step],
                    chunking=ChunkingConfig(),
                    batch_size=batch_size,
                )
                built[step].append((report.documents / report.seconds, report.chunks / report.seconds))
            print(
                f"timing round {round_ + 1}: raw {raw[-1]:.1f} docs/s, "
                + ", ".join(f"{n} {v[-1][0]:.1f} docs/s" for n, v in built.items()),
                flush=True,
            )
        questions = corpus_questions()
        encode_ms: dict[str, list[float]] = {name: [] for name in enc}
        for _ in range(3):
            for question in questions:
                for name, encoder in enc.items():
                    started = time.perf_counter()
                    encoder.encode([question])
                    encode_ms[name].append((time.perf_counter() - started) * 1000)
    raw_dps = statistics.median(raw)
    result: dict[str, Any] = {"documents": len(documents), "rounds": rounds, "raw_torch_docs_per_s": raw_dps}
    torch_p50 = percentile(encode_ms["torch"], 50) if "torch" in enc else None
    for name, runs in built.items():
        dps = statistics.median(d for d, _ in runs)
        p50 = percentile(encode_ms[name], 50)
        result[name] = {
            "docs_per_s": dps,
            "passages_per_s": statistics.median(p for _, p in runs),
            "build_vs_raw_torch": dps / raw_dps,
            "question_p50_ms": p50,
            "question_speedup_vs_torch": torch_p50 / p50 if torch_p50 else None,
        }
    return result


def verdict(qual: dict[str, dict[str, float]], times: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The issue's rule: the fastest backend losing at most 0.005 nDCG@10 against torch on both BEIR sets
    (both modes); and the guide's: the fastest that loses nothing on any development set's figure."""

    def worst_loss(name: str, keys: list[str]) -> float:
        return max(qual["torch"][k] - qual[name][k] for k in keys)

    beir_keys = [k for k in qual["torch"] if "nDCG" in k]
    losses = {n: worst_loss(n, beir_keys) for n in names} if beir_keys else {}
    no_loss = [n for n in names if worst_loss(n, list(qual["torch"])) <= 0]

    def fastest(candidates: list[str]) -> str | None:
        return max(candidates, key=lambda n: times[n]["passages_per_s"]) if candidates and times else None

    within = [n for n in names if losses.get(n, 1.0) <= MAX_LOSS]
    return {
        "worst_ndcg_loss_vs_torch": losses,
        "fastest_within_0.005_ndcg": fastest(within),
        "fastest_losing_nothing_on_any_set": fastest(no_loss),
    }


def print_tables(results: dict[str, Any]) -> None:
    if "agreement" in results:
        print("\n| vectors | max abs diff | min cosine | mean cosine | span max abs | span min cosine |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, row in results["agreement"].items():
            if name != "passages":
                print(
                    f"| {name} | {row['max_abs']:.2e} | {row['min_cosine']:.6f} | {row['mean_cosine']:.6f} | {row['span_max_abs']:.2e} | {row['span_min_cosine']:.6f} |"
                )
    if "quality" in results:
        keys = list(results["quality"]["torch"])
        print("\n| backend | " + " | ".join(keys) + " |")
        print("|---|" + "---:|" * len(keys))
        for name, row in results["quality"].items():
            print(f"| {name} | " + " | ".join(f"{row[k]:.4f}" if k in row else "" for k in keys) + " |")
    if "timing" in results:
        t = results["timing"]
        print(
            f"\nraw torch sentence-transformers encode (title + text): {t['raw_torch_docs_per_s']:.1f} docs/s ({t['documents']} SciFact abstracts, median of {t['rounds']})"
        )
        print(
            "| backend | semqa index docs/s | passages/s | x raw torch encode | question p50 ms | x torch |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for name in BACKENDS:
            if name in t:
                r = t[name]
                speedup = f"{r['question_speedup_vs_torch']:.2f}" if r["question_speedup_vs_torch"] else ""
                print(
                    f"| {name} | {r['docs_per_s']:.1f} | {r['passages_per_s']:.1f} | {r['build_vs_raw_torch']:.2f} | {r['question_p50_ms']:.2f} | {speedup} |"
                )
    if "verdict" in results:
        print(f"\nverdict: {results['verdict']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--docs", type=int, default=300, help="SciFact abstracts in the build timing")
    parser.add_argument("--agreement-docs", type=int, default=150, help="SciFact abstracts in the agreement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=Settings().batch_size)
    parser.add_argument("--no-quality", action="store_true", help="skip the quality runs")
    parser.add_argument("--no-timing", action="store_true", help="skip the timing runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    names = args.backends.split(",")
    if "torch" not in names:
        parser.error("--backends must include torch, the baseline")
    settings = Settings(quiet=True, corpus=REPO / "corpus")
    enc = encoders(names, settings)
    print("backends: " + ", ".join(e.backend for e in enc.values()), flush=True)
    results: dict[str, Any] = {"backends": {n: e.backend for n, e in enc.items()}}
    results["agreement"] = measure_agreement(enc, settings, args.agreement_docs)
    if not args.no_quality:
        results["quality"] = quality(enc, settings)
    if not args.no_timing:
        results["timing"] = timing(enc, args.docs, args.rounds, args.batch_size)
    if "quality" in results:
        results["verdict"] = verdict(results["quality"], results.get("timing", {}), names)
    print_tables(results)
    print(json.dumps(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
