"""The labeling stage (TnT-LLM phase 2a): an LLM labels documents against one taxonomy version.

``Labeler`` turns documents into requests (one document, or several short ones per call) and
validated answers into ``LabelRecord``s; ``label_documents`` runs it over a selection through the
gateway, resumably, through the per-document driver it shares with quality scoring
(``tnt.llm.stage``).
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    create_model,
)

from tnt.corpus.store import Document, DocumentStore, unique
from tnt.labels.pending import PendingLabels, PendingSelection
from tnt.labels.store import LabelRecord, LabelStore
from tnt.llm.gateway import Gateway, LLMFailure, LLMSettings, Retry
from tnt.llm.prompts import PromptLibrary
from tnt.llm.stage import (
    MAX_ATTEMPTS,
    Attempts,
    DocumentProgress,
    StageContext,
    StageResult,
    run_llm_stage,
)
from tnt.taxonomy.store import OTHER_LABEL, Taxonomy, TaxonomyStore
from tnt.taxonomy.summarize import clip

if TYPE_CHECKING:
    from tnt.workspace import Workspace

LABEL_PROMPT = "label"
BATCH_PROMPT = "label_batch"
MAX_OUTPUT_TOKENS_PER_DOC = 200  # a label, one sentence and a number take ~60; this stops a rambling model
EXPECTED_OUTPUT_TOKENS_PER_DOC = 60  # label, one sentence, confidence: for --dry-run estimates
DOCUMENT_PAGE = 512  # documents read from the corpus at a time


@dataclass(frozen=True)
class _TablePart:
    """What a request offering some of the labels (or all) is built from."""

    choices: list[str]
    answer_schema: type[BaseModel]
    batch_schema: type[BaseModel]
    variables: dict[str, Any]


@dataclass(frozen=True)
class LabelRequest:
    """One call to the LLM: which documents it labels and exactly what it sends."""

    docs: tuple[Document, ...]
    messages: list[dict[str, str]]
    schema: type[BaseModel]
    prompt_hash: str

    @property
    def max_tokens(self) -> int:
        return MAX_OUTPUT_TOKENS_PER_DOC * len(self.docs)


def label_choices(taxonomy: Taxonomy) -> list[str]:
    """The names an answer may use: the taxonomy's leaf labels, and Other."""
    names = [name for name in taxonomy.leaf_names if name != OTHER_LABEL]
    return [*names, OTHER_LABEL]


def _answer_fields(choices: Sequence[str], multi: bool) -> dict[str, Any]:
    """Label fields typed as the enum of ``choices``: providers constrain decoding with it, and a
    wrong name fails validation with a short error that the gateway's repair round sends back."""
    name = Annotated[Literal[tuple(choices)], WrapValidator(_named_in(choices))]  # type: ignore[valid-type]
    fields: dict[str, Any] = {"label": (name, Field(description="The label that fits best."))}
    if multi:
        fields["extra_labels"] = (
            list[name],
            Field(default_factory=list, description="Further labels that apply."),
        )
    # maxLength: a hint for grammar-constrained backends, so a rambling small model closes the string
    # inside the token budget; not validated, a provider's longer sentence is kept.
    fields["explanation"] = (
        str, Field(description="One sentence: why the label fits.", json_schema_extra={"maxLength": 200})
    )
    fields["confidence"] = (
        Annotated[float, BeforeValidator(_percent_as_share)],
        Field(ge=0.0, le=1.0, description="How sure, from 0 to 1."),
    )
    return fields


def _percent_as_share(value: Any) -> Any:
    """Models often answer a 0–1 confidence as a whole percentage (95 for 0.95); other values over 1
    (1.5, 250) stay invalid and go to the repair round."""
    if isinstance(value, int | float) and 1 < value <= 100 and value == int(value):
        return value / 100
    return value


def _named_in(choices: Sequence[str]) -> Callable[[Any, ValidatorFunctionWrapHandler], Any]:
    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            close = difflib.get_close_matches(str(value), choices, n=3)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise ValueError(
                f"{value!r} is not a label of the taxonomy: use a name exactly as listed, or {OTHER_LABEL!r}{hint}"
            ) from None

    return check


class Labeler:
    """Builds label requests for one taxonomy version; answers are validated against exactly its names.

    The system message (instructions and the whole taxonomy) is the same bytes for every request of a
    run, so providers' prompt caching applies to it; the documents come last, in the user message.
    """

    def __init__(
        self, taxonomy: Taxonomy, prompts: PromptLibrary, multi: bool = False, max_doc_chars: int = 6000,
        offered: Mapping[str, Sequence[str]] | None = None,
    ):  # fmt: skip
        """``offered``: documents to be offered only some labels (and Other), such as the parts of the
        label they had before it was split; the others are offered the whole table."""
        self.taxonomy = taxonomy
        self.prompts = prompts
        self.multi = multi
        self.max_doc_chars = max_doc_chars
        self.offered = {doc_id: tuple(names) for doc_id, names in (offered or {}).items()}
        self._parts: dict[tuple[str, ...] | None, _TablePart] = {}
        whole = self._part(None)
        self.choices = whole.choices
        self.answer_schema, self.batch_schema = whole.answer_schema, whole.batch_schema

    def _part(self, names: tuple[str, ...] | None) -> _TablePart:
        """The schemas and prompt variables offering ``names`` (None: every label), made once."""
        if names not in self._parts:
            leaves = [label for label in self.taxonomy.leaves if label.name != OTHER_LABEL]
            if names is not None:
                leaves = [label for label in leaves if label.name in names]
            choices = [*(label.name for label in leaves), OTHER_LABEL]
            numbered = create_model(
                "NumberedDocumentLabel",
                id=(int, Field(description="The document's number.")),
                **_answer_fields(choices, self.multi),
            )
            other = next((label for label in self.taxonomy.labels if label.name == OTHER_LABEL), None)
            variables = {
                "use_case": self.taxonomy.use_case,
                "labels": leaves,
                "other": OTHER_LABEL,
                "other_description": other.description if other else "",
                "multi": self.multi,
            }
            self._parts[names] = _TablePart(
                choices,
                create_model("DocumentLabel", **_answer_fields(choices, self.multi)),
                create_model("DocumentLabels", results=(list[numbered], ...)),
                variables,
            )
        return self._parts[names]

    @property
    def origin(self) -> str:
        return "label:multi" if self.multi else "label"

    def prompt_hashes(self, batched: bool) -> set[str]:
        """The prompts a run uses: a batched run labels some documents alone (long ones, retries)."""
        hashes = {self.prompts.get(LABEL_PROMPT).hash}
        if batched:
            hashes.add(self.prompts.get(BATCH_PROMPT).hash)
        return hashes

    def request(self, docs: Sequence[Document]) -> LabelRequest:
        """One request; the documents of a batch are offered the same labels (see ``requests``)."""
        part = self._part(self.offered.get(docs[0].id))
        if len(docs) == 1:
            prompt = self.prompts.get(LABEL_PROMPT)
            messages = prompt.render(**part.variables, text=clip(docs[0].text, self.max_doc_chars))
            return LabelRequest(tuple(docs), messages, part.answer_schema, prompt.hash)
        prompt = self.prompts.get(BATCH_PROMPT)
        texts = [clip(doc.text, self.max_doc_chars) for doc in docs]
        return LabelRequest(
            tuple(docs), prompt.render(**part.variables, texts=texts), part.batch_schema, prompt.hash
        )

    def answers(
        self, request: LabelRequest, parsed: BaseModel
    ) -> tuple[dict[str, BaseModel], list[Document]]:
        """Each document's validated answer, and the documents the answer left out (or answered twice)."""
        if len(request.docs) == 1:
            return {request.docs[0].id: parsed}, []
        by_number: dict[int, list[BaseModel]] = {}
        for item in parsed.results:  # type: ignore[attr-defined]
            by_number.setdefault(item.id, []).append(item)
        found, missing = {}, []
        for number, doc in enumerate(request.docs, start=1):
            items = by_number.get(number, [])
            if len(items) == 1:
                found[doc.id] = items[0]
            else:
                missing.append(doc)
        return found, missing

    def record(self, doc_id: str, answer: Any, request: LabelRequest, run_id: str, model: str) -> LabelRecord:
        extra = [name for name in dict.fromkeys(getattr(answer, "extra_labels", [])) if name != answer.label]
        return LabelRecord(
            doc_id=doc_id,
            source="llm",
            label=answer.label,
            taxonomy_version=self.taxonomy.version,
            extra_labels=extra,
            confidence=answer.confidence,
            explanation=answer.explanation.strip(),
            origin=self.origin,
            run_id=run_id,
            model=model,
            prompt_hash=request.prompt_hash,
        )

    def requests(
        self, docs: Sequence[Document], batch_size: int, batch_max_chars: int
    ) -> Iterator[LabelRequest]:
        """Short documents in groups of ``batch_size`` (in order, one group per set of labels offered),
        longer ones alone."""
        groups: dict[tuple[str, ...] | None, list[Document]] = {}
        for doc in docs:
            if batch_size > 1 and len(doc.text) <= batch_max_chars:
                group = groups.setdefault(self.offered.get(doc.id), [])
                group.append(doc)
                if len(group) == batch_size:
                    yield self.request(groups.pop(self.offered.get(doc.id)))
            else:
                yield self.request([doc])
        for group in groups.values():
            yield self.request(group)


@dataclass
class _LabelingJob:
    labeler: Labeler
    store: LabelStore
    done: set[str]
    context: StageContext

    async def handle(self, request: LabelRequest) -> None:
        attempts = self.context.attempts
        alone = request.docs[0].id if len(request.docs) == 1 else None
        if alone is not None and attempts.exhausted(alone):
            self.context.give_up(alone, "label")
            return
        try:
            completion = await self.context.gateway.complete(
                request.messages, request.schema, max_tokens=request.max_tokens, stage="label",
                prompt=self.labeler.prompts.get(LABEL_PROMPT if alone else BATCH_PROMPT),
                retry=attempts.retry(alone) if alone else None, refresh=attempts.refresh,
            )
        except LLMFailure as exc:
            if alone is not None:
                self.context.fail(alone, exc, "label")
            else:  # the batch as a whole failed: each document gets its own chance
                await self.alone(request.docs)
            return
        answers, missing = self.labeler.answers(request, completion.parsed)
        self.save(answers, request, completion.cost)
        await self.alone(missing)

    async def alone(self, docs: Iterable[Document]) -> None:
        pending = [doc for doc in docs if doc.id not in self.done]
        await asyncio.gather(*(self.handle(self.labeler.request([doc])) for doc in pending))

    def save(self, answers: dict[str, BaseModel], request: LabelRequest, cost: float | None) -> None:
        context = self.context
        records = [
            self.labeler.record(doc_id, answer, request, context.run.id, context.gateway.model)
            for doc_id, answer in answers.items()
            if doc_id not in self.done  # a resumed batch may hold documents labeled before the stop
        ]
        self.store.add(records)
        self.done.update(record.doc_id for record in records)
        context.done([record.label for record in records], cost)


def _labeling_plan(
    workspace: Workspace,
    taxonomy_version: int | None,
    doc_ids: Sequence[str],
    model: str,
    prompts: PromptLibrary | None,
    multi: bool,
    batch_size: int,
    max_doc_chars: int,
    refresh: bool = False,
    pending: PendingSelection | None = None,
) -> tuple[Labeler, list[str], set[str]]:
    """The labeler, the selected ids (deduplicated) and those already labeled the same way or carried
    from the parent version (none when ``refresh``: every selected document is asked again). With ``pending``, documents the LLM
    labeled since they became pending are done too, and a split label's documents are offered its parts."""
    taxonomy = TaxonomyStore(workspace).get(taxonomy_version)
    offered = pending.offered if pending else None
    labeler = Labeler(taxonomy, prompts or PromptLibrary(), multi=multi, max_doc_chars=max_doc_chars, offered=offered)
    selected = unique(doc_ids)
    if refresh:
        return labeler, selected, set()
    done = LabelStore(workspace).current_doc_ids(
        taxonomy.version,
        "llm",
        model=model,
        origin=labeler.origin,
        prompt_hashes=labeler.prompt_hashes(batch_size > 1),
    ) & set(selected)
    return labeler, selected, done | _carried(workspace, taxonomy.version, selected) | (pending.answered & set(selected) if pending else set())


def _carried(workspace: Workspace, version: int | None, doc_ids: Sequence[str]) -> set[str]:
    """Documents whose LLM label a migration carried from the parent version: their meaning survived,
    so asking again would pay for an answer already held (``refresh`` asks anyway). Not those still
    pending (a carried label near an added one is asked again)."""
    rows = LabelStore(workspace).current(version, "llm", doc_ids=list(doc_ids))
    waiting = {item.doc_id for item in PendingLabels(workspace).open(version, "llm")} if version is not None else set()
    return {doc_id for doc_id, row in rows.items() if row.get("migrated_from") is not None and doc_id not in waiting}


def _attempts(
    workspace: Workspace, labeler: Labeler, model: str, max_attempts: int, refresh: bool
) -> Attempts:
    """Failed attempts count per model, taxonomy version, origin and prompt: a failed document is
    asked alone, with the single-document prompt."""
    scope = {
        "model": model,
        "taxonomy_version": labeler.taxonomy.version,
        "origin": labeler.origin,
        "prompt_hash": labeler.prompts.get(LABEL_PROMPT).hash,
    }
    return Attempts(workspace, "label", scope, max_attempts, refresh)


def _requests_to_send(
    workspace: Workspace,
    labeler: Labeler,
    selected: Sequence[str],
    done: set[str],
    batch_size: int,
    batch_max_chars: int,
) -> Iterator[LabelRequest]:
    """Requests for the documents not yet labeled. Batches are formed over the whole selection, so a
    resumed run re-forms exactly the batches of the interrupted one and finds their answers cached."""
    page = batch_size * -(-DOCUMENT_PAGE // batch_size)  # whole batches per page
    for docs in DocumentStore(workspace).iter_batches(page, selected):
        for request in labeler.requests(docs, batch_size, batch_max_chars):
            if any(doc.id not in done for doc in request.docs):
                yield request


def label_documents(
    workspace: Workspace,
    taxonomy_version: int | None,
    doc_ids: Sequence[str],
    settings: LLMSettings | None = None,
    *,
    multi: bool = False,
    batch_size: int = 1,
    batch_max_chars: int = 1000,
    max_doc_chars: int = 6000,
    prompts: PromptLibrary | None = None,
    max_attempts: int = MAX_ATTEMPTS,
    refresh: bool = False,
    pending: PendingSelection | None = None,
    on_progress: DocumentProgress | None = None,
) -> StageResult:
    """Label documents with one taxonomy version (None: the latest) through the LLM.

    Documents that already have a current LLM label for this version, model and prompt are skipped,
    so running the same call again continues where an interrupted one stopped. With ``batch_size`` > 1,
    documents of at most ``batch_max_chars`` characters share a request; one that the answer leaves
    out is labeled alone. A document whose answer stays invalid after the repair round (or whose
    request ran out of retries) is recorded as a run issue with the reason, and a rerun asks it again
    (a ``Retry``), up to ``max_attempts`` in all; no name outside the taxonomy (plus Other) is ever
    stored. ``refresh``: ask every selected document again, regardless of the cache; the new labels
    become the current ones, the old stay in the history.
    """
    settings = settings or LLMSettings()
    labeler, selected, done = _labeling_plan(
        workspace, taxonomy_version, doc_ids, settings.model, prompts, multi, batch_size, max_doc_chars, refresh,
        pending,
    )
    params = {
        "taxonomy_version": labeler.taxonomy.version,
        "model": settings.model,
        "multi": multi,
        "batch_size": batch_size,
        "documents": len(selected),
        "prompt_hashes": sorted(labeler.prompt_hashes(batch_size > 1)),
        "max_attempts": max_attempts,
        "refresh": refresh,
        "pending": pending is not None,
    }
    return run_llm_stage(
        workspace, "label", params, settings, documents=len(selected), skipped=len(done),
        items=_requests_to_send(workspace, labeler, selected, set(done), batch_size, batch_max_chars),
        handler=lambda context: _LabelingJob(labeler, LabelStore(workspace), done, context).handle,
        attempts=_attempts(workspace, labeler, settings.model, max_attempts, refresh),
        on_progress=on_progress,
    )  # fmt: skip


def estimate_labeling(
    workspace: Workspace,
    taxonomy_version: int | None,
    doc_ids: Sequence[str],
    settings: LLMSettings | None = None,
    *,
    multi: bool = False,
    batch_size: int = 1,
    batch_max_chars: int = 1000,
    max_doc_chars: int = 6000,
    prompts: PromptLibrary | None = None,
    max_attempts: int = MAX_ATTEMPTS,
    refresh: bool = False,
    pending: PendingSelection | None = None,
) -> dict[str, Any]:
    """What ``label_documents`` would send and cost (no repairs); nothing is sent. ``retried``:
    documents that failed before and are asked again; ``given_up``: those out of attempts."""
    settings = settings or LLMSettings()
    labeler, selected, done = _labeling_plan(
        workspace, taxonomy_version, doc_ids, settings.model, prompts, multi, batch_size, max_doc_chars, refresh,
        pending,
    )
    gateway = Gateway(workspace, settings, stage="label")
    attempts = _attempts(workspace, labeler, settings.model, max_attempts, refresh)
    prepared = [
        sent
        for request in _requests_to_send(workspace, labeler, selected, done, batch_size, batch_max_chars)
        for sent in _prepared(gateway, labeler, request, attempts, done)
    ]
    estimate = gateway.estimate(prepared, EXPECTED_OUTPUT_TOKENS_PER_DOC * batch_size, refresh=refresh)
    plan = attempts.plan(doc_id for doc_id in selected if doc_id not in done)
    return {"documents": len(selected), "skipped": len(done), **plan, **estimate}


def _prepared(
    gateway: Gateway, labeler: Labeler, request: LabelRequest, attempts: Attempts, done: set[str]
) -> list[tuple[list[dict[str, str]], dict[str, Any]]]:
    """What a run sends for a request, as ``_LabelingJob.handle`` would: a document out of attempts
    nothing, one that failed before its retry; a batch itself, then its documents that failed before
    alone (the batch's answer, from the cache, leaves them out again)."""
    if len(request.docs) > 1:
        again = [labeler.request([doc]) for doc in request.docs if doc.id in attempts.earlier and doc.id not in done]
        return [_prepare(gateway, request, None)] + [
            sent for alone in again for sent in _prepared(gateway, labeler, alone, attempts, done)
        ]
    doc_id = request.docs[0].id
    return [] if attempts.exhausted(doc_id) else [_prepare(gateway, request, attempts.retry(doc_id))]


def _prepare(
    gateway: Gateway, request: LabelRequest, retry: Retry | None
) -> tuple[list[dict[str, str]], dict[str, Any]]:
    messages, temperature = retry.apply(request.messages, 0.0) if retry else (request.messages, 0.0)
    return gateway.prepare(messages, request.schema, temperature=temperature, max_tokens=request.max_tokens)




