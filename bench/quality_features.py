"""Offline answer-quality experiments: the candidates ``POST /ask`` ranks, with what the ranking model reads.

For each development set (the dev questions on the corpus, SciFact train, NFCorpus test) an index is built
with the default settings (embeddings from the cache; ``--no-embed-title``: passages embedded without
their title, the form before issue 11), the questions are embedded in one batch as ``semqa eval`` embeds
them, and the searcher's own steps make each question's pool: ``view.dense.search`` and
``Searcher._candidates`` give the candidates ``/ask`` ranks at top_k 10 (the searcher's depth per
retriever: 100 grouped by document, deeper while they hold fewer than 10 documents, ``candidates``
otherwise) with both scores and their vectors, and ``view.evidence`` with
``evidence.term_holdings`` what the ranking model reads (stored sentence vectors, question terms held).
The pools are pickled under ``.semqa/quality/``; a ranking (one score per candidate) is evaluated on a
whole set in seconds, as the searcher ranks: stable sort, one passage per document for BEIR, top 10.

    python bench/quality_features.py collect [--no-embed-title]
    python bench/quality_features.py check [--expect EVAL.json ...]

``check`` prints each set's headline figure (MRR@10, nDCG@10) in the three modes, named as
``semqa eval --json`` names them; given the files ``semqa eval --json`` wrote for the same sets, it
compares and exits non-zero unless every figure matches within ``TOLERANCE``.

bench/quality_levers.py imports ``load_sets``, ``per_question``, ``model_inputs`` and ``paired``.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from common import REPO, SHARED

from embeddings import EmbeddingCache
from indexer import ChunkingConfig, build_index
from indexer.lexical import ANALYZE, passage_body
from semqa import evaluation
from semqa.settings import Settings
from server.retrieval import SearchOptions, configured_encoder, load_searcher
from server.retrieval.evidence import term_holdings
from server.retrieval.ranking import Ranker, best_sentence, coverage, score

CACHE = REPO / ".semqa" / "quality"
# question sets on the corpus (a hit: a returned passage holding the evidence), then BEIR sets; "paraphrased":
# questions written for this bench that avoid the documents' words (bench/data/paraphrased_questions.tsv)
QUESTIONS = {
    "dev": SHARED / "dev_questions.tsv",
    "paraphrased": REPO / "bench" / "data" / "paraphrased_questions.tsv",
}
SETS = ("dev", "scifact", "nfcorpus", "paraphrased")
SPLITS = {"scifact": "train", "nfcorpus": "test"}
MODES = ("dense", "lexical", "hybrid")
TOP_K = evaluation.SERVED_TOP_K
TOLERANCE = 1e-4
# The ranking model shipped until stop 21: a fixed dense weight (what bench/quality_levers.py studies)
FIXED_MODEL = Ranker("zscore", 0.4, 5, {"sentence": 0.3, "coverage": 0.3, "feedback": 0.3})


@dataclass
class Pool:
    """One question's candidates, in the searcher's order (by chunk id), with what ranking reads."""

    rows: np.ndarray  # each candidate's row in SetData.doc and SetData.vectors
    dense: np.ndarray  # float32 cosine (candidate vectors @ question vector, as the searcher computes it)
    lexical: np.ndarray  # float32 BM25 (tantivy's, title + text)
    in_dense: np.ndarray  # proposed by the dense retriever (dense mode ranks only these)
    in_lexical: np.ndarray  # proposed by BM25 (lexical mode ranks only these)
    owner: np.ndarray  # the candidate each stored sentence belongs to
    sentence_dense: np.ndarray  # float32 cosine of the question to each stored sentence vector
    holds: np.ndarray  # (candidates, terms): whether the passage holds each distinct question term
    idf: np.ndarray  # (terms,) those terms' idf
    label: np.ndarray  # dev: 1 if the passage holds the evidence; BEIR: its document's grade
    ideal: float  # BEIR: the ideal DCG@10 of the question's judgements (as evaluation.ndcg_at_k)
    terms: list[str]  # the question's analysed terms, in order


@dataclass
class SetData:
    name: str
    kind: str  # "questions" or "beir"
    embed_title: bool
    doc: np.ndarray  # document index of each passage row
    vectors: np.ndarray  # float32 unit passage vectors, by row
    pools: list[Pool]
    analysed: list[list[str]]  # each row's analysed title + text, in order (what BM25 reads)
    title_terms: np.ndarray  # how many of a row's analysed terms are its title's

    @property
    def headline(self) -> str:
        return "nDCG@10" if self.kind == "beir" else "MRR@10"


Labeller = Callable[[int, np.ndarray], tuple[np.ndarray, float]]


def question_texts(name: str) -> list[str]:
    """The set's questions, in the order of its pools."""
    if name in QUESTIONS:
        return [q.question for q in evaluation.read_questions(QUESTIONS[name])]
    return list(evaluation.read_beir(SHARED / name, SPLITS[name]).queries.values())


def _labeller(name: str, texts: Sequence[str], documents: Sequence[str]) -> Labeller:
    """A labeller of the set's questions (in ``question_texts`` order): (question, candidate rows) ->
    (labels, ideal DCG@10)."""
    if name in QUESTIONS:
        questions = evaluation.read_questions(QUESTIONS[name])
        normalised = [evaluation.normalise(t) for t in texts]

        def label(q: int, rows: np.ndarray) -> tuple[np.ndarray, float]:
            evidence = evaluation.normalise(questions[q].evidence)
            return np.array([evidence in normalised[r] for r in rows], dtype=np.float64), 0.0

        return label
    beir = evaluation.read_beir(SHARED / name, SPLITS[name])
    query_ids = list(beir.queries)

    def label_beir(q: int, rows: np.ndarray) -> tuple[np.ndarray, float]:
        grades = beir.qrels[query_ids[q]]
        ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[:TOP_K]
        idcg = sum(g / np.log2(i + 2) for i, g in enumerate(ideal))
        return np.array([grades.get(documents[r], 0) for r in rows], dtype=np.float64), float(idcg)

    return label_beir


def collect(name: str, embed_title: bool) -> SetData:
    """Index the set as ``semqa eval`` does, ask every question through the searcher's steps, keep the pools."""
    settings = Settings(quiet=True)
    encoder = configured_encoder(settings, None)
    corpus = (
        REPO / "corpus" if name in QUESTIONS else evaluation.read_beir(SHARED / name, SPLITS[name]).corpus
    )
    with tempfile.TemporaryDirectory(prefix="semqa-quality-") as scratch:
        build_index(
            [corpus],
            index_dir=Path(scratch),
            encoder=encoder,
            chunking=ChunkingConfig(settings.chunk_tokens, settings.chunk_overlap, embed_title=embed_title),
            faiss_factory=settings.faiss_factory,
            cache=EmbeddingCache(settings.cache_dir, encoder),
            batch_size=settings.batch_size,
        )
        searcher = load_searcher(settings.model_copy(update={"index_dir": Path(scratch)}), encoder)
        view = searcher.view
        live = list(view.store.store.live_texts(view.seq))  # (chunk id, document id, title, text) by id
        chunk_ids = np.array([r[0] for r in live], dtype=np.int64)
        documents = sorted({r[1] for r in live})
        index = {d: i for i, d in enumerate(documents)}
        doc = np.array([index[r[1]] for r in live], dtype=np.int64)
        questions = question_texts(name)
        label = _labeller(name, [r[3] for r in live], [r[1] for r in live])
        beir = name not in QUESTIONS
        # what search_batch asks each retriever for at top_k 10 (grouped by document for BEIR)
        depth = searcher.config.depth(TOP_K, beir)
        vectors = encoder.encode(questions)
        found = view.dense.search(vectors, depth)
        pools = []
        for q, question in enumerate(questions):
            terms = ANALYZE([question])[0]
            dense_ids, question_depth = found[q][0], depth
            while True:
                ids, candidate_vectors, lexical, full = searcher._candidates(
                    view, terms, vectors[q], dense_ids, question_depth, SearchOptions()
                )
                # grouped, the searcher asks deeper while its answer holds fewer than top_k documents,
                # which (without min_score) is while the candidates do: the same rounds here
                short = beir and full and len(np.unique(doc[np.searchsorted(chunk_ids, ids)])) < TOP_K
                deeper = searcher.config.deeper(question_depth) if short else None
                if deeper is None:
                    break
                question_depth = deeper
                dense_ids = view.dense.search(vectors[q : q + 1], question_depth)[0][0]
            lexical_ids, _ = view.lexical.search(terms, question_depth)
            evidence = view.evidence(ids)
            holds, idf = term_holdings(evidence.terms, ids, terms, view.lexical.idf(terms))
            rows = np.searchsorted(chunk_ids, ids)
            labels, ideal = label(q, rows)
            pools.append(
                Pool(
                    rows=rows,
                    dense=candidate_vectors @ vectors[q],
                    lexical=lexical,
                    in_dense=np.isin(ids, dense_ids),
                    in_lexical=np.isin(ids, lexical_ids),
                    owner=evidence.owners,
                    sentence_dense=evidence.vectors @ vectors[q],
                    holds=holds,
                    idf=idf,
                    label=labels,
                    ideal=ideal,
                    terms=terms,
                )
            )
        passage_vectors = view.dense.vectors(chunk_ids)
    analysed = ANALYZE([passage_body(r[2], r[3]) for r in live])
    title_length = {title: len(ANALYZE([title])[0]) for title in {r[2] for r in live}}
    title_terms = np.array([title_length[r[2]] for r in live], dtype=np.int64)
    kind = "beir" if beir else "questions"
    return SetData(name, kind, embed_title, doc, passage_vectors, pools, analysed, title_terms)


def cache_path(name: str, embed_title: bool) -> Path:
    return CACHE / f"{name}{'' if embed_title else '-notitle'}.pkl"


def save(data: SetData) -> None:
    """Pickled as plain dicts and arrays, loadable whichever module (this script or an importer) runs."""
    CACHE.mkdir(parents=True, exist_ok=True)
    saved = {f.name: getattr(data, f.name) for f in fields(data)}
    saved["pools"] = [{f.name: getattr(p, f.name) for f in fields(p)} for p in data.pools]
    with cache_path(data.name, data.embed_title).open("wb") as handle:
        pickle.dump(saved, handle, protocol=pickle.HIGHEST_PROTOCOL)


def load_sets(embed_title: bool = True, names: Sequence[str] = SETS) -> dict[str, SetData]:
    out = {}
    for name in names:
        path = cache_path(name, embed_title)
        if not path.is_file():
            flag = "" if embed_title else " --no-embed-title"
            raise SystemExit(f"{path} is missing: run `python bench/quality_features.py collect{flag}` first")
        with path.open("rb") as handle:
            saved = pickle.load(handle)
        try:
            out[name] = SetData(**{**saved, "pools": [Pool(**p) for p in saved["pools"]]})
        except TypeError as exc:  # pools collected by an earlier version of this script
            raise SystemExit(f"{path} is from an earlier version ({exc}): run `collect` again") from exc
    return out


Ranking = Callable[[Pool], np.ndarray]


def per_question(data: SetData, rank: Ranking) -> np.ndarray:
    """The headline figure per question (nDCG@10 for BEIR, MRR@10 for the dev questions) of the ranking
    ``rank`` gives, served as the searcher serves it: stable sort, BEIR one passage per document, top 10;
    candidates scored ``-inf`` are dropped (the modes that rank one retriever's candidates only)."""
    out = np.zeros(len(data.pools))
    discount = 1 / np.log2(np.arange(2, TOP_K + 2))
    for q, pool in enumerate(data.pools):
        scores = rank(pool)
        order = np.argsort(-scores, kind="stable")
        order = order[np.isfinite(scores[order])]
        if data.kind == "beir":
            _, first = np.unique(data.doc[pool.rows[order]], return_index=True)
            order = order[np.sort(first)][:TOP_K]
            dcg = float((pool.label[order] * discount[: len(order)]).sum())
            out[q] = dcg / pool.ideal if pool.ideal > 0 else 0.0
        else:
            hits = np.flatnonzero(pool.label[order[:TOP_K]] > 0)
            out[q] = 1 / (hits[0] + 1) if len(hits) else 0.0
    return out


SetRanking = Callable[[SetData, int, Pool], np.ndarray]


def per_set(sets: dict[str, SetData], rank: SetRanking) -> dict[str, np.ndarray]:
    """``per_question`` on every set, for a ranking told the set and the question's number as well."""
    out = {}
    for name, data in sets.items():
        position = {id(p): q for q, p in enumerate(data.pools)}
        out[name] = per_question(data, lambda p, d=data, at=position: rank(d, at[id(p)], p))
    return out


def paired(a: np.ndarray, b: np.ndarray, rounds: int = 10_000, seed: int = 0) -> dict[str, float]:
    """Paired bootstrap over questions of mean(a - b): the difference and its standard error."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(rounds, len(diff)))].mean(axis=1)
    return {"diff": float(diff.mean()), "se": float(means.std())}


def model_inputs(data: SetData, pool: Pool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``ranking.score``'s evidence arguments for a pool, as evidence.model_scores computes them: each
    candidate's best sentence cosine, its idf-weighted question-term coverage, and its passage vector."""
    sentence = best_sentence(pool.sentence_dense, pool.owner, pool.dense)
    return sentence, coverage(pool.holds, pool.idf), data.vectors[pool.rows]


def served_figures(data: SetData) -> dict[str, float]:
    """The headline figure of each mode, keyed as ``semqa eval --json`` keys it."""
    shipped = Ranker.load()
    if data.name in QUESTIONS:  # `semqa eval --questions` names its figures "questions/<mode>"
        prefix = "questions" if data.name == "dev" else f"questions:{data.name}"
    else:
        prefix = f"beir:{data.name}/{SPLITS[data.name]}"
    rankings: dict[str, Ranking] = {
        "dense": lambda p: np.where(p.in_dense, p.dense.astype(np.float64), -np.inf),
        "lexical": lambda p: np.where(p.in_lexical, p.lexical.astype(np.float64), -np.inf),
        "hybrid": lambda p: score(shipped, p.dense, p.lexical, *model_inputs(data, p)),
    }
    return {f"{prefix}/{mode}": float(per_question(data, rankings[mode]).mean()) for mode in MODES}


def check(sets: dict[str, SetData], expect: Sequence[Path]) -> int:
    expected: dict[str, dict[str, float]] = {}
    for path in expect:
        figures = json.loads(path.read_text())
        figures.pop("settings", None)
        if set(figures) & set(expected):  # two `semqa eval --questions` files both name "questions/<mode>"
            raise SystemExit(f"{path} names figures another --expect file names: give one file per set")
        expected.update(figures)
    worst = 0.0
    for data in sets.values():
        for key, value in served_figures(data).items():
            line = f"{key} {data.headline}: {value:.4f}"
            if key in expected:
                theirs = float(expected[key][data.headline])
                worst = max(worst, abs(value - theirs))
                line += f"  semqa eval {theirs:.4f}  diff {value - theirs:+.6f}"
            print(line)
    if expect:
        print(f"largest difference to semqa eval: {worst:.6f} (tolerance {TOLERANCE})")
    return 0 if worst <= TOLERANCE else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["collect", "check"])
    parser.add_argument(
        "--embed-title", action=argparse.BooleanOptionalAction, default=True, help="title + text embedded"
    )
    parser.add_argument("--sets", nargs="*", default=list(SETS), choices=SETS)
    parser.add_argument("--expect", nargs="*", type=Path, default=[], help="`semqa eval --json` outputs")
    args = parser.parse_args()
    if args.command == "collect":
        for name in args.sets:
            data = collect(name, args.embed_title)
            save(data)
            print(f"{name}: {len(data.pools)} questions, {len(data.doc)} passages", flush=True)
        return
    sys.exit(check(load_sets(args.embed_title, args.sets), args.expect))


if __name__ == "__main__":
    main()
