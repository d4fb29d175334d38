"""A `tnt label` process killed mid-run (SIGKILL) and started again ends exactly where an
uninterrupted run does, and no request the server answered is sent again."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.llm_server import Reply
from tests.test_label import Oracle, settings_for, setup_corpus
from tnt.cli import app
from tnt.corpus.store import select_documents
from tnt.labels.labeling import label_documents
from tnt.labels.store import LabelStore
from tnt.workspace import Workspace

CONCURRENCY = 4


class Gate:
    """Answers the first ``open_for`` requests, then holds later ones until ``release()``.

    The test kills the client while requests are held. A held request then gets a 503: its client is
    gone, so its answer would be lost in transit anyway; what the test checks is that no answer the
    server did deliver is asked for again.
    """

    def __init__(self, responder, open_for: int):
        self.responder = responder
        self.open_for = open_for
        self.answered = 0
        self.held = 0
        self.lock = threading.Lock()
        self.released = threading.Event()

    def __call__(self, body: dict) -> str | Reply:
        with self.lock:
            hold = self.answered >= self.open_for and not self.released.is_set()
            self.held += hold
            self.answered += not hold
        if hold:
            self.released.wait()
            return Reply("the client is gone", status=503)
        return self.responder(body)

    def release(self) -> None:
        self.released.set()


def label_args(workspace: Path, server, batch_size: int) -> list[str]:
    return [
        "label", "--workspace", str(workspace), "--all",
        "--model", "openai/scripted", "--api-base", server.url, "--api-key", "sk-test",
        "--concurrency", str(CONCURRENCY), "--batch-size", str(batch_size),
    ]  # fmt: skip


def tnt_label_process(args: list[str], log: Path) -> subprocess.Popen:
    command = [sys.executable, "-c", "from tnt.cli import main; main()", *args]
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def final_labels(workspace: Workspace, version: int) -> dict[str, tuple]:
    current = LabelStore(workspace).current(version, "llm")
    return {
        doc: (r["label"], r["explanation"], r["confidence"], r["prompt_hash"]) for doc, r in current.items()
    }


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [1, 4])
def test_sigkill_then_restart_equals_an_uninterrupted_run(tmp_path, llm_server, batch_size):
    with Workspace.create(tmp_path / "killed") as killed, Workspace.create(tmp_path / "whole") as whole:
        taxonomy, truth = setup_corpus(killed, tmp_path, 40)
        setup_corpus(whole, tmp_path, 40)
        gate = Gate(Oracle(truth), open_for=12 // batch_size + 1)
        server = llm_server(gate, latency_s=0.05)

        args = label_args(killed.directory, server, batch_size)
        first = tnt_label_process(args, tmp_path / "first.log")
        try:
            wait_for(lambda: gate.held >= CONCURRENCY or first.poll() is not None, 90, "requests to be held")
        finally:
            first.kill()
        first.wait()
        gate.release()
        assert first.returncode == -9, (tmp_path / "first.log").read_text()
        labeled_before_kill = LabelStore(killed).count(taxonomy.version, "llm")
        assert 0 < labeled_before_kill < 40

        # the same command again (in this process: a fresh gateway and event loop, all state from the workspace)
        second = CliRunner().invoke(app, args)
        assert second.exit_code == 0, second.output
        assert f"{labeled_before_kill} already done" in second.output

        baseline = llm_server(Oracle(truth))
        label_documents(
            whole, taxonomy.version, select_documents(whole), settings_for(baseline), batch_size=batch_size
        )

        assert final_labels(killed, taxonomy.version) == final_labels(whole, taxonomy.version)
        assert len(final_labels(killed, taxonomy.version)) == 40
        bodies = Counter(json.dumps(body, sort_keys=True) for body in server.requests)
        assert bodies.most_common(1)[0][1] == 1, "a request the server answered was sent again"
        assert server.count == baseline.count  # nothing answered in vain either
        runs = [run["status"] for run in killed.runs.list("label")]
        assert runs == ["interrupted", "completed"]  # a SIGKILLed run cannot mark itself; its dead pid shows it
