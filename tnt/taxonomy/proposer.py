"""TnT-LLM phase 1 as stage objects: propose a label table from summaries (generate → update →
review, with ratings); grouping and refining are in ``tnt.taxonomy.refine``.

Each stage takes plain data (strings, ``TaxonomyLabel`` lists) and talks to the LLM only through a
``TableCaller``, which owns the guardrails: every table answer is a validated pydantic model, checked
against ``TaxonomyLimits``; a failing answer is retried with the problems fed back and the
temperature raised a little each time, then the stage fails with the reasons. The workspace-facing
functions (sampling, storing versions) are in ``tnt.taxonomy.pipeline``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from statistics import mean
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from tnt.llm.gateway import Gateway, LLMFailure
from tnt.llm.prompts import PromptLibrary
from tnt.taxonomy.guardrails import (
    TaxonomyLimits,
    guardrail_problems,
    limited,
    table_max_tokens,
)
from tnt.taxonomy.store import OTHER_LABEL, TaxonomyLabel
from tnt.taxonomy.summarize import clip

A = TypeVar("A", bound=BaseModel)


# What the model answers


class LabelDraft(BaseModel):
    id: int
    name: str
    description: str


class TableAnswer(BaseModel):
    labels: list[LabelDraft]


# json_schema_extra bounds are hints for grammar-constrained backends (a small model rambles); they
# are not validated, so a provider model that writes more is not rejected for it.
EXPLANATION = Field(json_schema_extra={"maxLength": 300})
EDITS = Field(json_schema_extra={"maxItems": 8, "items": {"type": "string", "maxLength": 150}})


class UpdateAnswer(BaseModel):
    rating: int = Field(ge=0, le=100)
    explanation: str = EXPLANATION
    suggested_edits: list[str] = EDITS
    labels: list[LabelDraft]


class RefineAnswer(BaseModel):
    changes: list[str] = EDITS
    labels: list[LabelDraft]


Table = TypeVar("Table", TableAnswer, UpdateAnswer, RefineAnswer)


class RatingAnswer(BaseModel):
    explanation: str = EXPLANATION
    rating: int = Field(ge=0, le=100)


RATING_TOKENS = 150


def to_labels(drafts: Sequence[LabelDraft]) -> list[TaxonomyLabel]:
    return [TaxonomyLabel(name=d.name.strip(), description=d.description.strip()) for d in drafts]


def table_view(labels: Sequence[TaxonomyLabel]) -> list[dict[str, str]]:
    return [{"name": label.name, "description": label.description} for label in labels]


# The guarded call


class GuardrailFailure(Exception):
    """A stage whose answers kept breaking the guardrails; the message gives every attempt's reasons."""

    def __init__(
        self, stage: str, attempts: list[list[str]], what: str = "no acceptable table", answered: bool = True
    ):
        self.stage = stage
        self.attempts = attempts
        self.answered = answered  # False: the model never answered (the provider failed every time)
        lines = [f"  attempt {i}: {'; '.join(problems)}" for i, problems in enumerate(attempts, 1)]
        self.detail = f"{what} after {len(attempts)} attempts\n" + "\n".join(lines)
        super().__init__(f"{stage}: {self.detail}")


@dataclass
class TableCaller:
    """Renders a prompt, calls the gateway, checks the answer; retries hotter with the problems fed back."""

    gateway: Gateway
    prompts: PromptLibrary
    use_case: str
    limits: TaxonomyLimits = field(default_factory=TaxonomyLimits)
    retries: int = 5
    temperature_step: float = 0.1
    used_prompts: dict[str, str] = field(default_factory=dict)  # name -> hash, for the version record
    merges: list[tuple[str, str]] = field(default_factory=list)  # (prompt, what was merged): run issues

    @property
    def max_tokens(self) -> int:
        return table_max_tokens(self.limits)

    def render(self, prompt: str, rejected: Sequence[str] = (), **variables: Any) -> list[dict[str, str]]:
        template = self.prompts.get(prompt)
        self.used_prompts[prompt] = template.hash
        return template.render(
            use_case=self.use_case, limits=self.limits, other=OTHER_LABEL, rejected=list(rejected), **variables
        )

    def prepare(self, prompt: str, answer: type[BaseModel], **variables: Any) -> tuple[list[dict[str, str]], dict]:
        """The first attempt's request, for ``--dry-run`` estimates."""
        return self.gateway.prepare(self.render(prompt, **variables), answer, max_tokens=self.max_tokens)

    async def call(
        self,
        prompt: str,
        answer: type[A],
        temperature: float,
        check: Callable[[A], list[str]],
        **variables: Any,
    ) -> A:
        attempts: list[list[str]] = []
        answered = False
        for attempt in range(self.retries + 1):
            messages = self.render(prompt, attempts[-1] if attempts else (), **variables)
            try:
                completion = await self.gateway.complete(
                    messages,
                    answer,
                    temperature=min(temperature + attempt * self.temperature_step, 2.0),
                    max_tokens=self.max_tokens,
                    stage=prompt,
                    prompt=self.prompts.get(prompt),
                )
            except LLMFailure as exc:
                attempts.append([exc.reason])
                answered = answered or exc.answered
                continue
            answered = True
            problems = check(completion.parsed)
            if not problems:
                return completion.parsed
            attempts.append(problems)
        raise GuardrailFailure(prompt, attempts, answered=answered)

    def table_problems(self, answer: TableAnswer | UpdateAnswer | RefineAnswer) -> list[str]:
        return guardrail_problems(to_labels(answer.labels), self.limits)

    async def call_table(self, prompt: str, answer: type[Table], temperature: float, **variables: Any) -> Table:
        """``call`` for a label table. When every attempt broke the guardrails, the latest answer that
        passes once its repeated names are merged (the first row of each kept) is used, and the merge
        is noted in ``merges``; a small model often repeats one name. Otherwise it fails as ``call``."""
        rejected: list[Table] = []

        def check(candidate: Table) -> list[str]:
            problems = self.table_problems(candidate)
            if problems:
                rejected.append(candidate)
            return problems

        try:
            return await self.call(prompt, answer, temperature, check, **variables)
        except GuardrailFailure as failure:
            for candidate in reversed(rejected):
                merged, repeated = merge_repeated_names(candidate)
                if repeated and not self.table_problems(merged):
                    names = ", ".join(map(repr, repeated))
                    self.merges.append((prompt, f"rows sharing a name were merged ({names}) after: {failure.detail}"))
                    return merged
            raise


def merge_repeated_names(answer: Table) -> tuple[Table, list[str]]:
    """``answer`` keeping the first row of each name (case-insensitive), and the names that repeated."""
    kept: dict[str, LabelDraft] = {}
    repeated: dict[str, str] = {}  # casefolded -> the name as first written
    for row in answer.labels:
        key = row.name.strip().casefold()
        if key in kept:
            repeated.setdefault(key, kept[key].name.strip())
        else:
            kept[key] = row
    return answer.model_copy(update={"labels": list(kept.values())}), list(repeated.values())


# Stage: propose a table from summaries (generate → update over minibatches and epochs → review)


class ProposerSettings(BaseModel):
    batch_size: int = Field(200, ge=1)
    epochs: int = Field(3, ge=1)
    validation_share: float = Field(0.2, ge=0.0, lt=1.0)
    patience: int | None = Field(None, ge=1, description="Stop after this many epochs without a better score.")
    seed: int = 0
    generate_temperature: float = 0.5
    update_temperature: float = 0.2
    item_max_chars: int = 500


@dataclass
class CandidateTable:
    epoch: int
    labels: list[TaxonomyLabel]
    score: float | None


@dataclass
class Proposal:
    labels: list[TaxonomyLabel]
    score: float | None  # validation rating (0–100) of the final, reviewed table
    candidates: list[CandidateTable]
    best: CandidateTable  # the one reviewed: highest validation score, the latest among equals
    update_ratings: list[int]
    # Steps whose answers kept breaking the guardrails; the table they were given was kept instead.
    rejected_steps: list[GuardrailFailure] = field(default_factory=list)


@dataclass
class TaxonomyProposer:
    caller: TableCaller
    settings: ProposerSettings = field(default_factory=ProposerSettings)

    def split(self, items: Sequence[str]) -> tuple[list[str], list[str]]:
        """(train, validation): a seeded shuffle, validation held out from every update."""
        shuffled = list(items)
        random.Random(self.settings.seed).shuffle(shuffled)
        n_validation = round(len(shuffled) * self.settings.validation_share)
        if self.settings.validation_share and len(shuffled) > 1:
            n_validation = max(1, n_validation)
        return shuffled[n_validation:], shuffled[:n_validation]

    def minibatches(self, items: Sequence[str], epoch: int) -> list[list[str]]:
        order = list(items)
        if epoch:
            random.Random(self.settings.seed * 1000 + epoch).shuffle(order)
        clipped = [clip(item, self.settings.item_max_chars) for item in order]
        size = self.settings.batch_size
        return [clipped[i : i + size] for i in range(0, len(clipped), size)]

    async def propose(
        self,
        items: Sequence[str],
        seed_labels: Sequence[TaxonomyLabel] | None = None,
        on_step: Callable[[str], None] | None = None,
    ) -> Proposal:
        train, validation = self.split(items)
        if not train:
            raise ValueError("no documents to build a taxonomy from")
        table = list(seed_labels) if seed_labels else None
        candidates: list[CandidateTable] = []
        ratings: list[int] = []
        rejected: list[GuardrailFailure] = []
        for epoch in range(self.settings.epochs):
            for batch in self.minibatches(train, epoch):
                if table is None:
                    table = await self.generate(batch)
                else:
                    try:
                        table, rating = await self.update(table, batch)
                        ratings.append(rating)
                    except GuardrailFailure as failure:
                        self._keep_given_table(table, failure)
                        rejected.append(failure)
                _report(on_step, f"epoch {epoch + 1}: {len(table)} labels")
            candidates.append(CandidateTable(epoch + 1, table, await self.rate(table, validation)))
            if self._stalled(candidates):
                break
        best = max(candidates, key=lambda c: (c.score if c.score is not None else -1, c.epoch))
        try:
            final = await self.review(best.labels)
        except GuardrailFailure as failure:
            self._keep_given_table(best.labels, failure)
            rejected.append(failure)
            final = best.labels
        _report(on_step, f"reviewed: {len(final)} labels")
        return Proposal(final, await self.rate(final, validation), candidates, best, ratings, rejected)

    def _keep_given_table(self, table: list[TaxonomyLabel], failure: GuardrailFailure) -> None:
        """A step whose answers all broke the guardrails may leave its input table in place, but only
        when the model did answer and that table passes them (a seed table may not); else it fails."""
        if not failure.answered or guardrail_problems(table, self.caller.limits):
            raise failure

    def _stalled(self, candidates: list[CandidateTable]) -> bool:
        patience = self.settings.patience
        if patience is None or len(candidates) <= patience or candidates[-1].score is None:
            return False
        best_before = max(c.score or 0 for c in candidates[:-patience])
        return all((c.score or 0) <= best_before for c in candidates[-patience:])

    async def generate(self, batch: list[str]) -> list[TaxonomyLabel]:
        answer = await self.caller.call_table(
            "taxonomy_generate", limited(TableAnswer, self.caller.limits), self.settings.generate_temperature, items=batch
        )
        return to_labels(answer.labels)

    async def update(self, table: list[TaxonomyLabel], batch: list[str]) -> tuple[list[TaxonomyLabel], int]:
        answer = await self.caller.call_table(
            "taxonomy_update",
            limited(UpdateAnswer, self.caller.limits),
            self.settings.update_temperature,
            labels=table_view(table),
            items=batch,
        )
        return to_labels(answer.labels), answer.rating

    async def review(self, table: list[TaxonomyLabel]) -> list[TaxonomyLabel]:
        answer = await self.caller.call_table(
            "taxonomy_review", limited(TableAnswer, self.caller.limits), 0.0, labels=table_view(table)
        )
        return to_labels(answer.labels)

    async def rate(self, table: list[TaxonomyLabel], validation: list[str]) -> float | None:
        """Mean 0–100 fit rating over the validation minibatches; None without a validation split."""
        if not validation:
            return None
        ratings = []
        for batch in self.minibatches(validation, 0):
            messages = self.caller.render("taxonomy_rate", labels=table_view(table), items=batch)
            try:
                completion = await self.caller.gateway.complete(
                    messages, RatingAnswer, max_tokens=RATING_TOKENS, stage="taxonomy_rate",
                    prompt=self.caller.prompts.get("taxonomy_rate"),
                )
            except LLMFailure:
                continue  # logged by the gateway; the score rests on the batches that answered
            ratings.append(completion.parsed.rating)
        return mean(ratings) if ratings else None


def _report(on_step: Callable[[str], None] | None, message: str) -> None:
    if on_step:
        on_step(message)


# Stage: group a flat table under parents (--levels 2)


# Stage: refine a table with people's feedback and label corrections
