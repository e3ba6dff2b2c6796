"""The lexical index (tantivy): BM25 checked against a reference implementation (bm25s, Lucene variant,
same terms), then writes followed by searches, filters, and candidate scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indexer.lexical import ANALYZE, LexicalIndex, LexicalRow, passage_body

SAMPLE = Path(__file__).resolve().parent / "data" / "scifact_sample"


@pytest.fixture(scope="module")
def rows() -> list[LexicalRow]:
    lines = [json.loads(line) for line in (SAMPLE / "corpus.jsonl").read_text().splitlines()]
    return [LexicalRow(i + 1, d["_id"], d["title"], d["text"]) for i, d in enumerate(lines)]


@pytest.fixture(scope="module")
def questions() -> list[str]:
    return [json.loads(line)["text"] for line in (SAMPLE / "queries_train.jsonl").read_text().splitlines()]


def build(directory: Path, rows: list[LexicalRow]) -> LexicalIndex:
    index = LexicalIndex.build(directory, rows)
    index.reload()
    return index


def test_bm25_matches_the_reference_implementation(tmp_path, rows, questions):
    import bm25s

    reference = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
    reference.index(ANALYZE([passage_body(r.title, r.text) for r in rows]), show_progress=False)
    searcher = build(tmp_path / "lexical", rows).searcher()
    ids = np.array([r.chunk_id for r in rows])
    for question in questions:
        terms = ANALYZE([question])[0]
        # tantivy keeps classic BM25's (k1 + 1) factor, which Lucene 8 and bm25s dropped: same ranking
        expected = np.asarray(reference.get_scores(terms)) * (1.2 + 1)
        got = searcher.scores(terms, ids)
        # tantivy stores lengths in one byte (as Lucene does): scores agree within 10 %, not exactly
        # (a wrong k1, b or idf is off by far more)
        assert np.allclose(got, expected, rtol=0.1, atol=1e-3), question
        top, top_scores = searcher.search(terms, 5)
        assert list(top) == list(ids[np.argsort(-got, kind="stable")][: len(top)])
        assert np.all(np.diff(top_scores) <= 0) and np.all(top_scores > 0)


def test_add_delete_and_replace_then_search(tmp_path, rows):
    index = build(tmp_path / "lexical", rows)
    before = index.searcher()
    terms = ANALYZE(["the orbiter of the Tianwen mission mapped Utopia Planitia"])[0]
    assert before.search(terms, 3)[0].size == 0 or 999 not in before.search(terms, 3)[0]
    with index.write() as writer:
        writer.delete([rows[0].chunk_id, rows[1].chunk_id])
        writer.add([LexicalRow(999, "mars", "Tianwen-1", "The orbiter mapped Utopia Planitia.")])
        writer.delete([rows[2].chunk_id])
        writer.add([LexicalRow(rows[2].chunk_id, rows[2].document_id, "", "Utopia Planitia again.")])
    assert before.count == len(rows)  # a snapshot keeps seeing what it saw
    index.reload()
    after = index.searcher()
    assert after.count == len(rows) - 2 + 1
    found, _ = after.search(terms, 3)
    assert list(found[:2]) == [999, rows[2].chunk_id]  # the replacement is found by its new text
    old_terms = ANALYZE([rows[0].text])[0]
    assert rows[0].chunk_id not in after.search(old_terms, 10)[0]


def test_a_failed_write_session_changes_nothing(tmp_path, rows):
    index = build(tmp_path / "lexical", rows)
    with pytest.raises(RuntimeError, match="boom"), index.write() as writer:
        writer.delete([r.chunk_id for r in rows])
        raise RuntimeError("boom")
    index.reload()
    assert index.searcher().count == len(rows)


def test_document_filter_applies_before_ranking(tmp_path, rows, questions):
    searcher = build(tmp_path / "lexical", rows).searcher()
    terms = ANALYZE([questions[0]])[0]
    wanted = [rows[5].document_id, rows[9].document_id]
    found, scores = searcher.search(terms, 10, documents=wanted)
    assert set(found) <= {rows[5].chunk_id, rows[9].chunk_id} and np.all(scores > 0)


def test_scores_of_candidates_and_idf(tmp_path, rows):
    searcher = build(tmp_path / "lexical", rows).searcher()
    terms = ANALYZE([rows[3].title])[0]
    scores = searcher.scores(terms, np.array([rows[3].chunk_id, 123456789]))
    assert scores[0] > 0 and scores[1] == 0
    idf = searcher.idf([*terms, "zzzzunseen"])
    assert idf["zzzzunseen"] == 0 and all(idf[t] > 0 for t in terms)


def test_reopening_sees_the_last_commit(tmp_path, rows):
    build(tmp_path / "lexical", rows)
    reopened = LexicalIndex.open(tmp_path / "lexical")
    reopened.reload()
    assert reopened.searcher().count == len(rows)
    with pytest.raises(FileNotFoundError):
        LexicalIndex.open(tmp_path / "missing")


def test_the_analyzer_stems_and_drops_stop_words():
    assert ANALYZE(["The Chang'e-4 probes landed in 2019"])[0] == ["chang", "e", "4", "probe", "land", "2019"]


def test_equal_scores_at_the_cut_are_kept_by_chunk_id(tmp_path):
    """Passages with the same text score the same; which of them a top-k keeps must not depend on the
    order tantivy happened to store them in (that differs between builds): the smallest chunk ids."""
    twin = "Astronauts docked the cargo craft with the core module of the space station."
    rows = [LexicalRow(chunk_id, f"d{chunk_id}", "", twin) for chunk_id in (50, 40, 30, 20, 10)]
    rows.append(LexicalRow(99, "other", "", "Rockets are launched from Wenchang."))
    searcher = build(tmp_path / "lexical", rows).searcher()
    ids, scores = searcher.search(ANALYZE(["cargo craft docked with the core module"])[0], 2)
    assert scores[0] == scores[1] and list(ids) == [10, 20]
