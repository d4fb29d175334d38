"""Taxonomies: label sets, versioned in the workspace.

Every generated, edited, refined or imported taxonomy is a new immutable version with its parent,
so lineage and diffs are always available. This module owns the ``taxonomies`` table. What every
table must satisfy is in ``tnt.taxonomy.guardrails``, the file format people edit and the diff in
``tnt.taxonomy.file``, generation in ``tnt.taxonomy.proposer`` / ``pipeline``, evaluation in
``tnt.taxonomy.evaluate``.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from tnt.runs import WorkspaceError, utc_now
from tnt.taxonomy.lineage import LabelMap

if TYPE_CHECKING:
    from tnt.workspace import Workspace

OTHER_LABEL = "Other"


class TaxonomyLabel(BaseModel):
    name: str = Field(min_length=1)
    description: str = ""
    parent: str | None = None


class Taxonomy(BaseModel):
    """A label set plus where it came from. ``version`` is None until it is saved."""

    labels: list[TaxonomyLabel]
    version: int | None = None
    parent: int | None = None
    method: str = "manual"
    use_case: str = ""
    model: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    prompt_hashes: dict[str, str] = Field(default_factory=dict)
    score: float | None = None
    run_id: str | None = None
    note: str = ""
    created_at: str | None = None
    # How the labels relate to the parent's (tnt.taxonomy.lineage); None for a version with no parent.
    label_map: LabelMap | None = None

    @property
    def names(self) -> list[str]:
        """Every label, group labels of a two-level taxonomy included."""
        return [label.name for label in self.labels]

    @property
    def leaves(self) -> list[TaxonomyLabel]:
        """The labels documents get: all of them, less the groups of a two-level taxonomy."""
        groups = {label.parent for label in self.labels if label.parent}
        return [label for label in self.labels if label.name not in groups]

    @property
    def leaf_names(self) -> list[str]:
        return [label.name for label in self.leaves]

    def tree(self) -> dict[str | None, list[TaxonomyLabel]]:
        """Children by parent name (None: top level), in table order; nests as Label Studio's <Taxonomy>."""
        children: dict[str | None, list[TaxonomyLabel]] = {}
        for label in self.labels:
            children.setdefault(label.parent, []).append(label)
        return children

    def content_hash(self) -> str:
        payload = json.dumps([label.model_dump() for label in self.labels], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


class TaxonomyStore:
    """Saved taxonomy versions of one workspace."""

    def __init__(self, workspace: Workspace):
        self.db = workspace.db

    def save(self, taxonomy: Taxonomy) -> Taxonomy:
        row = {
            "parent": taxonomy.parent,
            "method": taxonomy.method,
            "use_case": taxonomy.use_case,
            "labels": json.dumps([label.model_dump() for label in taxonomy.labels]),
            "content_hash": taxonomy.content_hash(),
            "model": taxonomy.model,
            "params": json.dumps(taxonomy.params),
            "prompt_hashes": json.dumps(taxonomy.prompt_hashes),
            "score": taxonomy.score,
            "run_id": taxonomy.run_id,
            "note": taxonomy.note,
            "created_at": utc_now(),
            "label_map": taxonomy.label_map.model_dump_json() if taxonomy.label_map else None,
        }
        version = self.db["taxonomies"].insert(row).last_pk
        return self.get(version)

    def get(self, version: int | None = None) -> Taxonomy:
        """A version, or the latest one when ``version`` is None."""
        if version is None:
            row = self.db.execute("select max(version) from taxonomies").fetchone()
            if row[0] is None:
                raise WorkspaceError("the workspace has no taxonomy yet")
            version = row[0]
        rows = list(self.db["taxonomies"].rows_where("version = ?", [version]))
        if not rows:
            raise WorkspaceError(f"no taxonomy version {version}")
        return _from_row(rows[0])

    def find_by_content(self, method: str, content_hash: str) -> Taxonomy | None:
        rows = list(
            self.db["taxonomies"].rows_where(
                "method = ? and content_hash = ?", [method, content_hash], order_by="version desc", limit=1
            )
        )
        return _from_row(rows[0]) if rows else None

    def all(self) -> list[Taxonomy]:
        return [_from_row(row) for row in self.db["taxonomies"].rows_where(order_by="version")]


def _from_row(row: dict[str, Any]) -> Taxonomy:
    return Taxonomy(
        version=row["version"],
        parent=row["parent"],
        method=row["method"],
        use_case=row["use_case"] or "",
        labels=[TaxonomyLabel(**label) for label in json.loads(row["labels"])],
        model=row["model"],
        params=json.loads(row["params"] or "{}"),
        prompt_hashes=json.loads(row["prompt_hashes"] or "{}"),
        score=row["score"],
        run_id=row["run_id"],
        note=row["note"] or "",
        created_at=row["created_at"],
        label_map=LabelMap.model_validate_json(row["label_map"]) if row.get("label_map") else None,
    )


# Guardrails: what every generated or refined table must satisfy


# The file people edit: YAML (or JSON, which YAML reads too), every error reported with its line


# Diff


