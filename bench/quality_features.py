"""Offline answer-quality experiments: the candidates the service fuses, with every feature, cached.

For each development set (the dev questions on the corpus, SciFact train, NFCorpus test) an index is
built with the default settings (embeddings from the cache), every question is embedded once, and the
searcher's own candidate step (``Searcher._dense_candidates`` / ``_candidates``: the same 100 dense + 100
lexical candidates ``POST /ask`` fuses at top_k=10) gives each question's pool. Each candidate then gets
raw evidence: its dense cosine and BM25, its global rank in each retriever, the question's cosine to each
of its stored sentence vectors, BM25 of the question over each of those sentences, and which question terms
its text and title hold. The pools are pickled under ``.semqa/quality/``; a ranking function (candidate
scores from a pool) is evaluated on all of them in seconds, exactly as the searcher ranks: stable sort,
one passage per document for BEIR, top 10.

    python bench/quality_features.py collect [--embed-title]   # once per variant (embeds titles: ~30 min)
    python bench/quality_features.py check                     # the cached baseline = `semqa eval`'s figures

Experiments import ``load_sets``, ``evaluate`` and ``paired`` (see bench/quality_levers.py).
"""

from __future__ import annotations

import argparse
import json
import pickle
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from common import REPO, SHARED
from scipy import sparse

from embeddings import EmbeddingCache, load_encoder
from indexer import ChunkingConfig, build_index, load_version
from indexer.lexical import BM25_B, BM25_K1
from semqa import evaluation
from semqa.settings import Settings
from server.retrieval import Searcher

CACHE = REPO / ".semqa" / "quality"
SETS = ("dev", "scifact", "nfcorpus")
TOP_K = evaluation.SERVED_TOP_K


@dataclass
class Pool:
    """One question's candidates (in the searcher's order: sorted chunk ids) with their raw evidence."""

    question: str
    ids: np.ndarray  # chunk ids
    rows: np.ndarray  # rows of SetData.vectors
    vector: np.ndarray  # the question's vector
    doc: np.ndarray  # document index (into SetData.documents)
    label: np.ndarray  # BEIR: the document's grade; dev: 1 if the passage holds the evidence
    dense: np.ndarray  # cosine of question and passage vector
    lexical: np.ndarray  # BM25 (title + text, as indexed)
    dense_rank: np.ndarray  # 1-based rank among all passages
    lexical_rank: np.ndarray
    in_dense: np.ndarray  # proposed by the dense retriever (its top 100)
    in_lexical: np.ndarray
    sentence_ptr: np.ndarray  # candidate i's stored sentences are [ptr[i], ptr[i + 1])
    sentence_dense: np.ndarray  # question's cosine to each stored sentence vector
    sentence_bm25: np.ndarray  # BM25 of the question over each stored sentence (corpus idf)
    sentence_position: np.ndarray  # sentence index inside its passage
    idf: np.ndarray  # (terms,) idf of each distinct analysed question term the corpus has
    term_text: np.ndarray  # (candidates, terms) term frequency in title + text
    term_title: np.ndarray  # (candidates, terms) term frequency in the title
    length: np.ndarray  # analysed terms in title + text
    chunk_position: np.ndarray  # 0 for a document's first passage
    relevant: dict[int, float] = field(default_factory=dict)  # BEIR: every judged document's grade


@dataclass
class SetData:
    name: str
    kind: str  # "questions" or "beir"
    documents: list[str]
    pools: list[Pool]
    chunks: int
    vectors: np.ndarray  # every passage's vector (float16), by row
    chunk_doc: np.ndarray  # every passage's document index, by row


def _settings() -> Settings:
    return Settings(quiet=True)


def _index(corpus: Path, directory: Path, encoder, embed_title: bool):  # type: ignore[no-untyped-def]
    settings = _settings()
    chunking = ChunkingConfig(settings.chunk_tokens, settings.chunk_overlap, embed_title=embed_title)
    build_index(
        [corpus],
        index_dir=directory,
        encoder=encoder,
        chunking=chunking,
        cache=EmbeddingCache(settings.cache_dir, encoder),
    )
    return load_version(directory, model_sha256=encoder.weights_sha256, dimension=encoder.dimension)


def _term_matrix(term_lists: Sequence[list[str]], vocab: dict[str, int], saturate: bool) -> sparse.csr_matrix:
    """A (texts, vocabulary) matrix: term frequency, or with ``saturate`` the BM25 term weight without idf
    (average length over these texts)."""
    rows, cols, vals = [], [], []
    lengths = np.array([len(t) for t in term_lists], dtype=np.float64)
    average = max(1.0, float(lengths.mean())) if len(lengths) else 1.0
    for row, terms in enumerate(term_lists):
        counts: dict[int, int] = {}
        for term in terms:
            counts[vocab[term]] = counts.get(vocab[term], 0) + 1
        norm = BM25_K1 * (1 - BM25_B + BM25_B * lengths[row] / average)
        for column, tf in counts.items():
            rows.append(row)
            cols.append(column)
            vals.append(tf * (BM25_K1 + 1) / (tf + norm) if saturate else tf)
    return sparse.csr_matrix((vals, (rows, cols)), shape=(len(term_lists), len(vocab)))


def collect(name: str, embed_title: bool) -> SetData:
    """Build the set's index, ask every question through the searcher's candidate step, keep the evidence."""
    encoder = load_encoder()
    if name == "dev":
        questions = evaluation.read_questions(SHARED / "dev_questions.tsv")
        texts = [q.question for q in questions]
        corpus, kind = REPO / "corpus", "questions"
    else:
        split = "train" if name == "scifact" else "test"
        data = evaluation.read_beir(SHARED / name, split)
        query_ids = list(data.queries)
        texts = [data.queries[i] for i in query_ids]
        corpus, kind = data.corpus, "beir"
    with tempfile.TemporaryDirectory(prefix="semqa-quality-") as scratch:
        version = _index(corpus, Path(scratch), encoder, embed_title)
        searcher = Searcher(encoder, version)
        store, lexical = version.store, version.lexical
        rows = store._db.execute(
            "SELECT id, document_id, title, text, start FROM chunks ORDER BY id"
        ).fetchall()
        chunk_ids = np.array([r[0] for r in rows], dtype=np.int64)
        row_of = {int(c): i for i, c in enumerate(chunk_ids)}
        documents = sorted({r[1] for r in rows})
        doc_index = {d: i for i, d in enumerate(documents)}
        chunk_doc = np.array([doc_index[r[1]] for r in rows])
        chunk_text = [r[3] for r in rows]
        first_start: dict[str, list[int]] = {}
        for r in rows:
            first_start.setdefault(r[1], []).append(r[4])
        position = np.array([sorted(first_start[r[1]]).index(r[4]) for r in rows])
        # Stored sentences (what the highlighter and a ranker can use at query time) and their vectors.
        spans = store.spans(chunk_ids.tolist(), encoder.dimension)
        sentence_ptr = np.zeros(len(rows) + 1, dtype=np.int64)
        sentence_texts: list[str] = []
        vectors: list[np.ndarray] = []
        for i, chunk in enumerate(chunk_ids):
            offsets, vecs = spans.get(int(chunk), ([], np.zeros((0, encoder.dimension), np.float32)))
            sentence_texts += [chunk_text[i][s:e] for s, e in offsets]
            vectors.append(vecs)
            sentence_ptr[i + 1] = sentence_ptr[i] + len(offsets)
        sentence_vectors = np.vstack(vectors).astype(np.float32)
        analyze = lexical.analyze
        indexed = analyze([f"{r[2]}\n{r[3]}" if r[2] else r[3] for r in rows])
        titles = analyze([r[2] for r in rows])
        sentences = analyze(sentence_texts)
        vocab = {t: i for i, t in enumerate(sorted({t for terms in indexed for t in terms}))}
        text_tf = _term_matrix(indexed, vocab, saturate=False)
        title_tf = _term_matrix(titles, vocab, saturate=False)
        sentence_w = _term_matrix(sentences, vocab, saturate=True)
        lengths = np.array([len(t) for t in indexed])
        all_vectors = version.dense.reconstruct_batch(chunk_ids)
        question_vectors = encoder.encode(texts)
        depth = max(searcher.config.candidates, TOP_K * 10)  # what search_batch uses for top_k=10, grouped
        found = searcher._dense_candidates(version, question_vectors, depth, None)
        pools = []
        for q, text in enumerate(texts):
            ids, dense, lex = searcher._candidates(version, text, found[q], depth, "hybrid", None)
            rows_q = np.array([row_of[int(i)] for i in ids])
            all_dense = all_vectors @ question_vectors[q]
            all_lex = lexical.scores(text)[lexical.rows(chunk_ids)]
            dense_rank = 1 + (all_dense[None, :] > all_dense[rows_q][:, None]).sum(axis=1)
            lex_rank = 1 + (all_lex[None, :] > all_lex[rows_q][:, None]).sum(axis=1)
            terms = list(dict.fromkeys(analyze([text])[0]))
            idf_of = lexical.idf(terms)
            terms = [t for t in terms if idf_of[t] > 0]
            columns = [vocab[t] for t in terms]
            idf = np.array([idf_of[t] for t in terms])
            sent_rows = np.concatenate(
                [np.arange(sentence_ptr[r], sentence_ptr[r + 1]) for r in rows_q] + [np.zeros(0, np.int64)]
            ).astype(np.int64)
            ptr = np.concatenate([[0], np.cumsum(sentence_ptr[rows_q + 1] - sentence_ptr[rows_q])])
            sent_pos = sent_rows - np.repeat(sentence_ptr[rows_q], np.diff(ptr))
            sent_bm25 = (
                np.asarray(sentence_w[sent_rows][:, columns] @ idf).ravel()
                if columns
                else np.zeros(len(sent_rows))
            )
            if kind == "questions":
                evidence = evaluation.normalise(questions[q].evidence)
                label = np.array([evidence in evaluation.normalise(chunk_text[r]) for r in rows_q], float)
                relevant: dict[int, float] = {}
            else:
                grades = data.qrels[query_ids[q]]
                relevant = {doc_index[d]: float(g) for d, g in grades.items() if d in doc_index and g > 0}
                label = np.array([relevant.get(int(chunk_doc[r]), 0.0) for r in rows_q])
            pools.append(
                Pool(
                    question=text,
                    ids=np.asarray(ids),
                    rows=rows_q,
                    vector=question_vectors[q],
                    doc=chunk_doc[rows_q],
                    label=label,
                    dense=dense.astype(np.float64),
                    lexical=lex.astype(np.float64),
                    dense_rank=dense_rank,
                    lexical_rank=lex_rank,
                    in_dense=np.isin(ids, found[q][1]),
                    in_lexical=(lex_rank <= searcher.config.candidates) & (lex > 0),
                    sentence_ptr=ptr,
                    sentence_dense=(sentence_vectors[sent_rows] @ question_vectors[q]).astype(np.float64),
                    sentence_bm25=sent_bm25,
                    sentence_position=sent_pos,
                    idf=idf,
                    term_text=text_tf[rows_q][:, columns].toarray() if columns else np.zeros((len(ids), 0)),
                    term_title=title_tf[rows_q][:, columns].toarray() if columns else np.zeros((len(ids), 0)),
                    length=lengths[rows_q],
                    chunk_position=position[rows_q],
                    relevant=relevant,
                )
            )
        # BEIR queries whose judged documents are missing from the corpus still count (as in beir_metrics).
        return SetData(name, kind, documents, pools, len(rows), all_vectors.astype(np.float16), chunk_doc)


def cache_path(name: str, embed_title: bool) -> Path:
    return CACHE / f"{name}{'-title' if embed_title else ''}.pkl"


def load_sets(embed_title: bool = False, names: Sequence[str] = SETS) -> dict[str, SetData]:
    out = {}
    for name in names:
        with cache_path(name, embed_title).open("rb") as handle:
            saved = pickle.load(handle)  # plain dicts and arrays: loadable whichever module runs
        out[name] = SetData(**{**saved, "pools": [Pool(**p) for p in saved["pools"]]})
    return out


Ranker = Callable[[Pool], np.ndarray]


def per_question(data: SetData, rank: Ranker) -> dict[str, np.ndarray]:
    """Per question metrics of the ranking ``rank`` gives, as the searcher serves top_k=10."""
    if data.kind == "beir":
        ndcg = np.zeros(len(data.pools))
        for q, pool in enumerate(data.pools):
            scores = rank(pool)
            order = np.argsort(-scores, kind="stable")
            order = order[np.isfinite(scores[order])]
            _, first = np.unique(pool.doc[order], return_index=True)
            docs = pool.doc[order][np.sort(first)][:TOP_K]
            gains = np.array([pool.relevant.get(int(d), 0.0) for d in docs])
            ideal = np.sort(np.array(list(pool.relevant.values()) or [0.0]))[::-1][:TOP_K]
            discount = 1 / np.log2(np.arange(2, TOP_K + 2))
            idcg = float((ideal * discount[: len(ideal)]).sum())
            ndcg[q] = float((gains * discount[: len(gains)]).sum()) / idcg if idcg > 0 else 0.0
        return {"nDCG@10": ndcg}
    rr, r1, r5 = (np.zeros(len(data.pools)) for _ in range(3))
    for q, pool in enumerate(data.pools):
        scores = rank(pool)
        order = np.argsort(-scores, kind="stable")
        order = order[np.isfinite(scores[order])][:TOP_K]
        hits = np.flatnonzero(pool.label[order] > 0)
        if len(hits):
            rr[q] = 1 / (hits[0] + 1)
            r1[q] = hits[0] == 0
            r5[q] = hits[0] < 5
    return {"MRR@10": rr, "R@1": r1, "R@5": r5}


def dense_mode(pool: Pool) -> np.ndarray:
    """Dense mode ranks only the dense retriever's candidates."""
    return np.where(pool.in_dense, pool.dense, -np.inf)


def lexical_mode(pool: Pool) -> np.ndarray:
    """Lexical mode ranks only BM25's candidates (a passage with no question term is never one)."""
    return np.where(pool.in_lexical, pool.lexical, -np.inf)


def headline(data: SetData) -> str:
    return "nDCG@10" if data.kind == "beir" else "MRR@10"


def evaluate(data: SetData, rank: Ranker) -> dict[str, float]:
    return {k: float(v.mean()) for k, v in per_question(data, rank).items()}


def paired(a: np.ndarray, b: np.ndarray, rounds: int = 10_000, seed: int = 0) -> dict[str, float]:
    """Paired bootstrap over questions of mean(a - b): the difference, its standard error, the 95%
    interval, and the share of resamples where b is at least as good (a one-sided p)."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(rounds, len(diff)))].mean(axis=1)
    return {
        "diff": float(diff.mean()),
        "se": float(means.std()),
        "lo": float(np.quantile(means, 0.025)),
        "hi": float(np.quantile(means, 0.975)),
        "p": float((means <= 0).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["collect", "check"])
    parser.add_argument("--embed-title", action="store_true", help="passage vectors embed title + text")
    parser.add_argument("--sets", nargs="*", default=list(SETS), choices=SETS)
    args = parser.parse_args()
    if args.command == "collect":
        CACHE.mkdir(parents=True, exist_ok=True)
        for name in args.sets:
            data = collect(name, args.embed_title)
            with cache_path(name, args.embed_title).open("wb") as handle:
                saved = {**vars(data), "pools": [vars(p) for p in data.pools]}
                pickle.dump(saved, handle, protocol=pickle.HIGHEST_PROTOCOL)
            print(f"{name}: {len(data.pools)} questions, {data.chunks} passages", flush=True)
        return
    from server.retrieval.fusion import fuse

    sets = load_sets(args.embed_title, args.sets)
    rankers: dict[str, Ranker] = {
        "dense": dense_mode,
        "lexical": lexical_mode,
        "zscore 0.4": lambda p: fuse(p.dense, p.lexical, "zscore", 0.4),
    }
    print(json.dumps({n: {r: evaluate(d, f) for r, f in rankers.items()} for n, d in sets.items()}, indent=1))


if __name__ == "__main__":
    main()
