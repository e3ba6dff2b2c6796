"""Retrieval quality: evidence-string questions (R@1, R@5, MRR@10) and BEIR datasets (nDCG@10, Recall@k).

Both measure what ``POST /ask`` serves: the questions ask for ``SERVED_TOP_K`` passages, BEIR queries for
``SERVED_TOP_K`` documents (one passage each), so the searcher fuses exactly the candidates it fuses for a
client asking with those settings. Anything deeper (Recall@100 needs 100 documents, and the searcher then
proposes more candidates per retriever) is asked for explicitly and labelled.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

SERVED_TOP_K = 10  # nDCG@10 and MRR@10 need ten results: what a client asks /ask for (top_k=10)
DEEP_TOP_K = 100  # only when asked for (`semqa eval --deep`): Recall@100 needs 100 documents


class Retrieved(NamedTuple):
    """One returned passage, as the metrics see it."""

    document_id: str
    text: str
    highlight: str | None = None


# One ranked list per question, best first.
SearchFn = Callable[[Sequence[str], int], list[list[Retrieved]]]


def normalise(text: str) -> str:
    """Lower-case with runs of white space folded to one space: how evidence is compared."""
    return re.sub(r"\s+", " ", text).strip().lower()


@dataclass(frozen=True)
class Question:
    doc: str
    question: str
    evidence: str


def read_questions(path: Path) -> list[Question]:
    """The questions of a TSV file with the columns ``question`` and ``evidence`` (and ``doc``, optional)."""
    questions: list[Question] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        missing = {"question", "evidence"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(
                f"{path} needs the columns question and evidence (missing: {', '.join(sorted(missing))})"
            )
        for row in reader:
            if not (row["question"] or "").strip() or not (row["evidence"] or "").strip():
                raise ValueError(
                    f"{path} line {reader.line_num}: every question needs its question and evidence"
                )
            questions.append(Question(row.get("doc") or "", row["question"], row["evidence"]))
    if not questions:
        raise ValueError(f"{path} has its header but no questions")
    return questions


def evidence_metrics(questions: Sequence[Question], search: SearchFn) -> dict[str, float]:
    """R@1, R@5 and MRR@10, where a hit is a passage containing the evidence text; and ``highlight``, the
    share of returned passages containing the evidence whose highlight contains it too."""
    results = search([q.question for q in questions], SERVED_TOP_K)
    r1 = r5 = mrr = 0.0
    hits = highlighted = 0
    for q, passages in zip(questions, results, strict=True):
        evidence = normalise(q.evidence)
        rank = next((i for i, p in enumerate(passages, 1) if evidence in normalise(p.text)), None)
        if rank is not None:
            r1 += rank == 1
            r5 += rank <= 5
            mrr += 1.0 / rank
        for p in passages:
            if p.highlight is not None and evidence in normalise(p.text):
                hits += 1
                highlighted += evidence in normalise(p.highlight)
    n = max(1, len(questions))
    metrics = {"questions": len(questions), "R@1": r1 / n, "R@5": r5 / n, "MRR@10": mrr / n}
    if hits:
        metrics["highlight"] = highlighted / hits
    return metrics


def ndcg_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with graded gains (as trec_eval's ndcg_cut): sum rel / log2(rank + 1), over the ideal."""
    dcg = sum(relevant.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 100) -> float:
    wanted = {d for d, g in relevant.items() if g > 0}
    return len(wanted & set(ranked[:k])) / len(wanted) if wanted else 0.0


@dataclass(frozen=True)
class BeirSet:
    corpus: Path
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def _first_existing(*paths: Path) -> Path:
    for path in paths:
        if path.is_file():
            return path
    raise FileNotFoundError(f"none of {', '.join(str(p) for p in paths)} exists")


def read_beir(directory: Path, split: str) -> BeirSet:
    """A BEIR folder: corpus.jsonl, queries_<split>.jsonl or queries.jsonl, qrels_<split>.tsv or qrels/<split>.tsv."""
    corpus = _first_existing(directory / "corpus.jsonl")
    queries_path = _first_existing(directory / f"queries_{split}.jsonl", directory / "queries.jsonl")
    qrels_path = _first_existing(directory / f"qrels_{split}.tsv", directory / "qrels" / f"{split}.tsv")
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(newline="", encoding="utf-8") as handle:
        for row in csv.reader(handle, delimiter="\t"):
            if not row or row[0] == "query-id":
                continue
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    queries: dict[str, str] = {}
    with queries_path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                if str(record["_id"]) in qrels:
                    queries[str(record["_id"])] = record["text"]
    return BeirSet(corpus=corpus, queries=queries, qrels=qrels)


def beir_per_query(data: BeirSet, search: SearchFn, top_k: int = SERVED_TOP_K) -> dict[str, list[float]]:
    """Per query (in ``data.queries`` order): nDCG@10 and Recall@``top_k`` of the ``top_k`` documents
    ``search`` returns (a document ranks by its best chunk; ``search`` should group by document)."""
    ids = list(data.queries)
    results = search([data.queries[i] for i in ids], top_k)
    ndcg, recall = [], []
    for query_id, passages in zip(ids, results, strict=True):
        ranked = list(dict.fromkeys(p.document_id for p in passages))
        ndcg.append(ndcg_at_k(ranked, data.qrels[query_id], 10))
        recall.append(recall_at_k(ranked, data.qrels[query_id], top_k))
    return {"nDCG@10": ndcg, f"Recall@{top_k}": recall}


def beir_metrics(data: BeirSet, search: SearchFn, top_k: int = SERVED_TOP_K) -> dict[str, float]:
    """Document-level nDCG@10 and Recall@``top_k``, averaged over the queries, with ``top_k`` documents
    asked for (the served ``SERVED_TOP_K`` unless a deeper measurement is wanted)."""
    per_query = beir_per_query(data, search, top_k)
    n = max(1, len(data.queries))
    return {"queries": len(data.queries), "top_k": top_k, **{k: sum(v) / n for k, v in per_query.items()}}
