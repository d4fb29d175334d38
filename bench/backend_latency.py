"""/predict latency of tnt's Label Studio backend: p50/p95 for 1 and for 20 tasks per request,
served from cached LLM labels and from the distilled model.

Two workspaces over the same BANKING77 documents (the gold categories stand in for cached LLM
labels), one with a trained embed-linear model; each served by `tnt serve` in its own process,
requests sent one after another from this process. The baseline is GET /health on the same server
(HTTP, auth and thread hop with no work), measured in the same run.

    .venv/bin/python bench/backend_latency.py [--documents 1000] [--requests 100]
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from tnt.corpus.ingest import ingest
from tnt.distill.train import train as train_model
from tnt.labels.store import LabelRecord, LabelStore
from tnt.review.labelstudio import ProjectLink, ProjectLinks, label_config
from tnt.taxonomy.store import Taxonomy, TaxonomyLabel, TaxonomyStore
from tnt.workspace import Workspace

DATA = Path(__file__).resolve().parents[1] / "data" / "banking77"
PROJECT = 1
PASSWORD, SECRET = "bench-password", "bench-secret"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"tnt:{PASSWORD}".encode()).decode()}


def build_workspace(directory: Path, rows: list[dict[str, str]], with_model: bool) -> tuple[str, dict[str, str]]:
    """A workspace with the documents, a 77-label taxonomy, cached LLM labels, optionally a model."""
    with Workspace.create(directory) as ws:
        path = directory / "docs.jsonl"
        path.write_text("".join(json.dumps({"id": f"b{i}", "text": r["text"]}) + "\n" for i, r in enumerate(rows)))
        ingest(ws, [path], id_field="id")
        names = sorted({r["category"] for r in rows})
        taxonomy = TaxonomyStore(ws).save(Taxonomy(labels=[TaxonomyLabel(name=n) for n in names]))
        LabelStore(ws).add(
            LabelRecord(f"b{i}", "llm", r["category"], taxonomy.version, confidence=0.9, origin="label", model="gold")
            for i, r in enumerate(rows)
        )
        ProjectLinks(ws).save(ProjectLink(PROJECT, "http://label-studio", "bench", taxonomy.version, False))
        if with_model:
            train_model(ws, taxonomy_version=taxonomy.version, kind="embed-linear")
        return label_config(taxonomy), {f"b{i}": r["text"] for i, r in enumerate(rows)}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def served(directory: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "TNT_BACKEND_PASSWORD": PASSWORD, "TNT_WEBHOOK_SECRET": SECRET}
    tnt = Path(sys.executable).parent / "tnt"
    process = subprocess.Popen(
        [str(tnt), "serve", "-w", str(directory), "--port", str(port)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/health", headers=AUTH, timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("tnt serve did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def timed(client: httpx.Client, method: str, path: str, body: dict | None, count: int) -> np.ndarray:
    for _ in range(5):  # warm-up: first model load, connection, caches
        client.request(method, path, json=body).raise_for_status()
    times = []
    for _ in range(count):
        start = time.perf_counter()
        response = client.request(method, path, json=body)
        times.append(time.perf_counter() - start)
        response.raise_for_status()
    return np.array(times) * 1000


def predict_body(config: str, texts: dict[str, str], n_tasks: int, offset: int) -> dict:
    ids = list(texts)[offset : offset + n_tasks]
    return {
        "tasks": [{"id": i, "data": {"text": texts[d], "tnt_doc_id": d}} for i, d in enumerate(ids)],
        "project": f"{PROJECT}.1700000000",
        "label_config": config,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    with (DATA / "train.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[:: max(1, 10003 // args.documents)][: args.documents]

    print(f"backend /predict latency, {args.requests} sequential requests each, {os.cpu_count()} CPUs")
    print(f"{'source':<24}{'request':<14}{'p50 ms':>9}{'p95 ms':>9}{'p50 / health':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        for source, with_model in (("cached LLM labels", False), ("distilled embed-linear", True)):
            directory = Path(tmp) / source.split()[0]
            started = time.perf_counter()
            config, texts = build_workspace(directory, rows, with_model)
            built = time.perf_counter() - started
            with served(directory) as url, httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
                health = timed(client, "GET", "/health", None, args.requests)
                print(f"{source:<24}{'GET /health':<14}{np.percentile(health, 50):>9.1f}{np.percentile(health, 95):>9.1f}{1.0:>14.1f}")
                for n_tasks in (1, 20):
                    body = predict_body(config, texts, n_tasks, offset=0)
                    latency = timed(client, "POST", "/predict", body, args.requests)
                    p50, p95 = np.percentile(latency, 50), np.percentile(latency, 95)
                    ratio = p50 / np.percentile(health, 50)
                    print(f"{source:<24}{f'{n_tasks} task(s)':<14}{p50:>9.1f}{p95:>9.1f}{ratio:>14.1f}")
            print(f"  (workspace with {len(rows)} documents built in {built:.0f} s)")


if __name__ == "__main__":
    main()
