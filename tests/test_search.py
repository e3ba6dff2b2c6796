"""Retrieval modes, fusion, filters and highlights on the real corpus index (shared suite for every mode)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from indexer import ChunkingConfig, IndexReader, build_index
from indexer.lexical import ANALYZE
from server.retrieval import SearchOptions, highlight
from server.retrieval.fusion import FUSIONS, fuse
from server.retrieval.highlight import best_span
from server.retrieval.search import RetrievalConfig, Searcher

MODES = ["dense", "lexical", "hybrid"]
WHITE_PAPER = "004_7eff6b0a2d74b62d.txt"


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_returns_ranked_passages(searcher, mode):
    passages = searcher.search(
        "How many launch missions did the Long March rockets fly?", 5, SearchOptions(mode=mode)
    )
    assert len(passages) == 5
    scores = [p.score for p in passages]
    assert scores == sorted(scores, reverse=True)
    assert len({p.chunk.chunk_id for p in passages}) == 5
    assert all(p.highlight is not None and p.highlight.text in p.chunk.text for p in passages)
    if mode == "lexical":
        assert all(p.dense_score is None for p in passages)
    else:
        assert all(-1.0 <= p.dense_score <= 1.0 for p in passages)


def test_every_mode_reports_the_same_bm25_score_for_a_passage(searcher):
    # Dense mode scores BM25 only for the passages it returns; the score must still be the passage's own.
    question = "How many launch missions did the Long March rockets fly?"
    everything = searcher.search(question, 500, SearchOptions(mode="lexical"))  # every passage with a term
    lexical = {p.chunk.chunk_id: p.lexical_score for p in everything}
    for mode in ("dense", "hybrid"):
        passages = searcher.search(question, 10, SearchOptions(mode=mode))
        assert any(p.lexical_score > 0 for p in passages)
        for p in passages:
            assert p.lexical_score == pytest.approx(lexical.get(p.chunk.chunk_id, 0.0), rel=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_documents_filter_applies_before_ranking(searcher, mode):
    target = "002_353dd3b29b1f0b6d.txt"
    options = SearchOptions(mode=mode, documents=[target])
    question = "astronauts on rocket launches to the space station"  # best passages are elsewhere
    unfiltered = searcher.search(question, 3, SearchOptions(mode=mode))
    assert target not in {p.chunk.document_id for p in unfiltered}
    passages = searcher.search(question, 3, options)
    assert len(passages) == 3 and {p.chunk.document_id for p in passages} == {target}
    assert searcher.search("rocket launch", 3, SearchOptions(mode=mode, documents=["no-such-doc"])) == []


@pytest.mark.parametrize("mode", MODES)
def test_group_by_document_and_min_score(searcher, mode):
    grouped = searcher.search("space conference", 10, SearchOptions(mode=mode, group_by_document=True))
    ids = [p.chunk.document_id for p in grouped]
    assert len(ids) == len(set(ids)) and len(ids) >= 4
    everything = searcher.search("space conference", 20, SearchOptions(mode=mode))
    threshold = everything[3].score
    kept = searcher.search("space conference", 20, SearchOptions(mode=mode, min_score=threshold))
    assert len(kept) >= 4 and all(p.score >= threshold for p in kept)
    assert len(kept) < len(everything)


def test_plain_english_question_matches_the_stemmed_white_paper(searcher):
    # The white paper is stemmed and unpunctuated; the analyzer stems the question the same way.
    passages = searcher.search(
        "How many operating vehicles are protected by BeiDou?", 3, SearchOptions(mode="lexical")
    )
    assert passages[0].chunk.document_id == WHITE_PAPER
    assert "oper vehicl" in passages[0].chunk.text


def test_hybrid_combines_both_signals(searcher):
    # A question each retriever alone ranks differently: hybrid's top passage is strong on both scores.
    question = "Which relay satellites upgraded the relay satellite system?"
    top = searcher.search(question, 1, SearchOptions(mode="hybrid"))[0]
    dense_top = searcher.search(question, 20, SearchOptions(mode="dense"))
    lexical_top = searcher.search(question, 20, SearchOptions(mode="lexical"))
    assert top.chunk.chunk_id in {p.chunk.chunk_id for p in dense_top}
    assert top.chunk.chunk_id in {p.chunk.chunk_id for p in lexical_top}


def test_fusion_methods():
    dense = np.array([0.9, 0.5, 0.1])
    lexical = np.array([0.0, 10.0, 5.0])
    for method in FUSIONS:
        fused = fuse(dense, lexical, method, alpha=1.0)
        assert list(np.argsort(-fused)) == [0, 1, 2]  # alpha=1: dense order
        fused = fuse(dense, lexical, method, alpha=0.0)
        assert list(np.argsort(-fused)) == [1, 2, 0]  # alpha=0: lexical order
    assert fuse(dense, lexical, "zscore", 0.5)[1] == pytest.approx(max(fuse(dense, lexical, "zscore", 0.5)))
    with pytest.raises(ValueError, match="zscore, minmax, rrf"):
        fuse(dense, lexical, "nope")


def test_highlight_is_a_sentence_or_a_centred_window(searcher):
    index = searcher.view.lexical
    analyze = ANALYZE
    prose = "The symposium opened on Monday. A memorandum was signed by China and Russia. It rained."
    terms = analyze(["Who signed the memorandum?"])[0]
    span = best_span(prose, terms, index.idf(terms), analyze)
    assert span.text == "A memorandum was signed by China and Russia."
    assert prose[span.start : span.end] == span.text
    words = [f"filler{i}" for i in range(60)]
    words[30:33] = ["tianlian", "relay", "satellit"]
    stemmed = " ".join(words)
    terms = analyze(["tianlian relay satellite"])[0]
    window = best_span(stemmed, terms, index.idf(terms), analyze)
    inside = window.text.split()
    assert len(inside) == 20 and "tianlian" in inside
    assert 6 <= inside.index("tianlian") <= 10  # centred on the match, context on both sides
    dense = {(0, 31): 0.9, (32, 76): 0.1, (77, 86): 0.2}  # a strong dense signal can outvote lexical
    span = best_span(prose, analyze(["When did it open?"])[0], index.idf(terms), analyze, dense, alpha=1.0)
    assert span.text == "The symposium opened on Monday."


def _every_window(where: dict[str, tuple[int, ...]], words: int, wanted: dict[str, float], size: int) -> int:
    """The window ``highlight._best_start`` must find, by scoring every start: most (idf-weighted,
    distinct) question terms, then matching words' mean position nearest the centre, then the first."""
    scored = []
    for start in range(words - size + 1):
        inside = {w for t in wanted for w in where.get(t, ()) if start <= w < start + size}
        held = [v for t, v in wanted.items() if any(start <= w < start + size for w in where.get(t, ()))]
        weight = float(np.round(sum(held), 9))  # as the numpy version rounded
        off = abs((sum(inside) - start * len(inside)) / len(inside) - (size - 1) / 2) if inside else 0.0
        scored.append((-weight, off, start))
    return min(scored)[2]


def test_a_long_sentences_window_is_the_one_scoring_every_start_would_pick():
    rng = random.Random(5)
    for _ in range(3000):
        words = rng.randint(41, 130)
        vocabulary = [f"t{i}" for i in range(rng.randint(2, 12))]
        word_terms = [[rng.choice(vocabulary)] if rng.random() < 0.3 else [] for _ in range(words)]
        where: dict[str, list[int]] = {}
        for w, terms in enumerate(word_terms):
            for term in terms:
                where.setdefault(term, []).append(w)
        wanted = {
            t: rng.choice([0.5, 1.0, 2.0, rng.uniform(0.1, 5)])
            for t in rng.sample(vocabulary, rng.randint(1, len(vocabulary)))
        }
        terms_at: dict[int, list[str]] = {}
        for term in wanted:
            for w in where.get(term, ()):
                terms_at.setdefault(w, []).append(term)
        size = highlight.WINDOW_WORDS
        expected = _every_window({t: tuple(ws) for t, ws in where.items()}, words, wanted, size)
        found = highlight._best_start(terms_at, wanted, size, words - size + 1) if terms_at else 0
        assert found == expected, (word_terms, wanted)


def test_highlight_answers_rather_than_repeats_the_question(searcher):
    index = searcher.view.lexical

    def highlight(text: str, question: str, **kwargs) -> str:
        terms = ANALYZE([question])[0]
        return best_span(text, terms, index.idf(terms), ANALYZE, question=question, **kwargs).text

    counted = "Experts attended the space conference in Beijing. More than 1,000 came, from 30 countries."
    assert (
        highlight(counted, "How many experts attended the conference?")
        == "More than 1,000 came, from 30 countries."
    )
    assert highlight(counted, "Which experts attended the conference?").startswith("Experts attended")
    dated = "The launch site was rebuilt for the new rocket. Its first launch took place in May."
    assert highlight(dated, "When did the rebuilt launch site see its first launch?").startswith("Its first")
    # Of two sentences equally close to the question in meaning, the one after the sentence that names the
    # topic wins, though it repeats fewer of the question's words.
    prose = "The second preparatory meeting was held in Beijing. Space explorers and doctors attended it. Lunch was served."
    spans = [(0, 51), (52, 92), (93, len(prose))]
    assert [prose[s:e] for s, e in spans][1] == "Space explorers and doctors attended it."
    dense = dict(zip(spans, [0.62, 0.62, 0.20], strict=True))
    question = "Who attended the second meeting in Beijing?"
    assert highlight(prose, question, dense=dense, alpha=0.7) == "Space explorers and doctors attended it."


def test_each_retriever_proposes_more_when_grouping_by_document():
    """Passages of one document crowd a ranked list, so a grouped query needs deeper lists than an
    ungrouped one to hold ``top_k`` documents (at 50, the corpus's 50 best dense passages held 4 of its 5)."""
    config = RetrievalConfig(candidates=50, ranker=None)
    assert config.depth(5, group_by_document=False) == 50
    assert config.depth(80, group_by_document=False) == 80
    assert config.depth(5, group_by_document=True) == 100
    assert config.depth(20, group_by_document=True) == 200


@pytest.mark.parametrize("mode", MODES)
def test_grouped_query_searches_deeper_until_it_has_top_k_documents(searcher, mode):
    """Each retriever's 50 best passages for this question come from two or three of the corpus's five
    documents (the white paper holds most): a grouped top 5 must look further down, as far as it takes."""
    question = "satellite navigation system"
    shallow = Searcher(searcher.encoder, searcher.reader, RetrievalConfig(candidates=25, max_depth=50))
    assert shallow.config.depth(5, group_by_document=True) == 50
    crowded = shallow.search(question, 5, SearchOptions(mode=mode, group_by_document=True))
    assert len(crowded) < 5  # what one round at depth 50 finds
    deep = Searcher(searcher.encoder, searcher.reader, RetrievalConfig(candidates=25))
    grouped = deep.search(question, 5, SearchOptions(mode=mode, group_by_document=True))
    documents = [p.chunk.document_id for p in grouped]
    assert len(documents) == len(set(documents))
    if mode == "lexical":  # BM25 proposes only passages holding a question term: every such document
        holding = {p.chunk.document_id for p in deep.search(question, 113, SearchOptions(mode="lexical"))}
        assert set(documents) == holding
    else:
        assert len(documents) == 5
    # ``min_score`` bounds the deepening: what is returned still clears it
    threshold = grouped[1].score
    bounded = deep.search(question, 5, SearchOptions(mode=mode, group_by_document=True, min_score=threshold))
    assert len(bounded) < 5 and all(p.score >= threshold for p in bounded)


def test_equal_scores_rank_by_chunk_id_in_every_mode(tmp_path, encoder):
    """Two documents with the same text score the same in every mode; which comes first must not depend on
    the mode or on where FAISS happened to store them (dense mode used FAISS's order, the others chunk ids)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    twin = "The Tianwen-1 orbiter mapped the landing site in Utopia Planitia before the rover descended."
    for name in ("a.txt", "b.txt"):
        (corpus / name).write_text(twin)
    (corpus / "other.txt").write_text("Rockets are launched from Wenchang on the island of Hainan.")
    build_index([corpus], index_dir=tmp_path / "index", encoder=encoder, chunking=ChunkingConfig())
    reader = IndexReader(
        tmp_path / "index",
        model_sha256=encoder.weights_sha256,
        dimension=encoder.dimension,
        backend=encoder.backend,
    )
    twins = Searcher(encoder, reader, RetrievalConfig())
    question = "Where did the Tianwen orbiter map a landing site?"
    for mode in MODES:
        first_two = twins.search(question, 3, SearchOptions(mode=mode))[:2]
        assert first_two[0].score == first_two[1].score, mode
        assert {p.chunk.document_id for p in first_two} == {"a.txt", "b.txt"}, mode
        assert first_two[0].chunk.chunk_id < first_two[1].chunk.chunk_id, mode


def test_grouped_query_does_not_search_deeper_for_documents_that_do_not_exist(searcher, monkeypatch):
    """Asked for 5 documents among 2, a grouped answer holding both is complete: no deeper rounds (each
    would read four times as many passages, for nothing; the white paper alone fills the dense side's 50)."""
    shallow = Searcher(searcher.encoder, searcher.reader, RetrievalConfig(candidates=25))
    dense_type = type(searcher.view.dense)
    depths: list[int] = []  # each dense search's depth
    real = dense_type.search
    monkeypatch.setattr(
        dense_type, "search", lambda self, *a, **k: depths.append(a[1]) or real(self, *a, **k)
    )
    two = [WHITE_PAPER, "001_c76768aa996baf89.txt"]
    options = SearchOptions(mode="hybrid", group_by_document=True, documents=two)
    grouped = shallow.search("When is the China Space Science Conference held?", 5, options)
    assert {p.chunk.document_id for p in grouped} == set(two)
    assert depths == [50]
