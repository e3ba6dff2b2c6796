"""The answer-quality levers of issue 11, measured on the cached candidate pools of bench/quality_features.py.

Every ranking here goes through ``server.retrieval.ranking.score``, the function the searcher uses, on the
same 100 + 100 candidates ``POST /ask`` fuses, so a row's figure is what ``semqa eval`` reports for that
setting. Noise: paired bootstrap over questions (10,000 resamples), reported as the difference ± its
standard error. Leave-one-set-out: the three feature weights fitted by pairwise logistic regression (the
fused score as a fixed offset; each set weighs equally) on two sets, measured on the third.

    python bench/quality_features.py collect                  # pools, title + passage embedded (the default)
    python bench/quality_features.py collect --no-embed-title # pools, passages embedded alone (before)
    python bench/quality_levers.py [--grid]
"""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
from quality_features import SetData, load_sets, model_inputs, paired, per_question
from scipy.optimize import minimize

from server.retrieval.fusion import fuse, zscore
from server.retrieval.ranking import FEATURES, Ranker, score

SHIPPED = Ranker.load()


def model(weights: dict[str, float], alpha: float = 0.4) -> Ranker:
    return Ranker("zscore", alpha, SHIPPED.feedback_depth, {f: weights.get(f, 0.0) for f in FEATURES})


def measure(sets: dict[str, SetData], ranking, cache: dict) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """Per question figures of ``ranking`` (a Ranker, or a function of a pool) on every set."""
    out = {}
    for name, data in sets.items():
        if isinstance(ranking, Ranker):
            it = iter(cache[name])
            out[name] = per_question(data, lambda p, it=it: score(ranking, p.dense, p.lexical, *next(it)))
        else:
            out[name] = per_question(data, ranking)
    return out


def fit(sets: dict[str, SetData], cache: dict, names: list[str], seed: int = 0) -> dict[str, float]:
    """Feature weights by pairwise logistic regression over each question's top 30 (fused): every relevant
    passage against up to 20 irrelevant ones, the fused score a fixed offset, each set weighing equally."""
    rng = np.random.default_rng(seed)
    offsets, diffs, weights = [], [], []
    for name in names:
        o, d = [], []
        for pool, (sentence, covered, vectors) in zip(sets[name].pools, cache[name], strict=True):
            fused = fuse(pool.dense, pool.lexical, "zscore", SHIPPED.alpha)
            top = np.argsort(-fused, kind="stable")
            feedback = vectors @ vectors[top[: SHIPPED.feedback_depth]].mean(axis=0)
            x = np.column_stack([zscore(sentence), zscore(covered), zscore(feedback.astype(np.float64))])
            order = top[:30]
            positive, negative = order[pool.label[order] > 0], order[pool.label[order] == 0]
            for i in positive:
                js = negative if len(negative) <= 20 else rng.choice(negative, 20, replace=False)
                o.append(fused[i] - fused[js])
                d.append(x[i] - x[js])
        offsets.append(np.concatenate(o))
        diffs.append(np.vstack(d))
        weights.append(np.full(len(offsets[-1]), 1.0 / len(offsets[-1])))
    offset, diff, weight = np.concatenate(offsets), np.vstack(diffs), np.concatenate(weights)
    weight /= weight.sum()

    def loss(v: np.ndarray) -> tuple[float, np.ndarray]:
        margin = offset + diff @ v
        return float((weight * np.logaddexp(0, -margin)).sum()), diff.T @ (weight * -1 / (1 + np.exp(margin)))

    solution = minimize(loss, np.zeros(len(FEATURES)), jac=True, method="L-BFGS-B").x
    return dict(zip(FEATURES, map(float, solution), strict=True))


def row(label: str, figures: dict[str, np.ndarray], against: dict[str, np.ndarray] | None) -> str:
    cells = []
    for name, values in figures.items():
        cell = f"{values.mean():.4f}"
        if against is not None:
            b = paired(values, against[name])
            cell += f" ({b['diff']:+.4f} ± {b['se']:.4f})"
        cells.append(cell)
    return f"| {label} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", action="store_true", help="also every weight in {0, 0.1, 0.2, 0.3, 0.45}^3")
    args = parser.parse_args()
    text, titled = load_sets(embed_title=False), load_sets(embed_title=True)
    caches = {id(s): {n: [model_inputs(d, p) for p in d.pools] for n, d in s.items()} for s in (text, titled)}
    header = (
        "| ranking | " + " | ".join(f"{n} {d.headline}" for n, d in text.items()) + " |\n|---|---:|---:|---:|"
    )
    plain = {
        "dense": lambda p: np.where(p.in_dense, p.dense, -np.inf),
        "lexical": lambda p: np.where(p.in_lexical, p.lexical, -np.inf),
        "z-score 0.4 (fusion before)": lambda p: fuse(p.dense, p.lexical, "zscore", 0.4),
        "plain: z-score 0.5": lambda p: fuse(p.dense, p.lexical, "zscore", 0.5),
        "plain: min-max 0.5": lambda p: fuse(p.dense, p.lexical, "minmax", 0.5),
    }
    before = measure(text, plain["z-score 0.4 (fusion before)"], caches[id(text)])
    for label, sets in (("passages embedded alone", text), ("title + passage embedded", titled)):
        print(f"\n{label}; in brackets: against z-score 0.4 on passages embedded alone (what shipped before)")
        print(header)
        for name, ranking in plain.items():
            print(row(name, measure(sets, ranking, caches[id(sets)]), before))
        for feature in FEATURES:
            print(
                row(f"fusion + {feature} 0.3", measure(sets, model({feature: 0.3}), caches[id(sets)]), before)
            )
        print(row("**model (shipped weights)**", measure(sets, SHIPPED, caches[id(sets)]), before))
    cache = caches[id(titled)]
    final = measure(titled, SHIPPED, cache)
    print("\nThe shipped model (title + passage) against each baseline on the same index")
    print(header)
    for name, ranking in plain.items():
        print(row(f"model - {name}", final, measure(titled, ranking, cache)))
    print("\nLeave one set out: weights fitted on the other two sets, measured on this one (title + passage)")
    print(
        "| held out | fitted weights (sentence, coverage, feedback) | figure | against z-score 0.4 | against min-max 0.5 |"
    )
    print("|---|---|---:|---:|---:|")
    base = measure(titled, plain["z-score 0.4 (fusion before)"], cache)
    minmax = measure(titled, plain["plain: min-max 0.5"], cache)
    for held in titled:
        weights = fit(titled, cache, [n for n in titled if n != held])
        values = measure({held: titled[held]}, model(weights), {held: cache[held]})[held]
        b, m = paired(values, base[held]), paired(values, minmax[held])
        print(
            f"| {held} | {', '.join(f'{w:.3f}' for w in weights.values())} | {values.mean():.4f} | "
            f"{b['diff']:+.4f} ± {b['se']:.4f} | {m['diff']:+.4f} ± {m['se']:.4f} |"
        )
    weights = fit(titled, cache, list(titled))
    print(f"fitted on all three: {json.dumps({k: round(v, 3) for k, v in weights.items()})}")
    print(row("model with the weights fitted on all three", measure(titled, model(weights), cache), base))
    if args.grid:
        print("\nGrid (title + passage), against z-score 0.4 on the same index")
        print(header)
        for ws in itertools.product((0.0, 0.1, 0.2, 0.3, 0.45), repeat=3):
            label = ", ".join(f"{f} {w}" for f, w in zip(FEATURES, ws, strict=True))
            print(row(label, measure(titled, model(dict(zip(FEATURES, ws, strict=True))), cache), base))


if __name__ == "__main__":
    main()
