"""A scripted OpenAI-compatible chat-completions server for tests and benchmarks.

It answers ``POST /v1/chat/completions`` on 127.0.0.1 with whatever a Python ``responder`` returns,
in the OpenAI response shape (``usage``, ``logprobs.content[i].top_logprobs``), and can inject the
faults real providers produce (429 with Retry-After, 500, a hang past the client's timeout, truncated
JSON content, valid JSON of the wrong shape) at a chosen rate.

Which request gets a fault is decided from (seed, request body, how often that body was seen), not
from arrival order, so a run is reproducible even with many requests in flight.

    with ScriptedLLMServer(lambda body: '{"label": "card"}', faults=Faults(rate=0.3)) as server:
        Gateway(ws, LLMSettings(model="openai/scripted", api_base=server.url))

Stdlib ``ThreadingHTTPServer`` (one thread per connection, HTTP/1.1 keep-alive): enough for a few
hundred requests per second, which is what the tests and ``bench/llm_gateway.py`` need.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from typing_extensions import Self

FAULT_KINDS = ("429", "500", "hang", "bad_json", "wrong_shape")
WRONG_SHAPE_CONTENT = '{"unexpected": ["valid JSON", "of the wrong shape"]}'


@dataclass
class Reply:
    """What a responder may return instead of a plain string.

    ``top_logprobs``: alternatives for the first output token (``[{"token": "yes", "logprob": -0.1},
    ...]``), or one such list per output token. ``status`` other than 200 answers with an
    OpenAI-style error body instead (e.g. 400 for a request the provider rejects), with ``headers``.
    """

    content: str
    top_logprobs: list[dict[str, Any]] | list[list[dict[str, Any]]] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


Responder = Callable[[dict[str, Any]], "str | Reply"]


@dataclass(frozen=True)
class Faults:
    """Inject a fault into ``rate`` of the requests, the kind drawn evenly from ``kinds``."""

    rate: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS
    retry_after_s: float = 0.05
    hang_s: float = 30.0  # a hang ends earlier when the server stops

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {FAULT_KINDS}")


class ScriptedLLMServer:
    """Context manager: a server thread on a free port; ``url`` ends with ``/v1``.

    ``requests``: bodies of the chat requests answered 200 (faulty content included);
    ``count``: how many those are; ``http_requests``: every HTTP request received, faults included;
    ``faults``: a Counter of the faults injected, by kind; ``max_in_flight``: the most chat requests
    being handled at once.
    """

    def __init__(
        self,
        responder: Responder,
        latency_s: float = 0.0,
        faults: Faults | None = None,
        seed: int = 0,
        record_requests: bool = True,
        port: int = 0,
    ):
        self.responder = responder
        self.port = port  # 0: any free port
        self.latency_s = latency_s
        self.fault_plan = faults or Faults()
        self.seed = seed
        self.record_requests = record_requests
        self.requests: list[dict[str, Any]] = []
        self.count = 0
        self.http_requests = 0
        self.faults: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._seen: defaultdict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> Self:
        self._httpd = _HTTPServer(("127.0.0.1", self.port), _Handler)
        self._httpd.scripted = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="scripted-llm", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd.server_close()
        self._httpd = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.count = 0
            self.http_requests = 0
            self.faults.clear()
            self.max_in_flight = self.in_flight

    # Called from handler threads

    def _choose_fault(self, raw_body: bytes) -> str | None:
        plan = self.fault_plan
        if not plan.rate or not plan.kinds:
            return None
        body_hash = hashlib.sha256(raw_body).hexdigest()
        with self._lock:
            seen = self._seen[body_hash]
            self._seen[body_hash] += 1
        digest = hashlib.sha256(f"{self.seed}:{body_hash}:{seen}".encode()).digest()
        draw = int.from_bytes(digest[:8], "big") / 2**64
        if draw >= plan.rate:
            return None
        return plan.kinds[int.from_bytes(digest[8:16], "big") % len(plan.kinds)]


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the default (5) refuses connections at 64 in flight
    scripted: ScriptedLLMServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.scripted._lock:
            self.server.scripted._connections.add(self.connection)

    def finish(self) -> None:
        with self.server.scripted._lock:
            self.server.scripted._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._count_request()
        if self.path.rstrip("/").endswith("/models"):
            self._send_json(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
        else:
            self._send_error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        scripted = self.server.scripted
        raw_body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._count_request()
        with scripted._lock:
            scripted.in_flight += 1
            scripted.max_in_flight = max(scripted.max_in_flight, scripted.in_flight)
        try:
            self._answer_chat(raw_body)
        finally:
            with scripted._lock:
                scripted.in_flight -= 1

    def _answer_chat(self, raw_body: bytes) -> None:
        scripted = self.server.scripted
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send_error(404, f"no route {self.path}")
            return
        try:
            body = json.loads(raw_body)
            _check_request(body)
        except (ValueError, TypeError) as exc:
            self._send_error(400, f"invalid request: {exc}")
            return
        fault = scripted._choose_fault(raw_body)
        if fault:
            with scripted._lock:
                scripted.faults[fault] += 1
        if fault == "hang":
            scripted._stopping.wait(scripted.fault_plan.hang_s)
            self.close_connection = True
            return
        if scripted.latency_s:
            time.sleep(scripted.latency_s)
        if fault == "429":
            retry_after = scripted.fault_plan.retry_after_s
            headers = {"Retry-After": f"{retry_after:g}", "retry-after-ms": f"{retry_after * 1000:g}"}
            self._send_error(429, "Rate limit reached (injected)", "rate_limit_exceeded", headers)
            return
        if fault == "500":
            self._send_error(500, "The server had an error (injected)", "server_error")
            return
        reply = scripted.responder(body)
        if isinstance(reply, str):
            reply = Reply(reply)
        if reply.status != 200:
            self._send_error(reply.status, reply.content, headers=reply.headers)
            return
        if fault == "bad_json":
            reply = Reply(_truncated(reply.content))
        elif fault == "wrong_shape":
            reply = Reply(WRONG_SHAPE_CONTENT)
        with scripted._lock:
            scripted.count += 1
            if scripted.record_requests:
                scripted.requests.append(body)
        self._send_json(200, _completion_body(body, reply))

    def _count_request(self) -> None:
        with self.server.scripted._lock:
            self.server.scripted.http_requests += 1

    def _send_error(
        self, status: int, message: str, code: str = "invalid_request_error", headers: dict[str, str] | None = None
    ) -> None:
        error_type = "invalid_request_error" if status < 500 else "server_error"
        self._send_json(status, {"error": {"message": message, "type": error_type, "code": code}}, headers)

    def _send_json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (timeout) and closed the connection
            self.close_connection = True


def _check_request(body: Any) -> None:
    """Reject what OpenAI rejects with a 400, so a malformed request fails loudly in tests."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
        raise ValueError("'messages' must be a non-empty list")
    if "model" not in body:
        raise ValueError("'model' is required")
    response_format = body.get("response_format")
    if response_format is not None:
        kind = response_format.get("type")
        if kind not in ("text", "json_object", "json_schema"):
            raise ValueError(f"response_format.type {kind!r} is not text, json_object or json_schema")
        if kind == "json_schema":
            spec = response_format.get("json_schema") or {}
            if not spec.get("name") or not isinstance(spec.get("schema"), dict):
                raise ValueError("response_format.json_schema needs 'name' and a 'schema' object")
    if body.get("top_logprobs") is not None and not body.get("logprobs"):
        raise ValueError("'top_logprobs' requires 'logprobs': true")


TOKEN_PATTERN = re.compile(r"\s*\S+|\s+")


def _tokens(text: str) -> list[str]:
    """A stand-in tokenizer: whitespace-led words, enough for usage counts and logprobs."""
    return TOKEN_PATTERN.findall(text)


def _truncated(content: str) -> str:
    return content[: max(1, len(content) // 2)] if content else "{"


def _completion_body(request: dict[str, Any], reply: Reply) -> dict[str, Any]:
    tokens = _tokens(reply.content)
    prompt_text = " ".join(str(m.get("content") or "") for m in request["messages"])
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": reply.content},
        "finish_reason": "stop",
        "logprobs": None,
    }
    if request.get("logprobs"):
        choice["logprobs"] = {"content": _logprobs(tokens, reply.top_logprobs, request.get("top_logprobs") or 0)}
    prompt_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else len(_tokens(prompt_text))
    completion_tokens = reply.completion_tokens if reply.completion_tokens is not None else len(tokens)
    return {
        "id": f"chatcmpl-{hashlib.sha1(json.dumps(request, sort_keys=True).encode()).hexdigest()[:16]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request["model"],
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _logprobs(
    tokens: list[str], alternatives: list[dict[str, Any]] | list[list[dict[str, Any]]] | None, top_n: int
) -> list[dict[str, Any]]:
    per_token: list[list[dict[str, Any]]] = []
    if alternatives:
        per_token = [alternatives] if isinstance(alternatives[0], dict) else list(alternatives)  # type: ignore[list-item]
    content = []
    for i, token in enumerate(tokens):
        options = per_token[i] if i < len(per_token) else [{"token": token, "logprob": 0.0}]
        options = sorted(options, key=lambda option: -option["logprob"])
        own = next((o["logprob"] for o in options if o["token"] == token), options[0]["logprob"])
        content.append(
            {
                "token": token,
                "logprob": own,
                "bytes": list(token.encode()),
                "top_logprobs": [
                    {"token": o["token"], "logprob": o["logprob"], "bytes": list(o["token"].encode())}
                    for o in options[:top_n]
                ],
            }
        )
    return content


def main() -> None:
    """Serve a fixed reply until interrupted: ``python -m tests.llm_server --latency 0.1``.

    Prints the base URL on the first line of stdout (benchmarks run the server in its own process).
    """
    import argparse

    parser = argparse.ArgumentParser(description="Scripted OpenAI-compatible chat-completions server.")
    parser.add_argument("--reply", default='{"label": "card_declined", "confidence": 0.93}')
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    server = ScriptedLLMServer(
        lambda body: args.reply,
        latency_s=args.latency,
        faults=Faults(rate=args.fault_rate),
        seed=args.seed,
        record_requests=False,
    )
    with server:
        print(server.url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
