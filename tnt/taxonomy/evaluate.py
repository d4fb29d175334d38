"""Taxonomy evaluation, TnT-LLM's metrics on a labeled sample, judged by an LLM:

- coverage: share of documents the LLM does not put in ``Other`` (offered only in this prompt);
- label accuracy: pairwise forced choice between the assigned label and a random other label
  (order shuffled), the share where the assigned one wins;
- use-case relevance: share of assigned labels judged relevant to the use case.

With reference labels (a gold set such as BANKING77's intents) it adds adjusted mutual information
and a label → reference mapping. ``Evaluator`` is the stage; ``evaluate_taxonomy`` runs it on a
workspace sample and writes a JSON report beside the database.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, create_model

from tnt.labels.store import reference_labels
from tnt.llm.gateway import Gateway, LLMFailure, LLMSettings
from tnt.llm.prompts import PromptLibrary
from tnt.metrics import reference_agreement
from tnt.taxonomy.pipeline import sample_documents
from tnt.taxonomy.store import OTHER_LABEL, TaxonomyLabel, TaxonomyStore
from tnt.taxonomy.summarize import TextItem, clip

if TYPE_CHECKING:
    from tnt.workspace import Workspace

PROMPTS = ("taxonomy_eval_assign", "taxonomy_eval_pairwise", "taxonomy_eval_relevance")


class PairwiseAnswer(BaseModel):
    choice: Literal["A", "B"]


class RelevanceAnswer(BaseModel):
    relevant: bool


@lru_cache(maxsize=32)
def assign_answer(names: tuple[str, ...]) -> type[BaseModel]:
    """``{"label": one of names}``: an enum in the schema, so constrained backends cannot stray."""
    return create_model("AssignAnswer", label=(Literal[names], ...))  # type: ignore[valid-type]


@dataclass
class ItemResult:
    doc_id: str
    label: str | None = None  # None: the assignment call failed
    accurate: bool | None = None  # None: no forced choice (Other, a one-label taxonomy, or a failure)
    relevant: bool | None = None
    errors: list[str] = field(default_factory=list)


@dataclass
class Evaluation:
    version: int | None
    documents: int
    coverage: float | None
    accuracy: float | None
    relevance: float | None
    label_counts: dict[str, int]
    failures: int
    ami: float | None = None
    mapping: dict[str, dict[str, Any]] | None = None  # label -> {reference, share, count}
    items: list[ItemResult] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "items"}


@dataclass
class Evaluator:
    gateway: Gateway
    prompts: PromptLibrary
    use_case: str
    seed: int = 0
    max_doc_chars: int = 2000

    def _render(self, prompt: str, **variables: Any) -> list[dict[str, str]]:
        return self.prompts.get(prompt).render(use_case=self.use_case, other=OTHER_LABEL, **variables)

    def assign_messages(self, labels: Sequence[TaxonomyLabel], item: TextItem) -> list[dict[str, str]]:
        return self._render("taxonomy_eval_assign", labels=list(labels), text=clip(item.text, self.max_doc_chars))

    def assign_request(self, labels: Sequence[TaxonomyLabel], item: TextItem) -> tuple[list[dict[str, str]], dict]:
        return self.gateway.prepare(self.assign_messages(labels, item), assign_answer(self.choices(labels)), max_tokens=60)

    @staticmethod
    def choices(labels: Sequence[TaxonomyLabel]) -> tuple[str, ...]:
        return (*(label.name for label in labels), OTHER_LABEL)

    async def evaluate(
        self, labels: Sequence[TaxonomyLabel], items: Sequence[TextItem], on_done: Callable[[int], None] | None = None
    ) -> list[ItemResult]:
        """Per document: its label (or Other), the forced choice and the relevance judgement."""

        async def one(item: TextItem) -> ItemResult:
            result = await self._evaluate_one(list(labels), item)
            if on_done:
                on_done(1)
            return result

        return list(await asyncio.gather(*(one(item) for item in items)))

    async def _evaluate_one(self, labels: list[TaxonomyLabel], item: TextItem) -> ItemResult:
        result = ItemResult(item.id)
        text = clip(item.text, self.max_doc_chars)
        try:
            answer = await self.gateway.complete(
                self.assign_messages(labels, item), assign_answer(self.choices(labels)),
                max_tokens=60, stage="taxonomy_eval_assign", prompt=self.prompts.get("taxonomy_eval_assign"),
            )
        except LLMFailure as exc:
            result.errors.append(f"assign: {exc.reason}")
            return result
        result.label = answer.parsed.label
        if result.label == OTHER_LABEL:
            return result
        assigned = next(label for label in labels if label.name == result.label)
        others = [label for label in labels if label.name != result.label]
        rng = random.Random(f"{self.seed}:{item.id}")
        judgements = [self._relevant(assigned, text)]
        if others:
            judgements.append(self._prefers(assigned, rng.choice(others), rng.random() < 0.5, text))
        outcomes = await asyncio.gather(*judgements, return_exceptions=True)
        for name, outcome in zip(("relevance", "pairwise"), outcomes):
            if isinstance(outcome, LLMFailure):
                result.errors.append(f"{name}: {outcome.reason}")
            elif isinstance(outcome, BaseException):
                raise outcome
            elif name == "relevance":
                result.relevant = outcome
            else:
                result.accurate = outcome
        return result

    async def _prefers(self, assigned: TaxonomyLabel, other: TaxonomyLabel, assigned_first: bool, text: str) -> bool:
        a, b = (assigned, other) if assigned_first else (other, assigned)
        completion = await self.gateway.complete(
            self._render("taxonomy_eval_pairwise", a=a, b=b, text=text),
            PairwiseAnswer, max_tokens=20, stage="taxonomy_eval_pairwise",
            prompt=self.prompts.get("taxonomy_eval_pairwise"),
        )
        return (completion.parsed.choice == "A") == assigned_first

    async def _relevant(self, label: TaxonomyLabel, text: str) -> bool:
        completion = await self.gateway.complete(
            self._render("taxonomy_eval_relevance", label=label, text=text),
            RelevanceAnswer, max_tokens=20, stage="taxonomy_eval_relevance",
            prompt=self.prompts.get("taxonomy_eval_relevance"),
        )
        return completion.parsed.relevant


def share(values: Sequence[bool | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def summarise(version: int | None, results: list[ItemResult]) -> Evaluation:
    labelled = [r for r in results if r.label is not None]
    return Evaluation(
        version=version,
        documents=len(results),
        coverage=share([r.label != OTHER_LABEL for r in labelled]),
        accuracy=share([r.accurate for r in labelled]),
        relevance=share([r.relevant for r in labelled]),
        label_counts=dict(Counter(r.label for r in labelled).most_common()),
        failures=sum(bool(r.errors) for r in results),
        items=results,
    )


def evaluate_taxonomy(
    workspace: Workspace,
    settings: LLMSettings,
    *,
    version: int | None = None,
    sample: int = 200,
    seed: int = 0,
    reference: int | None = None,
    prompts_dir: str | None = None,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> Evaluation:
    """Evaluate a version on a seeded sample; with ``reference`` (a taxonomy version holding people's
    labels) the sample is drawn from those documents and AMI is added. The report lands in ``reports/``."""
    taxonomy = TaxonomyStore(workspace).get(version)
    gold = reference_labels(workspace, reference) if reference is not None else {}
    items = sample_documents(workspace, sample, seed, among=sorted(gold) if gold else None)
    params = {"version": taxonomy.version, "sample": sample, "seed": seed, "reference": reference, "model": settings.model}
    with workspace.run("taxonomy.evaluate", params) as run:
        gateway = Gateway(workspace, settings, run_id=run.id, stage="taxonomy_evaluate")
        evaluator = Evaluator(gateway, PromptLibrary(prompts_dir), taxonomy.use_case, seed)
        advance = progress("evaluation", len(items)) if progress else None
        results = asyncio.run(evaluator.evaluate(taxonomy.leaves, items, advance))
        evaluation = summarise(taxonomy.version, results)
        for item in results:
            for error in item.errors:
                run.record_issue(f"document {item.doc_id}", error)
        if gold:
            assigned = {r.doc_id: r.label for r in results if r.label is not None}
            evaluation.ami, evaluation.mapping = reference_agreement(assigned, gold)
        run.stats |= evaluation.summary()
        report = workspace.artefact_dir("reports") / f"taxonomy-eval-v{taxonomy.version}-{run.id}.json"
        report.write_text(json.dumps(asdict(evaluation), indent=2, ensure_ascii=False))
        run.stats["report"] = str(report)
    return evaluation


def estimate_evaluate(
    workspace: Workspace, settings: LLMSettings, *, version: int | None = None, sample: int = 200, seed: int = 0,
    reference: int | None = None, prompts_dir: str | None = None,
) -> dict[str, Any]:
    """Upper bound: the assignment requests exactly, and two judgement requests per document."""
    taxonomy = TaxonomyStore(workspace).get(version)
    gold = reference_labels(workspace, reference) if reference is not None else {}
    items = sample_documents(workspace, sample, seed, among=sorted(gold) if gold else None)
    gateway = Gateway(workspace, settings)
    evaluator = Evaluator(gateway, PromptLibrary(prompts_dir), taxonomy.use_case, seed)
    estimate = gateway.estimate([evaluator.assign_request(taxonomy.leaves, item) for item in items], 60)
    per_assign = estimate["prompt_tokens"] / max(1, estimate["requests"])
    judgements = 2 * estimate["requests"]
    estimate["requests"] += judgements
    estimate["prompt_tokens"] += int(judgements * per_assign * 0.8)
    estimate["completion_tokens"] += judgements * 20
    estimate["cost"] = gateway.cost(estimate["prompt_tokens"], estimate["completion_tokens"])
    return estimate

