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

Each row is paired (bootstrap over questions, 10,000 resamples) against the shipped model and against the
plain z-score 0.5 hybrid on the same pools.

    python bench/quality_features.py collect
    python bench/quality_signals.py
"""

from __future__ import annotations

from collections.abc import Callable

import bm25s
import numpy as np
from quality_features import Pool, SetData, SetRanking, load_sets, model_inputs, paired, per_set

from server.retrieval.fusion import fuse, zscore
from server.retrieval.ranking import Ranker, score

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
    by_field = {name: field_bm25(d) for name, d in sets.items()}
    for beta in (0.3, 0.5, 1.0):

        def fielded(d: SetData, q: int, p: Pool, b: float = beta) -> np.ndarray:
            text, title = by_field[d.name]
            return shipped(d, q, p, (text(p) + b * title(p)).astype(np.float32))

        row(f"model, BM25 of text + {beta} x BM25 of title", figures(fielded))


if __name__ == "__main__":
    main()
