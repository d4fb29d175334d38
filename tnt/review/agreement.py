"""How far label sources agree: the LLM against people on the documents both labeled, people
against each other where several annotated one document, and a taxonomy version against a reference
version's human labels (say the intents imported with the corpus). The figures come from
``tnt.metrics``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tnt.labels.store import LabelStore, reference_labels
from tnt.metrics import classification_metrics, confusions, reference_agreement
from tnt.review.sampling import ReviewSamples
from tnt.select import DEFAULT_PRECEDENCE, resolve_labels
from tnt.taxonomy.store import TaxonomyStore

if TYPE_CHECKING:
    from tnt.workspace import Workspace


@dataclass
class PairAgreement:
    """How two label sources agree on the documents both labeled."""

    documents: int
    kappa: float | None
    accuracy: float | None
    macro_f1: float | None
    per_label: dict[str, dict[str, float | int]] = field(default_factory=dict)
    confusions: list[tuple[str, str, int]] = field(default_factory=list)  # (reference, other, count), most first


@dataclass
class AgreementReport:
    taxonomy_version: int
    llm_vs_human: PairAgreement
    human_vs_human: PairAgreement | None  # documents annotated by more than one person
    # LLM vs human on the tasks pushed blind (no prediction shown) and on the others; None without blind tasks
    llm_vs_human_blind: PairAgreement | None = None
    llm_vs_human_shown: PairAgreement | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReferenceAgreement:
    """A version's current labels against a reference version's human labels, on the documents both have."""

    taxonomy_version: int
    reference_version: int
    documents: int
    ami: float  # adjusted mutual information: 0 for chance, 1 for the same partition (names aside)
    mapping: dict[str, dict[str, Any]]  # label -> {"reference": its most frequent one, "share", "count"}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_labels(reference: Sequence[str], other: Sequence[str]) -> PairAgreement:
    """Cohen's kappa, accuracy, macro-F1, per-label precision/recall/F1 and the confusions of
    ``other`` against ``reference``."""
    if not reference:
        return PairAgreement(0, None, None, None)
    metrics = classification_metrics(list(reference), list(other))
    return PairAgreement(
        documents=len(reference),
        kappa=metrics["kappa"],
        accuracy=metrics["accuracy"],
        macro_f1=metrics["macro_f1"],
        per_label=metrics["per_label"],
        confusions=confusions(reference, other),
    )


def agreement(workspace: Workspace, taxonomy_version: int | None = None) -> AgreementReport:
    """LLM against people on every document both labeled (people's labels a migration carried to the
    version included), and apart on the tasks pushed blind and the others when there are blind ones;
    people against each other where several annotated one document (first two annotations, in order)."""
    version = TaxonomyStore(workspace).get(taxonomy_version).version
    assert version is not None
    labels = LabelStore(workspace)
    human = labels.current(version, "human")
    llm = labels.current(version, "llm")
    shared = [doc_id for doc_id in human if doc_id in llm]
    report = AgreementReport(version, _llm_vs_human(human, llm, shared), _human_vs_human(labels, version))
    blind = ReviewSamples(workspace).blind_doc_ids(version)
    if blind:  # how far showing a prediction sways people: the same comparison without it
        report.llm_vs_human_blind = _llm_vs_human(human, llm, [d for d in shared if d in blind])
        report.llm_vs_human_shown = _llm_vs_human(human, llm, [d for d in shared if d not in blind])
    return report


def _llm_vs_human(human: dict[str, dict[str, Any]], llm: dict[str, dict[str, Any]], doc_ids: Sequence[str]) -> PairAgreement:
    return compare_labels([human[d]["label"] for d in doc_ids], [llm[d]["label"] for d in doc_ids])


def _human_vs_human(labels: LabelStore, version: int) -> PairAgreement | None:
    """Carried labels are left out: a migration's copy of one person's label shares its origin with
    every other label it carried, and ``tnt ls push`` gives it to the new project as that person's
    annotation, which is counted."""
    by_doc: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in labels.current_by_origin(version, "human", "%").values():
        if row.get("migrated_from") is None:
            by_doc[row["doc_id"]].append(row)
    pairs = [sorted(rows, key=lambda row: row["id"])[:2] for rows in by_doc.values() if len(rows) > 1]
    if not pairs:
        return None
    return compare_labels([first["label"] for first, _ in pairs], [second["label"] for _, second in pairs])


def agreement_with_reference(
    workspace: Workspace,
    reference_version: int,
    taxonomy_version: int | None = None,
    precedence: Iterable[str] = DEFAULT_PRECEDENCE,
) -> ReferenceAgreement:
    """AMI and the label → reference mapping between each document's current label under
    ``taxonomy_version`` (latest by default; human over model over LLM) and people's labels under
    ``reference_version``. The two versions need not share label names: AMI compares partitions."""
    version = TaxonomyStore(workspace).get(taxonomy_version).version
    assert version is not None
    if version == reference_version:
        raise ValueError(f"taxonomy version {version} is the reference itself: compare another version with it")
    gold = reference_labels(workspace, reference_version)
    current = {doc_id: row["label"] for doc_id, row in resolve_labels(workspace, version, precedence).items()}
    if not current:
        raise ValueError(f"taxonomy version {version} has no labels yet: label, cluster or tag documents with it first")
    ami, mapping = reference_agreement(current, gold)
    documents = sum(row["count"] for row in mapping.values())
    return ReferenceAgreement(version, reference_version, documents, ami, mapping)


def default_reference(workspace: Workspace, taxonomy_version: int) -> int | None:
    """The latest version imported with the corpus (``ingest --label-field``) other than this one."""
    imported = [t.version for t in TaxonomyStore(workspace).all() if t.method == "import" and t.version != taxonomy_version]
    return max(imported, default=None)
