"""Budgeted active labeling (``tnt label --budget N``): the LLM labels ``N`` documents, chosen so the
distilled tagger learns the most from them.

The LLM first labels a seed spread over the corpus (k-means over the sentence embeddings, the
document nearest each centre); a tagger trains on what it has, and each further round the LLM labels
the documents that tagger is least sure of, spread over clusters of similar texts (the review
sampler: ``tnt.review``); until the budget is spent. The tagger is then trained on every label and
registered (``tnt.distill.train``).

Resumable: each round's choice follows from the pool, the seed and the LLM labels of the rounds
before it, so a rerun replays the finished rounds from the stored labels (their documents are
labeled: nothing is sent) and continues the interrupted one, whose answered requests come from the
LLM cache. The taggers between rounds train on cached embeddings and are not registered.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tnt.corpus.store import DocumentStore, unique
from tnt.distill.encoders import SentenceEncoderBase, sentence_encoder
from tnt.distill.model import DistilledClassifier
from tnt.distill.train import TrainReport, train
from tnt.labels.labeling import label_documents
from tnt.labels.store import LabelStore
from tnt.paths import cache_dir
from tnt.review.sampling import ReviewCandidate, choose_for_review
from tnt.review.uncertainty import cluster_least_confident, margins
from tnt.taxonomy.store import TaxonomyStore

if TYPE_CHECKING:
    from tnt.llm.gateway import LLMSettings
    from tnt.llm.stage import DocumentProgress, StageResult
    from tnt.workspace import Workspace

STRATEGIES = ("uncertain", "random")
DEFAULT_SEED_SHARE = 0.1
DEFAULT_ROUNDS = 10


@dataclass(frozen=True)
class BudgetPlan:
    """How a budget is spent: the seed round, then the rounds the tagger chooses (``uncertain``);
    ``random`` spends it all in one round of random documents."""

    strategy: str
    budget: int  # documents the LLM labels, at most the pool
    pool: int  # documents to choose from
    sizes: tuple[int, ...]  # documents per round, the seed first

    @property
    def seed(self) -> int:
        return self.sizes[0] if self.sizes else 0


def plan_budget(budget: int, pool: int, strategy: str, seed_share: float = DEFAULT_SEED_SHARE, rounds: int = DEFAULT_ROUNDS) -> BudgetPlan:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if not 0 < seed_share <= 1 or rounds < 1 or budget < 1:
        raise ValueError("the budget and --rounds must be at least 1, the seed share in (0, 1]")
    budget = min(budget, pool)
    if strategy == "random":
        return BudgetPlan(strategy, budget, pool, (budget,))
    seed = max(1, round(budget * seed_share))
    rest = budget - seed
    n = min(rounds, rest)
    later = [rest // n + (i < rest % n) for i in range(n)] if n else []
    return BudgetPlan(strategy, budget, pool, (seed, *later))


@dataclass
class BudgetResult:
    plan: BudgetPlan
    rounds: list[StageResult | None] = field(default_factory=list)  # None: labeled before (a resumed run)
    report: TrainReport | None = None

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.rounds if r is not None)


@dataclass
class Pool:
    """The documents to choose from, with their sentence embeddings."""

    ids: list[str]
    texts: list[str]
    features: np.ndarray
    encoder: SentenceEncoderBase

    def rows(self, doc_ids: Sequence[str]) -> np.ndarray:
        index = {doc_id: i for i, doc_id in enumerate(self.ids)}
        return np.array([index[d] for d in doc_ids], dtype=int)


def load_pool(workspace: Workspace, doc_ids: Sequence[str], device: str | None = None) -> Pool:
    ids = unique(doc_ids)
    texts = [doc.text for doc in DocumentStore(workspace).get(ids)]
    encoder = sentence_encoder(None, device)
    return Pool(ids, texts, cached_embeddings(encoder, texts), encoder)


def cached_embeddings(encoder: SentenceEncoderBase, texts: Sequence[str]) -> np.ndarray:
    """The texts' embeddings, kept in the cache directory by encoder and texts: a resumed run (or the
    next budget over the same pool) does not encode them again."""
    digest = hashlib.sha256(json.dumps([encoder.runtime, encoder.config()]).encode())
    for text in texts:
        digest.update(hashlib.sha256(text.encode()).digest())
    path = cache_dir() / "embeddings" / f"{digest.hexdigest()[:24]}.npy"
    if path.exists():
        return np.load(path)
    features = np.asarray(encoder.encode(list(texts)), dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npy")
    np.save(partial, features)
    partial.replace(path)  # a killed run leaves no half-written file behind
    return features


def seed_choice(pool: Pool, n: int, seed: int) -> list[str]:
    """``n`` documents, one per k-means cluster of the embeddings: the one nearest its centre."""
    from sklearn.cluster import KMeans

    if n >= len(pool.ids):
        return list(pool.ids)
    kmeans = KMeans(n, n_init=1, random_state=seed).fit(pool.features)
    distance = kmeans.transform(pool.features)
    picks = []
    for cluster in range(n):
        members = np.flatnonzero(kmeans.labels_ == cluster)
        if len(members):
            picks.append(pool.ids[members[distance[members, cluster].argmin()]])
    taken = set(picks)  # k-means may leave a cluster empty: make up the number at random
    return picks + random_choice([d for d in pool.ids if d not in taken], n - len(picks), seed)


def random_choice(ids: Sequence[str], n: int, seed: int) -> list[str]:
    return [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))[:n]]


def tagger(pool: Pool, labels: dict[str, str], seed: int) -> DistilledClassifier | None:
    """The embed-linear tagger of ``tnt train`` on the labeled documents' cached embeddings (None
    while they have fewer than two labels)."""
    ids = [d for d in pool.ids if d in labels]
    if len({labels[d] for d in ids}) < 2:
        return None
    model = DistilledClassifier("embed-linear", seed=seed)
    model.encoder = pool.encoder
    rows = pool.rows(ids)
    return model.fit([pool.texts[i] for i in rows], [labels[d] for d in ids], features=pool.features[rows])


def uncertain_choice(pool: Pool, labels: dict[str, str], chosen: set[str], n: int, seed: int) -> list[str]:
    """``n`` unchosen documents the tagger is least sure of, as ``tnt review sample`` picks them."""
    model = tagger(pool, labels, seed)
    rest = [d for d in pool.ids if d not in chosen]
    if model is None:
        return random_choice(rest, n, seed)
    rows = pool.rows(rest)
    scored = margins(model.predict_proba([pool.texts[i] for i in rows], pool.features[rows]), model.labels)
    candidates = [ReviewCandidate(d, **s) for d, s in zip(rest, scored)]
    candidates = cluster_least_confident(candidates, pool.features[rows], n, seed=seed)
    return [pick.doc_id for pick in choose_for_review(candidates, n, seed=seed)]


def label_on_budget(
    workspace: Workspace,
    taxonomy_version: int | None,
    pool_ids: Sequence[str],
    budget: int,
    settings: LLMSettings | None = None,
    *,
    strategy: str = "uncertain",
    seed_share: float = DEFAULT_SEED_SHARE,
    rounds: int = DEFAULT_ROUNDS,
    seed: int = 0,
    device: str | None = None,
    on_progress: DocumentProgress | None = None,
    on_round: Callable[[int, BudgetPlan], None] | None = None,
    **label_options: Any,
) -> BudgetResult:
    """Spend ``budget`` LLM labels on documents of ``pool_ids`` (see the module), then train and
    register the tagger. ``label_options`` go to ``label_documents``; ``on_round(i, plan)`` is called
    as round ``i`` starts."""
    version = TaxonomyStore(workspace).get(taxonomy_version).version
    plan = plan_budget(budget, len(unique(pool_ids)), strategy, seed_share, rounds)
    pool = load_pool(workspace, pool_ids, device)
    result = BudgetResult(plan)
    chosen: list[str] = []
    labels: dict[str, str] = {}
    for number, size in enumerate(plan.sizes):
        if on_round is not None:
            on_round(number, plan)
        picks = _round_choice(pool, plan, number, labels, set(chosen), size, seed)
        chosen += picks
        result.rounds.append(_label_round(workspace, version, picks, settings, on_progress, label_options))
        current = LabelStore(workspace).current(version, "llm", doc_ids=chosen)
        labels = {d: row["label"] for d, row in current.items() if row["label"]}
    result.report = train(workspace, version, seed=seed, device=device)
    return result


def _round_choice(pool: Pool, plan: BudgetPlan, number: int, labels: dict[str, str], chosen: set[str], size: int, seed: int) -> list[str]:
    if plan.strategy == "random":
        return random_choice(pool.ids, size, seed)
    if number == 0:
        return seed_choice(pool, size, seed)
    return uncertain_choice(pool, labels, chosen, size, seed * 1000 + number)


def _label_round(
    workspace: Workspace, version: int | None, picks: list[str], settings: LLMSettings | None,
    on_progress: DocumentProgress | None, label_options: dict[str, Any],
) -> StageResult | None:  # fmt: skip
    """Label a round's documents; None (and no new run) when an earlier run labeled them all."""
    if len(LabelStore(workspace).current(version, "llm", doc_ids=picks)) == len(picks):
        return None
    return label_documents(workspace, version, picks, settings, on_progress=on_progress, **label_options)
