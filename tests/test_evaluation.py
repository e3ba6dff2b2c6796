"""Metrics against hand-computed values, and the `semqa eval` pipeline on small data."""

from __future__ import annotations

import math

import pytest

from semqa.evaluation import (
    Question,
    Retrieved,
    evidence_metrics,
    ndcg_at_k,
    normalise,
    read_beir,
    recall_at_k,
)
from tests.conftest import DATA


def hit(text: str, highlight: str | None = None) -> Retrieved:
    return Retrieved("d", text, highlight)


def test_ndcg_matches_hand_computation():
    relevant = {"a": 1, "b": 2}
    assert ndcg_at_k(["b", "a"], relevant) == pytest.approx(1.0)
    dcg = 1 / math.log2(2) + 2 / math.log2(4)  # a at rank 1, b at rank 3
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(["a", "x", "b"], relevant) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["x"] * 10 + ["a"], relevant, k=10) == 0.0
    assert recall_at_k(["x", "b"], relevant, k=1) == 0.0
    assert recall_at_k(["x", "b"], relevant, k=2) == 0.5


def test_evidence_is_matched_ignoring_case_and_white_space():
    assert normalise("  The Four-day\n conference ") == "the four-day conference"
    questions = [Question("0", "q1", "four-DAY   conference"), Question("0", "q2", "absent")]

    def search(qs, k):
        return [[hit("nothing"), hit("The four-day\nconference opened")], [hit("nope")]]

    metrics = evidence_metrics(questions, search)
    assert metrics == {"questions": 2, "R@1": 0.0, "R@5": 0.5, "MRR@10": 0.25}


def test_highlight_share_counts_passages_that_hold_the_evidence():
    questions = [Question("0", "q", "four-day conference")]
    passages = [
        hit("The four-day conference opened. It rained.", "The four-day conference opened."),
        hit("A four-day conference. Then more.", "Then more."),
        hit("Unrelated text.", "Unrelated text."),
    ]
    metrics = evidence_metrics(questions, lambda qs, k: [passages])
    assert metrics["highlight"] == 0.5


def test_read_beir_layout():
    data = read_beir(DATA / "scifact_sample", "train")
    assert len(data.queries) == 12 and set(data.queries) == set(data.qrels)
    with pytest.raises(FileNotFoundError, match="queries_dev.jsonl"):
        read_beir(DATA / "scifact_sample", "dev")
