"""Runs: every command that changes state is one run, with its parameters, outcome, stats and the
problems that did not stop it. Also the two things every stage shares: ``WorkspaceError`` and the
timestamp format."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tnt.workspace import Workspace


class WorkspaceError(Exception):
    """A workspace that cannot be opened or created; the message says why."""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


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
        return self.workspace.runs.issues(self.id)

    def finish(self, status: str) -> None:
        self.workspace.db["runs"].update(
            self.id,
            {"status": status, "finished_at": utc_now(), "stats": json.dumps(self.stats)},
        )


class RunStore:
    """The ``runs`` and ``run_issues`` tables: every command that changes state is one run."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.db = workspace.db

    def start(self, kind: str, params: dict[str, Any] | None = None) -> Run:
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
        return Run(self.workspace, run_id, kind)

    def get(self, run_id: str) -> dict[str, Any]:
        """One run by id or unique id prefix, with its params and stats decoded."""
        rows = list(self.db["runs"].rows_where("id = ? or id like ?", [run_id, f"{run_id}%"]))
        if len(rows) != 1:
            raise WorkspaceError(f"no single run matches {run_id!r} ({len(rows)} found)")
        row = rows[0]
        return {**row, "params": json.loads(row["params"]), "stats": json.loads(row["stats"])}

    def list(self, kind: str | None = None) -> list[dict[str, Any]]:
        where, args = ("kind = ?", [kind]) if kind else (None, None)
        return list(self.db["runs"].rows_where(where, args, order_by="started_at"))

    def last(self, kind: str | None = None) -> dict[str, Any] | None:
        runs = self.list(kind)
        return runs[-1] if runs else None

    def issues(self, run_id: str) -> list[dict[str, Any]]:
        return list(self.db["run_issues"].rows_where("run_id = ?", [run_id], order_by="id"))
