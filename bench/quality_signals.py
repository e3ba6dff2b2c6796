"""Three more lexical signals for the ranking model, measured on the cached pools of bench/quality_features.py.

Each is a general signal of classic retrieval, added to the shipped model's score as ``weight x`` its
z-score over the question's candidates (as the shipped features are), or replacing the BM25 input:

- ``proximity``: the share of the question's adjacent term pairs (analysed: stemmed, stop words out) that
  the passage holds side by side (the ordered-window feature of Metzler and Croft's sequential dependence
  model, at window 1);
- ``length``: the log of the passage's own length in terms (a length prior: the title prepended to a
  short passage, a boilerplate line, weighs more in BM25 and in the title + passage vector);
- ``fields``: BM25 over the passage's text alone plus ``beta`` x BM25 over its title (bm25s, Lucene's
  k1 1.2, b 0.75, over every passage of the set), instead of one BM25 over title + text, so that a
  short passage does not count its title's terms as dense matches.
- ``answer type``: for a question that asks for a number or a date (the highlight's test,
  ``highlight.asks_for_number``: "how many", "when", "what year"...), whether the passage's text holds a
  number the question does not, anywhere or within ``window`` terms of a question term (the expected
  answer type of classic question-answering pipelines); no change for other questions;
- ``proximity x match``: proximity with its weight multiplied by the ranking model's lexical match (the
  share of the question's terms the best BM25 candidate holds), as the model scales feedback, so that it
  acts on questions worded like the documents only.

Each row is paired (bootstrap over questions, 10,000 resamples) against the shipped model and against the
plain z-score 0.5 hybrid on the same pools.

    python bench/quality_features.py collect
    python bench/quality_signals.py
"""

from __future__ import annotations

import re
from collections.abc import Callable

import bm25s
import numpy as np
from quality_features import (
    Pool,
    SetData,
    SetRanking,
    load_sets,
    model_inputs,
    paired,
    per_set,
    question_texts,
)

from server.retrieval.fusion import fuse, zscore
from server.retrieval.highlight import asks_for_number
from server.retrieval.ranking import Ranker, lexical_match, score

SHIPPED = Ranker.load()
Signal = Callable[[Pool], np.ndarray]


def proximity(data: SetData) -> Signal:
    """Per candidate, the share of the question's adjacent term pairs it holds side by side."""
    padded = [f" {' '.join(terms)} " for terms in data.analysed]

    def signal(pool: Pool) -> np.ndarray:
        pairs = [f" {a} {b} " for a, b in zip(pool.terms, pool.terms[1:], strict=False) if a != b]
        if not pairs:
            return np.zeros(len(pool.rows))
        return np.array([np.mean([pair in padded[r] for pair in pairs]) for r in pool.rows.tolist()])

    return signal


def length(data: SetData) -> Signal:
    body = np.log1p([len(terms) - t for terms, t in zip(data.analysed, data.title_terms, strict=True)])
    return lambda pool: body[pool.rows]


def answer_type(data: SetData, window: int | None) -> Callable[[str, Pool], np.ndarray | None]:
    """Per candidate of a question asking for a number: whether its text holds a number term the question
    does not (within ``window`` terms of a question term; ``None``: anywhere). ``None`` for other questions."""
    digit = re.compile(r"\d")

    def signal(question: str, pool: Pool) -> np.ndarray | None:
        if not asks_for_number(question):
            return None
        asked = set(pool.terms)
        out = np.zeros(len(pool.rows))
        for i, r in enumerate(pool.rows.tolist()):
            body = data.analysed[r][data.title_terms[r] :]
            numbers = [j for j, t in enumerate(body) if digit.search(t) and t not in asked]
            if window is None:
                out[i] = bool(numbers)
            else:
                near = [j for j, t in enumerate(body) if t in asked]
                out[i] = any(abs(a - b) <= window for a in numbers for b in near)
        return out

    return signal


def field_bm25(data: SetData) -> tuple[Signal, Signal]:
    """BM25 of each candidate's text alone and of its title alone, each field indexed over the whole set."""
    texts = [terms[t:] for terms, t in zip(data.analysed, data.title_terms, strict=True)]
    titles = [terms[:t] for terms, t in zip(data.analysed, data.title_terms, strict=True)]
    fields = []
    for corpus in (texts, titles):
        index = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
        index.index(corpus, show_progress=False)
        fields.append(index)

    def of(index: bm25s.BM25) -> Signal:
        return lambda pool: (
            np.asarray(index.get_scores(pool.terms))[pool.rows] if pool.terms else 0 * pool.dense
        )

    return of(fields[0]), of(fields[1])


def main() -> None:
    sets = load_sets()
    inputs = {n: [model_inputs(d, p) for p in d.pools] for n, d in sets.items()}

    def figures(rank: SetRanking) -> dict[str, np.ndarray]:
        return per_set(sets, rank)

    def shipped(data: SetData, q: int, pool: Pool, lexical: np.ndarray | None = None) -> np.ndarray:
        lexical = pool.lexical if lexical is None else lexical
        return score(SHIPPED, pool.dense, lexical, *inputs[data.name][q])

    base = figures(shipped)
    plain = figures(lambda d, q, p: fuse(p.dense, p.lexical, "zscore", 0.5))
    print(
        "| ranking | "
        + " | ".join(f"{n} {d.headline} (vs shipped; vs plain z-score 0.5)" for n, d in sets.items())
        + " |"
    )
    print("|---|" + "---:|" * len(sets))

    def row(label: str, values: dict[str, np.ndarray]) -> None:
        cells = []
        for name, v in values.items():
            s, z = paired(v, base[name]), paired(v, plain[name])
            cells.append(
                f"{v.mean():.4f} ({s['diff']:+.4f} ± {s['se']:.4f}; {z['diff']:+.4f} ± {z['se']:.4f})"
            )
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)

    row("shipped model", base)
    row("plain z-score 0.5", plain)
    signals = {name: {"proximity": proximity(d), "length": length(d)} for name, d in sets.items()}
    for feature in ("proximity", "length"):
        for weight in (0.05, 0.1, 0.2):

            def ranked(d: SetData, q: int, p: Pool, f: str = feature, w: float = weight) -> np.ndarray:
                return shipped(d, q, p) + w * zscore(signals[d.name][f](p))

            row(f"model + {weight} x {feature}", figures(ranked))
    for weight in (0.1, 0.2):

        def matched(d: SetData, q: int, p: Pool, w: float = weight) -> np.ndarray:
            match = lexical_match(p.lexical, inputs[d.name][q][1])
            return shipped(d, q, p) + w * match * zscore(signals[d.name]["proximity"](p))

        row(f"model + {weight} x match x proximity", figures(matched))
    texts = {name: question_texts(name) for name in sets}
    for window in (None, 3):
        typed = {name: answer_type(d, window) for name, d in sets.items()}
        for weight in (0.2, 0.3):

            def answered(d: SetData, q: int, p: Pool, f=typed, w: float = weight) -> np.ndarray:
                held = f[d.name](texts[d.name][q], p)
                return shipped(d, q, p) + (0 if held is None else w * zscore(held))

            near = "anywhere" if window is None else f"within {window} terms"
            row(f"model + {weight} x answer type (a number {near})", figures(answered))
    by_field = {name: field_bm25(d) for name, d in sets.items()}
    for beta in (0.3, 0.5, 1.0):

        def fielded(d: SetData, q: int, p: Pool, b: float = beta) -> np.ndarray:
            text, title = by_field[d.name]
            return shipped(d, q, p, (text(p) + b * title(p)).astype(np.float32))

        row(f"model, BM25 of text + {beta} x BM25 of title", figures(fielded))


if __name__ == "__main__":
    main()
