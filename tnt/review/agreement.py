"""How far label sources agree: the LLM against people on the documents both labeled, and people
against each other where several annotated one document."""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tnt.labels.store import LabelStore
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_labels(reference: Sequence[str], other: Sequence[str]) -> PairAgreement:
    """Cohen's kappa, accuracy, macro-F1, per-label precision/recall/F1 and the confusions of
    ``other`` against ``reference`` (scikit-learn, through distill's metrics)."""
    from tnt.metrics import classification_metrics

    if not reference:
        return PairAgreement(0, None, None, None)
    with warnings.catch_warnings():  # one label only: kappa is undefined, reported as None below
        warnings.simplefilter("ignore", UserWarning)
        metrics = classification_metrics(list(reference), list(other))
    confusions = Counter((r, o) for r, o in zip(reference, other) if r != o)
    return PairAgreement(
        documents=len(reference),
        kappa=None if np.isnan(metrics["kappa"]) else metrics["kappa"],  # undefined when one label is all there is
        accuracy=metrics["accuracy"],
        macro_f1=metrics["macro_f1"],
        per_label=metrics["per_label"],
        confusions=[(r, o, count) for (r, o), count in confusions.most_common()],
    )


def agreement(workspace: Workspace, taxonomy_version: int | None = None) -> AgreementReport:
    """LLM against people on every document both labeled; people against each other where several
    annotated one document (first two annotations, in order)."""
    version = TaxonomyStore(workspace).get(taxonomy_version).version
    assert version is not None
    labels = LabelStore(workspace)
    human = labels.current(version, "human")
    llm = labels.current(version, "llm")
    shared = [doc_id for doc_id in human if doc_id in llm]
    llm_vs_human = compare_labels([human[d]["label"] for d in shared], [llm[d]["label"] for d in shared])
    return AgreementReport(version, llm_vs_human, _human_vs_human(labels, version))


def _human_vs_human(labels: LabelStore, version: int) -> PairAgreement | None:
    by_doc: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in labels.current_by_origin(version, "human", "%").values():
        by_doc[row["doc_id"]].append(row)
    pairs = [sorted(rows, key=lambda row: row["id"])[:2] for rows in by_doc.values() if len(rows) > 1]
    if not pairs:
        return None
    return compare_labels([first["label"] for first, _ in pairs], [second["label"] for _, second in pairs])
