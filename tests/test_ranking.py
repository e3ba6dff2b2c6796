"""The hybrid ranking model: its features on hand-made arrays, the shipped model file, its inputs as read
from a real index, and the searcher using it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from indexer.lexical import ANALYZE, passage_body
from server.retrieval import RetrievalConfig, Searcher, SearchOptions
from server.retrieval.evidence import model_scores, term_holdings
from server.retrieval.fusion import fuse
from server.retrieval.ranking import FEATURES, Ranker, best_sentence, coverage, lexical_match, score


def ranker(**weights: float) -> Ranker:
    return Ranker(
        fusion="zscore", alpha=0.4, feedback_depth=1, weights={f: weights.get(f, 0.0) for f in FEATURES}
    )


def test_features_on_a_hand_made_example():
    # passage 0 has sentences 0.2 and 0.7, passage 1 none (it keeps its own 0.5), passage 2 one of 0.1
    assert list(best_sentence(np.array([0.2, 0.7, 0.1]), np.array([0, 0, 2]), np.array([0.4, 0.5, 0.3]))) == [
        0.7,
        0.5,
        0.1,
    ]
    holds = np.array([[True, False], [True, True], [False, False]])
    assert list(coverage(holds, np.array([1.0, 3.0]))) == [0.25, 1.0, 0.0]
    assert list(coverage(np.zeros((2, 0), bool), np.zeros(0))) == [0.0, 0.0]


def test_each_feature_moves_the_passage_that_has_it():
    dense, lexical = np.array([0.60, 0.58, 0.20]), np.array([5.0, 5.0, 1.0])
    vectors = np.eye(3)
    plain = score(ranker(), dense, lexical, np.zeros(3), np.zeros(3), vectors)
    assert np.allclose(plain, fuse(dense, lexical, "zscore", 0.4))  # no weights: the fusion itself
    assert np.argmax(plain) == 0
    sentence = np.array([0.5, 0.9, 0.1])  # passage 1 holds the sentence closest to the question
    assert np.argmax(score(ranker(sentence=0.3), dense, lexical, sentence, np.zeros(3), vectors)) == 1
    covered = np.array([0.5, 1.0, 0.5])  # passage 1 holds every question term
    assert np.argmax(score(ranker(coverage=0.3), dense, lexical, np.zeros(3), covered, vectors)) == 1
    # feedback: passage 2 is like the fused ranking's top passage (0), passage 1 is not
    like_top = np.array([[1.0, 0.0], [0.0, 1.0], [0.99, 0.14]])
    raised = score(ranker(feedback=1.0), dense, lexical, np.zeros(3), np.zeros(3), like_top)
    assert raised[2] - plain[2] > raised[1] - plain[1]


def test_the_dense_weight_follows_how_well_the_question_words_match():
    """A question whose words the best BM25 passage holds is fused at ``alpha``; one worded unlike the
    passages leans on the dense side, up to ``alpha_unmatched``; feedback fades with the match."""
    adaptive = Ranker("zscore", 0.5, 1, {f: 0.0 for f in FEATURES}, alpha_unmatched=0.7)
    dense, lexical = np.array([0.75, 0.50, 0.20]), np.array([2.0, 6.0, 1.0])
    vectors, zeros = np.eye(3), np.zeros(3)
    # the best BM25 passage (1) holds all of the question's terms: alpha itself
    assert lexical_match(lexical, np.array([0.5, 1.0, 0.5])) == 1.0
    full = score(adaptive, dense, lexical, zeros, np.array([0.5, 1.0, 0.5]), vectors)
    assert np.allclose(full, fuse(dense, lexical, "zscore", 0.5)) and np.argmax(full) == 1
    # it holds a quarter of them: 0.5 + 0.2 x 0.75 = 0.65, and the dense side's favourite wins
    partial = score(adaptive, dense, lexical, zeros, np.array([0.25, 0.25, 0.0]), vectors)
    assert np.allclose(partial, fuse(dense, lexical, "zscore", 0.65)) and np.argmax(partial) == 0
    # no candidate holds a question term (all BM25 zero): the whole way to alpha_unmatched
    assert lexical_match(np.zeros(3), np.zeros(3)) == 0.0
    assert adaptive.dense_weight(0.0) == pytest.approx(0.7) and adaptive.dense_weight(1.0) == 0.5
    # without alpha_unmatched the weight is fixed, as the model before it
    assert Ranker("zscore", 0.4, 1, adaptive.weights).dense_weight(0.0) == 0.4
    # a feature scaled by the match counts fully at a full match and not at all without one
    like_top = np.array([[1.0, 0.0], [0.0, 1.0], [0.99, 0.14]])
    fed = Ranker("zscore", 0.5, 1, {**adaptive.weights, "feedback": 1.0}, scaled_by_match=("feedback",))
    unfed = Ranker("zscore", 0.5, 1, adaptive.weights)
    matched = np.array([0.5, 1.0, 0.5])
    assert not np.allclose(
        score(fed, dense, lexical, zeros, matched, like_top),
        score(unfed, dense, lexical, zeros, matched, like_top),
    )
    unmatched = np.array([0.0, 0.0, 0.0])
    assert np.allclose(
        score(fed, dense, lexical, zeros, unmatched, like_top),
        score(unfed, dense, lexical, zeros, unmatched, like_top),
    )


def test_the_shipped_model_loads_and_ranks(tmp_path):
    shipped = (
        Ranker.load()
    )  # package data: found through importlib.resources, as an installed package finds it
    assert shipped.fusion == "zscore" and set(shipped.weights) == set(FEATURES)
    assert any(shipped.weights.values())
    scores = score(
        shipped, np.array([0.1, 0.9]), np.array([1.0, 2.0]), np.array([0.1, 0.9]), np.ones(2), np.eye(2)
    )
    assert scores[1] > scores[0]
    path = tmp_path / "ranker.json"
    path.write_text(
        json.dumps({"fusion": "zscore", "alpha": 0.5, "feedback_depth": 3, "weights": {"sentence": 1}})
    )
    assert Ranker.load(path).weights == {"sentence": 1.0, "coverage": 0.0, "feedback": 0.0}
    path.write_text(
        json.dumps({"fusion": "zscore", "alpha": 0.5, "feedback_depth": 3, "weights": {"title": 1}})
    )
    with pytest.raises(ValueError, match="unknown features"):
        Ranker.load(path)
    path.write_text(
        json.dumps(
            {
                "fusion": "zscore",
                "alpha": 0.5,
                "feedback_depth": 3,
                "weights": {},
                "scaled_by_match": ["title"],
            }
        )
    )
    with pytest.raises(ValueError, match="unknown features"):
        Ranker.load(path)
    # the shipped model leans dense for questions worded unlike the passages, and fades feedback with it
    assert shipped.dense_weight(0.0) > shipped.dense_weight(1.0) and "feedback" in shipped.scaled_by_match


def test_model_inputs_read_from_the_index_match_the_passages(searcher):
    view = searcher.view
    question = "How many data files were in the batch of lunar data?"
    vector = searcher.encoder.encode([question])[0]
    ids, _ = view.dense.live()
    ids = np.sort(ids)[:40]
    terms = ANALYZE([question])[0]
    idf = view.lexical.idf(terms)
    evidence = view.evidence(ids)  # what ranking reads: the evidence files, here
    owners, sentence_vectors = evidence.owners, evidence.vectors
    holds, term_idf = term_holdings(evidence.terms, ids, terms, idf)
    chunks = view.store.chunks(ids.tolist())
    kept = [t for t in dict.fromkeys(terms) if idf[t] > 0]
    for row, chunk_id in enumerate(ids):
        chunk = chunks[int(chunk_id)]
        indexed = set(ANALYZE([passage_body(chunk.title, chunk.text)])[0])
        assert list(holds[row]) == [t in indexed for t in kept]
    assert len(term_idf) == len(kept) and (term_idf > 0).all()
    stored = view.store.evidence(ids).sentences(ids.tolist())
    for row, chunk_id in enumerate(ids):
        offsets, vectors = stored.get(int(chunk_id), ([], np.zeros((0, 384))))
        assert len(offsets) == int((owners == row).sum())
        if offsets:
            mine = sentence_vectors[owners == row]
            assert np.allclose(mine @ vector, vectors @ vector, atol=1e-5)


def test_hybrid_search_ranks_with_the_model(searcher):
    question = "Which relay satellites upgraded the relay satellite system?"
    with_model = searcher.search(question, 10, SearchOptions(mode="hybrid", highlight=False))
    fusion_only = Searcher(searcher.encoder, searcher.reader, RetrievalConfig(ranker=None))
    fused = fusion_only.search(question, 10, SearchOptions(mode="hybrid", highlight=False))
    assert searcher.config.ranker is not None
    view = searcher.view
    ids = np.array(sorted({p.chunk.chunk_id for p in fused} | {p.chunk.chunk_id for p in with_model}))
    assert all(p.dense_score is not None for p in with_model)
    # the model's order is its own score's order, and that score is what each passage carries
    assert [p.score for p in with_model] == sorted((p.score for p in with_model), reverse=True)
    vector = searcher.encoder.encode([question])[0]
    terms = ANALYZE([question])[0]
    depth = searcher.config.depth(10, group_by_document=False)  # what the searcher asks each retriever for
    dense_ids = view.dense.search(vector[None], depth)[0][0]
    candidates, vectors, lexical, _ = searcher._candidates(
        view, terms, vector, dense_ids, depth, SearchOptions()
    )
    expected = model_scores(
        searcher.config.ranker,
        view.evidence(candidates),
        terms,
        view.lexical.idf(terms),
        vector,
        vectors,
        vectors @ vector,
        lexical,
    )
    best = candidates[np.argsort(-expected, kind="stable")[:10]]
    assert [p.chunk.chunk_id for p in with_model] == list(best)
    assert set(ids) <= set(candidates)


def test_term_holdings_match_whole_terms_only():
    """A term is held only as a whole term of the passage: not as part of a longer one, not across two
    passages, whatever its place (first, last, alone); a passage without terms holds none."""
    terms_of = {1: "moon landing", 2: "honeymoon moons", 3: "moon", 4: "", 6: "orbit moon", 7: "landing"}
    ids = np.array([1, 2, 3, 4, 5, 6, 7])  # 5: not in the store's answer (a passage replaced meanwhile)
    holds, idf = term_holdings(
        terms_of, ids, ["moon", "landing", "moon", "rare"], {"moon": 1.5, "landing": 2.0}
    )
    assert holds.tolist() == [
        [True, True],
        [False, False],
        [True, False],
        [False, False],
        [False, False],
        [True, False],
        [False, True],
    ]
    assert idf.tolist() == [1.5, 2.0]  # distinct known terms, in the question's order
