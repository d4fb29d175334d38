"""Audit the tagged corpus: a stratified sample per predicted label, checked blind by people, turned into
per-label precision and corrected prevalence, each with a 95 % interval.

The sample is drawn per label the tagger predicted (``per_label`` documents each, a smaller label taken
whole), so every label's precision is measured with the same effort however rare it is. People see the
documents without any prediction (a separate Label Studio project with no ML backend), so the check is
not anchored on what the tagger said. This module owns the ``audit_samples`` table.

Precision of label j is the share of audited documents predicted j that people also put in j, with a
Wilson score interval (exact when the label was audited whole). Prevalence of label i is estimated over
the predicted strata: sum over j of (share of the corpus predicted j) × (share of j's audited documents
that are truly i), which corrects the tagger's raw counts for the confusions the audit measured; its
interval is the normal one of a stratified estimate, with the finite-population correction and
Agresti–Coull-adjusted shares so that an empty cell does not claim certainty.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scipy.stats import binomtest, norm

from tnt.distill.corpus_tags import corpus_tags
from tnt.labels.store import LabelStore
from tnt.runs import WorkspaceError

if TYPE_CHECKING:
    from tnt.workspace import Workspace

DEFAULT_PER_LABEL = 20
CONFIDENCE = 0.95
AUDIT_REASON = "audit"


class AuditError(WorkspaceError):
    """An audit that cannot be reported yet; the message says what to run first."""


@dataclass(frozen=True)
class AuditPick:
    doc_id: str
    predicted: str


def draw_audit_sample(predicted: Mapping[str, str], per_label: int, seed: int = 0) -> list[AuditPick]:
    """``per_label`` documents of each predicted label (all of a smaller one), seeded, labels interleaved
    so that a review cut short still covers every label."""
    if per_label < 1:
        raise ValueError(f"per_label must be at least 1, not {per_label}")
    by_label: dict[str, list[str]] = defaultdict(list)
    for doc_id, label in sorted(predicted.items()):
        by_label[label].append(doc_id)
    rng = random.Random(seed)
    chosen = {label: rng.sample(ids, min(per_label, len(ids))) for label, ids in sorted(by_label.items())}
    picks = []
    for rank in range(per_label):
        picks += [AuditPick(ids[rank], label) for label, ids in chosen.items() if rank < len(ids)]
    return picks


@dataclass
class Interval:
    estimate: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


@dataclass
class LabelAudit:
    label: str
    tagged: int  # documents the tagger put in the label, corpus-wide
    audited: int  # of them, checked by people
    correct: int  # of those, people agreed
    precision: Interval | None  # None: nothing of this label audited yet
    prevalence_tagged: float  # the tagger's raw share of the corpus
    prevalence: Interval  # the share truly in the label, corrected by the audit

    def expected_true(self, selected: int) -> float | None:
        """Of ``selected`` documents tagged with this label, how many are expected to truly be in it."""
        return None if self.precision is None else selected * self.precision.estimate


@dataclass
class AuditReport:
    taxonomy_version: int
    model_id: str
    corpus: int  # documents tagged
    audited: int
    labels: list[LabelAudit] = field(default_factory=list)

    def by_label(self) -> dict[str, LabelAudit]:
        return {row.label: row for row in self.labels}

    def as_dict(self) -> dict[str, Any]:
        return {
            "taxonomy_version": self.taxonomy_version, "model": self.model_id, "corpus": self.corpus,
            "audited": self.audited,
            "labels": [
                {"label": r.label, "tagged": r.tagged, "audited": r.audited, "correct": r.correct,
                 "precision": r.precision.as_dict() if r.precision else None,
                 "prevalence_tagged": r.prevalence_tagged, "prevalence": r.prevalence.as_dict()}
                for r in self.labels
            ],
        }  # fmt: skip


def precision_interval(correct: int, audited: int, tagged: int, confidence: float = CONFIDENCE) -> Interval:
    """Wilson score interval of a label's precision; exact when the label was audited whole."""
    estimate = correct / audited
    if audited >= tagged:
        return Interval(estimate, estimate, estimate)
    ci = binomtest(correct, audited).proportion_ci(confidence_level=confidence, method="wilson")
    return Interval(estimate, float(ci.low), float(ci.high))


def prevalence_interval(
    label: str, tagged: Mapping[str, int], truths: Mapping[str, Sequence[str]], confidence: float = CONFIDENCE
) -> Interval:
    """The stratified estimate of the share of the corpus truly in ``label`` (strata: predicted labels)."""
    total = sum(tagged.values())
    z = float(norm.ppf(0.5 + confidence / 2))
    estimate = variance = 0.0
    for stratum, size in tagged.items():
        seen = truths.get(stratum, ())
        weight = size / total
        if not seen:  # a stratum nobody audited: the tagger's own word, with no spread we can measure
            estimate += weight * (stratum == label)
            continue
        hits = sum(truth == label for truth in seen)
        estimate += weight * hits / len(seen)
        adjusted = (hits + z * z / 2) / (len(seen) + z * z)  # Agresti–Coull: an empty cell is not certain
        finite = 1 - len(seen) / size if size > 1 else 0.0
        variance += weight * weight * finite * adjusted * (1 - adjusted) / len(seen)
    spread = z * math.sqrt(variance)
    return Interval(estimate, max(0.0, estimate - spread), min(1.0, estimate + spread))


def audit_estimates(
    predicted: Mapping[str, str], truth: Mapping[str, str], labels: Sequence[str], confidence: float = CONFIDENCE
) -> list[LabelAudit]:
    """Per label: precision and corrected prevalence, from the tagger's labels of every document
    (``predicted``) and people's labels of the audited ones (``truth``)."""
    tagged = Counter(predicted.values())
    truths: dict[str, list[str]] = defaultdict(list)
    for doc_id, label in truth.items():
        if doc_id in predicted:
            truths[predicted[doc_id]].append(label)
    total = sum(tagged.values())
    rows = []
    for label in labels:
        seen = truths.get(label, [])
        correct = sum(t == label for t in seen)
        rows.append(
            LabelAudit(
                label, tagged[label], len(seen), correct,
                precision_interval(correct, len(seen), tagged[label], confidence) if seen else None,
                tagged[label] / total if total else 0.0,
                prevalence_interval(label, tagged, truths, confidence),
            )
        )  # fmt: skip
    return rows


# From a workspace


def tagged_labels(workspace: Workspace, taxonomy_version: int | None = None, model_id: str | None = None) -> tuple[int, str, dict[str, str]]:
    """(version, model id, {doc_id: label}) of the corpus as the version's latest tagging model tagged it."""
    tags = corpus_tags(workspace, taxonomy_version, model_id)
    return tags.taxonomy_version, tags.model_id, tags.labels


@dataclass
class AuditSample:
    run_id: str
    taxonomy_version: int
    model_id: str
    picks: list[AuditPick]
    labels: int  # predicted labels covered


def sample_for_audit(
    workspace: Workspace, per_label: int = DEFAULT_PER_LABEL, *, taxonomy_version: int | None = None,
    model_id: str | None = None, seed: int = 0,
) -> AuditSample:  # fmt: skip
    """Draw and record the stratified audit sample of the tagged corpus. The same arguments over the same
    tags draw the same documents, and a rerun returns the sample already recorded."""
    version, model, predicted = tagged_labels(workspace, taxonomy_version, model_id)
    picks = draw_audit_sample(predicted, per_label, seed)
    params = {"taxonomy_version": version, "model": model, "per_label": per_label, "seed": seed}
    store = AuditSamples(workspace)
    existing = store.find(picks)
    if existing is not None:
        return AuditSample(existing, version, model, picks, len({p.predicted for p in picks}))
    with workspace.run("audit-sample", params) as run:
        store.save(run.id, version, model, picks)
        run.stats = {"picked": len(picks), "labels": len({p.predicted for p in picks})}
    return AuditSample(run.id, version, model, picks, len({p.predicted for p in picks}))


def audit_report(workspace: Workspace, taxonomy_version: int | None = None) -> AuditReport:
    """Precision and prevalence per label from the latest audit sample and people's labels of it."""
    sample = AuditSamples(workspace).latest(taxonomy_version)
    version, model, predicted = tagged_labels(workspace, sample["taxonomy_version"], sample["model_id"])
    audited_ids = [pick.doc_id for pick in sample["picks"]]
    human = LabelStore(workspace).current(version, "human", doc_ids=audited_ids)
    truth = {doc_id: row["label"] for doc_id, row in human.items() if row["label"]}
    labels = sorted(set(predicted.values()) | set(truth.values()))
    rows = audit_estimates(predicted, truth, labels)
    return AuditReport(version, model, len(predicted), len(truth), rows)


class AuditSamples:
    """The recorded audit samples of a workspace."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.db = workspace.db

    def save(self, run_id: str, version: int, model_id: str, picks: Sequence[AuditPick]) -> None:
        rows = [
            {"run_id": run_id, "position": i, "doc_id": p.doc_id, "taxonomy_version": version,
             "model_id": model_id, "predicted": p.predicted}
            for i, p in enumerate(picks)
        ]  # fmt: skip
        with self.db.conn:
            self.db["audit_samples"].insert_all(rows)

    def find(self, picks: Sequence[AuditPick]) -> str | None:
        """The run that recorded exactly this sample, if one did."""
        for run in reversed(self.workspace.runs.list("audit-sample")):
            if run["status"] == "completed" and self._picks(run["id"]) == list(picks):
                return run["id"]
        return None

    def _picks(self, run_id: str) -> list[AuditPick]:
        rows = self.db["audit_samples"].rows_where("run_id = ?", [run_id], order_by="position")
        return [AuditPick(row["doc_id"], row["predicted"]) for row in rows]

    def latest(self, taxonomy_version: int | None = None) -> dict[str, Any]:
        where, args = ("where taxonomy_version = ?", [taxonomy_version]) if taxonomy_version else ("", [])
        row = self.db.execute(
            f"select run_id, taxonomy_version, model_id from audit_samples {where} order by rowid desc limit 1", args
        ).fetchone()
        if row is None:
            raise AuditError("no audit sample yet; draw one with `tnt audit sample`")
        return {"run_id": row[0], "taxonomy_version": row[1], "model_id": row[2], "picks": self._picks(row[0])}


def push_audit(workspace: Workspace, ls: Any, taxonomy_version: int | None = None) -> Any:
    """The latest audit sample into its own Label Studio project, every task blind (no prediction
    attached, none served by a backend), so people are not anchored. A second push adds only what is
    missing."""
    from tnt.review.labelstudio_sync import push

    sample = AuditSamples(workspace).latest(taxonomy_version)
    version = sample["taxonomy_version"]
    doc_ids = [pick.doc_id for pick in sample["picks"]]
    return push(
        workspace, ls, doc_ids, taxonomy_version=version, title=audit_project_title(version),
        reasons=dict.fromkeys(doc_ids, AUDIT_REASON), predictions=False, carried=False, blind=set(doc_ids),
    )  # fmt: skip


def audit_project_title(taxonomy_version: int) -> str:
    return f"tnt audit v{taxonomy_version}"


def latest_audit(workspace: Workspace, taxonomy_version: int | None = None) -> AuditReport | None:
    """The version's audit, when one was drawn and its model's tags are still there."""
    try:
        return audit_report(workspace, taxonomy_version)
    except WorkspaceError:
        return None


def expected_on_label(
    workspace: Workspace, taxonomy_version: int, selected: Iterable[tuple[str, str]]
) -> dict[str, dict[str, float]] | None:
    """Per label of a selection (``(label, source)`` per document), how many documents are expected to
    truly be in it, from the latest audit: a person's label counts as right, a tagger's at the label's
    audited precision and its interval; an LLM's label was not audited and counts as right, said apart.
    None without an audit."""
    audit = latest_audit(workspace, taxonomy_version)
    if audit is None:
        return None
    audited = audit.by_label()
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for label, source in selected:
        counts[label][source] += 1
    expected: dict[str, dict[str, float]] = {}
    for label, by_source in sorted(counts.items()):
        precision = audited[label].precision if label in audited else None
        if precision is None or not by_source["model"]:
            continue
        sure, tagged = by_source["human"] + by_source["llm"], by_source["model"]
        expected[label] = {"expected": sure + tagged * precision.estimate, "low": sure + tagged * precision.low,
                           "high": sure + tagged * precision.high, "unaudited_llm": by_source["llm"]}  # fmt: skip
    return expected or None
