"""Where a classifier is unsure, spread over the corpus: the margins of its predictions, and the
grouping of its least confident documents into clusters of similar texts. ``tnt review sample`` and
budgeted active labeling (``tnt label --budget``) choose documents with these."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol, TypeVar

import numpy as np


class Scored(Protocol):
    doc_id: str
    model_margin: float | None


C = TypeVar("C", bound=Scored)


def margins(probabilities: np.ndarray, labels: Sequence[str]) -> list[dict[str, Any]]:
    """Per row: the most likely label and its lead over the second (small lead: the model is unsure)."""
    padded = np.c_[np.zeros(len(probabilities)), probabilities]  # a one-label model leads by its probability
    second, first = np.sort(padded, axis=1)[:, -2:].T
    return [
        {"model_label": labels[i], "model_margin": float(lead)}
        for i, lead in zip(probabilities.argmax(axis=1), first - second)
    ]


def uncertain_pool(candidates: Sequence[C], n: int, pool_factor: int = 10) -> list[C]:
    """The ``pool_factor × n`` least confident candidates, to spread a sample of ``n`` over. (A pool
    that widens while the classifier is weak, every candidate under a margin of 0.2, needed more
    reviewed documents in ``bench/review_efficiency.py``: docs/benchmarks.md.)"""
    scored = sorted((c for c in candidates if c.model_margin is not None), key=lambda c: c.model_margin or 0.0)
    return scored[: pool_factor * n]


def cluster_least_confident(
    candidates: Sequence[C], features_of: Callable[[list[str]], Any], n: int, pool_factor: int = 10, seed: int = 0
) -> list[C]:
    """Group the uncertain pool (``uncertain_pool``) into ``n`` clusters of similar texts (k-means
    over the classifier's features), so the sample spreads over different confusions."""
    from sklearn.cluster import KMeans

    pool = uncertain_pool(candidates, n, pool_factor)
    if len(pool) <= n:
        return list(candidates)
    clusters = KMeans(n, n_init=1, random_state=seed).fit_predict(features_of([c.doc_id for c in pool]))
    assigned = {c.doc_id: int(k) for c, k in zip(pool, clusters)}
    return [replace(c, cluster=assigned[c.doc_id]) if c.doc_id in assigned else c for c in candidates]  # type: ignore[type-var]
