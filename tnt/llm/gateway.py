"""The LLM gateway: the one call path every stage uses.

``Gateway.complete`` takes chat messages (and optionally a pydantic model for structured output) and
returns a ``Completion``. It owns caching (the same request is never paid twice, across processes),
retries with backoff, bounded concurrency and rate limits, validation with one repair round, and the
call log (every call in full, ``tnt.llm.log``). Providers differ only in transport
(``tnt.llm.transports``): litellm for any provider by model string, direct HTTP for an
OpenAI-compatible server of one's own (``openai/<model>`` with an ``api_base``), or the offline local
GGUF model (``local/...``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import random
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, SecretStr, ValidationError

from tnt.llm import DEFAULT_MODEL
from tnt.llm.local import LOCAL_PREFIX
from tnt.llm.log import CallLog, CallRecord
from tnt.llm.prompts import Prompt
from tnt.llm.transports import (
    LLMFailure,
    RawResponse,
    TransientError,
    known_secrets,
    make_transport,
    short_error,
)
from tnt.pii import mask_user_messages
from tnt.runs import utc_now

if TYPE_CHECKING:
    from tnt.workspace import Workspace


T = TypeVar("T", bound=BaseModel)
RETRY_NUDGE = 0.2  # temperature added per later attempt, so the request differs from the one that failed
KEY_IN_URL = re.compile(r"([?&](?:key|api[-_]?key|access_token)=)[^&\s'\"]+", re.IGNORECASE)


class LLMSettings(BaseModel):
    """Which model to call and how hard; the API key is never logged or stored."""

    model: str = DEFAULT_MODEL
    api_base: str | None = None
    api_key: SecretStr | None = None
    timeout_s: float = 60.0
    max_retries: int = 5
    max_concurrency: int = 16
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    structured_output: str = "auto"  # auto | json_schema | prompt
    # auto: direct HTTP for openai/<model> with an api_base (vLLM, llama.cpp server), else litellm
    transport: Literal["auto", "litellm", "http"] = "auto"
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    # Personal data in user messages (document text): "mask" (tnt.pii) or "off"; None: mask unless the
    # model is the local one, which runs in this process, so nothing leaves the machine.
    pii: Literal["mask", "off"] | None = None

    def masks_pii(self) -> bool:
        return self.pii == "mask" if self.pii else not self.model.startswith(LOCAL_PREFIX)


@dataclass
class Completion:
    text: str
    parsed: Any = None
    top_logprobs: list[dict[str, float]] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None
    cached: bool = False


@dataclass
class Request:
    """One request as sent, cached (under ``key``) and logged; ``refresh``: sent even if cached."""

    messages: list[dict[str, str]]
    params: dict[str, Any]
    stage: str
    prompt: Prompt | None
    key: str
    refresh: bool = False


@dataclass(frozen=True)
class Retry:
    """A later attempt (``number`` 2, 3, …) at a request whose earlier attempts failed, in earlier runs.

    It differs from them, so it has its own cache key: the temperature is nudged up, and the model is
    told why the last answer could not be used (``problem``; None after a failure without an answer).
    """

    number: int
    problem: str | None = None

    def apply(self, messages: list[dict[str, str]], temperature: float) -> tuple[list[dict[str, str]], float]:
        nudged = min(1.0, temperature + RETRY_NUDGE * (self.number - 1))
        if self.problem is None:
            return messages, nudged
        note = (
            f"(Attempt {self.number}.) An earlier answer to this request could not be used: {self.problem}\n"
            "Answer with only a JSON object that follows the instructions exactly."
        )
        last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
        if last_user is None:
            return [*messages, {"role": "user", "content": note}], nudged
        told = {**messages[last_user], "content": messages[last_user]["content"] + "\n\n" + note}
        return [*messages[:last_user], told, *messages[last_user + 1 :]], nudged


def request_key(model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    payload = json.dumps({"model": model, "messages": messages, "params": params}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def parse_json_answer(text: str, schema: type[T]) -> T:
    """Validate a JSON answer, tolerating a Markdown code fence around it."""
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    return schema.model_validate_json(fenced.group(1) if fenced else text.strip())


def offers_logprobs(settings: LLMSettings) -> bool:
    """Whether the model's API takes ``top_logprobs``, asked of the transport these settings pick
    (an ``openai/…`` model with an ``api_base`` is a server of one's own, not OpenAI)."""
    return make_transport(settings).offers_logprobs


class RateLimiter:
    """Spaces requests (and estimated tokens) so a per-minute budget is never exceeded."""

    def __init__(self, per_minute: float | None):
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self.next_free = 0.0
        self.lock = asyncio.Lock()

    async def acquire(self, amount: float = 1.0) -> None:
        if not self.interval:
            return
        async with self.lock:
            now = time.monotonic()
            wait = self.next_free - now
            self.next_free = max(now, self.next_free) + self.interval * amount
        if wait > 0:
            await asyncio.sleep(wait)


@dataclass
class Gateway:
    """Cached, logged, retried LLM calls for one workspace (and optionally one run)."""

    workspace: Workspace
    settings: LLMSettings = field(default_factory=LLMSettings)
    run_id: str | None = None
    stage: str = ""
    http_requests: int = 0

    def __post_init__(self) -> None:
        self.transport = make_transport(self.settings)
        self.log = CallLog(self.workspace)
        self._loop: asyncio.AbstractEventLoop | None = None

    def _bind_to_running_loop(self) -> None:
        """Limits belong to one event loop; a gateway may outlive several."""
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        self._loop = loop
        self._semaphore = asyncio.Semaphore(self.settings.max_concurrency)
        self._requests = RateLimiter(self.settings.requests_per_minute)
        self._tokens = RateLimiter(self.settings.tokens_per_minute)
        self._in_flight: dict[str, asyncio.Future[RawResponse]] = {}

    async def aclose(self) -> None:
        """Close pooled connections now (they are also closed when the event loop shuts down)."""
        await self.transport.aclose()

    @property
    def model(self) -> str:
        return self.settings.model

    def prepare(
        self,
        messages: list[dict[str, str]],
        schema: type[BaseModel] | None = None,
        *,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        top_logprobs: int | None = None,
    ) -> tuple[list[dict[str, str]], dict[str, Any]]:
        """The exact messages and parameters that ``complete`` sends (and caches under).

        Personal data is masked in user messages only: document text enters a prompt there, while
        system messages are tnt's own instructions (and may carry the answer's JSON schema, which a
        masked URL-like name would corrupt).
        """
        if self.settings.masks_pii():
            messages = mask_user_messages(messages)
        params: dict[str, Any] = {"temperature": temperature}
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        if top_logprobs is not None:
            params["top_logprobs"] = top_logprobs
        if schema is None:
            return messages, params
        schema_json = _json_schema(schema)
        params |= {"schema": schema_json, "schema_name": schema.__name__}
        if not self._native_schema():
            messages = _with_schema_instructions(messages, schema_json)
        return messages, params

    async def complete(
        self,
        messages: list[dict[str, str]],
        schema: type[T] | None = None,
        *,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        top_logprobs: int | None = None,
        stage: str | None = None,
        prompt: Prompt | None = None,
        retry: Retry | None = None,
        refresh: bool = False,
    ) -> Completion:
        """One request; with ``schema``, the answer is a validated instance in ``.parsed``.

        ``prompt``: the template ``messages`` were rendered from, recorded in the call log by name
        and hash. ``retry``: this is a later attempt after failed ones (``Retry.apply`` says how it
        differs). ``refresh``: ask again even where the cache holds an answer (the new one replaces it
        there; the old one stays in the log). Raises ``LLMFailure`` (already logged) when retries or the
        repair round are exhausted.
        """
        self._bind_to_running_loop()
        if retry is not None:
            messages, temperature = retry.apply(messages, temperature)
        sent, params = self.prepare(
            messages, schema, temperature=temperature, max_tokens=max_tokens, top_logprobs=top_logprobs
        )
        request = self._request(sent, params, stage, prompt, refresh)
        if schema is None:
            return await self._complete_once(request)
        return await self._complete_structured(request, schema)

    def _request(
        self,
        messages: list[dict[str, str]],
        params: dict[str, Any],
        stage: str | None,
        prompt: Prompt | None,
        refresh: bool = False,
    ) -> Request:
        key = request_key(self.model, messages, params)
        return Request(messages, params, stage or self.stage, prompt, key, refresh)

    async def _complete_structured(self, request: Request, schema: type[T]) -> Completion:
        completion = await self._complete_once(request)
        try:
            completion.parsed = parse_json_answer(completion.text, schema)
            return completion
        except (ValidationError, ValueError) as first_error:
            repair_messages = request.messages + [
                {"role": "assistant", "content": completion.text},
                {"role": "user", "content": _repair_instruction(first_error)},
            ]
        repair = self._request(repair_messages, request.params, request.stage, request.prompt, request.refresh)
        repaired = await self._complete_once(repair)
        try:
            repaired.parsed = parse_json_answer(repaired.text, schema)
        except (ValidationError, ValueError) as second_error:
            reason = f"invalid answer after one repair round: {_answer_problems(second_error)}"
            self._log(repair, "invalid", raw=RawResponse(repaired.text, None, None), error=reason)
            raise LLMFailure(reason, answered=True) from second_error
        return repaired

    def _native_schema(self) -> bool:
        mode = self.settings.structured_output
        if mode != "auto":
            return mode == "json_schema"
        return self.transport.native_schema

    async def _complete_once(self, request: Request) -> Completion:
        cached = None if request.refresh else self._cached(request.key)
        if cached is None and request.key in self._in_flight:  # already on its way: share its answer
            cached = await asyncio.shield(self._in_flight[request.key])
        if cached is not None:
            self._log(request, "cached", raw=cached, cost=0.0)
            return _completion(cached, cost=0.0, cached=True)
        future: asyncio.Future[RawResponse] = asyncio.get_running_loop().create_future()
        self._in_flight[request.key] = future
        try:
            raw, attempts, latency = await self._send_with_retries(request)
            future.set_result(raw)
        except LLMFailure as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        except BaseException:  # cancelled or crashed: waiters must not wait forever
            future.cancel()
            raise
        finally:
            del self._in_flight[request.key]
        self._store(request.key, raw)
        cost = self.cost(raw.prompt_tokens, raw.completion_tokens)
        self._log(request, "ok", raw=raw, attempts=attempts, latency_ms=latency, cost=cost)
        return _completion(raw, cost=cost, cached=False)

    async def _send_with_retries(self, request: Request) -> tuple[RawResponse, int, float]:
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._semaphore:
                    await self._requests.acquire()
                    if self._tokens.interval:
                        await self._tokens.acquire(_estimated_tokens(request.messages, request.params))
                    self.http_requests += 1
                    started = time.perf_counter()  # the model's latency, not the wait for a free slot
                    raw = await self.transport.send(request.messages, request.params)
                return raw, attempt, (time.perf_counter() - started) * 1000
            except TransientError as exc:
                if attempt > self.settings.max_retries:
                    reason = self._redacted(f"gave up after {attempt} attempts: {exc}")
                    self._log(request, "error", error=reason, attempts=attempt)
                    raise LLMFailure(reason) from None  # the chained error may quote the key
                await asyncio.sleep(self._backoff(attempt, exc.retry_after_s))
            except LLMFailure as exc:
                reason = self._redacted(exc.reason)
                self._log(request, "error", error=reason, attempts=attempt)
                raise LLMFailure(reason) from None

    def _backoff(self, attempt: int, retry_after_s: float | None) -> float:
        """Exponential with jitter, and never sooner than the server's Retry-After (plus a little
        jitter, so requests limited together do not all return together)."""
        ceiling = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** (attempt - 1))
        backoff = random.uniform(ceiling / 2, ceiling)
        if retry_after_s is None:
            return backoff
        return max(backoff, retry_after_s * random.uniform(1.0, 1.1))

    def _redacted(self, text: str) -> str:
        """Errors are logged and shown; a provider echoing an API key (some quote the request URL,
        ``?key=…`` included) must not put it there."""
        for secret in known_secrets(self.settings):
            text = text.replace(secret, "***")
        return KEY_IN_URL.sub(r"\1***", text)

    # Cache and log

    def _cached(self, key: str) -> RawResponse | None:
        row = self.workspace.db.execute("select response from llm_cache where key = ?", [key]).fetchone()
        return RawResponse.from_json(row[0]) if row else None

    def _store(self, key: str, raw: RawResponse) -> None:
        with self.workspace.db.conn:
            self.workspace.db.execute(
                "insert or replace into llm_cache (key, model, response, created_at) values (?, ?, ?, ?)",
                [key, self.model, raw.to_json(), utc_now()],
            )

    def _log(
        self,
        request: Request,
        outcome: str,
        *,
        raw: RawResponse | None = None,
        error: str | None = None,
        attempts: int = 0,
        latency_ms: float = 0.0,
        cost: float | None = None,
    ) -> None:
        self.log.add(
            CallRecord(
                run_id=self.run_id,
                key=request.key,
                model=self.model,
                stage=request.stage,
                outcome=outcome,
                created_at=utc_now(),
                messages=request.messages,
                params=request.params,
                response=raw.text if raw else None,
                prompt_name=request.prompt.name if request.prompt else None,
                prompt_hash=request.prompt.hash if request.prompt else None,
                error=error,
                attempts=attempts,
                prompt_tokens=raw.prompt_tokens if raw else None,
                completion_tokens=raw.completion_tokens if raw else None,
                cost=cost,
                latency_ms=round(latency_ms, 2),
            )
        )

    def cost(self, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
        """Dollars for a call of this size; None when the model's price is unknown."""
        return self.transport.cost(prompt_tokens, completion_tokens)

    def estimate(
        self,
        requests: list[tuple[list[dict[str, str]], dict[str, Any]]],
        max_output_tokens: int,
        refresh: bool = False,
    ) -> dict[str, float | int | None]:
        """What prepared ``(messages, params)`` requests would cost, counting only uncached ones
        (``refresh``: all of them, as ``complete(refresh=True)`` asks regardless of the cache)."""
        to_send = [m for m, p in requests if refresh or self._cached(request_key(self.model, m, p)) is None]
        prompt_tokens = sum(self.transport.count_tokens(m) for m in to_send)
        completion_tokens = max_output_tokens * len(to_send)
        return {
            "requests": len(to_send),
            "cached": len(requests) - len(to_send),
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "cost": self.cost(prompt_tokens, completion_tokens),
        }


@functools.lru_cache(maxsize=256)
def _json_schema(schema: type[BaseModel]) -> dict[str, Any]:
    """Generating a schema costs ~0.3 ms; a stage sends thousands of requests with the same one."""
    return schema.model_json_schema()


def _completion(raw: RawResponse, cost: float | None, cached: bool) -> Completion:
    return Completion(
        text=raw.text,
        top_logprobs=raw.top_logprobs,
        prompt_tokens=raw.prompt_tokens,
        completion_tokens=raw.completion_tokens,
        cost=cost,
        cached=cached,
    )


def _with_schema_instructions(
    messages: list[dict[str, str]], schema_json: dict[str, Any]
) -> list[dict[str, str]]:
    instruction = (
        "Answer with a single JSON object, and nothing else, that matches this JSON schema:\n"
        + json.dumps(schema_json)
    )
    first, *rest = messages
    return [{**first, "content": first["content"] + "\n\n" + instruction}, *rest]


def _repair_instruction(error: Exception) -> str:
    return (
        "That answer could not be used: "
        + _answer_problems(error)
        + "\nReply again with only the corrected JSON object."
    )


def _answer_problems(error: Exception) -> str:
    """``confidence: Field required; label: Input should be a valid string`` (no pydantic URLs)."""
    if not isinstance(error, ValidationError):
        return short_error(error)
    problems = [f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}" for e in error.errors()]
    return short_error(ValueError("; ".join(problems)))


def _estimated_tokens(messages: list[dict[str, str]], params: dict[str, Any]) -> float:
    characters = sum(len(m["content"]) for m in messages)
    return characters / 4 + params.get("max_tokens", 256)
