"""The workspace: one project directory, one SQLite file holding all state.

``Workspace`` is the one entry point of the library. It owns the database connection, the schema
migrations and the record of runs; each pipeline stage owns its own tables and is reached through
the stage's API.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from tnt.schema import migrations

DB_NAME = "tnt.db"
WORKSPACE_ENV = "TNT_WORKSPACE"


class WorkspaceError(Exception):
    """A workspace that cannot be opened or created; the message says why."""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def default_workspace_dir() -> Path:
    return Path(os.environ.get(WORKSPACE_ENV, "."))


@dataclass
class Run:
    """One execution of a command that changes state: its parameters, outcome and issues."""

    workspace: Workspace
    id: str
    kind: str
    stats: dict[str, Any] = field(default_factory=dict)

    def record_issue(self, place: str, message: str, field: str = "") -> None:
        """Record a problem that did not stop the run (a skipped row, a failed document)."""
        self.workspace.db["run_issues"].insert(
            {
                "run_id": self.id,
                "place": place,
                "field": field,
                "message": message,
                "created_at": utc_now(),
            }
        )

    def issues(self) -> list[dict[str, Any]]:
        return self.workspace.run_issues(self.id)

    def finish(self, status: str) -> None:
        self.workspace.db["runs"].update(
            self.id,
            {"status": status, "finished_at": utc_now(), "stats": json.dumps(self.stats)},
        )


class Workspace:
    """A tnt project: ``<dir>/tnt.db`` plus artefacts (models, reports) in the same directory."""

    def __init__(self, directory: Path | str, db: Database):
        self.directory = Path(directory)
        self.db = db

    @classmethod
    def create(cls, directory: Path | str | None = None) -> Workspace:
        directory = Path(directory) if directory is not None else default_workspace_dir()
        directory.mkdir(parents=True, exist_ok=True)
        return cls._connect(directory)

    @classmethod
    def open(cls, directory: Path | str | None = None) -> Workspace:
        directory = Path(directory) if directory is not None else default_workspace_dir()
        if not (directory / DB_NAME).exists():
            raise WorkspaceError(
                f"no tnt workspace in {directory.resolve()} (no {DB_NAME}); "
                f"create one with `tnt init {directory}`"
            )
        return cls._connect(directory)

    @classmethod
    def _connect(cls, directory: Path) -> Workspace:
        db = Database(directory / DB_NAME)
        db.execute("PRAGMA busy_timeout = 30000")
        db.enable_wal()
        db.execute("PRAGMA synchronous = NORMAL")
        migrations.apply(db)
        return cls(directory, db)

    @property
    def path(self) -> Path:
        return self.directory / DB_NAME

    def artefact_dir(self, name: str) -> Path:
        """A directory inside the workspace for files a stage writes (models, reports)."""
        path = self.directory / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Runs

    def start_run(self, kind: str, params: dict[str, Any] | None = None) -> Run:
        run_id = uuid.uuid4().hex[:12]
        self.db["runs"].insert(
            {
                "id": run_id,
                "kind": kind,
                "params": json.dumps(params or {}, default=str),
                "status": "running",
                "started_at": utc_now(),
                "finished_at": None,
                "stats": "{}",
            }
        )
        return Run(self, run_id, kind)

    @contextmanager
    def run(self, kind: str, params: dict[str, Any] | None = None) -> Iterator[Run]:
        """A run that is marked completed, or failed (with its stats so far) on an exception."""
        run = self.start_run(kind, params)
        try:
            yield run
        except KeyboardInterrupt:
            run.finish("interrupted")
            raise
        except BaseException:
            run.finish("failed")
            raise
        run.finish("completed")

    def get_run(self, run_id: str) -> dict[str, Any]:
        rows = list(self.db["runs"].rows_where("id = ? or id like ?", [run_id, f"{run_id}%"]))
        if len(rows) != 1:
            raise WorkspaceError(f"no single run matches {run_id!r} ({len(rows)} found)")
        row = rows[0]
        return {**row, "params": json.loads(row["params"]), "stats": json.loads(row["stats"])}

    def runs(self, kind: str | None = None) -> list[dict[str, Any]]:
        where, args = ("kind = ?", [kind]) if kind else (None, None)
        return list(self.db["runs"].rows_where(where, args, order_by="started_at"))

    def last_run(self, kind: str | None = None) -> dict[str, Any] | None:
        runs = self.runs(kind)
        return runs[-1] if runs else None

    def run_issues(self, run_id: str) -> list[dict[str, Any]]:
        return list(self.db["run_issues"].rows_where("run_id = ?", [run_id], order_by="id"))

