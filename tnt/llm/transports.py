"""Transports: how one chat request reaches a model, and what that model offers.

The gateway (``tnt.llm.gateway``) treats every model alike; what differs between them lives here,
behind ``Transport``:

- ``LiteLLMTransport``: any provider by model string (``gpt-4o-mini``, ``anthropic/...``) via litellm;
- ``OpenAICompatibleTransport``: direct HTTP to a server of one's own (``openai/<model>`` with an
  ``api_base``: vLLM, llama.cpp server, SGLang);
- ``LocalTransport``: the offline GGUF model (``local/...``) in this process via llama-cpp-python.

Each says whether it takes a JSON schema natively, whether it returns log-probabilities, what a call
costs and how many tokens a prompt holds, and fails with ``TransientError`` (worth a retry) or
``LLMFailure`` (final).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import re
import time
from dataclasses import dataclass
from functools import cached_property
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from tnt.llm.local import LOCAL_PREFIX, LocalModels

if TYPE_CHECKING:
    from tnt.llm.gateway import LLMSettings

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 529}
# The local model's tokenizer is only at hand once the model is loaded; an estimate does not load it.
TOKEN_COUNT_STAND_IN = "gpt-4o-mini"


class LLMFailure(Exception):
    """A request that ended without a usable answer; ``reason`` says why (it is also logged)."""

    def __init__(self, reason: str, answered: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.answered = answered  # the model did answer, but not validly (not a transport or provider error)


class TransientError(Exception):
    """A failure worth retrying (429, 5xx, timeout, connection), with the server's Retry-After."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


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


class Transport(Protocol):
    """Sends one chat request to a model; raises TransientError (retry) or LLMFailure (final)."""

    @property
    def native_schema(self) -> bool:
        """Whether the model takes the answer's JSON schema itself (``response_format`` or a grammar)."""
        ...

    @property
    def offers_logprobs(self) -> bool:
        """Whether the model's API takes ``top_logprobs``."""
        ...

    def cost(self, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
        """Dollars for one call; None when the price is unknown."""
        ...

    def count_tokens(self, messages: list[dict[str, str]]) -> int: ...

    async def send(self, messages: list[dict[str, str]], params: dict[str, Any]) -> RawResponse: ...

    async def aclose(self) -> None: ...


def make_transport(settings: LLMSettings) -> Transport:
    """``local/...``: the local model; ``openai/<model>`` with an ``api_base``: direct HTTP; else litellm."""
    if settings.model.startswith(LOCAL_PREFIX):
        return LocalTransport(settings)
    direct = settings.transport == "http" or (
        settings.transport == "auto" and settings.model.startswith("openai/") and bool(settings.api_base)
    )
    if not direct:
        return LiteLLMTransport(settings)
    if not settings.api_base or not settings.model.startswith("openai/"):
        raise ValueError("transport 'http' needs an openai/<model> and an api_base")
    return OpenAICompatibleTransport(settings)


class LocalTransport:
    """The offline GGUF model: free, grammar-constrained JSON, log-probabilities."""

    native_schema = True
    offers_logprobs = True

    def __init__(self, settings: LLMSettings):
        self.model = settings.model
        self.models = LocalModels()

    def cost(self, prompt_tokens: int | None, completion_tokens: int | None) -> float:
        return 0.0

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return litellm_module().token_counter(model=TOKEN_COUNT_STAND_IN, messages=messages)

    async def send(self, messages: list[dict[str, str]], params: dict[str, Any]) -> RawResponse:
        return raw_from_openai_dict(await self.models.complete(self.model, messages, params))

    async def aclose(self) -> None:
        """Loaded models stay loaded for the gateway's next event loop."""


class PricedByLiteLLM:
    """Cost and token counts from litellm's bundled tables, for the model string in ``settings``."""

    def __init__(self, settings: LLMSettings):
        self.settings = settings
        # Looked up now, not at the first answer: importing litellm takes seconds, which inside the
        # event loop would stall every request in flight (and inflate their logged latency).
        self.prices = model_prices(settings.model)

    def cost(self, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
        if self.prices is None or prompt_tokens is None:
            return None
        return prompt_tokens * self.prices[0] + (completion_tokens or 0) * self.prices[1]

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return litellm_module().token_counter(model=self.settings.model, messages=messages)


class LiteLLMTransport(PricedByLiteLLM):
    """Any provider by model string (``gpt-4o-mini``, ``anthropic/...``, ``azure/...``) via litellm."""

    @cached_property
    def native_schema(self) -> bool:
        model = self.settings.model
        return model.startswith("openai/") or bool(litellm_module().supports_response_schema(model=model))

    @cached_property
    def offers_logprobs(self) -> bool:
        """litellm rejects ``top_logprobs`` for e.g. Anthropic and Ollama."""
        supported = litellm_module().get_supported_openai_params(model=self.settings.model)
        return supported is None or "top_logprobs" in supported  # None: litellm does not know; answers will tell

    async def send(self, messages: list[dict[str, str]], params: dict[str, Any]) -> RawResponse:
        litellm = litellm_module()
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


class OpenAICompatibleTransport(PricedByLiteLLM):
    """Direct POSTs to ``<api_base>/chat/completions`` through one aiohttp connection pool per event loop.

    For OpenAI-compatible servers (vLLM, llama.cpp, SGLang) at hundreds of requests/s, the client's
    CPU is the bound: litellm costs ~5 ms of CPU per call here, this ~0.3 ms (bench/llm_gateway.py).
    The protocol is one JSON POST; errors map onto the same retry rules as litellm's.
    """

    native_schema = True
    offers_logprobs = True  # a server of one's own: its answers tell

    def __init__(self, settings: LLMSettings):
        super().__init__(settings)
        self.url = settings.api_base.rstrip("/") + "/chat/completions"  # type: ignore[union-attr]
        self.model = settings.model.removeprefix("openai/")
        key = api_key_for(settings)
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._pool: Any = None
        self._pool_loop: asyncio.AbstractEventLoop | None = None

    async def _session(self) -> Any:
        """Connections belong to one event loop; a gateway may outlive several."""
        loop = asyncio.get_running_loop()
        if self._pool is None or self._pool_loop is not loop:
            self._pool = _session_until_loop_closes(self.settings.max_concurrency)
            self._pool_loop = loop
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
            raise TransientError(f"{type(exc).__name__}: {short_error(exc)}") from exc
        try:
            return raw_from_openai_dict(json.loads(payload))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise TransientError(f"malformed response body: {short_error(exc)}") from exc

    async def aclose(self) -> None:
        if self._pool is not None and self._pool_loop is asyncio.get_running_loop():
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


SECRET_ENV_SUFFIXES = ("_API_KEY", "_KEY", "_TOKEN", "_SECRET")


def known_secrets(settings: LLMSettings) -> list[str]:
    """Every key an error message could echo: the one tnt sends, and each provider key litellm may
    read from the environment itself (``GEMINI_API_KEY``, ``ANTHROPIC_API_KEY``, …); longest first."""
    from_env = {value for name, value in os.environ.items() if name.endswith(SECRET_ENV_SUFFIXES) and len(value) >= 8}
    keys = {api_key_for(settings), *from_env} - {None, "no-key"}
    return sorted(keys, key=len, reverse=True)  # type: ignore[arg-type]


def api_key_for(settings: LLMSettings) -> str | None:
    """The key to send; None lets litellm read the provider's own environment variable."""
    if settings.api_key:
        return settings.api_key.get_secret_value()
    if settings.api_base and settings.model.startswith("openai/"):
        # a server of one's own (vLLM, llama.cpp) wants none, but the OpenAI client insists on one
        return os.environ.get("OPENAI_API_KEY") or "no-key"
    return None


def litellm_module() -> ModuleType:
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
        info = litellm_module().model_cost.get(name)
        if info and "input_cost_per_token" in info:
            return info["input_cost_per_token"], info.get("output_cost_per_token", 0.0)
    return None


# Errors


def _http_error(status: int, headers: Any, payload: bytes) -> Exception:
    try:
        message = json.loads(payload)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = payload.decode(errors="replace")
    text = f"HTTP {status}: {short_error(Exception(message))}"
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
        return TransientError(f"{name}: {short_error(exc)}")
    message = f"HTTP {status} {name}: {short_error(exc)}" if status else f"{name}: {short_error(exc)}"
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


def short_error(error: Exception, limit: int = 500) -> str:
    text = str(error).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "…"


# Responses


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
