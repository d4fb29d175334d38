"""Gateway overhead against the scripted OpenAI-compatible server (100 ms latency).

For 16 and 64 requests in flight, measured in one run against the same server (in its own process,
so this process's CPU time is the client's alone):
- a bare ``httpx.AsyncClient`` posting the chat request and validating the answer (the baseline),
- a bare ``aiohttp.ClientSession`` doing the same (what the server can take),
- ``litellm.acompletion`` alone with the same request,
- ``Gateway.complete`` with the pydantic schema, the workspace cache and the call log, through
  litellm (``transport="litellm"``, every provider) and through its default for an OpenAI-compatible
  server (``transport="auto"`` → direct HTTP).
All send the same body (messages + ``response_format`` json_schema); every request is new.

Prints requests/s, the ratio to bare httpx (goal >= 0.9) and CPU ms per call (goal <= 6 ms).

    .venv/bin/python bench/llm_gateway.py [--requests-per-slot 20] [--latency 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from pydantic import BaseModel

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tnt.llm.gateway import Gateway, LLMSettings
from tnt.llm.transports import litellm_module
from tnt.workspace import Workspace

ANSWER = '{"label": "card_declined", "confidence": 0.93}'
SYSTEM = "You label customer messages of a bank with one intent from the taxonomy below. " * 4


class Intent(BaseModel):
    label: str
    confidence: float


RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "Intent", "schema": Intent.model_json_schema()}}


def start_server(latency_s: float) -> tuple[subprocess.Popen, str]:
    """The scripted server in its own process, so this process's CPU time is the client's alone."""
    command = [sys.executable, "-m", "tests.llm_server", "--latency", str(latency_s), "--reply", ANSWER]
    server = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    return server, server.stdout.readline().strip()


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"message {i}: my card was declined"}]


async def measure(call: Callable[[int], Awaitable[object]], requests: int, in_flight: int, first: int) -> tuple[float, float]:
    """(requests/s, CPU ms per call) for ``requests`` calls, ``in_flight`` at a time."""
    queue = iter(range(first, first + requests))

    async def worker() -> None:
        for i in queue:
            await call(i)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return requests / wall, cpu / requests * 1000


def request_body(i: int) -> dict:
    return {"model": "scripted", "messages": messages(i), "temperature": 0.0, "response_format": RESPONSE_FORMAT}


async def compare_clients(url: str, in_flight: int, requests: int, workspace: Workspace) -> list[tuple]:
    """(client, in flight, req/s, ratio to bare httpx, CPU ms/call) for each client."""
    import aiohttp
    import httpx

    litellm = litellm_module()
    # httpx's default pool (100 connections, 20 kept alive): with 64 kept alive its pool gets far
    # slower (encode/httpx#3215), which would flatter every other row.
    http = httpx.AsyncClient(base_url=url, timeout=30)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight))
    settings = LLMSettings(model="openai/scripted", api_base=url, max_concurrency=in_flight)
    via_litellm = Gateway(workspace, settings.model_copy(update={"transport": "litellm"}))
    via_default = Gateway(workspace, settings)

    async def bare_httpx(i: int) -> None:
        response = await http.post("/chat/completions", json=request_body(i))
        Intent.model_validate_json(response.json()["choices"][0]["message"]["content"])

    async def bare_aiohttp(i: int) -> None:
        async with session.post(url + "/chat/completions", json=request_body(i)) as response:
            Intent.model_validate_json((await response.json())["choices"][0]["message"]["content"])

    async def litellm_alone(i: int) -> None:
        response = await litellm.acompletion(
            model="openai/scripted", api_base=url, api_key="x", messages=messages(i), temperature=0.0,
            response_format=RESPONSE_FORMAT,
        )
        Intent.model_validate_json(response.choices[0].message.content)

    async def gateway_litellm(i: int) -> None:
        await via_litellm.complete(messages(i), Intent)

    async def gateway_default(i: int) -> None:
        await via_default.complete(messages(i), Intent)

    clients = [
        ("httpx (bare)", bare_httpx),
        ("aiohttp (bare)", bare_aiohttp),
        ("litellm.acompletion", litellm_alone),
        ("Gateway, litellm", gateway_litellm),
        ("Gateway, default", gateway_default),
    ]
    first = in_flight * 1_000_000  # every request of the run is new to the cache
    for _, call in clients:  # warm up connections, imports, caches
        await measure(call, in_flight, in_flight, first)
        first += in_flight
    rows = []
    for name, call in clients:
        rate, cpu_ms = await measure(call, requests, in_flight, first)
        first += requests
        rows.append((name, in_flight, rate, rate / (rows[0][2] if rows else rate), cpu_ms))
    await http.aclose()
    await session.close()
    await via_default.aclose()
    return rows


async def run(url: str, requests_per_slot: int, workspace: Workspace) -> list[tuple]:
    rows = []
    for in_flight in (16, 64):
        rows += await compare_clients(url, in_flight, in_flight * requests_per_slot, workspace)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests-per-slot", type=int, default=20, help="requests per in-flight slot")
    parser.add_argument("--latency", type=float, default=0.1, help="server latency in seconds")
    args = parser.parse_args()

    server, url = start_server(args.latency)
    try:
        with tempfile.TemporaryDirectory() as directory, Workspace.create(directory) as workspace:
            rows = asyncio.run(run(url, args.requests_per_slot, workspace))
    finally:
        server.terminate()
        server.wait()
    print(f"\nscripted server latency {args.latency * 1000:.0f} ms, {args.requests_per_slot} requests per slot")
    print(f"{'client':<24}{'in flight':>10}{'req/s':>9}{'vs httpx':>10}{'CPU ms/call':>13}")
    for name, in_flight, rate, ratio, cpu_ms in rows:
        print(f"{name:<24}{in_flight:>10}{rate:>9.0f}{ratio:>10.2f}{cpu_ms:>13.2f}")


if __name__ == "__main__":
    main()
