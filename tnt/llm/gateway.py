"""The LLM gateway: the one call path every stage uses.

``Gateway.complete`` takes chat messages (and optionally a pydantic model for structured output) and
returns a ``Completion``. It owns caching (the same request is never paid twice, across processes),
retries with backoff, bounded concurrency and rate limits, validation with one repair round, and the
call log. Providers differ only in transport: litellm for any provider by model string, direct HTTP
for an OpenAI-compatible server of one's own (``openai/<model>`` with an ``api_base``), or the offline
local GGUF model (``local/...``) through llama-cpp-python.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import hashlib
import json
import os
import random
import re
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, SecretStr, ValidationError

from tnt.llm.local import LOCAL_PREFIX, LocalModels
from tnt.runs import utc_now

if TYPE_CHECKING:
    from tnt.workspace import Workspace

DEFAULT_MODEL = f"{LOCAL_PREFIX}smollm2"
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 529}

T = TypeVar("T", bound=BaseModel)


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


class LLMFailure(Exception):
    """A request that ended without a usable answer; ``reason`` says why (it is also logged)."""

    def __init__(self, reason: str, answered: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.answered = answered  # the model did answer, but not validly (not a transport or provider error)


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
class RawResponse:
    """What a transport returns; this is what the cache stores."""

    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    top_logprobs: list[dict[str, float]] | None = None

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, data: str) -> RawResponse:
        return cls(**json.loads(data))


class TransientError(Exception):
    """A failure worth retrying (429, 5xx, timeout, connection), with the server's Retry-After."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


def request_key(model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> str:
    payload = json.dumps({"model": model, "messages": messages, "params": params}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def parse_json_answer(text: str, schema: type[T]) -> T:
    """Validate a JSON answer, tolerating a Markdown code fence around it."""
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    return schema.model_validate_json(fenced.group(1) if fenced else text.strip())


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
        self._local = LocalModels() if self.settings.model.startswith(LOCAL_PREFIX) else None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _bind_to_running_loop(self) -> None:
        """Limits and connections belong to one event loop; a gateway may outlive several."""
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        self._loop = loop
        self._semaphore = asyncio.Semaphore(self.settings.max_concurrency)
        self._requests = RateLimiter(self.settings.requests_per_minute)
        self._tokens = RateLimiter(self.settings.tokens_per_minute)
        self._in_flight: dict[str, asyncio.Future[RawResponse]] = {}
        self._remote = make_transport(self.settings) if self._local is None else None

    async def aclose(self) -> None:
        """Close pooled connections now (they are also closed when the event loop shuts down)."""
        if self._remote is not None and self._loop is asyncio.get_running_loop():
            await self._remote.aclose()

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
        """The exact messages and parameters that ``complete`` sends (and caches under)."""
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
    ) -> Completion:
        """One request; with ``schema``, the answer is a validated instance in ``.parsed``.

        Raises ``LLMFailure`` (already logged) when retries or the repair round are exhausted.
        """
        self._bind_to_running_loop()
        request, params = self.prepare(
            messages, schema, temperature=temperature, max_tokens=max_tokens, top_logprobs=top_logprobs
        )
        if schema is None:
            return await self._complete_once(request, params, stage)
        return await self._complete_structured(request, schema, params, stage)

    async def _complete_structured(
        self,
        request: list[dict[str, str]],
        schema: type[T],
        params: dict[str, Any],
        stage: str | None,
    ) -> Completion:
        completion = await self._complete_once(request, params, stage)
        try:
            completion.parsed = parse_json_answer(completion.text, schema)
            return completion
        except (ValidationError, ValueError) as first_error:
            repair = request + [
                {"role": "assistant", "content": completion.text},
                {"role": "user", "content": _repair_instruction(first_error)},
            ]
        repaired = await self._complete_once(repair, params, stage)
        try:
            repaired.parsed = parse_json_answer(repaired.text, schema)
        except (ValidationError, ValueError) as second_error:
            reason = f"invalid answer after one repair round: {_answer_problems(second_error)}"
            self._log(request_key(self.model, repair, params), stage, "invalid", reason, 0, None, 0.0)
            raise LLMFailure(reason, answered=True) from second_error
        return repaired

    def _native_schema(self) -> bool:
        mode = self.settings.structured_output
        if mode != "auto":
            return mode == "json_schema"
        if self._local is not None or self.model.startswith("openai/"):
            return True
        return bool(_litellm().supports_response_schema(model=self.model))

    async def _complete_once(
        self, messages: list[dict[str, str]], params: dict[str, Any], stage: str | None
    ) -> Completion:
        key = request_key(self.model, messages, params)
        cached = self._cached(key)
        if cached is not None:
            self._log(key, stage, "cached", None, 0, cached, 0.0, cost=0.0)
            return _completion(cached, cost=0.0, cached=True)
        if key in self._in_flight:  # the same request is already on its way: share its answer
            raw = await asyncio.shield(self._in_flight[key])
            self._log(key, stage, "cached", None, 0, raw, 0.0, cost=0.0)
            return _completion(raw, cost=0.0, cached=True)
        future: asyncio.Future[RawResponse] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            raw, attempts, latency = await self._send_with_retries(key, messages, params, stage)
            future.set_result(raw)
        except LLMFailure as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        except BaseException:  # cancelled or crashed: waiters must not wait forever
            future.cancel()
            raise
        finally:
            del self._in_flight[key]
        self._store(key, raw)
        cost = self.cost(raw.prompt_tokens, raw.completion_tokens)
        self._log(key, stage, "ok", None, attempts, raw, latency, cost=cost)
        return _completion(raw, cost=cost, cached=False)

    async def _send_with_retries(
        self, key: str, messages: list[dict[str, str]], params: dict[str, Any], stage: str | None
    ) -> tuple[RawResponse, int, float]:
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                async with self._semaphore:
                    await self._requests.acquire()
                    if self._tokens.interval:
                        await self._tokens.acquire(_estimated_tokens(messages, params))
                    self.http_requests += 1
                    raw = await self._transport(messages, params)
                return raw, attempt, (time.perf_counter() - started) * 1000
            except TransientError as exc:
                if attempt > self.settings.max_retries:
                    reason = self._redacted(f"gave up after {attempt} attempts: {exc}")
                    self._log(key, stage, "error", reason, attempt, None, 0.0)
                    raise LLMFailure(reason) from None  # the chained error may quote the key
                await asyncio.sleep(self._backoff(attempt, exc.retry_after_s))
            except LLMFailure as exc:
                reason = self._redacted(exc.reason)
                self._log(key, stage, "error", reason, attempt, None, 0.0)
                raise LLMFailure(reason) from None

    def _backoff(self, attempt: int, retry_after_s: float | None) -> float:
        """Exponential with jitter, and never sooner than the server's Retry-After (plus a little
        jitter, so requests limited together do not all return together)."""
        ceiling = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** (attempt - 1))
        backoff = random.uniform(ceiling / 2, ceiling)
        if retry_after_s is None:
            return backoff
        return max(backoff, retry_after_s * random.uniform(1.0, 1.1))

    async def _transport(self, messages: list[dict[str, str]], params: dict[str, Any]) -> RawResponse:
        if self._local is not None:
            return await self._local.complete(self.model, messages, params)
        return await self._remote.send(messages, params)

    def _redacted(self, text: str) -> str:
        """Errors are logged and shown; a provider echoing the API key must not put it there."""
        key = api_key_for(self.settings)
        return text.replace(key, "***") if key and key != "no-key" else text

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
        key: str,
        stage: str | None,
        outcome: str,
        error: str | None,
        attempts: int,
        raw: RawResponse | None,
        latency_ms: float,
        cost: float | None = None,
    ) -> None:
        with self.workspace.db.conn:
            self.workspace.db.execute(
                "insert into llm_calls (run_id, key, model, stage, outcome, error, attempts,"
                " prompt_tokens, completion_tokens, cost, latency_ms, created_at)"
                " values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    self.run_id,
                    key,
                    self.model,
                    stage or self.stage,
                    outcome,
                    error,
                    attempts,
                    raw.prompt_tokens if raw else None,
                    raw.completion_tokens if raw else None,
                    cost,
                    round(latency_ms, 2),
                    utc_now(),
                ],
            )

    def cost(self, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
        """Dollars from litellm's price table; None when the model's price is unknown."""
        if self._local is not None:
            return 0.0
        prices = model_prices(self.model)
        if prices is None or prompt_tokens is None:
            return None
        return prompt_tokens * prices[0] + (completion_tokens or 0) * prices[1]

    def estimate(
        self, requests: list[tuple[list[dict[str, str]], dict[str, Any]]], max_output_tokens: int
    ) -> dict[str, float | int | None]:
        """What prepared ``(messages, params)`` requests would cost, counting only uncached ones."""
        litellm = _litellm()
        to_send = [m for m, p in requests if self._cached(request_key(self.model, m, p)) is None]
        count_as = "gpt-4o-mini" if self._local is not None else self.model
        prompt_tokens = sum(litellm.token_counter(model=count_as, messages=m) for m in to_send)
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


def offers_logprobs(model: str) -> bool:
    """Whether the model's API takes ``top_logprobs`` (litellm rejects it for e.g. Anthropic, Ollama)."""
    if model.startswith(LOCAL_PREFIX):
        return True
    supported = _litellm().get_supported_openai_params(model=model)
    return supported is None or "top_logprobs" in supported  # None: litellm does not know; answers will tell


def _litellm() -> ModuleType:
    """litellm, imported lazily and kept offline: its bundled price table, no telemetry banners."""
    # Without this litellm fetches its price table from GitHub at import (seconds of retries offline).
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    return litellm


def model_prices(model: str) -> tuple[float, float] | None:
    """(input, output) dollars per token for ``model``, or None when litellm does not know it."""
    for name in (model, model.split("/", 1)[-1]):
        info = _litellm().model_cost.get(name)
        if info and "input_cost_per_token" in info:
            return info["input_cost_per_token"], info.get("output_cost_per_token", 0.0)
    return None


class Transport(Protocol):
    """Sends one chat request to a provider; raises TransientError (retry) or LLMFailure."""

    async def send(self, messages: list[dict[str, str]], params: dict[str, Any]) -> RawResponse: ...

    async def aclose(self) -> None: ...


def make_transport(settings: LLMSettings) -> Transport:
    direct = settings.transport == "http" or (
        settings.transport == "auto" and settings.model.startswith("openai/") and bool(settings.api_base)
    )
    if not direct:
        return LiteLLMTransport(settings)
    if not settings.api_base or not settings.model.startswith("openai/"):
        raise ValueError("transport 'http' needs an openai/<model> and an api_base")
    return OpenAICompatibleTransport(settings)


def openai_request_options(params: dict[str, Any], structured_output: str) -> dict[str, Any]:
    """The OpenAI chat-completions fields for our cached ``params``."""
    options: dict[str, Any] = {"temperature": params["temperature"]}
    if "max_tokens" in params:
        options["max_tokens"] = params["max_tokens"]
    if "top_logprobs" in params:
        options["logprobs"] = True
        options["top_logprobs"] = params["top_logprobs"]
    if "schema" in params and structured_output != "prompt":
        options["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": params["schema_name"], "schema": params["schema"]},
        }
    return options


def api_key_for(settings: LLMSettings) -> str | None:
    """The key to send; None lets litellm read the provider's own environment variable."""
    if settings.api_key:
        return settings.api_key.get_secret_value()
    if settings.api_base and settings.model.startswith("openai/"):
        # a server of one's own (vLLM, llama.cpp) wants none, but the OpenAI client insists on one
        return os.environ.get("OPENAI_API_KEY") or "no-key"
    return None


class LiteLLMTransport:
    """Any provider by model string (``gpt-4o-mini``, ``anthropic/...``, ``azure/...``) via litellm."""

    def __init__(self, settings: LLMSettings):
        self.settings = settings

    async def send(self, messages: list[dict[str, str]], params: dict[str, Any]) -> RawResponse:
        litellm = _litellm()
        settings = self.settings
        kwargs: dict[str, Any] = {
            "model": settings.model,
            "messages": messages,
            "timeout": settings.timeout_s,
            "num_retries": 0,  # the gateway retries, honouring Retry-After
            "max_retries": 0,
            **openai_request_options(params, settings.structured_output),
        }
        if settings.api_base:
            kwargs["api_base"] = settings.api_base
        if (key := api_key_for(settings)) is not None:
            kwargs["api_key"] = key
        try:
            response = await litellm.acompletion(**kwargs)
        except Exception as exc:  # litellm maps every provider's errors onto its own classes
            raise _classify_litellm_error(exc) from exc
        return _raw_from_openai_shape(response)

    async def aclose(self) -> None:
        """litellm keeps its own client pool."""


class OpenAICompatibleTransport:
    """Direct POSTs to ``<api_base>/chat/completions`` through one aiohttp connection pool.

    For OpenAI-compatible servers (vLLM, llama.cpp, SGLang) at hundreds of requests/s, the client's
    CPU is the bound: litellm costs ~5 ms of CPU per call here, this ~0.3 ms (bench/llm_gateway.py).
    The protocol is one JSON POST; errors map onto the same retry rules as litellm's.
    """

    def __init__(self, settings: LLMSettings):
        self.settings = settings
        self.url = settings.api_base.rstrip("/") + "/chat/completions"  # type: ignore[union-attr]
        self.model = settings.model.removeprefix("openai/")
        key = api_key_for(settings)
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._pool: Any = None

    async def _session(self) -> Any:
        if self._pool is None:
            self._pool = _session_until_loop_closes(self.settings.max_concurrency)
        return await anext(self._pool)

    async def send(self, messages: list[dict[str, str]], params: dict[str, Any]) -> RawResponse:
        import aiohttp

        body = {
            "model": self.model,
            "messages": messages,
            **openai_request_options(params, self.settings.structured_output),
        }
        session = await self._session()
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s)
        try:
            async with session.post(self.url, json=body, headers=self.headers, timeout=timeout) as response:
                payload = await response.read()
                if response.status != 200:
                    raise _http_error(response.status, response.headers, payload)
        except asyncio.TimeoutError as exc:
            raise TransientError(f"Timeout: no answer within {self.settings.timeout_s:g} s") from exc
        except aiohttp.ClientError as exc:
            raise TransientError(f"{type(exc).__name__}: {_short_error(exc)}") from exc
        try:
            return raw_from_openai_dict(json.loads(payload))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise TransientError(f"malformed response body: {_short_error(exc)}") from exc

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None


async def _session_until_loop_closes(max_connections: int) -> Any:
    """Yields one aiohttp session for as long as it is asked for.

    ``asyncio.run`` closes every unfinished async generator when its loop shuts down
    (``loop.shutdown_asyncgens``), which runs the ``finally`` here: pooled connections are closed
    on the loop they belong to, even when nobody calls ``Gateway.aclose``.
    """
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max_connections))
    try:
        while True:
            yield session
    finally:
        await session.close()


def _http_error(status: int, headers: Any, payload: bytes) -> Exception:
    try:
        message = json.loads(payload)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = payload.decode(errors="replace")
    text = f"HTTP {status}: {_short_error(Exception(message))}"
    if status in RETRYABLE_STATUS:
        return TransientError(text, _retry_after_from_headers(headers))
    return LLMFailure(text)


_MISSING_CREDENTIALS = re.compile(r"missing credentials|api_key client option must be set|no api key", re.I)


def _classify_litellm_error(exc: Exception) -> Exception:
    """Transient (retry) or final, with the HTTP status when a server sent one."""
    name = type(exc).__name__
    status = getattr(exc, "status_code", None)
    # litellm.Timeout carries a made-up 408; APIConnectionError covers refused and reset connections.
    if name in {"Timeout", "APIConnectionError"}:
        return TransientError(f"{name}: {_short_error(exc)}")
    message = f"HTTP {status} {name}: {_short_error(exc)}" if status else f"{name}: {_short_error(exc)}"
    if name == "AuthenticationError" or _MISSING_CREDENTIALS.search(str(exc)):
        return LLMFailure(message)  # litellm reports a missing key as a 500: retrying cannot help
    if status in RETRYABLE_STATUS:
        return TransientError(message, _retry_after(exc))
    return LLMFailure(message)


def _retry_after(exc: Exception) -> float | None:
    """litellm puts the provider's response headers on ``litellm_response_headers``."""
    headers = getattr(exc, "litellm_response_headers", None) or getattr(
        getattr(exc, "response", None), "headers", None
    )
    return _retry_after_from_headers(headers)


def _retry_after_from_headers(headers: Any) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms`` (OpenAI), else ``Retry-After``
    as seconds or an HTTP date."""
    if not headers:
        return None
    headers = {name.lower(): value for name, value in headers.items()}
    if (milliseconds := _as_float(headers.get("retry-after-ms"))) is not None:
        return milliseconds / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    if (seconds := _as_float(value)) is not None:
        return seconds
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _as_float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _raw_from_openai_shape(response: Any) -> RawResponse:
    choice = response.choices[0]
    text = choice.message.content or ""
    top = None
    logprobs = getattr(choice, "logprobs", None)
    content = getattr(logprobs, "content", None) if logprobs is not None else None
    if content:
        top = [{alt.token: alt.logprob for alt in token.top_logprobs} for token in content]
    usage = getattr(response, "usage", None)
    return RawResponse(
        text=text,
        prompt_tokens=getattr(usage, "prompt_tokens", None),
        completion_tokens=getattr(usage, "completion_tokens", None),
        top_logprobs=top,
    )


def raw_from_openai_dict(data: dict[str, Any]) -> RawResponse:
    """A chat-completions response body (OpenAI's shape, also llama-cpp-python's) as a RawResponse."""
    choice = data["choices"][0]
    content = (choice.get("logprobs") or {}).get("content")
    top = [{alt["token"]: float(alt["logprob"]) for alt in t["top_logprobs"]} for t in content] if content else None
    usage = data.get("usage") or {}
    return RawResponse(
        text=choice["message"]["content"] or "",
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        top_logprobs=top,
    )


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
        return _short_error(error)
    problems = [f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}" for e in error.errors()]
    return _short_error(ValueError("; ".join(problems)))


def _short_error(error: Exception, limit: int = 500) -> str:
    text = str(error).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "…"


def _estimated_tokens(messages: list[dict[str, str]], params: dict[str, Any]) -> float:
    characters = sum(len(m["content"]) for m in messages)
    return characters / 4 + params.get("max_tokens", 256)



def call_summary(workspace: Workspace, run_id: str | None = None) -> list[dict[str, Any]]:
    """Calls, tokens sent and dollars per run and model; cost is None where any price was unknown."""
    sql = """
        select run_id, model,
            count(*) as calls,
            sum(outcome = 'ok') as sent,
            sum(outcome = 'cached') as cached,
            sum(outcome in ('error', 'invalid')) as failed,
            sum(attempts) as http_attempts,
            sum(case when outcome = 'ok' then prompt_tokens end) as prompt_tokens,
            sum(case when outcome = 'ok' then completion_tokens end) as completion_tokens,
            case when sum(outcome = 'ok' and cost is null) > 0 then null else sum(cost) end as cost
        from llm_calls
        where ? is null or run_id = ?
        group by run_id, model
        order by min(id)
    """
    return list(workspace.db.query(sql, [run_id, run_id]))
