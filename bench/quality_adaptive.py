"""A question-adaptive ranking model, chosen leave-one-set-out on four development sets.

The fused score's dense weight follows how well the question's words match the passages: ``alpha`` when
the best BM25 candidate holds every question term, rising linearly to ``alpha_unmatched`` as it holds
fewer (``ranking.lexical_match``); optionally some feature weights are multiplied by that share too. The
family measured here: ``alpha`` 0.3 / 0.4 / 0.5, ``alpha_unmatched`` from ``alpha`` to 1.0 in steps of 0.1,
and the scaled features none / coverage / feedback / both (the three feature weights stay 0.3): 84
models, each ranked by ``ranking.score``, the searcher's own function, on the cached pools of
bench/quality_features.py (four sets: the dev questions, SciFact train, NFCorpus test, and the
paraphrased questions of bench/data/, which avoid the documents' words).

Leave one set out: on each set, the model chosen on the other three by one rule fixed beforehand (the
best mean relative gain over the plain min-max 0.5 hybrid), against the model shipped before (fixed dense
weight 0.4) and the plain hybrids (paired bootstrap over questions, 10,000 resamples).

    python bench/quality_features.py collect
    python bench/quality_adaptive.py
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from quality_features import FIXED_MODEL, SetRanking, load_sets, model_inputs, paired, per_set

from server.retrieval.fusion import fuse
from server.retrieval.ranking import Ranker, score

SHIPPED = Ranker.load()
BEFORE = FIXED_MODEL
SCALINGS: tuple[tuple[str, ...], ...] = ((), ("coverage",), ("feedback",), ("coverage", "feedback"))


def family() -> list[Ranker]:
    models = []
    for alpha in (0.3, 0.4, 0.5):
        for unmatched in np.round(np.arange(alpha, 1.0001, 0.1), 1):
            for scaled in SCALINGS:
                models.append(
                    replace(BEFORE, alpha=alpha, alpha_unmatched=float(unmatched), scaled_by_match=scaled)
                )
    return models


def describe(model: Ranker) -> str:
    scaled = "+".join(model.scaled_by_match) or "none"
    return f"alpha {model.alpha} -> {model.alpha_unmatched}, scaled: {scaled}"


def main() -> None:
    sets = load_sets()
    inputs = {n: [model_inputs(d, p) for p in d.pools] for n, d in sets.items()}

    def figures(rank: SetRanking) -> dict[str, np.ndarray]:
        return per_set(sets, rank)

    def model(ranker: Ranker) -> dict[str, np.ndarray]:
        return figures(lambda d, q, p: score(ranker, p.dense, p.lexical, *inputs[d.name][q]))

    baselines = {
        "dense": figures(lambda d, q, p: np.where(p.in_dense, p.dense.astype(np.float64), -np.inf)),
        "lexical": figures(lambda d, q, p: np.where(p.in_lexical, p.lexical.astype(np.float64), -np.inf)),
        "plain z-score 0.5": figures(lambda d, q, p: fuse(p.dense, p.lexical, "zscore", 0.5)),
        "plain min-max 0.5": figures(lambda d, q, p: fuse(p.dense, p.lexical, "minmax", 0.5)),
        "model before (dense weight 0.4)": model(BEFORE),
    }
    models = family()
    measured = [model(m) for m in models]
    names = list(sets)
    reference = {n: baselines["plain min-max 0.5"][n].mean() for n in names}

    def gain(i: int, on: list[str]) -> float:
        return float(np.mean([measured[i][n].mean() / reference[n] - 1 for n in on]))

    def against(values: np.ndarray, name: str, label: str) -> str:
        d = paired(values, baselines[label][name])
        return f"{d['diff']:+.4f} ± {d['se']:.4f}"

    print(f"{len(models)} models; figures: " + ", ".join(f"{n} {d.headline}" for n, d in sets.items()))
    print("\nLeave one set out (chosen on the other three, measured on this one)")
    print("| held out | chosen | figure | - model before | - plain z-score 0.5 | - plain min-max 0.5 |")
    print("|---|---|---:|---:|---:|---:|")
    for held in names:
        best = max(range(len(models)), key=lambda i: gain(i, [n for n in names if n != held]))
        values = measured[best][held]
        print(
            f"| {held} | {describe(models[best])} | {values.mean():.4f} | "
            + " | ".join(against(values, held, b) for b in list(baselines)[-1:] + list(baselines)[2:4])
            + " |"
        )
    shipped = model(SHIPPED)
    print(f"\nShipped ({describe(SHIPPED)}) against each baseline, paired")
    print("| shipped minus | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    print("| (figure) | " + " | ".join(f"{shipped[n].mean():.4f}" for n in names) + " |")
    for label, values in baselines.items():
        print(
            f"| {label} ({', '.join(f'{values[n].mean():.4f}' for n in names)}) | "
            + " | ".join(against(shipped[n], n, label) for n in names)
            + " |"
        )
    ranked = sorted(range(len(models)), key=lambda i: -gain(i, names))
    print("\nIn-sample, the ten best of the family on all four sets")
    for i in ranked[:10]:
        print(f"  {describe(models[i])}: " + ", ".join(f"{n} {measured[i][n].mean():.4f}" for n in names))


if __name__ == "__main__":
    main()
