"""Human review: which documents people should look at.

``choose_for_review`` is the sampler itself (plain data in, picks out): a mix of
- ``disagreement``: the LLM and the distilled classifier give different labels (one of them is wrong);
- ``least_confident``: the classifier's smallest margin between its two most likely labels, weighted
  towards documents typical of the corpus, taken in turn across groups of similar texts so one
  confusable pair does not fill the sample;
- ``stratified``: every label represented, rare labels first, so no label goes unreviewed.
A strategy with nothing to offer (no classifier yet, say) hands its share to the others. Every pick
records its reason. ``sample_for_review`` feeds it from a workspace and records the sample
(``tnt.review.agreement`` compares the labels once people have reviewed them); ahead of the mix it
puts the documents whose human label a taxonomy migration split (reason ``migration``).

This module owns the ``review_samples`` table.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tnt.corpus.store import DocumentStore
from tnt.labels.pending import PendingLabel, PendingLabels
from tnt.labels.store import LabelStore
from tnt.review.uncertainty import cluster_least_confident, informativeness, margins
from tnt.runs import WorkspaceError
from tnt.taxonomy.store import TaxonomyStore

if TYPE_CHECKING:
    from tnt.workspace import Workspace

STRATEGIES = ("disagreement", "least_confident", "stratified")
DEFAULT_MIX = {"disagreement": 0.3, "least_confident": 0.6, "stratified": 0.1}
MIGRATION_REASON = "migration"  # a document whose human label a migration split: reviewed first
DEFAULT_POOL = 20_000  # candidates the classifier scores per sample, drawn by a seeded hash


@dataclass(frozen=True)
class ReviewCandidate:
    """What is known about a document that nobody has reviewed yet."""

    doc_id: str
    llm_label: str | None = None
    llm_confidence: float | None = None
    model_label: str | None = None
    model_margin: float | None = None  # top-1 minus top-2 probability of the distilled classifier
    density: float | None = None  # how typical of the candidates (``neighbour_density``): outliers teach the classifier little
    cluster: int | None = None  # among the least confident: which of n similar-text groups (``cluster_least_confident``)


@dataclass(frozen=True)
class Pick:
    doc_id: str
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


def choose_for_review(
    candidates: Sequence[ReviewCandidate], n: int, mix: dict[str, float] | None = None, seed: int = 0
) -> list[Pick]:
    """``n`` documents to review (fewer if there are fewer candidates), each with its reason."""
    mix = normalised_mix(mix or DEFAULT_MIX)
    rng = random.Random(seed)
    queues = {
        "disagreement": _disagreements(candidates, rng),
        "least_confident": _least_confident(candidates),
        "stratified": _stratified(candidates, rng),
    }
    picked: dict[str, Pick] = {}
    quotas = _quotas(mix, n)
    for strategy in STRATEGIES:
        _take(queues[strategy], strategy, quotas[strategy], picked)
    for strategy in STRATEGIES:  # shares a strategy could not fill go to the others, in order
        _take(queues[strategy], strategy, n - len(picked), picked)
    rest = [c for c in candidates if c.doc_id not in picked]
    rng.shuffle(rest)
    _take(iter(rest), "random", n - len(picked), picked)  # nothing is known about these documents
    return list(picked.values())


def normalised_mix(mix: dict[str, float]) -> dict[str, float]:
    unknown = set(mix) - set(STRATEGIES)
    if unknown:
        raise ValueError(f"unknown review strategies {sorted(unknown)}; choose from {list(STRATEGIES)}")
    if any(share < 0 for share in mix.values()) or not sum(mix.values()):
        raise ValueError("review mix shares must be non-negative and not all zero")
    total = sum(mix.values())
    return {strategy: mix.get(strategy, 0.0) / total for strategy in STRATEGIES}


def _quotas(mix: dict[str, float], n: int) -> dict[str, int]:
    quotas = {strategy: int(share * n) for strategy, share in mix.items()}
    by_remainder = sorted(mix, key=lambda s: mix[s] * n - quotas[s], reverse=True)
    for strategy in by_remainder[: n - sum(quotas.values())]:
        quotas[strategy] += 1
    return quotas


def _take(queue: Iterator[ReviewCandidate], reason: str, count: int, picked: dict[str, Pick]) -> None:
    taken = 0
    for candidate in queue:
        if taken >= count:
            return
        if candidate.doc_id in picked:
            continue
        picked[candidate.doc_id] = Pick(candidate.doc_id, reason, _detail(candidate))
        taken += 1


def _detail(candidate: ReviewCandidate) -> dict[str, Any]:
    return {key: value for key, value in asdict(candidate).items() if key != "doc_id" and value is not None}


def _round_robin(groups: dict[str, list[ReviewCandidate]]) -> Iterator[ReviewCandidate]:
    """One from each group in turn; smaller groups first, so rare labels are never crowded out."""
    ordered = sorted(groups.values(), key=len)
    for depth in range(max(map(len, ordered), default=0)):
        for group in ordered:
            if depth < len(group):
                yield group[depth]


def _disagreements(candidates: Sequence[ReviewCandidate], rng: random.Random) -> Iterator[ReviewCandidate]:
    groups: dict[str, list[ReviewCandidate]] = defaultdict(list)
    for c in candidates:
        if c.llm_label and c.model_label and c.llm_label != c.model_label:
            groups[c.llm_label].append(c)
    for group in groups.values():  # the classifier surest of its different answer first
        rng.shuffle(group)
        group.sort(key=lambda c: -(c.model_margin or 0.0))
    return _round_robin(groups)


def _least_confident(candidates: Sequence[ReviewCandidate]) -> Iterator[ReviewCandidate]:
    """Most informative first (smallest classifier margin, weighted towards typical documents), in
    equal turns per group of similar texts (``cluster``) or, outside those, per predicted label, so
    one confusable pair does not fill the sample; without a classifier, the LLM's lowest stated
    confidence first."""
    scored = sorted((c for c in candidates if c.model_margin is not None), key=informativeness, reverse=True)
    if not scored:
        unsure = [c for c in candidates if c.llm_confidence is not None]
        return iter(sorted(unsure, key=lambda c: c.llm_confidence or 0.0))
    turn: Counter[tuple[str, Any]] = Counter()
    keyed = []
    for c in scored:
        group = ("cluster", c.cluster) if c.cluster is not None else ("label", c.model_label)
        keyed.append((turn[group], -informativeness(c), c))
        turn[group] += 1
    return (c for _, _, c in sorted(keyed, key=lambda key: key[:2]))


def _stratified(candidates: Sequence[ReviewCandidate], rng: random.Random) -> Iterator[ReviewCandidate]:
    """One document per label in turn, rare labels first; within a label the classifier's least sure
    document first (at random without a classifier)."""
    groups: dict[str, list[ReviewCandidate]] = defaultdict(list)
    for c in candidates:
        label = c.model_label or c.llm_label
        if label:
            groups[label].append(c)
    for group in groups.values():
        rng.shuffle(group)
        group.sort(key=lambda c: 1.0 if c.model_margin is None else c.model_margin)
    return _round_robin(groups)


# From a workspace


@dataclass
class ReviewSample:
    run_id: str
    taxonomy_version: int
    picks: list[Pick]
    candidates: int
    classifier: str | None  # the distilled model that scored the candidates, if any

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(pick.reason for pick in self.picks))


def sample_for_review(
    workspace: Workspace,
    n: int,
    *,
    taxonomy_version: int | None = None,
    mix: dict[str, float] | None = None,
    pool: int = DEFAULT_POOL,
    seed: int = 0,
    blind_share: float = 0.0,
) -> ReviewSample:
    """Choose ``n`` documents nobody has reviewed or been sent yet, and record why each was chosen.
    Documents whose human label a migration split come first (reason ``migration``). ``blind_share``
    of the picks are marked blind (``detail["blind"]``): pushed without any prediction."""
    if not 0 <= blind_share <= 1:
        raise ValueError(f"the blind share must be between 0 and 1, not {blind_share}")
    taxonomy = TaxonomyStore(workspace).get(taxonomy_version)
    version = taxonomy.version
    assert version is not None
    labels = LabelStore(workspace)
    done = set(labels.current(version, "human")) | ReviewSamples(workspace).doc_ids(version)
    first = _migration_picks(workspace, version, done, n)
    done |= {pick.doc_id for pick in first}
    documents = [doc for doc in DocumentStore(workspace).sample(pool + len(done), seed) if doc.id not in done][:pool]
    if not documents and not first:
        raise WorkspaceError("no documents left to review: every document is labeled by a person or already sampled")
    llm = labels.current(version, "llm", doc_ids=[doc.id for doc in documents])
    candidates = [
        ReviewCandidate(doc.id, llm_label=llm[doc.id]["label"], llm_confidence=llm[doc.id]["confidence"])
        if doc.id in llm else ReviewCandidate(doc.id)
        for doc in documents
    ]  # fmt: skip
    texts = {doc.id: doc.text for doc in documents}
    candidates, classifier = _with_classifier(workspace, version, candidates, texts, n, seed) if candidates else ([], None)
    params = {"n": n, "taxonomy_version": version, "mix": normalised_mix(mix or DEFAULT_MIX), "seed": seed, "pool": pool,
              "blind_share": blind_share}  # fmt: skip
    with workspace.run("review-sample", params) as run:
        picks = with_blind_share(first + choose_for_review(candidates, n - len(first), mix, seed), blind_share, seed)
        ReviewSamples(workspace).save(run.id, version, picks)
        sample = ReviewSample(run.id, version, picks, len(candidates), classifier)
        run.stats = {"picked": len(picks), "candidates": len(candidates), "reasons": sample.counts, "classifier": classifier}
    return sample


def blind_doc_ids(doc_ids: Sequence[str], share: float, seed: int = 0) -> set[str]:
    """``share`` of the documents, chosen by a seeded hash of their ids: the same for a seed whatever
    the order, and spread over every reason a sample holds."""
    ranked = sorted(doc_ids, key=lambda doc_id: hashlib.sha256(f"{seed}:blind:{doc_id}".encode()).digest())
    return set(ranked[: round(share * len(ranked))])


def with_blind_share(picks: list[Pick], share: float, seed: int) -> list[Pick]:
    blind = blind_doc_ids([pick.doc_id for pick in picks], share, seed)
    return [replace(pick, detail={**pick.detail, "blind": True}) if pick.doc_id in blind else pick for pick in picks]


def open_migration_reviews(workspace: Workspace, version: int) -> list[PendingLabel]:
    """Documents whose human label a migration split (``tnt taxonomy migrate``) and that nobody has
    labeled again under the version: people's work to redo, before anything else."""
    pending = PendingLabels(workspace).open(version, "human", reasons=["split"])
    return [item for item in pending if "human" in item.sources]


def _migration_picks(workspace: Workspace, version: int, done: set[str], n: int) -> list[Pick]:
    reviews = [item for item in open_migration_reviews(workspace, version) if item.doc_id not in done][:n]
    return [Pick(item.doc_id, MIGRATION_REASON, {"old_label": item.old_label, "offered": item.offered}) for item in reviews]


def _with_classifier(
    workspace: Workspace, version: int, candidates: list[ReviewCandidate], texts: dict[str, str], n: int, seed: int
) -> tuple[list[ReviewCandidate], str | None]:
    """Candidates with the distilled classifier's label, margin and cluster, when the version has a model."""
    from tnt.distill.store import latest_model, load_model

    info = latest_model(workspace, version)
    if info is None:
        return candidates, None
    model = load_model(workspace, info.id)
    candidate_texts = [texts[c.doc_id] for c in candidates]
    features = model.features(candidate_texts)  # encoded once, for the margins and the clusters
    probabilities = model.predict_proba(candidate_texts, features)
    scored = [replace(c, **m) for c, m in zip(candidates, margins(probabilities, model.labels))]
    return cluster_least_confident(scored, features, n, seed=seed), info.id


class ReviewSamples:
    """The recorded review samples of a workspace."""

    def __init__(self, workspace: Workspace):
        self.db = workspace.db

    def save(self, run_id: str, taxonomy_version: int, picks: Sequence[Pick]) -> None:
        rows = [
            {"run_id": run_id, "position": i, "doc_id": pick.doc_id, "taxonomy_version": taxonomy_version,
             "reason": pick.reason, "detail": json.dumps(pick.detail)}
            for i, pick in enumerate(picks)
        ]
        with self.db.conn:
            self.db["review_samples"].insert_all(rows)

    def doc_ids(self, taxonomy_version: int) -> set[str]:
        rows = self.db.execute("select doc_id from review_samples where taxonomy_version = ?", [taxonomy_version])
        return {row[0] for row in rows}

    def blind_doc_ids(self, taxonomy_version: int) -> set[str]:
        """Documents any sample of the version sent to people without a prediction."""
        rows = self.db.execute(
            "select doc_id from review_samples where taxonomy_version = ? and json_extract(detail, '$.blind')",
            [taxonomy_version],
        )
        return {row[0] for row in rows}

    def latest(self, taxonomy_version: int | None = None) -> list[Pick]:
        """The picks of the newest sample (for a taxonomy version), in order."""
        where, args = ("where taxonomy_version = ?", [taxonomy_version]) if taxonomy_version else ("", [])
        row = self.db.execute(
            f"select run_id from review_samples {where} order by rowid desc limit 1", args
        ).fetchone()
        if row is None:
            raise WorkspaceError("no review sample yet; choose one with `tnt review sample N`")
        rows = self.db["review_samples"].rows_where("run_id = ?", [row[0]], order_by="position")
        return [Pick(r["doc_id"], r["reason"], json.loads(r["detail"] or "{}")) for r in rows]




