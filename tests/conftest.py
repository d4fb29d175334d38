from pathlib import Path

import pytest

from tnt.workspace import Workspace

REPO_ROOT = Path(__file__).resolve().parent.parent
BANKING77 = REPO_ROOT.parent / "shared" / "data" / "banking77"


@pytest.fixture
def workspace(tmp_path: Path):
    with Workspace.create(tmp_path / "ws") as ws:
        yield ws
