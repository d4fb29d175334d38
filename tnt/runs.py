"""Runs: every command that changes state is one run, with its parameters, outcome, stats and the
problems that did not stop it. Also the two things every stage shares: ``WorkspaceError`` and the
timestamp format.

A run records the process that runs it (pid, host) and a heartbeat it refreshes while it lives. A run
still marked ``running`` whose process is gone (same host: the pid is not alive; another host: no
heartbeat for ``STALE_AFTER_S``) reads as ``interrupted`` and is marked so when first noticed; the next
run of the same kind and params records that it ``resumes`` it.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import threading
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tnt.workspace import Workspace

HEARTBEAT_S = 30.0
STALE_AFTER_S = 180.0  # a run on another host with no heartbeat this long is taken as dead
BEAT_WAIT_S = 5.0  # a beat that waits longer for the write lock is skipped (stop() need not wait long)


class WorkspaceError(Exception):
    """A workspace that cannot be opened or created; the message says why."""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def fingerprint(*parts: Any) -> str:
    """A short hash of what a result was made from (parameters, inputs), to find that result again."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


class Heartbeat:
    """Refreshes ``runs.heartbeat_at`` every ``HEARTBEAT_S`` from a thread of its own, on a connection
    of its own (a SQLite connection belongs to one thread), opened per beat and closed again."""

    def __init__(self, db_path: Path, run_id: str, interval_s: float = HEARTBEAT_S):
        self.db_path, self.run_id, self.interval_s = db_path, run_id, interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"tnt-heartbeat-{run_id}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stopped.wait(self.interval_s):
            try:  # mode=rw: a workspace deleted meanwhile is not created again
                with sqlite3.connect(f"file:{self.db_path}?mode=rw", uri=True, timeout=BEAT_WAIT_S) as conn:
                    conn.execute("update runs set heartbeat_at = ? where id = ?", [utc_now(), self.run_id])
                conn.close()
            except sqlite3.Error:
                continue  # a missed beat; the next one tries again

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


@dataclass
class Run:
    """One execution of a command that changes state: its parameters, outcome and issues."""

    workspace: Workspace
    id: str
    kind: str
    stats: dict[str, Any] = field(default_factory=dict)
    resumes: dict[str, Any] | None = None  # the interrupted run this one takes up again
    heartbeat: Heartbeat | None = field(default=None, repr=False)

    def record_issue(self, place: str, message: str, field: str = "") -> None:
        """Record a problem that did not stop the run (a skipped row, a failed document)."""
        with self.workspace.write() as db:
            db["run_issues"].insert(
                {"run_id": self.id, "place": place, "field": field, "message": message, "created_at": utc_now()}
            )

    def issues(self) -> list[dict[str, Any]]:
        return self.workspace.runs.issues(self.id)

    def finish(self, status: str) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
        with self.workspace.write() as db:
            db["runs"].update(self.id, {"status": status, "finished_at": utc_now(), "stats": json.dumps(self.stats)})


class RunStore:
    """The ``runs`` and ``run_issues`` tables: every command that changes state is one run."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.db = workspace.db
        self._live: list[Run] = []

    def start(self, kind: str, params: dict[str, Any] | None = None) -> Run:
        """A new ``running`` run; ``resumes`` is the latest run of the same kind and params when that one
        was interrupted."""
        run_id = uuid.uuid4().hex[:12]
        params_json = json.dumps(params or {}, default=str)
        now = utc_now()
        with self.workspace.write() as db:
            resumes = self._interrupted_twin(kind, params_json)
            db["runs"].insert(
                {
                    "id": run_id, "kind": kind, "params": params_json, "status": "running", "started_at": now,
                    "finished_at": None, "stats": "{}", "pid": os.getpid(), "host": socket.gethostname(),
                    "heartbeat_at": now, "resumes": resumes["id"] if resumes else None,
                }
            )  # fmt: skip
        run = Run(self.workspace, run_id, kind, resumes=resumes, heartbeat=Heartbeat(self.workspace.path, run_id))
        self._live.append(run)
        return run

    def _interrupted_twin(self, kind: str, params_json: str) -> dict[str, Any] | None:
        rows = self.db["runs"].rows_where(
            "kind = ? and params = ?", [kind, params_json], order_by="started_at desc", limit=1
        )
        latest = next((self._effective(row) for row in rows), None)
        return latest if latest and latest["status"] == "interrupted" else None

    def get(self, run_id: str) -> dict[str, Any]:
        """One run by id or unique id prefix, with its params and stats decoded."""
        rows = list(self.db["runs"].rows_where("id = ? or id like ?", [run_id, f"{run_id}%"]))
        if len(rows) != 1:
            raise WorkspaceError(f"no single run matches {run_id!r} ({len(rows)} found)")
        row = self._effective(rows[0])
        return {**row, "params": json.loads(row["params"]), "stats": json.loads(row["stats"])}

    def list(self, kind: str | None = None) -> list[dict[str, Any]]:
        where, args = ("kind = ?", [kind]) if kind else (None, None)
        return [self._effective(row) for row in self.db["runs"].rows_where(where, args, order_by="started_at")]

    def last(self, kind: str | None = None) -> dict[str, Any] | None:
        runs = self.list(kind)
        return runs[-1] if runs else None

    def issues(self, run_id: str) -> list[dict[str, Any]]:
        return list(self.db["run_issues"].rows_where("run_id = ?", [run_id], order_by="id"))

    def find_result(self, kind: str, inputs: str) -> dict[str, Any] | None:
        """The first completed run of ``kind`` whose stats record these ``inputs`` (a ``fingerprint``):
        the run that made that result (later ones found it)."""
        rows = self.db["runs"].rows_where(
            "kind = ? and status = 'completed' and json_extract(stats, '$.inputs') = ?",
            [kind, inputs], order_by="started_at", limit=1,
        )  # fmt: skip
        return next(iter(rows), None)

    def stop_heartbeats(self) -> None:
        """Stop the heartbeats of the runs started here and not finished (the workspace closes)."""
        for run in self._live:
            if run.heartbeat is not None:
                run.heartbeat.stop()
        self._live.clear()

    def _effective(self, row: dict[str, Any]) -> dict[str, Any]:
        """The row as it stands: a ``running`` run whose process is gone is ``interrupted``, and is
        marked so (``finished_at``: its last heartbeat, the last moment it was known alive)."""
        if row["status"] != "running" or not process_gone(row):
            return row
        finished = row["heartbeat_at"] or row["started_at"]
        self._mark_interrupted(row["id"], finished)
        return {**row, "status": "interrupted", "finished_at": finished}

    def _mark_interrupted(self, run_id: str, finished: str) -> None:
        """Inside a transaction, as part of it; else on a connection of its own that waits a moment at
        most: a reader (`tnt runs`) does not wait for another process's long write, the next reader marks it."""
        args = [finished, run_id]
        if self.db.conn.in_transaction:
            self.db.execute(MARK_INTERRUPTED, args)
            return
        try:
            with closing(sqlite3.connect(self.workspace.path, timeout=1.0)) as conn, conn:
                conn.execute(MARK_INTERRUPTED, args)
        except sqlite3.OperationalError:
            pass


MARK_INTERRUPTED = "update runs set status = 'interrupted', finished_at = ? where id = ? and status = 'running'"


def process_gone(row: dict[str, Any]) -> bool:
    """Whether the process that ran a ``running`` run is known to be gone (False when unknown)."""
    if row.get("pid") is None:
        return False  # recorded before runs knew their process
    if row["host"] == socket.gethostname():
        return not pid_alive(row["pid"])
    beat = datetime.fromisoformat(row["heartbeat_at"] or row["started_at"])
    return datetime.now(timezone.utc) - beat > timedelta(seconds=STALE_AFTER_S)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True
