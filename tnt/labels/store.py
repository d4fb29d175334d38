"""Labels: what the LLM, people and distilled models said about each document.

This module owns the ``labels`` table. A label row is never edited in place: a correction is a new
row, a withdrawn human label gets ``retracted_at``. "Current" means the newest live row per
(document, source).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tnt.runs import utc_now
from tnt.taxonomy.store import TaxonomyStore

if TYPE_CHECKING:
    from tnt.workspace import Workspace

SOURCES = ("llm", "human", "model")


@dataclass(frozen=True)
class CurrentSummary:
    documents: int
    newest: str | None  # created_at of the newest current label
    carried: bool  # some current label was carried by a taxonomy migration


@dataclass
class LabelRecord:
    doc_id: str
    source: str  # llm | human | model
    label: str | None = None
    taxonomy_version: int | None = None
    extra_labels: list[str] = field(default_factory=list)
    score: float | None = None  # numeric labels (quality scores)
    confidence: float | None = None
    explanation: str | None = None
    origin: str | None = None  # e.g. "import:train.csv#category", "label-studio:annotation/12"
    run_id: str | None = None
    model: str | None = None
    prompt_hash: str | None = None

    def to_row(self) -> dict[str, Any]:
        if self.source not in SOURCES:
            raise ValueError(f"label source must be one of {SOURCES}, not {self.source!r}")
        return {**asdict(self), "extra_labels": json.dumps(self.extra_labels), "created_at": utc_now()}


class LabelStore:
    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.db = workspace.db

    def add(self, records: Iterable[LabelRecord]) -> int:
        rows = [record.to_row() for record in records]
        with self.workspace.write():
            self.db["labels"].insert_all(rows, batch_size=1000)
        return len(rows)

    def retract(self, origin: str) -> int:
        with self.workspace.write():
            cursor = self.db.execute(
                "update labels set retracted_at = ? where origin = ? and retracted_at is null",
                [utc_now(), origin],
            )
        return cursor.rowcount

    def current(
        self, taxonomy_version: int | None, source: str, origins_like: str | None = None,
        *, doc_ids: Sequence[str] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """The newest live label per document from ``source`` for a taxonomy version (only of
        ``doc_ids`` when given: a lookup by index instead of a pass over every label)."""
        if doc_ids is not None:
            found: dict[str, dict[str, Any]] = {}
            for start in range(0, len(doc_ids), 500):
                found.update(self._current(taxonomy_version, source, origins_like, doc_ids[start : start + 500]))
            return found
        return self._current(taxonomy_version, source, origins_like, None)

    def _current(
        self, taxonomy_version: int | None, source: str, origins_like: str | None, doc_ids: Sequence[str] | None
    ) -> dict[str, dict[str, Any]]:
        only = f"and doc_id in ({','.join('?' * len(doc_ids))})" if doc_ids is not None else ""
        sql = f"""
            select * from labels where id in (
                select max(id) from labels
                where taxonomy_version is ? and source = ? and retracted_at is null
                  and (? is null or origin like ?) {only}
                group by doc_id
            )
        """
        rows = self.db.query(sql, [taxonomy_version, source, origins_like, origins_like, *(doc_ids or [])])
        return {row["doc_id"]: _decode(row) for row in rows}

    def current_summary(self, taxonomy_version: int | None, origins_like: str | None = None) -> dict[str, CurrentSummary]:
        """Per source, what ``current`` would return, summed up in one query: how many documents,
        when the newest was given, whether any was carried by a migration."""
        sql = """
            select source, count(*), max(created_at), max(migrated_from is not null) from labels where id in (
                select max(id) from labels
                where taxonomy_version is ? and retracted_at is null and (? is null or origin like ?)
                group by doc_id, source
            ) group by source
        """
        rows = self.db.execute(sql, [taxonomy_version, origins_like, origins_like])
        return {source: CurrentSummary(count, newest, bool(carried)) for source, count, newest, carried in rows}

    def current_by_origin(
        self, taxonomy_version: int | None, source: str, origins_like: str
    ) -> dict[str, dict[str, Any]]:
        """The newest live label per origin (one per Label Studio annotation, say): unlike ``current``,
        several people's labels of one document all appear."""
        sql = """
            select * from labels where id in (
                select max(id) from labels
                where (? is null or taxonomy_version = ?) and source = ? and retracted_at is null
                  and origin like ?
                group by origin
            )
        """
        rows = self.db.query(sql, [taxonomy_version, taxonomy_version, source, origins_like])
        return {row["origin"]: _decode(row) for row in rows}

    def current_doc_ids(
        self,
        taxonomy_version: int | None,
        source: str,
        *,
        model: str,
        origin: str,
        prompt_hashes: Iterable[str],
        origins_like: str | None = None,
    ) -> set[str]:
        """Documents whose current label (as in ``current``) came from this model, origin and prompts."""
        hashes = list(prompt_hashes)
        sql = f"""
            select doc_id from labels where id in (
                select max(id) from labels
                where taxonomy_version is ? and source = ? and retracted_at is null
                  and (? is null or origin like ?)
                group by doc_id
            ) and model = ? and origin = ? and prompt_hash in ({",".join("?" * len(hashes))})
        """
        rows = self.db.execute(sql, [taxonomy_version, source, origins_like, origins_like, model, origin, *hashes])
        return {row[0] for row in rows}

    def count(self, taxonomy_version: int | None = None, source: str | None = None) -> int:
        where = ["retracted_at is null"]
        args: list[Any] = []
        if taxonomy_version is not None:
            where.append("taxonomy_version = ?")
            args.append(taxonomy_version)
        if source is not None:
            where.append("source = ?")
            args.append(source)
        return self.db["labels"].count_where(" and ".join(where), args)


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "extra_labels": json.loads(row["extra_labels"] or "[]")}


def reference_labels(workspace: Workspace, version: int) -> dict[str, str]:
    """People's current labels under ``version``: e.g. the version ``tnt ingest --label-field`` made
    from a gold set such as BANKING77's intents."""
    TaxonomyStore(workspace).get(version)  # an unknown version is an error, not an empty reference
    rows = LabelStore(workspace).current(version, "human")
    if not rows:
        raise ValueError(f"taxonomy version {version} has no human labels to use as reference")
    return {doc_id: row["label"] for doc_id, row in rows.items() if row["label"]}
