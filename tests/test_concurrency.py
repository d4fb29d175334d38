"""One workspace, many processes: `tnt serve` storing webhook annotations, `tnt label` over an LLM
server and a library writer storing labels in runs of its own, all at once for WINDOW_S seconds. Every
write lands, no process fails, nothing says "database is locked"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.ls_server import banking_workspace, free_port
from tests.test_backend import PASSWORD, PROJECT, SECRET, annotation_payload, basic
from tests.test_label import Oracle
from tests.test_label_resume import wait_for
from tnt.labels.store import LabelStore
from tnt.review.labelstudio import WEBHOOK_SECRET_HEADER, ProjectLink, ProjectLinks

WINDOW_S = 30.0
POSTERS = 4  # webhook requests in flight at once (the backend's worker threads)
DOCUMENTS = 200
TNT = str(Path(sys.executable).parent / "tnt")

# Labels from a process of its own, a run per batch (runs, heartbeats and labels all write); prints
# how many labels it stored.
LIBRARY_WRITER = """
import json, sys, time
from tnt.labels.store import LabelRecord, LabelStore
from tnt.workspace import Workspace

directory, version, window_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
stored, batch = 0, 0
with Workspace.open(directory) as ws:
    doc_ids = ws.documents.ids()
    deadline = time.monotonic() + window_s
    while time.monotonic() < deadline:
        with ws.run("bulk-write", {"batch": batch}) as run:
            records = [LabelRecord(doc_id, "model", "x", version, origin="writer", run_id=run.id)
                       for doc_id in doc_ids[:50]]
            stored += LabelStore(ws).add(records)
            run.stats = {"stored": len(records)}
        batch += 1
print(json.dumps({"stored": stored, "runs": batch}))
"""


def start_backend(directory: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "TNT_BACKEND_PASSWORD": PASSWORD, "TNT_WEBHOOK_SECRET": SECRET}
    command = [TNT, "serve", "-w", str(directory), "--port", str(port), "--retrain-every", "0"]
    process = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(f"{url}/health", headers=basic(), timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, 90, "the backend to start")
    return process, url


def post_annotations(url: str, names: list[str], doc_ids: list[str], first_id: int, until: float) -> dict:
    """New annotations, one request at a time, until ``until``; what the backend answered."""
    answered = {"added": 0, "failed": []}
    annotation_id = first_id
    with httpx.Client(headers={WEBHOOK_SECRET_HEADER: SECRET}, timeout=60) as client:
        while time.monotonic() < until:
            doc_id = doc_ids[annotation_id % len(doc_ids)]
            payload = annotation_payload("ANNOTATION_CREATED", annotation_id, doc_id, names[annotation_id % len(names)])
            response = client.post(f"{url}/webhook", json=payload)
            if response.status_code == 200:
                answered["added"] += response.json()["added"]
            else:
                answered["failed"].append(response.text)
            annotation_id += POSTERS
    return answered


@pytest.mark.slow
def test_serve_label_and_a_library_writer_at_once_lose_no_write(workspace, tmp_path, llm_server):
    taxonomy, gold, texts = banking_workspace(workspace, tmp_path, categories=5, per_category=DOCUMENTS // 5)
    ProjectLinks(workspace).save(ProjectLink(PROJECT, "http://ls", "test project", taxonomy.version, False))
    doc_ids = sorted(gold)
    assert len(doc_ids) == DOCUMENTS
    # two requests in flight of LATENCY_S each: labeling takes about the window
    server = llm_server(Oracle({texts[d]: gold[d] for d in doc_ids}), latency_s=2 * WINDOW_S / DOCUMENTS)

    backend, url = start_backend(workspace.directory, tmp_path / "serve.log")
    try:
        label_log = tmp_path / "label.log"
        labeling = subprocess.Popen(
            [TNT, "label", "-w", str(workspace.directory), "--all", "--model", "openai/scripted", "--api-base",
             server.url, "--api-key", "sk-test", "--concurrency", "2"],
            stdout=label_log.open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        writer = subprocess.Popen(
            [sys.executable, "-c", LIBRARY_WRITER, str(workspace.directory), str(taxonomy.version), str(WINDOW_S)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        until = time.monotonic() + WINDOW_S
        answers: list[dict] = []
        posters = [
            threading.Thread(target=lambda i=i: answers.append(post_annotations(url, taxonomy.names, doc_ids, i, until)))
            for i in range(POSTERS)
        ]
        for poster in posters:
            poster.start()
        for poster in posters:
            poster.join()
        written, writer_errors = writer.communicate(timeout=300)
        labeling.wait(timeout=300)
    finally:
        backend.terminate()
        backend.wait(timeout=30)

    assert writer.returncode == 0, writer_errors
    assert labeling.returncode == 0, label_log.read_text()
    logs = label_log.read_text() + (tmp_path / "serve.log").read_text() + writer_errors
    assert "locked" not in logs and "Traceback" not in logs

    assert [a["failed"] for a in answers] == [[]] * POSTERS
    posted = sum(a["added"] for a in answers)
    assert posted > 0
    store = LabelStore(workspace)
    assert len(store.current_by_origin(taxonomy.version, "human", "label-studio:%")) == posted

    stored = json.loads(written)
    assert stored["stored"] > 0
    assert workspace.db["labels"].count_where("origin = 'writer'") == stored["stored"]
    assert [r["status"] for r in workspace.runs.list("bulk-write")] == ["completed"] * stored["runs"]

    assert len(store.current(taxonomy.version, "llm")) == DOCUMENTS
    label_run = workspace.runs.last("label")
    assert label_run["status"] == "completed" and workspace.runs.issues(label_run["id"]) == []
    writes = workspace.runs.list("bulk-write")
    assert writes[0]["started_at"] < label_run["finished_at"] and label_run["started_at"] < writes[-1]["finished_at"]
    print(f"webhook annotations {posted}, library labels {stored['stored']} in {stored['runs']} runs, llm labels {DOCUMENTS}")
