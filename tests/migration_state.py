"""A refined taxonomy version for the tests of carried work: the parent's first label split in two."""

from __future__ import annotations

from tnt.taxonomy.lineage import LabelChange, LabelMap
from tnt.taxonomy.store import Taxonomy, TaxonomyLabel, TaxonomyStore
from tnt.workspace import Workspace


def split_first_label(workspace: Workspace, parent: Taxonomy) -> Taxonomy:
    """Save a child of ``parent`` whose first label became two (``<name>_a``, ``<name>_b``), the
    others kept as they were, with the label map that says so."""
    first, *rest = parent.labels
    parts = [TaxonomyLabel(name=f"{first.name}_{part}", description=f"{first.description} ({part})") for part in "ab"]
    changes = [LabelChange(kind="split", old=[first.name], new=[label.name for label in parts])]
    changes += [LabelChange(kind="unchanged", old=[label.name], new=[label.name]) for label in rest]
    child = Taxonomy(
        labels=[*parts, *rest], parent=parent.version, method="refine", use_case=parent.use_case,
        label_map=LabelMap(changes=changes),
    )  # fmt: skip
    return TaxonomyStore(workspace).save(child)
