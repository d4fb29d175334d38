"""The corpus as a model tagged it: what ``tnt tag --corpus`` stored, read back for the stages that
learn from it (discovering labels the taxonomy misses, auditing the tags)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tnt.distill.store import ModelStore
from tnt.labels.store import LabelStore
from tnt.runs import WorkspaceError
from tnt.taxonomy.store import TaxonomyStore

if TYPE_CHECKING:
    from tnt.workspace import Workspace


class NoTaggedCorpus(WorkspaceError):
    """No model of the version has tagged the corpus; the message says what to run."""


@dataclass
class CorpusTags:
    taxonomy_version: int
    model_id: str
    rows: dict[str, dict[str, Any]]  # doc_id -> the model's current label row (label, confidence, ...)

    @property
    def labels(self) -> dict[str, str]:
        return {doc_id: row["label"] for doc_id, row in self.rows.items() if row["label"]}


def corpus_tags(workspace: Workspace, taxonomy_version: int | None = None, model_id: str | None = None) -> CorpusTags:
    """The tags of the version's newest label model that tagged anything (or of ``model_id``)."""
    version = TaxonomyStore(workspace).get(taxonomy_version).version
    assert version is not None
    store = ModelStore(workspace)
    if model_id is not None:
        models = [store.get(model_id)]
    else:
        models = [m for m in store.all() if m.taxonomy_version == version and m.target == "label"]
    if not models:
        raise NoTaggedCorpus(f"taxonomy v{version} has no trained model; run `tnt train` and `tnt tag --corpus` first")
    for info in reversed(models):
        rows = LabelStore(workspace).current(version, "model", origins_like=f"model:{info.id}")
        if rows:
            return CorpusTags(version, info.id, rows)
    raise NoTaggedCorpus(f"no document is tagged by a model of taxonomy v{version}; run `tnt tag --corpus` first")
