"""Carrying labels to a new taxonomy version (``tnt taxonomy migrate``).

The version's label map (``tnt.taxonomy.lineage``) says which old labels keep their meaning. Every
current label of the parent (per source: llm, human, model) under an unchanged, reworded, renamed or
merged label becomes a label of the new version at no LLM cost: same source, confidence and
explanation, origin ``migrate:v1→v2`` and ``migrated_from`` naming the row it was carried from.
Nothing is guessed: a document of a split label, of a removed label, labeled Other while labels were
added, or that the encoder puts nearest an added label, is recorded as pending
(``tnt.labels.pending``) for ``tnt label --pending`` to ask about.

Everything is written in one transaction, so a migration stopped half-way left nothing and running
it again gives the same result; a second migration of the same version adds nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tnt.labels.pending import PendingLabel, PendingLabels
from tnt.labels.store import SOURCES, LabelRecord, LabelStore
from tnt.taxonomy.lineage import CARRIED_KINDS, LabelMap, derive_label_map
from tnt.taxonomy.store import OTHER_LABEL, Taxonomy, TaxonomyStore

if TYPE_CHECKING:
    from tnt.workspace import Workspace

# When a document's labels do not carry for several reasons (two sources disagree), the first wins.
REASON_ORDER = ("split", "removed", "other", "added")


@dataclass
class MigrationResult:
    version: int
    parent: int
    run_id: str
    label_map: LabelMap
    carried: dict[str, dict[str, int]] = field(default_factory=dict)  # change kind (or Other) → source → labels
    pending: dict[str, int] = field(default_factory=dict)  # reason → documents newly pending
    already_carried: int = 0  # labels an earlier migration carried

    @property
    def changed_nothing(self) -> bool:
        return not self.carried and not self.pending


@dataclass
class _Plan:
    """What the migration writes: label rows to add and documents to record as pending."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    carried: dict[str, dict[str, int]] = field(default_factory=dict)
    pending: dict[str, list[PendingLabel]] = field(default_factory=dict)  # doc_id → one per source

    def carry(self, kind: str, source: str, row: dict[str, Any]) -> None:
        self.rows.append(row)
        by_source = self.carried.setdefault(kind, {})
        by_source[source] = by_source.get(source, 0) + 1

    def hold(self, item: PendingLabel) -> None:
        self.pending.setdefault(item.doc_id, []).append(item)


def migration_origin(parent: int, version: int) -> str:
    return f"migrate:v{parent}→v{version}"


def label_map_of(workspace: Workspace, taxonomy: Taxonomy) -> LabelMap:
    """The version's recorded map; for a version saved without one, the map its diff implies."""
    if taxonomy.parent is None:
        raise ValueError(f"taxonomy version {taxonomy.version} has no parent: there is nothing to migrate from")
    if taxonomy.label_map is not None:
        return taxonomy.label_map
    return derive_label_map(TaxonomyStore(workspace).get(taxonomy.parent).leaves, taxonomy.leaves)


def migrate_labels(workspace: Workspace, version: int) -> MigrationResult:
    """Carry the parent's labels whose meaning survives to ``version``; record the others as pending."""
    taxonomy = TaxonomyStore(workspace).get(version)
    label_map = label_map_of(workspace, taxonomy)
    parent = int(taxonomy.parent)  # type: ignore[arg-type]
    with workspace.run("taxonomy.migrate", {"version": version, "parent": parent}) as run:
        done = _carried_before(workspace, version)
        current = {
            source: {doc_id: row for doc_id, row in LabelStore(workspace).current(parent, source).items()
                     if (doc_id, source) not in done.skip and row["id"] not in done.rows}
            for source in SOURCES
        }  # fmt: skip
        nearest = _nearest_added_labels(workspace, taxonomy, label_map, current)
        plan = _plan(taxonomy, label_map, current, nearest, run.id)
        pending = [_merged_pending(items) for items in plan.pending.values()]
        with workspace.db.atomic():
            workspace.db["labels"].insert_all(plan.rows, batch_size=1000)
            PendingLabels(workspace).add(pending)
        result = MigrationResult(version, parent, run.id, label_map, plan.carried)
        for item in PendingLabels(workspace).all(version):
            if item.run_id == run.id:  # recorded now, not by an earlier migration
                result.pending[item.reason] = result.pending.get(item.reason, 0) + 1
        result.already_carried = workspace.db["labels"].count_where(
            "taxonomy_version = ? and migrated_from is not null and run_id != ?", [version, run.id]
        )
        run.stats |= {"carried": result.carried, "pending": result.pending, "changes": label_map.counts()}
    return result


def _plan(
    taxonomy: Taxonomy,
    label_map: LabelMap,
    current: Mapping[str, Mapping[str, dict[str, Any]]],
    nearest: Mapping[str, str],
    run_id: str,
) -> _Plan:
    """Each of the parent's current labels (``current``: those no earlier migration carried) carried
    or its document held as pending."""
    version = int(taxonomy.version)  # type: ignore[arg-type]
    carried_to = label_map.carried()
    plan = _Plan()
    origin = migration_origin(int(taxonomy.parent), version)  # type: ignore[arg-type]
    for source, rows in current.items():
        for doc_id, row in rows.items():
            if row["label"] is None:
                continue
            change = label_map.change_of(row["label"])
            if row["label"] == OTHER_LABEL and label_map.added:
                plan.hold(PendingLabel(doc_id, version, "other", None, OTHER_LABEL, [source], run_id))
            elif row["label"] == OTHER_LABEL or (change and change.kind in CARRIED_KINDS):
                if doc_id in nearest:
                    plan.hold(PendingLabel(doc_id, version, "added", None, row["label"], [source], run_id))
                kind = "Other" if change is None else change.kind
                plan.carry(kind, source, _carried_row(row, carried_to, version, origin, run_id))
            elif change and change.kind == "split":
                plan.hold(PendingLabel(doc_id, version, "split", change.new, row["label"], [source], run_id))
            else:  # removed, or a label the parent does not have
                plan.hold(PendingLabel(doc_id, version, "removed", None, row["label"], [source], run_id))
    return plan


@dataclass
class _Carried:
    rows: set[int]  # parent label ids already carried
    skip: set[tuple[str, str]]  # (doc, source) whose current label under the version is not a carried one


def _carried_before(workspace: Workspace, version: int) -> _Carried:
    """What an earlier migration carried, and where the new version already has its own labels (a
    label given under it directly is never overwritten by a carried one)."""
    rows = {row[0] for row in workspace.db.execute(
        "select migrated_from from labels where taxonomy_version = ? and migrated_from is not null", [version]
    )}  # fmt: skip
    skip = set()
    for source in SOURCES:
        for doc_id, row in LabelStore(workspace).current(version, source).items():
            if row.get("migrated_from") is None:
                skip.add((doc_id, source))
    return _Carried(rows, skip)


def _carried_row(
    row: Mapping[str, Any], carried_to: Mapping[str, str], version: int, origin: str, run_id: str
) -> dict[str, Any]:
    extras = [carried_to[name] for name in row["extra_labels"] if name in carried_to]
    label = OTHER_LABEL if row["label"] == OTHER_LABEL else carried_to[row["label"]]
    record = LabelRecord(
        doc_id=row["doc_id"], source=row["source"], label=label, taxonomy_version=version,
        extra_labels=[name for name in dict.fromkeys(extras) if name != label], score=row["score"],
        confidence=row["confidence"], explanation=row["explanation"], origin=origin, run_id=run_id,
        model=row["model"], prompt_hash=row["prompt_hash"],
    )  # fmt: skip
    return record.to_row() | {"migrated_from": row["id"]}


def _merged_pending(items: list[PendingLabel]) -> PendingLabel:
    """One pending record per document: the most telling reason, every source whose label did not carry."""
    first = min(items, key=lambda item: REASON_ORDER.index(item.reason))
    offered = first.offered
    if first.reason == "split":
        splits = [item.offered or [] for item in items if item.reason == "split"]
        offered = list(dict.fromkeys(name for names in splits for name in names))
    sources = list(dict.fromkeys(source for item in items for source in item.sources))
    return PendingLabel(first.doc_id, first.taxonomy_version, first.reason, offered, first.old_label, sources, first.run_id)


def _nearest_added_labels(
    workspace: Workspace,
    taxonomy: Taxonomy,
    label_map: LabelMap,
    current: Mapping[str, Mapping[str, dict[str, Any]]],
) -> dict[str, str]:
    """Documents with a label that carries whose text the sentence encoder puts nearest an added
    label (among all the new version's labels, by cosine similarity to name and description):
    doc_id → that label. (Other, split and removed labels' documents are asked anyway.)"""
    added = set(label_map.added)
    carried = set(label_map.carried())
    doc_ids = sorted({doc_id for rows in current.values() for doc_id, row in rows.items() if row["label"] in carried})
    if not added or not doc_ids:
        return {}
    from tnt.distill.encoders import sentence_encoder

    encoder = sentence_encoder(None)
    leaves = taxonomy.leaves
    label_vectors = _unit(encoder.encode([f"{label.name}: {label.description}" for label in leaves]))
    documents = workspace.documents.get(doc_ids)
    nearest: dict[str, str] = {}
    for start in range(0, len(documents), 2048):
        batch = documents[start : start + 2048]
        scores = _unit(encoder.encode([doc.text for doc in batch])) @ label_vectors.T
        for doc, best in zip(batch, scores.argmax(axis=1)):
            if leaves[best].name in added:
                nearest[doc.id] = leaves[best].name
    return nearest


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
