"""The per-document LLM stage driver shared by labeling and quality scoring: a run that handles every
item with bounded concurrency, tallies progress and cost, and records each failed document."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from tnt.llm.gateway import Gateway, LLMSettings
from tnt.llm.log import call_summary
from tnt.runs import Run

if TYPE_CHECKING:
    from tnt.workspace import Workspace

T = TypeVar("T")


DocumentProgress = Callable[[int, int, "float | None"], None]  # done, total, cost so far ($; None: unknown)


@dataclass
class StageResult:
    """What a labeling or scoring run did; also saved as the run's stats."""

    run_id: str
    documents: int  # selected
    skipped: int = 0  # already done by an earlier run with the same model and prompt
    labeled: int = 0
    failed: int = 0  # each recorded as a run issue with the reason
    requests: int = 0  # HTTP requests sent, retries included, cache hits not
    cost: float | None = 0.0  # dollars for this run; None where a price is unknown
    counts: dict[str, int] = field(default_factory=dict)  # per label given, or per scoring method

    def stats(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if key != "run_id"}


@dataclass
class Tally:
    """Running totals for the progress bar."""

    total: int
    on_progress: DocumentProgress | None = None
    done: int = 0
    cost: float | None = 0.0

    def __post_init__(self) -> None:
        self.advance(0)

    def advance(self, documents: int, cost: float | None = 0.0) -> None:
        self.done += documents
        self.cost = None if cost is None or self.cost is None else self.cost + cost
        if self.on_progress:
            self.on_progress(self.done, self.total, self.cost)


async def run_concurrently(
    items: Iterable[T], handle: Callable[[T], Awaitable[None]], concurrency: int
) -> None:
    """``handle`` every item with at most ``concurrency`` in progress; items are pulled lazily."""
    iterator = iter(items)

    async def worker() -> None:
        for item in iterator:  # no await between pulls, so workers never interleave inside next()
            await handle(item)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))


@dataclass
class StageContext:
    """What a stage's job works with: its run, gateway, the result it fills and the progress tally."""

    run: Run
    gateway: Gateway
    result: StageResult
    tally: Tally

    def done(self, keys: Sequence[str], cost: float | None) -> None:
        """Documents finished by one request; ``keys``: what each is counted under (label, scoring method)."""
        self.result.labeled += len(keys)
        for key in keys:
            self.result.counts[key] = self.result.counts.get(key, 0) + 1
        self.tally.advance(len(keys), cost)

    def fail(self, doc_id: str, reason: str, field: str) -> None:
        self.run.record_issue(f"document {doc_id}", reason, field)
        self.result.failed += 1
        self.tally.advance(1)


def run_llm_stage(
    workspace: Workspace,
    kind: str,
    params: dict[str, Any],
    settings: LLMSettings,
    *,
    documents: int,
    skipped: int,
    items: Iterable[T],
    handler: Callable[[StageContext], Callable[[T], Awaitable[None]]],
    on_progress: DocumentProgress | None = None,
) -> StageResult:
    """A stage as a run: ``handler(context)`` handles every item, ``settings.max_concurrency`` at once.
    Requests, cost and stats are saved however the run ends, an interruption included."""
    with workspace.run(kind, params) as run:
        result = StageResult(run.id, documents=documents, skipped=skipped)
        gateway = Gateway(workspace, settings, run_id=run.id, stage=kind)
        context = StageContext(run, gateway, result, Tally(documents - skipped, on_progress))
        try:
            asyncio.run(run_concurrently(items, handler(context), settings.max_concurrency))
        finally:
            result.requests = gateway.http_requests
            result.cost = run_cost(workspace, run.id)
            run.stats = result.stats()
    return result


def run_cost(workspace: Workspace, run_id: str) -> float | None:
    rows = call_summary(workspace, run_id)
    return None if any(row["cost"] is None for row in rows) else sum(row["cost"] for row in rows)
