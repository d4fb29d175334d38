from pathlib import Path

import pytest

from tests.llm_server import ScriptedLLMServer
from tnt.workspace import Workspace

REPO_ROOT = Path(__file__).resolve().parent.parent
BANKING77 = REPO_ROOT / "data" / "banking77"


@pytest.fixture(scope="session")
def banking77() -> dict[str, list[tuple[str, str]]]:
    """BANKING77 as {"train": [(text, category), ...], "test": [...]}."""
    import csv

    splits = {}
    for split in ("train", "test"):
        with open(BANKING77 / f"{split}.csv", newline="") as rows:
            splits[split] = [(row["text"], row["category"]) for row in csv.DictReader(rows)]
    return splits


@pytest.fixture
def workspace(tmp_path: Path):
    with Workspace.create(tmp_path / "ws") as ws:
        yield ws


@pytest.fixture
def llm_server():
    """Factory: ``server = llm_server(responder, latency_s=..., faults=Faults(...), seed=...)``,
    started on 127.0.0.1 (``server.url``) and stopped at teardown."""
    servers: list[ScriptedLLMServer] = []

    def start(responder, **options) -> ScriptedLLMServer:
        server = ScriptedLLMServer(responder, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
