"""Documents waiting for a label under a taxonomy version, because a migration could not carry theirs.

This module owns the ``pending_labels`` table. A migration (``tnt.labels.migrate``) records, per
document, why its label did not carry (its label was split or removed, or it is a candidate for an
added label) and which labels a prompt may offer it. A pending document stays open for a source until
that source gives it a label under the version; the rows themselves are kept as the record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tnt.runs import utc_now

if TYPE_CHECKING:
    from tnt.workspace import Workspace

REASONS = ("split", "removed", "added", "other")


@dataclass
class PendingLabel:
    doc_id: str
    taxonomy_version: int
    reason: str  # one of REASONS
    offered: list[str] | None = None  # the labels to offer (a split's children); None: the whole table
    old_label: str | None = None  # the parent version's label that did not carry
    sources: list[str] = field(default_factory=list)  # whose label did not carry: llm, human, model
    run_id: str | None = None
    created_at: str | None = None

    def to_row(self) -> dict[str, Any]:
        if self.reason not in REASONS:
            raise ValueError(f"pending reason must be one of {REASONS}, not {self.reason!r}")
        return {
            "taxonomy_version": self.taxonomy_version,
            "doc_id": self.doc_id,
            "reason": self.reason,
            "offered": None if self.offered is None else json.dumps(self.offered),
            "old_label": self.old_label,
            "sources": json.dumps(self.sources),
            "run_id": self.run_id,
            "created_at": self.created_at or utc_now(),
        }


class PendingLabels:
    """The ``pending_labels`` table of one workspace."""

    def __init__(self, workspace: Workspace):
        self.db = workspace.db

    def add(self, pending: Iterable[PendingLabel]) -> int:
        """Record documents as pending; one already recorded for the version is kept as it was."""
        rows = [item.to_row() for item in pending]
        with self.db.atomic():  # inside a caller's transaction: a savepoint of it
            before = self.db["pending_labels"].count
            self.db["pending_labels"].insert_all(rows, ignore=True, batch_size=1000)
            return self.db["pending_labels"].count - before

    def all(self, taxonomy_version: int) -> list[PendingLabel]:
        rows = self.db["pending_labels"].rows_where(
            "taxonomy_version = ?", [taxonomy_version], order_by="created_at, doc_id"
        )
        return [_from_row(row) for row in rows]

    def open(
        self, taxonomy_version: int, source: str = "llm", reasons: Sequence[str] | None = None
    ) -> list[PendingLabel]:
        """Pending documents that ``source`` has not labeled under the version since they became pending."""
        reasons = list(reasons or REASONS)
        sql = f"""
            select p.* from pending_labels p
            where p.taxonomy_version = ? and p.reason in ({",".join("?" * len(reasons))})
              and not exists (
                select 1 from labels l
                where l.doc_id = p.doc_id and l.taxonomy_version = p.taxonomy_version
                  and l.source = ? and l.retracted_at is null and l.created_at >= p.created_at
                  and l.migrated_from is null  -- carried in the same migration: never an answer
              )
            order by p.created_at, p.doc_id
        """
        return [_from_row(row) for row in self.db.query(sql, [taxonomy_version, *reasons, source])]

    def counts(self, taxonomy_version: int, source: str = "llm") -> dict[str, int]:
        """Open pending documents per reason."""
        return _per_reason(self.open(taxonomy_version, source))


@dataclass
class PendingSelection:
    """What ``tnt label --pending`` asks about: every pending document of a version (the same
    selection on every run, so a resumed run forms the same batches), the labels offered to those
    of a split label, and those the LLM labeled since they became pending (done)."""

    taxonomy_version: int
    doc_ids: list[str]
    offered: dict[str, list[str]]
    answered: set[str]
    open_counts: dict[str, int]  # reason → pending documents still to ask

    @property
    def open(self) -> int:
        return sum(self.open_counts.values())


def pending_selection(workspace: Workspace, taxonomy_version: int) -> PendingSelection:
    store = PendingLabels(workspace)
    every = store.all(taxonomy_version)
    still_open = store.open(taxonomy_version, "llm")
    return PendingSelection(
        taxonomy_version,
        [item.doc_id for item in every],
        {item.doc_id: item.offered for item in every if item.offered is not None},
        {item.doc_id for item in every} - {item.doc_id for item in still_open},
        _per_reason(still_open),
    )


def _per_reason(items: Iterable[PendingLabel]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item.reason] = counts.get(item.reason, 0) + 1
    return counts


def _from_row(row: dict[str, Any]) -> PendingLabel:
    return PendingLabel(
        doc_id=row["doc_id"],
        taxonomy_version=row["taxonomy_version"],
        reason=row["reason"],
        offered=None if row["offered"] is None else json.loads(row["offered"]),
        old_label=row["old_label"],
        sources=json.loads(row["sources"] or "[]"),
        run_id=row["run_id"],
        created_at=row["created_at"],
    )
