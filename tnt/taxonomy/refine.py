"""Changing an existing table: grouping flat labels under parents, and refining a version from a
person's feedback and the corrections people made in review."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, Field

from tnt.taxonomy.guardrails import guardrail_problems, limited
from tnt.taxonomy.lineage import LabelMap, LabelMapError, derive_label_map
from tnt.taxonomy.proposer import (
    LabelDraft,
    TableCaller,
    table_view,
    to_labels,
)
from tnt.taxonomy.proposer import (
    RefineAnswer as TableRefineAnswer,
)
from tnt.taxonomy.store import TaxonomyLabel


class GroupDraft(BaseModel):
    name: str
    description: str
    members: list[int]


class GroupAnswer(BaseModel):
    groups: list[GroupDraft]


@dataclass
class TaxonomyGrouper:
    caller: TableCaller
    max_groups: int | None = None

    def groups_allowed(self, n_labels: int) -> int:
        return self.max_groups or max(2, round(n_labels**0.5))

    async def group(self, labels: list[TaxonomyLabel]) -> list[TaxonomyLabel]:
        """Parents first, each followed by its children (``parent`` set); the leaves keep their text."""
        max_groups = self.groups_allowed(len(labels))
        answer = await self.caller.call(
            "taxonomy_group",
            limited(GroupAnswer, self.caller.limits, max_groups),
            0.0,
            lambda a: self.problems(a, labels, max_groups),
            labels=table_view(labels),
            max_groups=max_groups,
        )
        grouped: list[TaxonomyLabel] = []
        for group in answer.groups:
            grouped.append(TaxonomyLabel(name=group.name.strip(), description=group.description.strip()))
            grouped += [labels[i - 1].model_copy(update={"parent": group.name.strip()}) for i in group.members]
        return grouped

    def problems(self, answer: GroupAnswer, labels: list[TaxonomyLabel], max_groups: int) -> list[str]:
        limits = self.caller.limits.model_copy(update={"min_labels": 2, "max_labels": max_groups})
        group_labels = [TaxonomyLabel(name=g.name, description=g.description) for g in answer.groups]
        problems = [p.replace("labels", "groups") for p in guardrail_problems(group_labels, limits)]
        leaf_names = {label.name.casefold() for label in labels}
        problems += [f"group {g.name!r} has the name of a label" for g in answer.groups if g.name.strip().casefold() in leaf_names]
        members = [i for g in answer.groups for i in g.members]
        missing = sorted(set(range(1, len(labels) + 1)) - set(members))
        if missing:
            problems.append(f"labels {missing} are in no group")
        if unknown := sorted({i for i in members if not 1 <= i <= len(labels)}):
            problems.append(f"label ids {unknown} do not exist")
        if repeated := sorted({i for i in members if members.count(i) > 1}):
            problems.append(f"labels {repeated} are in more than one group")
        return problems


@dataclass(frozen=True)
class Correction:
    """How often people replaced the model's label with another one (``Other`` included)."""

    llm_label: str
    human_label: str
    count: int
    example: str = ""


class LineageDraft(LabelDraft):
    """A revised label and the current labels it comes from (a label map claim, as ``from:`` in a file)."""

    from_: list[str] | None = Field(
        None, alias="from",
        description="Current labels this one comes from: one (kept or renamed; the same one on each part of a split), several (merged), none (new).",
    )  # fmt: skip


class RefineAnswer(TableRefineAnswer):  # the same schema name: the table with each label's ``from``
    labels: list[LineageDraft]  # type: ignore[assignment]


@dataclass
class Refinement:
    labels: list[TaxonomyLabel]
    changes: list[str]  # what the model says it changed
    label_map: LabelMap  # from the current table to ``labels``


@dataclass
class TaxonomyRefiner:
    caller: TableCaller
    temperature: float = 0.2

    async def refine(
        self, labels: list[TaxonomyLabel], feedback: str, corrections: Sequence[Correction] = ()
    ) -> Refinement:
        """The revised table with its label map; an answer breaking the guardrails or whose ``from``
        claims do not fit the two tables is sent back with the problems."""
        answer = await self.caller.call(
            "taxonomy_refine",
            limited(RefineAnswer, self.caller.limits),
            self.temperature,
            lambda a: self.caller.table_problems(a) or self.lineage_problems(labels, a),
            labels=table_view(labels),
            feedback=feedback,
            corrections=list(corrections),
        )
        return Refinement(to_labels(answer.labels), answer.changes, label_map(labels, answer))

    def lineage_problems(self, labels: list[TaxonomyLabel], answer: RefineAnswer) -> list[str]:
        try:
            label_map(labels, answer)
        except LabelMapError as exc:
            return [message for _, message in exc.problems]
        return []


def label_map(labels: list[TaxonomyLabel], answer: RefineAnswer) -> LabelMap:
    claims = {row.name.strip(): row.from_ for row in answer.labels if row.from_ is not None}
    return derive_label_map(labels, to_labels(answer.labels), claims)
