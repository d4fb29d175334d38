"""Labels that arrive with the corpus (``tnt ingest --label-field``): human labels of a taxonomy
version whose labels are the distinct imported values, reused when that version already exists."""

from __future__ import annotations

from tnt.corpus.ingest import ImportedLabels, StagedLabels
from tnt.labels.store import LabelRecord, LabelStore
from tnt.runs import Run
from tnt.taxonomy.store import Taxonomy, TaxonomyLabel, TaxonomyStore


def store_imported_labels(run: Run, label_field: str, names: list[str], labels: StagedLabels) -> ImportedLabels:
    """The ``LabelSink`` ``Workspace.ingest`` uses: a label already current for its origin is kept."""
    version = _reference_version(run, label_field, names)
    store = LabelStore(run.workspace)
    current: dict[str, dict[str, str]] = {}
    added = present = 0
    for origin, page in labels:
        if origin not in current:
            current[origin] = {
                doc_id: row["label"]
                for doc_id, row in store.current(version, "human", origins_like=origin).items()
                if row["origin"] == origin  # origins_like is a LIKE pattern: '_' in a path matches any char
            }
        records = [
            LabelRecord(doc_id, "human", label, version, origin=origin, run_id=run.id)
            for doc_id, label in page
            if current[origin].get(doc_id) != label
        ]
        added += store.add(records) if records else 0
        present += len(page) - len(records)
    return ImportedLabels(version, added, present)


def _reference_version(run: Run, label_field: str, names: list[str]) -> int:
    taxonomy = Taxonomy(
        labels=[TaxonomyLabel(name=name) for name in names],
        method="import",
        run_id=run.id,
        params={"label_field": label_field},
        note="labels imported with tnt ingest --label-field",
    )
    store = TaxonomyStore(run.workspace)
    return (store.find_by_content("import", taxonomy.content_hash()) or store.save(taxonomy)).version
