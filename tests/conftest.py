import os
from pathlib import Path

import pytest

from tests.llm_server import ScriptedLLMServer
from tnt.cli.quiet import QUIET_ENV, close_log
from tnt.paths import CACHE_ENV
from tnt.workspace import Workspace

REPO_ROOT = Path(__file__).resolve().parent.parent
BANKING77 = REPO_ROOT / "data" / "banking77"
# TNT_* variables that configure the test run itself (where Label Studio and Chromium are), not tnt.
TEST_SETTINGS = {"TNT_LABEL_STUDIO_BIN", "TNT_REQUIRE_LABEL_STUDIO", "TNT_CHROMIUM"}


@pytest.fixture(scope="session")
def tnt_cache(tmp_path_factory) -> Path:
    """One cache for the session: the ONNX export of the encoder is made once, not per test."""
    return tmp_path_factory.mktemp("tnt-cache")


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch, tnt_cache):
    """No test sees the user's tnt settings (TNT_MODEL, TNT_WORKSPACE, ...), cache or Hugging Face
    cache, and nothing may download: the encoder is a local package. What the CLI sets as it starts
    (quiet-library variables, the log handler) is undone after each test."""
    for name in [name for name in os.environ if name.startswith("TNT_") and name not in TEST_SETTINGS]:
        monkeypatch.delenv(name)
    monkeypatch.setenv(CACHE_ENV, str(tnt_cache))
    monkeypatch.setenv("HF_HOME", str(tnt_cache / "huggingface"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name, value in QUIET_ENV.items():
        monkeypatch.setenv(name, value)
    yield
    close_log()


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
