"""Quality scores the Ask-LLM way (Sachdeva et al. 2024): ask an LLM whether a document is useful
training data, and score it by the probability of "yes".

The prompt is a template directory (``prompts/ask_llm``) with a ``scoring.yaml`` naming the answer
options and their values, so a different judge (FineWeb-Edu's 0-5 educational value, say) is a new
template directory, not new code. Where the backend returns token log-probabilities, the score is the
expected value over the options' normalised first-token probabilities (P(yes) for yes=1/no=0);
otherwise the model is asked for the score directly ("verbalised"). Each score records which.
Scores are stored as numeric labels (no taxonomy version), origin ``<prompt name>:<hash>`` with
``_`` written ``-`` (``ask-llm:…``), for distillation and selection to use.
"""

from __future__ import annotations

import hashlib
import math
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jinja2
import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, field_validator

from tnt.corpus.store import Document, DocumentStore, unique
from tnt.labels.labeling import DOCUMENT_PAGE
from tnt.labels.store import LabelRecord, LabelStore
from tnt.llm.gateway import (
    Completion,
    Gateway,
    LLMFailure,
    LLMSettings,
    Retry,
    offers_logprobs,
)
from tnt.llm.prompts import PromptLibrary
from tnt.llm.stage import (
    MAX_ATTEMPTS,
    Attempts,
    DocumentProgress,
    StageContext,
    StageResult,
    run_llm_stage,
)
from tnt.taxonomy.summarize import clip

if TYPE_CHECKING:
    from tnt.workspace import Workspace

DEFAULT_PROMPT = "ask_llm"
SCORING_FILE = "scoring.yaml"
TOP_LOGPROBS = 20  # the most OpenAI returns
VERBALISED_MAX_TOKENS = 50


class ScoringError(ValueError):
    """A prompt's scoring.yaml that cannot be used; the message names the file."""


class Scoring(BaseModel):
    """A prompt's answer options and the value each stands for."""

    options: dict[str, float] = Field(min_length=2)

    @field_validator("options")
    @classmethod
    def _distinct_after_normalising(cls, options: dict[str, float]) -> dict[str, float]:
        keys = [normalise_token(option) for option in options]
        if "" in keys or len(set(keys)) != len(keys):
            raise ValueError("option names must be non-empty and differ beyond case, spaces and punctuation")
        return options

    @property
    def low(self) -> float:
        return min(self.options.values())

    @property
    def high(self) -> float:
        return max(self.options.values())


def normalise_token(token: str) -> str:
    """ " Yes", "YES", "yes." all read as "yes"."""
    return token.strip().strip(string.punctuation).strip().casefold()


def option_masses(alternatives: dict[str, float], options: Sequence[str]) -> dict[str, float]:
    """Each option's probability mass in one token's {token: logprob} alternatives; variants of an
    option (" Yes", "YES", ...) add up."""
    by_key = {normalise_token(option): option for option in options}
    masses = dict.fromkeys(options, 0.0)
    for token, logprob in alternatives.items():
        option = by_key.get(normalise_token(token))
        if option is not None:
            masses[option] += math.exp(logprob)
    return masses


def option_probabilities(masses: dict[str, float]) -> dict[str, float] | None:
    """The masses normalised over the options (the softmax of their log-masses); None if all are 0."""
    total = sum(masses.values())
    return {option: mass / total for option, mass in masses.items()} if total > 0.0 else None


def origin_prefix(prompt_name: str = DEFAULT_PROMPT) -> str:
    """What every score from this prompt's origin starts with ("ask-llm" for the default prompt)."""
    return prompt_name.replace("_", "-")


def load_scoring(prompts: PromptLibrary, prompt_name: str) -> tuple[Scoring, str]:
    """The prompt's scoring.yaml (user directory first, like its templates) and its source text."""
    path = f"{prompt_name}/{SCORING_FILE}"
    try:
        source, filename, _ = prompts.env.loader.get_source(prompts.env, path)  # type: ignore[union-attr]
    except jinja2.TemplateNotFound as exc:
        raise ScoringError(f"{path} not found: a scoring prompt needs one beside its templates") from exc
    try:
        # BaseLoader: every scalar a string, so an unquoted yes/no option stays "yes"/"no", not a boolean
        return Scoring.model_validate(yaml.load(source, Loader=yaml.BaseLoader)), source
    except (yaml.YAMLError, ValidationError) as exc:
        raise ScoringError(f"{filename}: {exc}") from exc


@dataclass(frozen=True)
class Score:
    value: float
    method: str  # logprobs | verbalised
    detail: str


class QualityScorer:
    """Scores one document at a time through the gateway; remembers when the backend has no logprobs."""

    def __init__(
        self, prompts: PromptLibrary, settings: LLMSettings, prompt_name: str = DEFAULT_PROMPT, max_doc_chars: int = 6000
    ):
        self.prompt = prompts.get(prompt_name)
        self.scoring, scoring_source = load_scoring(prompts, prompt_name)
        self.max_doc_chars = max_doc_chars
        self.hash = hashlib.sha256(f"{self.prompt.hash}\0{scoring_source}".encode()).hexdigest()[:16]
        self.origin_prefix = origin_prefix(prompt_name)
        self.origin = f"{self.origin_prefix}:{self.hash}"
        self.verbalised_schema = create_model(
            "VerbalisedScore", score=(float, Field(ge=self.scoring.low, le=self.scoring.high))
        )
        # None: unknown until the first answer (an OpenAI-compatible server may or may not send them)
        self.backend_has_logprobs: bool | None = None if offers_logprobs(settings) else False

    def messages(self, doc: Document, verbalised: bool) -> list[dict[str, str]]:
        return self.prompt.render(
            text=clip(doc.text, self.max_doc_chars),
            options=list(self.scoring.options),
            verbalised=verbalised,
            low=f"{self.scoring.low:g}",
            high=f"{self.scoring.high:g}",
        )

    def logprob_request(self, doc: Document) -> tuple[list[dict[str, str]], dict[str, Any]]:
        return self.messages(doc, verbalised=False), {"max_tokens": 1, "top_logprobs": TOP_LOGPROBS}

    async def score(
        self, gateway: Gateway, doc: Document, retry: Retry | None = None, refresh: bool = False
    ) -> tuple[Score, list[Completion]]:
        """The score and the completions it took (for the running cost). ``retry`` applies to the
        verbalised question only: the log-probability request has no answer to be invalid, so after a
        failure without an answer the same request is simply asked again."""
        completions = []
        reason = "the backend returns no log-probabilities"
        if self.backend_has_logprobs is not False:
            messages, params = self.logprob_request(doc)
            completion = await gateway.complete(
                messages, stage="quality", prompt=self.prompt, refresh=refresh, **params
            )
            completions.append(completion)
            if self.backend_has_logprobs is None:  # the first answer decides for the rest of the run
                self.backend_has_logprobs = bool(completion.top_logprobs)
            if completion.top_logprobs:
                masses = option_masses(completion.top_logprobs[0], list(self.scoring.options))
                probabilities = option_probabilities(masses)
                if probabilities is not None:
                    return self._from_probabilities(probabilities, sum(masses.values())), completions
                reason = "no answer option among the first token's top log-probabilities"
        completion = await gateway.complete(
            self.messages(doc, verbalised=True),
            self.verbalised_schema,
            max_tokens=VERBALISED_MAX_TOKENS,
            stage="quality",
            prompt=self.prompt,
            retry=retry,
            refresh=refresh,
        )
        completions.append(completion)
        return Score(completion.parsed.score, "verbalised", f"verbalised ({reason})"), completions

    def _from_probabilities(self, probabilities: dict[str, float], held: float) -> Score:
        """``held``: the options' share of the first token; a low share means off-format answers."""
        value = sum(probabilities[option] * worth for option, worth in self.scoring.options.items())
        shares = ", ".join(f"{option} {p:.3f}" for option, p in probabilities.items())
        return Score(value, "logprobs", f"logprobs: {shares} (options hold {held:.0%} of the first token)")

    def record(self, doc_id: str, score: Score, run_id: str, model: str) -> LabelRecord:
        return LabelRecord(
            doc_id=doc_id,
            source="llm",
            score=score.value,
            explanation=score.detail,
            origin=self.origin,
            run_id=run_id,
            model=model,
            prompt_hash=self.hash,
        )


@dataclass
class _ScoringJob:
    scorer: QualityScorer
    store: LabelStore
    context: StageContext

    async def handle(self, doc: Document) -> None:
        context = self.context
        attempts = context.attempts
        if attempts.exhausted(doc.id):
            context.give_up(doc.id, "score")
            return
        try:
            score, completions = await self.scorer.score(
                context.gateway, doc, attempts.retry(doc.id), attempts.refresh
            )
        except LLMFailure as exc:
            context.fail(doc.id, exc, "score")
            return
        self.store.add([self.scorer.record(doc.id, score, context.run.id, context.gateway.model)])
        context.done([score.method], _total_cost(completions))


def _total_cost(completions: Sequence[Completion]) -> float | None:
    costs = [completion.cost for completion in completions]
    return None if None in costs else sum(costs)  # type: ignore[arg-type]


def _scoring_plan(
    workspace: Workspace,
    doc_ids: Sequence[str],
    settings: LLMSettings,
    prompts: PromptLibrary | None,
    prompt: str,
    max_doc_chars: int,
    refresh: bool = False,
) -> tuple[QualityScorer, list[str], set[str]]:
    scorer = QualityScorer(prompts or PromptLibrary(), settings, prompt, max_doc_chars)
    selected = unique(doc_ids)
    if refresh:
        return scorer, selected, set()
    done = LabelStore(workspace).current_doc_ids(
        None,
        "llm",
        model=settings.model,
        origin=scorer.origin,
        prompt_hashes=[scorer.hash],
        origins_like=f"{scorer.origin_prefix}:%",
    ) & set(selected)
    return scorer, selected, done


def _attempts(
    workspace: Workspace, scorer: QualityScorer, model: str, max_attempts: int, refresh: bool
) -> Attempts:
    scope = {"model": model, "origin": scorer.origin}
    return Attempts(workspace, "score-quality", scope, max_attempts, refresh)


def _pending_documents(workspace: Workspace, selected: Sequence[str], done: set[str]) -> Iterator[Document]:
    pending = [doc_id for doc_id in selected if doc_id not in done]
    for page in DocumentStore(workspace).iter_batches(DOCUMENT_PAGE, pending):
        yield from page


def score_quality(
    workspace: Workspace,
    doc_ids: Sequence[str],
    settings: LLMSettings | None = None,
    *,
    prompt: str = DEFAULT_PROMPT,
    prompts: PromptLibrary | None = None,
    max_doc_chars: int = 6000,
    max_attempts: int = MAX_ATTEMPTS,
    refresh: bool = False,
    on_progress: DocumentProgress | None = None,
) -> StageResult:
    """Score documents with a scoring prompt (default: Ask-LLM's) and store the scores.

    Documents that already have a current score from this prompt and model are skipped, so the same
    call continues an interrupted run; a document whose request fails is recorded as a run issue and
    asked again by a rerun, up to ``max_attempts`` in all. ``refresh``: score every selected document
    again, regardless of the cache.
    """
    settings = settings or LLMSettings()
    scorer, selected, done = _scoring_plan(workspace, doc_ids, settings, prompts, prompt, max_doc_chars, refresh)
    params = {
        "prompt": prompt, "origin": scorer.origin, "model": settings.model, "documents": len(selected),
        "max_attempts": max_attempts, "refresh": refresh,
    }  # fmt: skip
    return run_llm_stage(
        workspace, "score-quality", params, settings, documents=len(selected), skipped=len(done),
        items=_pending_documents(workspace, selected, done),
        handler=lambda context: _ScoringJob(scorer, LabelStore(workspace), context).handle,
        attempts=_attempts(workspace, scorer, settings.model, max_attempts, refresh),
        on_progress=on_progress,
    )  # fmt: skip


def estimate_quality(
    workspace: Workspace,
    doc_ids: Sequence[str],
    settings: LLMSettings | None = None,
    *,
    prompt: str = DEFAULT_PROMPT,
    prompts: PromptLibrary | None = None,
    max_doc_chars: int = 6000,
    max_attempts: int = MAX_ATTEMPTS,
    refresh: bool = False,
) -> dict[str, Any]:
    """What ``score_quality`` would send and cost with log-probabilities (one output token each);
    ``retried``: documents that failed before and are asked again, ``given_up``: those out of attempts."""
    settings = settings or LLMSettings()
    scorer, selected, done = _scoring_plan(workspace, doc_ids, settings, prompts, prompt, max_doc_chars, refresh)
    gateway = Gateway(workspace, settings, stage="quality")
    attempts = _attempts(workspace, scorer, settings.model, max_attempts, refresh)
    prepared = []
    for doc in _pending_documents(workspace, selected, done):
        if not attempts.exhausted(doc.id):
            messages, params = scorer.logprob_request(doc)
            prepared.append(gateway.prepare(messages, **params))
    plan = attempts.plan(doc_id for doc_id in selected if doc_id not in done)
    return {"documents": len(selected), "skipped": len(done), **plan, **gateway.estimate(prepared, 1, refresh=refresh)}
