"""Servers for the Label Studio tests: a real Label Studio, tnt's backend in a thread, and a workspace.

``LabelStudioServer`` starts the ``label-studio`` binary of its own virtualenv (``TNT_LABEL_STUDIO_BIN``,
default ``.venv-ls/bin/label-studio``) on a free port with a fresh data directory, a non-interactive
user and a legacy API token, and the settings that let it reach a backend on 127.0.0.1. The first start
of a fresh database takes about 40 s.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tnt.labels.store import LabelRecord, LabelStore
from tnt.taxonomy.store import Taxonomy, TaxonomyLabel, TaxonomyStore
from tnt.workspace import Workspace

REPO_ROOT = Path(__file__).resolve().parent.parent
BANKING77 = REPO_ROOT / "data" / "banking77"
BIN_ENV = "TNT_LABEL_STUDIO_BIN"
REQUIRE_ENV = "TNT_REQUIRE_LABEL_STUDIO"
DOCUMENT = re.compile(r"<document>\n(.*?)\n</document>", re.DOTALL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def label_studio_binary() -> Path:
    return Path(os.environ.get(BIN_ENV, REPO_ROOT / ".venv-ls" / "bin" / "label-studio"))


class LabelStudioServer:
    def __init__(self, data_dir: Path, binary: Path | None = None, start_timeout_s: float = 240.0):
        self.data_dir = data_dir
        self.binary = binary or label_studio_binary()
        self.start_timeout_s = start_timeout_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.username = "tnt-test@example.com"
        self.password = secrets.token_urlsafe(12)
        self.api_key = secrets.token_hex(20)
        self.log_path = data_dir / "label-studio.log"
        self.process: subprocess.Popen[bytes] | None = None

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "LABEL_STUDIO_USERNAME": self.username,
            "LABEL_STUDIO_PASSWORD": self.password,
            "LABEL_STUDIO_USER_TOKEN": self.api_key,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "ML_BLOCK_LOCAL_IP": "false",  # the backend runs on 127.0.0.1
            "SSRF_PROTECTION_ENABLED": "false",
            "LATEST_VERSION_CHECK": "false",  # offline: no PyPI look-up at start
            "COLLECT_ANALYTICS": "false",
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "false",
        }

    def start(self) -> LabelStudioServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(self.binary), "start", "--no-browser", "--internal-host", "127.0.0.1",
            "--port", str(self.port), "--data-dir", str(self.data_dir),
        ]  # fmt: skip
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, env=self.environment(), stdout=log, stderr=subprocess.STDOUT)
        self._wait_until_up()
        return self

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"Label Studio exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).json().get("status") == "UP":
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"Label Studio did not answer /health within {self.start_timeout_s} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


class BackendThread:
    """tnt's backend app under uvicorn in a background thread, on a free port of 127.0.0.1."""

    def __init__(self, app: Any):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", backlog=256)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> BackendThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the backend did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


# A small BANKING77 workspace


def banking_rows(categories: int, per_category: int) -> list[tuple[str, str]]:
    """(text, category) for the first ``categories`` categories of the test split, ``per_category`` each."""
    import csv

    with (BANKING77 / "test.csv").open(encoding="utf-8") as handle:
        rows = [(row["text"], row["category"]) for row in csv.DictReader(handle)]
    chosen = list(dict.fromkeys(category for _, category in rows))[:categories]
    return [row for category in chosen for row in [r for r in rows if r[1] == category][:per_category]]


def banking_workspace(
    workspace: Workspace, tmp_path: Path, categories: int = 5, per_category: int = 8, groups: bool = False
) -> tuple[Taxonomy, dict[str, str], dict[str, str]]:
    """Documents ``d000``… from BANKING77 and a taxonomy of their categories (under two groups when
    ``groups``). Returns the taxonomy, the gold label and the text of each document id."""
    rows = banking_rows(categories, per_category)
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": f"d{i:03d}", "text": t}) + "\n" for i, (t, _) in enumerate(rows)), encoding="utf-8")
    workspace.ingest([path], id_field="id")
    names = list(dict.fromkeys(category for _, category in rows))
    labels = [TaxonomyLabel(name=n, description=f"The customer asks about {n.replace('_', ' ')}.") for n in names]
    if groups:
        halves = {"Cards": names[: len(names) // 2], "Transfers and more": names[len(names) // 2 :]}
        labels = [TaxonomyLabel(name=group, description=f"{group}.") for group in halves] + [
            label.model_copy(update={"parent": group}) for group, members in halves.items()
            for label in labels if label.name in members
        ]  # fmt: skip
    taxonomy = TaxonomyStore(workspace).save(Taxonomy(labels=labels, use_case="customer intent in banking chats"))
    gold = {f"d{i:03d}": category for i, (_, category) in enumerate(rows)}
    texts = {f"d{i:03d}": text for i, (text, _) in enumerate(rows)}
    return taxonomy, gold, texts


def store_llm_labels(workspace: Workspace, version: int, labels: dict[str, str], confidence: float = 0.8) -> None:
    """LLM labels as the labeling stage stores them (what the backend serves from the cache)."""
    LabelStore(workspace).add(
        LabelRecord(doc_id, "llm", label, version, confidence=confidence, origin="label", model="openai/scripted")
        for doc_id, label in labels.items()
    )


def oracle(label_of_text: dict[str, str]):
    """A scripted-LLM responder answering each document's label from ``label_of_text``."""

    def respond(body: dict[str, Any]) -> str:
        (text,) = DOCUMENT.findall(body["messages"][-1]["content"])
        label = label_of_text[text]
        return json.dumps({"label": label, "explanation": f"About {label}.", "confidence": 0.7})

    return respond
