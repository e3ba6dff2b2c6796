"""The answer-quality levers of issue 11, measured on the cached candidate pools of bench/quality_features.py.

Every ranking here goes through ``server.retrieval.ranking.score``, the function the searcher uses, on the
same 100 + 100 candidates ``POST /ask`` fuses, so a row's figure is what ``semqa eval`` reports for that
setting. Noise: paired bootstrap over questions (10,000 resamples), reported as the difference ± its
standard error. Leave-one-set-out: the three feature weights fitted by pairwise logistic regression (the
fused score as a fixed offset; each set weighs equally) on two sets, measured on the third. ``--grid``:
every knob of the shipped model on a coarse grid (fusion alpha, feedback depth, the three weights), the
setting with the best mean relative gain over min-max 0.5 on two sets measured on the third.

    python bench/quality_features.py collect                  # pools, title + passage embedded (the default)
    python bench/quality_features.py collect --no-embed-title # pools, passages embedded alone (before)
    python bench/quality_levers.py [--grid]
"""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
from quality_features import FIXED_MODEL, TOP_K, SetData, load_sets, model_inputs, paired, per_question
from scipy.optimize import minimize

from server.retrieval.fusion import fuse, zscore
from server.retrieval.ranking import FEATURES, Ranker, score

# the fixed-weight model these tables study, shipped until stop 21 (since: bench/quality_adaptive.py)
SHIPPED = FIXED_MODEL
SETS = ("dev", "scifact", "nfcorpus")  # issue 11's development sets (the pools of quality_features)


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


ALPHAS = (0.3, 0.4, 0.5, 0.6)
DEPTHS = (3, 5, 10)
STEPS = tuple(round(0.1 * i, 1) for i in range(7))  # each weight 0 to 0.6
Setting = tuple[float, int, tuple[float, ...]]  # alpha, feedback depth, weights


def grid_figures(data: SetData, cache: list, alpha: float, depth: int, grid: np.ndarray) -> np.ndarray:
    """Per question (rows) the headline figure of every weight vector in ``grid`` (columns), at one fusion
    alpha and feedback depth: ``ranking.score`` for all columns at once, served as ``per_question`` serves
    (stable sort, BEIR one passage per document, top 10); equal to it figure for figure."""
    out = np.zeros((len(data.pools), len(grid)))
    discount = 1 / np.log2(np.arange(2, TOP_K + 2))
    for q, (pool, (sentence, covered, vectors)) in enumerate(zip(data.pools, cache, strict=True)):
        fused = fuse(pool.dense, pool.lexical, "zscore", alpha)
        top = np.argsort(-fused, kind="stable")[:depth]
        v = np.asarray(vectors, dtype=np.float64)
        features = np.column_stack(
            [zscore(np.asarray(f, np.float64)) for f in (sentence, covered, v @ v[top].mean(0))]
        )
        order = np.argsort(-(fused[:, None] + features @ grid.T), axis=0, kind="stable")
        label = pool.label[order]
        if data.kind == "beir":
            _, local = np.unique(data.doc[pool.rows], return_inverse=True)
            key = (local[order] + (local.max() + 1) * np.arange(len(grid))).ravel(order="F")
            first = np.zeros(key.size, dtype=bool)
            first[np.unique(key, return_index=True)[1]] = True
            first = first.reshape(order.shape, order="F")
            rank = np.cumsum(first, axis=0) - 1
            kept = first & (rank < TOP_K)
            dcg = np.where(kept, label * discount[np.minimum(rank, TOP_K - 1)], 0.0).sum(axis=0)
            out[q] = dcg / pool.ideal if pool.ideal > 0 else 0.0
        else:
            hit = label[:TOP_K] > 0
            out[q] = np.where(hit.any(axis=0), 1 / (hit.argmax(axis=0) + 1), 0.0)
    return out


def choose(figures: dict[str, np.ndarray], reference: dict[str, float], names: list[str]) -> int:
    """The setting (column) with the best mean relative gain over ``reference`` on the sets ``names``."""
    gain = np.mean([figures[n].mean(axis=0) / reference[n] - 1 for n in names], axis=0)
    return int(np.argmax(gain))


def print_grid(sets: dict[str, SetData], cache: dict, plain: dict) -> None:  # type: ignore[type-arg]
    """Every (alpha, feedback depth, weights) of the coarse grid; the setting chosen on two sets (best mean
    relative gain over min-max 0.5) measured on the third, and the one chosen on all three, each against
    the shipped model, the plain hybrids and the best single retriever (paired bootstrap)."""
    grid = np.array(list(itertools.product(STEPS, repeat=len(FEATURES))))
    settings: list[Setting] = [(a, d, tuple(map(float, w))) for a in ALPHAS for d in DEPTHS for w in grid]
    figures = {
        n: np.hstack([grid_figures(data, cache[n], a, d, grid) for a in ALPHAS for d in DEPTHS])
        for n, data in sets.items()
    }
    baselines = {label: measure(sets, ranking, cache) for label, ranking in plain.items()}
    baselines["shipped"] = measure(sets, SHIPPED, cache)
    single = {n: max(("dense", "lexical"), key=lambda r, n=n: baselines[r][n].mean()) for n in sets}
    reference = {n: float(baselines["plain: min-max 0.5"][n].mean()) for n in sets}
    shipped = settings.index((SHIPPED.alpha, SHIPPED.feedback_depth, tuple(SHIPPED.weights.values())))
    for n in sets:  # the vectorised grid ranks as the searcher does
        assert np.allclose(figures[n][:, shipped], baselines["shipped"][n]), n

    def cell(n: str, values: np.ndarray, against: str) -> str:
        b = paired(values, baselines[against][n])
        return f"{b['diff']:+.4f} ± {b['se']:.4f}"

    def describe(i: int) -> str:
        a, d, w = settings[i]
        return f"alpha {a}, depth {d}, " + ", ".join(f"{f} {x}" for f, x in zip(FEATURES, w, strict=True))

    print(
        f"\nCoarse grid: {len(settings)} settings (alpha {ALPHAS}, feedback depth {DEPTHS}, weights {STEPS}^3)"
    )
    print(
        "| held out | chosen on the other two | figure | - shipped | - min-max 0.5 | - z-score 0.5 | - best single |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for held in sets:
        i = choose(figures, reference, [n for n in sets if n != held])
        values = figures[held][:, i]
        print(
            f"| {held} | {describe(i)} | {values.mean():.4f} | {cell(held, values, 'shipped')} | "
            f"{cell(held, values, 'plain: min-max 0.5')} | {cell(held, values, 'plain: z-score 0.5')} | "
            f"{cell(held, values, single[held])} ({single[held]}) |"
        )
    i = choose(figures, reference, list(sets))
    print(f"\nChosen on all three: {describe(i)} (in-sample)")
    print("| set | figure | - shipped | - min-max 0.5 | - z-score 0.5 | - best single |")
    print("|---|---:|---:|---:|---:|---:|")
    for n in sets:
        values = figures[n][:, i]
        print(
            f"| {n} | {values.mean():.4f} | {cell(n, values, 'shipped')} | {cell(n, values, 'plain: min-max 0.5')} | "
            f"{cell(n, values, 'plain: z-score 0.5')} | {cell(n, values, single[n])} ({single[n]}) |"
        )


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
    parser.add_argument(
        "--grid", action="store_true", help="also the coarse grid of every knob, chosen leave-one-set-out"
    )
    args = parser.parse_args()
    text, titled = load_sets(False, SETS), load_sets(True, SETS)
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
        print_grid(titled, cache, plain)


if __name__ == "__main__":
    main()
