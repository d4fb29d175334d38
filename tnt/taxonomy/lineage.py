"""How a taxonomy version's labels relate to its parent's: the label map.

A ``LabelMap`` lists one ``LabelChange`` per relation: a label kept (``unchanged``, or ``reworded``:
the description changed), ``renamed`` (A → A′), ``merged`` (A, B → C), ``split`` (A → A1, A2),
``added`` or ``removed``. It is validated against both tables: every parent leaf and every child
leaf is accounted for exactly once. ``derive_label_map`` builds it from what an editor or the LLM
claimed (each new label's ``from``) and, where nothing was claimed, from the names and descriptions
(a label with its old name is kept; a new name with a removed label's description is a rename).
``tnt.labels.migrate`` reads the map to carry labels whose meaning survives to the new version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from tnt.taxonomy.store import Taxonomy, TaxonomyLabel

ChangeKind = Literal["unchanged", "reworded", "renamed", "merged", "split", "added", "removed"]
KINDS: tuple[str, ...] = ChangeKind.__args__  # type: ignore[attr-defined]
# Kinds under which a document's label keeps its meaning in the new version (one new label).
CARRIED_KINDS = ("unchanged", "reworded", "renamed", "merged")
# How many old and new labels each kind relates: (fewest, most), None = no bound.
_SHAPES: dict[str, tuple[tuple[int, int | None], tuple[int, int | None]]] = {
    "unchanged": ((1, 1), (1, 1)),
    "reworded": ((1, 1), (1, 1)),
    "renamed": ((1, 1), (1, 1)),
    "merged": ((2, None), (1, 1)),
    "split": ((1, 1), (2, None)),
    "added": ((0, 0), (1, 1)),
    "removed": ((1, 1), (0, 0)),
}


class LabelMapError(ValueError):
    """A label map that does not fit the two tables: ``problems`` are (the new label whose claim is
    wrong, or None for the map as a whole; the sentence)."""

    def __init__(self, problems: list[tuple[str | None, str]]):
        self.problems = problems
        super().__init__("; ".join(message for _, message in problems))


class LabelChange(BaseModel):
    kind: ChangeKind
    old: list[str] = Field(default_factory=list)
    new: list[str] = Field(default_factory=list)

    def __str__(self) -> str:
        old, new = ", ".join(self.old), ", ".join(self.new)
        if self.kind in ("unchanged", "reworded"):
            return f"{self.kind}: {new}"
        if self.kind == "added":
            return f"added: {new}"
        if self.kind == "removed":
            return f"removed: {old}"
        return f"{self.kind}: {old} → {new}"


class LabelMap(BaseModel):
    """Every change from a parent version to a child version, in the child's table order."""

    changes: list[LabelChange]

    def of_kind(self, *kinds: str) -> list[LabelChange]:
        return [change for change in self.changes if change.kind in kinds]

    def carried(self) -> dict[str, str]:
        """Old label → the new label that keeps its meaning (unchanged, reworded, renamed, merged)."""
        return {old: change.new[0] for change in self.of_kind(*CARRIED_KINDS) for old in change.old}

    def change_of(self, old_label: str) -> LabelChange | None:
        return next((change for change in self.changes if old_label in change.old), None)

    @property
    def added(self) -> list[str]:
        return [change.new[0] for change in self.of_kind("added")]

    @property
    def identical(self) -> bool:
        return all(change.kind == "unchanged" for change in self.changes)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for change in self.changes:
            counts[change.kind] = counts.get(change.kind, 0) + 1
        return counts

    def problems(self, parent: Sequence[TaxonomyLabel], child: Sequence[TaxonomyLabel]) -> list[str]:
        """Everything that does not fit the parent's and the child's leaves; empty: it fits."""
        old_tables = {label.name: label for label in parent}
        new_tables = {label.name: label for label in child}
        problems: list[str] = []
        for change in self.changes:
            problems += _shape_problems(change)
            problems += [f"{change}: {name!r} is not a label of the parent" for name in change.old if name not in old_tables]
            problems += [f"{change}: {name!r} is not a label of the new table" for name in change.new if name not in new_tables]
            if change.kind in ("unchanged", "reworded") and not problems:
                problems += _kept_problems(change, old_tables[change.old[0]], new_tables[change.new[0]])
        problems += _accounting(self.changes, list(old_tables), "old", "parent label")
        problems += _accounting(self.changes, list(new_tables), "new", "new label")
        return problems

    def validated(self, parent: Sequence[TaxonomyLabel], child: Sequence[TaxonomyLabel]) -> LabelMap:
        if problems := self.problems(parent, child):
            raise LabelMapError([(None, problem) for problem in problems])
        return self


def _shape_problems(change: LabelChange) -> list[str]:
    problems = []
    for side, names, (fewest, most) in zip(("old", "new"), (change.old, change.new), _SHAPES[change.kind]):
        if len(names) < fewest or (most is not None and len(names) > most):
            bound = str(fewest) if fewest == most else f"{fewest} or more" if most is None else f"{fewest} to {most}"
            problems.append(f"a {change.kind} change relates {bound} {side} label(s), not {len(names)} ({change})")
    return problems


def _kept_problems(change: LabelChange, old: TaxonomyLabel, new: TaxonomyLabel) -> list[str]:
    if old.name != new.name:
        return [f"{change}: a {change.kind} label keeps its name ({old.name!r} became {new.name!r})"]
    same = old.description == new.description
    if same != (change.kind == "unchanged"):
        return [f"{change}: the description {'did not change' if same else 'changed'}"]
    return []


def _accounting(changes: Sequence[LabelChange], names: list[str], side: str, what: str) -> list[str]:
    uses: dict[str, list[LabelChange]] = {}
    for change in changes:
        for name in getattr(change, side):
            uses.setdefault(name, []).append(change)
    problems = [f"{what} {name!r} is in no change" for name in names if name not in uses]
    for name, found in uses.items():
        if len(found) > 1:
            problems.append(f"{what} {name!r} is in {len(found)} changes: {'; '.join(map(str, found))}")
    return problems


def derive_label_map(
    parent: Sequence[TaxonomyLabel],
    child: Sequence[TaxonomyLabel],
    claims: Mapping[str, Sequence[str]] | None = None,
    split_marked: Sequence[str] = (),
) -> LabelMap:
    """The map from ``parent`` to ``child`` leaves. ``claims``: new label → the old labels it comes
    from (its ``from``; an empty list: a new label). A label without a claim comes from the old label
    of its name, else from a removed label with the same description, else it is added. Several new
    labels claiming one old label split it; one claiming several merges them. ``split_marked``: new
    labels stated to be part of a split, so a split left with one part is an error, not a rename.
    Raises ``LabelMapError`` listing every claim that does not fit."""
    claims = {name: list(sources) for name, sources in (claims or {}).items()}
    old_by_name = {label.name: label for label in parent}
    sources = _sources(parent, child, claims)
    claimants: dict[str, list[str]] = {}
    for name, froms in sources.items():
        for old in froms:
            claimants.setdefault(old, []).append(name)
    problems = [(name, f"{name!r} comes from {old!r}, which is not a label of the parent")
                for name, froms in claims.items() for old in froms if old not in old_by_name]  # fmt: skip
    problems += _claim_problems(sources, claimants, split_marked)
    if problems:
        raise LabelMapError(problems)
    changes = [_change(label, sources[label.name], claimants, old_by_name) for label in child]
    seen_splits: set[str] = set()
    unique_changes = []
    for change in changes:  # a split appears once, where its first part is
        if change.kind == "split":
            if change.old[0] in seen_splits:
                continue
            seen_splits.add(change.old[0])
        unique_changes.append(change)
    unique_changes += [LabelChange(kind="removed", old=[name]) for name in old_by_name if name not in claimants]
    return LabelMap(changes=unique_changes).validated(parent, child)


def _sources(
    parent: Sequence[TaxonomyLabel], child: Sequence[TaxonomyLabel], claims: dict[str, list[str]]
) -> dict[str, list[str]]:
    """Each new label's old labels: claimed, by name, or by description (in that order)."""
    old_names = {label.name for label in parent}
    sources = {label.name: list(dict.fromkeys(claims[label.name])) for label in child if label.name in claims}
    for label in child:
        if label.name not in sources and label.name in old_names:
            sources[label.name] = [label.name]
    taken = {old for froms in sources.values() for old in froms}
    free_by_description = {
        label.description: label.name for label in parent if label.name not in taken and label.description
    }
    for label in child:
        if label.name not in sources:
            twin = free_by_description.pop(label.description, None) if label.description else None
            sources[label.name] = [twin] if twin else []
    return sources


def _claim_problems(
    sources: dict[str, list[str]], claimants: dict[str, list[str]], split_marked: Sequence[str]
) -> list[tuple[str | None, str]]:
    problems: list[tuple[str | None, str]] = []
    for old, names in claimants.items():
        merges = [name for name in names if len(sources[name]) > 1]
        if merges and len(names) > 1:
            first, *others = names
            why = "a label goes into one merge, or is split, not both"
            problems += [(other, f"{old!r} is claimed by {first!r} and by {other!r}, and one merges it: {why}") for other in others]
    for name in split_marked:
        froms = sources.get(name, [])
        if len(froms) != 1:
            problems.append((name, f"{name!r} is marked as part of a split, so it needs exactly one `from` label"))
        elif len(claimants.get(froms[0], [])) < 2:
            problems.append(
                (name, f"the split of {froms[0]!r} has one part ({name!r}): every part of a split says `from: {froms[0]}`")
            )
    return problems


def _change(
    label: TaxonomyLabel, froms: list[str], claimants: dict[str, list[str]], old_by_name: Mapping[str, TaxonomyLabel]
) -> LabelChange:
    if not froms:
        return LabelChange(kind="added", new=[label.name])
    if len(froms) > 1:
        return LabelChange(kind="merged", old=froms, new=[label.name])
    old = froms[0]
    if len(claimants[old]) > 1:
        return LabelChange(kind="split", old=[old], new=claimants[old])
    if old != label.name:
        return LabelChange(kind="renamed", old=[old], new=[label.name])
    kind = "unchanged" if old_by_name[old].description == label.description else "reworded"
    return LabelChange(kind=kind, old=[old], new=[label.name])


def map_between(old: Taxonomy, new: Taxonomy) -> LabelMap:
    """The recorded map when ``new`` is ``old``'s child, else the one names and descriptions imply."""
    if new.label_map is not None and new.parent == old.version:
        return new.label_map
    return derive_label_map(old.leaves, new.leaves)
