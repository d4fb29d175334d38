"""Where a classifier is unsure, spread over the corpus: the margins of its predictions, how typical
each document is of the corpus (its neighbour density), and the grouping of the most informative
documents into clusters of similar texts. ``tnt review sample`` and budgeted active labeling (``tnt
label --budget``) choose documents with these."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol, TypeVar

import numpy as np

DENSITY_NEIGHBOURS = 20
DENSITY_REFERENCE = 5_000  # rows density is measured against: all of them up to this many, else a sample
# β in (1 - margin) × density^β: how much typical documents are preferred to outliers among the
# unsure (bench/review_efficiency.py: β = 0.5 reached 0.85 in 567 reviewed documents where margin
# alone took 700; β = 1 and 2 cost more documents on the way to 0.90; docs/benchmarks.md)
DENSITY_WEIGHT = 0.5


class Scored(Protocol):
    doc_id: str
    model_margin: float | None
    density: float | None


C = TypeVar("C", bound=Scored)


def margins(probabilities: np.ndarray, labels: Sequence[str]) -> list[dict[str, Any]]:
    """Per row: the most likely label and its lead over the second (small lead: the model is unsure)."""
    padded = np.c_[np.zeros(len(probabilities)), probabilities]  # a one-label model leads by its probability
    second, first = np.sort(padded, axis=1)[:, -2:].T
    return [
        {"model_label": labels[i], "model_margin": float(lead)}
        for i, lead in zip(probabilities.argmax(axis=1), first - second)
    ]


def neighbour_density(
    features: Any, neighbours: int = DENSITY_NEIGHBOURS, reference: int = DENSITY_REFERENCE, seed: int = 0
) -> np.ndarray:
    """Per row: the mean cosine similarity to its ``neighbours`` most similar other rows; high where
    many documents say much the same, low for an outlier whose label teaches the classifier little.
    Past ``reference`` rows, neighbours are sought in a seeded sample of that many, their number
    scaled down alike, so the cost grows with the rows, not their square."""
    from sklearn.neighbors import NearestNeighbors

    n = features.shape[0]
    if n <= reference:
        sample, k = np.arange(n), min(neighbours, n - 1)
    else:
        sample = np.sort(np.random.default_rng(seed).choice(n, reference, replace=False))
        k = max(1, round(neighbours * reference / n))
    if k < 1:
        return np.ones(n)
    distances, found = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(features[sample]).kneighbors(features)
    distances[sample[found] == np.arange(n)[:, None]] = np.inf  # a row is not its own neighbour
    return np.clip(1.0 - np.sort(distances, axis=1)[:, :k].mean(axis=1), 0.0, None)


def informativeness(candidate: Scored) -> float:
    """How much a person's label should teach the classifier: its uncertainty (1 - margin), weighted
    towards typical documents when their density is known."""
    uncertainty = 1.0 - (candidate.model_margin or 0.0)
    return uncertainty if candidate.density is None else uncertainty * candidate.density**DENSITY_WEIGHT


def uncertain_pool(candidates: Sequence[C], n: int, pool_factor: int = 10) -> list[C]:
    """The ``pool_factor × n`` most informative candidates, to spread a sample of ``n`` over. (A pool
    that widens while the classifier is weak, every candidate under a margin of 0.2, needed more
    reviewed documents in ``bench/review_efficiency.py``: docs/benchmarks.md.)"""
    scored = sorted((c for c in candidates if c.model_margin is not None), key=informativeness, reverse=True)
    return scored[: pool_factor * n]


def cluster_least_confident(candidates: Sequence[C], features: Any, n: int, pool_factor: int = 10, seed: int = 0) -> list[C]:
    """The candidates with their neighbour density and, for the uncertain pool (``uncertain_pool``),
    which of ``n`` clusters of similar texts each belongs to (k-means over the classifier's
    ``features``, one row per candidate), so the sample spreads over different confusions."""
    from sklearn.cluster import KMeans

    row_of = {c.doc_id: row for row, c in enumerate(candidates) if c.model_margin is not None}
    if len(row_of) <= n:
        return list(candidates)
    rows = list(row_of.values())
    density = dict(zip(row_of, neighbour_density(features[rows]).tolist()))
    dense = [replace(c, density=density[c.doc_id]) if c.doc_id in density else c for c in candidates]  # type: ignore[type-var]
    pool = uncertain_pool(dense, n, pool_factor)
    clusters = KMeans(n, n_init=1, random_state=seed).fit_predict(features[[row_of[c.doc_id] for c in pool]])
    assigned = {c.doc_id: int(k) for c, k in zip(pool, clusters)}
    return [replace(c, cluster=assigned[c.doc_id]) if c.doc_id in assigned else c for c in dense]  # type: ignore[type-var]
