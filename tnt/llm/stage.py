"""The per-document LLM stage driver shared by labeling and quality scoring: a run that handles every
item with bounded concurrency, tallies progress and cost, and records each failed document.

A failed document heals on rerun: each failed attempt is kept (``failed_attempts``, per stage and
scope), and a rerun asks again with a ``Retry`` (its own request, so its own cache key), up to
``max_attempts`` per document across runs; after that the document stays failed with every reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from tnt.llm.gateway import Gateway, LLMFailure, LLMSettings, Retry
from tnt.llm.log import call_summary
from tnt.runs import Run, utc_now

if TYPE_CHECKING:
    from tnt.workspace import Workspace

T = TypeVar("T")


DocumentProgress = Callable[[int, int, "float | None"], None]  # done, total, cost so far ($; None: unknown)
MAX_ATTEMPTS = 3  # per document, across runs


@dataclass(frozen=True)
class FailedAttempt:
    attempt: int  # 1, 2, ...
    outcome: str  # invalid: answered, but not validly; error: no answer (retries ran out, provider error)
    reason: str


class Attempts:
    """The failed attempts at each document for one stage and scope (``scope``: what makes two runs
    ask the same way, such as model, prompt and taxonomy version), and what a rerun does about them."""

    def __init__(
        self,
        workspace: Workspace,
        stage: str,
        scope: dict[str, Any],
        max_attempts: int = MAX_ATTEMPTS,
        refresh: bool = False,
    ):
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        self.db = workspace.db
        self.stage = stage
        self.scope = hashlib.sha256(json.dumps(scope, sort_keys=True).encode()).hexdigest()[:16]
        self.max_attempts = max_attempts
        self.refresh = refresh  # ask regardless of the cache and of earlier failures
        self.earlier: dict[str, list[FailedAttempt]] = {}
        rows = self.db.execute(
            "select doc_id, attempt, outcome, reason from failed_attempts"
            " where stage = ? and scope = ? order by doc_id, attempt",
            [stage, self.scope],
        )
        for doc_id, attempt, outcome, reason in rows:
            self.earlier.setdefault(doc_id, []).append(FailedAttempt(attempt, outcome, reason))

    def left(self, doc_id: str) -> int:
        return self.max_attempts - len(self.earlier.get(doc_id, ()))

    def exhausted(self, doc_id: str) -> bool:
        """No attempt left: the document is not asked again (unless refreshed)."""
        return not self.refresh and self.left(doc_id) <= 0

    def retry(self, doc_id: str) -> Retry | None:
        """How to ask for a document after its earlier failed attempts; None: ask the first way."""
        earlier = self.earlier.get(doc_id)
        if self.refresh or not earlier:
            return None
        problems = [attempt.reason for attempt in earlier if attempt.outcome == "invalid"]
        return Retry(len(earlier) + 1, problems[-1] if problems else None)

    def plan(self, doc_ids: Iterable[str]) -> dict[str, int]:
        """Of these documents, how many a run asks again and how many it gives up on (for --dry-run)."""
        ids = [doc_id for doc_id in doc_ids if doc_id in self.earlier]
        given_up = sum(map(self.exhausted, ids))
        return {"retried": len(ids) - given_up, "given_up": given_up}

    def add(self, doc_id: str, failure: LLMFailure, run_id: str) -> None:
        earlier = self.earlier.setdefault(doc_id, [])
        attempt = FailedAttempt(len(earlier) + 1, "invalid" if failure.answered else "error", failure.reason)
        with self.db.conn:
            self.db.execute(
                "insert or replace into failed_attempts"
                " (stage, scope, doc_id, attempt, outcome, reason, run_id, created_at) values (?, ?, ?, ?, ?, ?, ?, ?)",
                [self.stage, self.scope, doc_id, attempt.attempt, attempt.outcome, attempt.reason, run_id, utc_now()],
            )
        earlier.append(attempt)

    def message(self, doc_id: str) -> str:
        """Every attempt's reason, and whether a rerun asks again."""
        earlier = self.earlier[doc_id]
        reasons = " | ".join(f"attempt {attempt.attempt}: {attempt.reason}" for attempt in earlier)
        left = self.left(doc_id)
        if left <= 0:
            return f"gave up after {len(earlier)} attempts (--max-attempts {self.max_attempts}): {reasons}"
        return f"{reasons} (a rerun asks again: {left} of {self.max_attempts} attempts left)"


@dataclass
class StageResult:
    """What a labeling or scoring run did; also saved as the run's stats."""

    run_id: str
    documents: int  # selected
    skipped: int = 0  # already done by an earlier run with the same model and prompt
    labeled: int = 0
    failed: int = 0  # each recorded as a run issue with the reason
    out_of_attempts: int = 0  # of the failed, those a rerun does not ask again (--max-attempts reached)
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
    attempts: Attempts

    def done(self, keys: Sequence[str], cost: float | None) -> None:
        """Documents finished by one request; ``keys``: what each is counted under (label, scoring method)."""
        self.result.labeled += len(keys)
        for key in keys:
            self.result.counts[key] = self.result.counts.get(key, 0) + 1
        self.tally.advance(len(keys), cost)

    def fail(self, doc_id: str, failure: LLMFailure, field: str) -> None:
        """One more failed attempt at a document, kept for the next run to heal."""
        self.attempts.add(doc_id, failure, self.run.id)
        self.give_up(doc_id, field)

    def give_up(self, doc_id: str, field: str) -> None:
        """The document stays failed this run: a run issue listing every attempt's reason."""
        self.run.record_issue(f"document {doc_id}", self.attempts.message(doc_id), field)
        self.result.failed += 1
        self.result.out_of_attempts += self.attempts.left(doc_id) <= 0
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
    attempts: Attempts,
    on_progress: DocumentProgress | None = None,
) -> StageResult:
    """A stage as a run: ``handler(context)`` handles every item, ``settings.max_concurrency`` at once.
    Requests, cost and stats are saved however the run ends, an interruption included."""
    with workspace.run(kind, params) as run:
        result = StageResult(run.id, documents=documents, skipped=skipped)
        gateway = Gateway(workspace, settings, run_id=run.id, stage=kind)
        context = StageContext(run, gateway, result, Tally(documents - skipped, on_progress), attempts)
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
