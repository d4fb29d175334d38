"""Use-case-conditioned summaries, TnT-LLM's first step: about 20 words per document plus a short
explanation, so that a minibatch of 200 documents fits one taxonomy prompt.

``Summarizer`` is the stage (documents in, summaries out); ``SummaryStore`` keeps summaries in the
workspace so later runs with the same use case, model and prompt reuse them. Texts shorter than
``min_chars`` are already summary-sized and pass through unchanged. This module owns the
``summaries`` table.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from tnt.corpus.store import DocumentStore
from tnt.llm.gateway import Gateway, LLMFailure
from tnt.llm.prompts import PromptLibrary
from tnt.runs import utc_now

if TYPE_CHECKING:
    from tnt.workspace import Workspace

PROMPT = "summarize"
MAX_OUTPUT_TOKENS = 120


@dataclass(frozen=True)
class TextItem:
    """A document as the stages see it: an id and its text."""

    id: str
    text: str


@dataclass(frozen=True)
class Summary:
    doc_id: str
    summary: str
    explanation: str = ""
    origin: str = "llm"  # llm | text (short enough to use as is) | fallback (the LLM failed)
    error: str | None = None


class SummaryAnswer(BaseModel):
    # maxLength is a hint for grammar-constrained backends (a small model would ramble), not validated
    summary: str = Field(description="About 20 words: what the document is about, for the use case.",
                         json_schema_extra={"maxLength": 200})
    explanation: str = Field(description="One short sentence: why this summary fits the use case.",
                             json_schema_extra={"maxLength": 160})


def summary_key(use_case: str, model: str, prompt_hash: str) -> str:
    return hashlib.sha256(f"{use_case}\0{model}\0{prompt_hash}".encode()).hexdigest()[:16]


def clip(text: str, max_chars: int) -> str:
    """Long texts are cut for the prompt; the cut is marked so the model knows."""
    return text if len(text) <= max_chars else text[:max_chars] + " […]"


@dataclass
class Summarizer:
    """Summarises documents for one use case through the gateway (cached, so re-runs are free)."""

    gateway: Gateway
    prompts: PromptLibrary
    use_case: str
    min_chars: int = 500
    max_doc_chars: int = 4000

    @property
    def prompt_hash(self) -> str:
        return self.prompts.get(PROMPT).hash

    @property
    def key(self) -> str:
        return summary_key(self.use_case, self.gateway.model, self.prompt_hash)

    def needs_llm(self, item: TextItem) -> bool:
        return len(item.text) >= self.min_chars

    def messages(self, item: TextItem) -> list[dict[str, str]]:
        return self.prompts.get(PROMPT).render(
            use_case=self.use_case, text=clip(item.text, self.max_doc_chars)
        )

    def prepared(self, items: Sequence[TextItem]) -> list[tuple[list[dict[str, str]], dict]]:
        """The requests ``summarize`` would send, for ``--dry-run`` estimates."""
        return [
            self.gateway.prepare(self.messages(item), SummaryAnswer, max_tokens=MAX_OUTPUT_TOKENS)
            for item in items
            if self.needs_llm(item)
        ]

    async def summarize(
        self, items: Sequence[TextItem], on_done: Callable[[int], None] | None = None
    ) -> list[Summary]:
        """One summary per item, in order; a failed call falls back to the clipped text (``origin``)."""

        async def one(item: TextItem) -> Summary:
            summary = await self._summarize_one(item)
            if on_done:
                on_done(1)
            return summary

        return list(await asyncio.gather(*(one(item) for item in items)))

    async def _summarize_one(self, item: TextItem) -> Summary:
        if not self.needs_llm(item):
            return Summary(item.id, item.text.strip(), origin="text")
        try:
            completion = await self.gateway.complete(
                self.messages(item), SummaryAnswer, max_tokens=MAX_OUTPUT_TOKENS, stage="summarize",
                prompt=self.prompts.get(PROMPT),
            )
        except LLMFailure as exc:
            return Summary(item.id, clip(item.text, self.min_chars), origin="fallback", error=exc.reason)
        answer: SummaryAnswer = completion.parsed
        return Summary(item.id, answer.summary.strip(), answer.explanation.strip())


class SummaryStore:
    """Summaries kept per (document, use case, model, prompt) so later runs reuse them."""

    def __init__(self, workspace: Workspace):
        self.db = workspace.db

    def get(self, doc_ids: Sequence[str], key: str) -> dict[str, Summary]:
        found: dict[str, Summary] = {}
        for start in range(0, len(doc_ids), 500):
            chunk = list(doc_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self.db.query(
                f"select doc_id, summary, explanation from summaries where key = ? and doc_id in ({marks})",
                [key, *chunk],
            )
            for row in rows:
                found[row["doc_id"]] = Summary(row["doc_id"], row["summary"], row["explanation"] or "")
        return found

    def save(
        self, summaries: Sequence[Summary], *, key: str, use_case: str, model: str, prompt_hash: str, run_id: str | None
    ) -> int:
        """Store LLM summaries; pass-through texts and fallbacks are not summaries and are not kept."""
        rows = [
            {
                "doc_id": s.doc_id,
                "key": key,
                "use_case": use_case,
                "summary": s.summary,
                "explanation": s.explanation,
                "model": model,
                "prompt_hash": prompt_hash,
                "run_id": run_id,
                "created_at": utc_now(),
            }
            for s in summaries
            if s.origin == "llm"
        ]
        with self.db.conn:
            self.db["summaries"].insert_all(rows, ignore=True, batch_size=500)
        return len(rows)

    def count(self) -> int:
        return self.db["summaries"].count


async def summarize_with_store(
    store: SummaryStore,
    summarizer: Summarizer,
    items: Sequence[TextItem],
    run_id: str | None,
    on_done: Callable[[int], None] | None = None,
) -> list[Summary]:
    """Summaries for ``items`` in order: stored ones reused, the rest made and stored."""
    key = summarizer.key
    stored = store.get([item.id for item in items], key)
    if on_done and stored:
        on_done(len(stored))
    missing = [item for item in items if item.id not in stored]
    made = await summarizer.summarize(missing, on_done)
    store.save(
        made,
        key=key,
        use_case=summarizer.use_case,
        model=summarizer.gateway.model,
        prompt_hash=summarizer.prompt_hash,
        run_id=run_id,
    )
    by_id = stored | {summary.doc_id: summary for summary in made}
    return [by_id[item.id] for item in items]


def sample_documents(
    workspace: Workspace, sample: int | None, seed: int, among: list[str] | None = None
) -> list[TextItem]:
    """A seeded random sample of the corpus, or of the documents ``among`` (all when ``sample`` is None)."""
    documents = DocumentStore(workspace)
    if among is None and sample is not None:
        chosen = documents.sample(sample, seed)
    else:
        ids = among if among is not None else documents.ids()
        if sample is not None and sample < len(ids):
            ids = sorted(random.Random(seed).sample(ids, sample))
        chosen = documents.get(ids)
    if not chosen:
        raise ValueError("no documents to sample from; add some with `tnt ingest`")
    return [TextItem(doc.id, doc.text) for doc in chosen]
