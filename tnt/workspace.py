"""The workspace: one project directory, one SQLite file holding all state.

``Workspace`` is the one entry point of the library. It owns the database connection and the schema
migrations; each pipeline stage owns its tables behind a store, reached from here: ``ws.documents``,
``ws.labels``, ``ws.taxonomies``, ``ws.models`` and ``ws.runs``.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlite_utils import Database

from tnt.runs import Run, RunStore, WorkspaceError
from tnt.schema import migrations

if TYPE_CHECKING:
    from tnt.corpus.ingest import IngestSummary
    from tnt.corpus.store import DocumentStore
    from tnt.distill.store import ModelStore
    from tnt.labels.store import LabelStore
    from tnt.taxonomy.store import TaxonomyStore

DB_NAME = "tnt.db"
WORKSPACE_ENV = "TNT_WORKSPACE"
BUSY_TIMEOUT_MS = 30_000  # how long a statement waits for another process's write lock
WRITE_WAIT_S = 600.0  # how long a write transaction waits to begin, trying again after each timeout


def default_workspace_dir() -> Path:
    return Path(os.environ.get(WORKSPACE_ENV, "."))


class Workspace:
    """A tnt project: ``<dir>/tnt.db`` plus artefacts (models, reports) in the same directory."""

    def __init__(self, directory: Path | str, db: Database):
        self.directory = Path(directory)
        self.db = db
        self.on_resume: Callable[[dict[str, Any]], None] | None = None  # told of the run a new run resumes
        self.last_run: Run | None = None  # the latest run started here (its stats say what it did)

    @contextmanager
    def write(self) -> Iterator[Database]:
        """A write transaction that takes the write lock at its start (``BEGIN IMMEDIATE``), waiting for
        other processes' writes, and commits at the end (rolls back on an exception). Inside another
        one it is a savepoint of that one.

        sqlite-utils' own transactions begin deferred: one that reads before it writes holds a snapshot
        that another process's commit makes stale, and then fails with "database is locked" at once,
        without waiting. Keep these transactions short: other processes wait while one is open.
        """
        if self.db.conn.in_transaction:
            with self.db.atomic():
                yield self.db
            return
        self._begin_immediate()
        try:
            yield self.db
        except BaseException:
            self.db.rollback()
            raise
        try:
            self.db.conn.execute("COMMIT")
        except BaseException:
            self.db.rollback()
            raise

    def _begin_immediate(self) -> None:
        """BEGIN IMMEDIATE; each try waits ``busy_timeout`` for the write lock, for WRITE_WAIT_S in all."""
        deadline = time.monotonic() + WRITE_WAIT_S
        while True:
            try:
                self.db.conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise WorkspaceError(
                        f"{self.path}: another process has held the write lock for over {WRITE_WAIT_S:.0f} s"
                    ) from exc

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
        path = directory / DB_NAME
        try:
            db = Database(path)
        except sqlite3.Error as exc:
            raise WorkspaceError(f"cannot open {path}: {exc}") from exc
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            db.enable_wal()
            db.execute("PRAGMA synchronous = NORMAL")
            workspace = cls(directory, db)
            if migrations.pending(db):
                with workspace.write():  # processes opening an old workspace at once migrate it once
                    migrations.apply(db)
        except sqlite3.Error as exc:
            db.close()
            raise WorkspaceError(f"{path} is not a usable tnt workspace database ({exc}); move it away or restore it") from exc
        return workspace

    @property
    def path(self) -> Path:
        return self.directory / DB_NAME

    def artefact_dir(self, name: str) -> Path:
        """A directory inside the workspace for files a stage writes (models, reports)."""
        path = self.directory / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def close(self) -> None:
        if "runs" in self.__dict__:
            self.runs.stop_heartbeats()
        self.db.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # The stages, each behind its own store (imported on first use: the CLI starts fast)

    @cached_property
    def runs(self) -> RunStore:
        return RunStore(self)

    @cached_property
    def documents(self) -> DocumentStore:
        from tnt.corpus.store import DocumentStore

        return DocumentStore(self)

    @cached_property
    def labels(self) -> LabelStore:
        from tnt.labels.store import LabelStore

        return LabelStore(self)

    @cached_property
    def taxonomies(self) -> TaxonomyStore:
        from tnt.taxonomy.store import TaxonomyStore

        return TaxonomyStore(self)

    @cached_property
    def models(self) -> ModelStore:
        from tnt.distill.store import ModelStore

        return ModelStore(self)

    @contextmanager
    def run(self, kind: str, params: dict[str, Any] | None = None) -> Iterator[Run]:
        """A run that is marked completed, or failed (with its stats so far) on an exception. When the
        latest run of the same kind and params was interrupted, this one resumes it: ``on_resume`` is told."""
        run = self.last_run = self.runs.start(kind, params)
        if run.resumes and self.on_resume:
            self.on_resume(run.resumes)
        try:
            yield run
        except KeyboardInterrupt:
            run.finish("interrupted")
            raise
        except BaseException:
            run.finish("failed")
            raise
        run.finish("completed")

    def ingest(self, paths: Iterable[str | Path], **options: Any) -> IngestSummary:
        """``tnt ingest``: documents into the corpus, and ``label_field`` values as human labels of a
        reference taxonomy version (see ``tnt.corpus.ingest.ingest`` for the options)."""
        from tnt.corpus.ingest import ingest
        from tnt.labels.imported import store_imported_labels

        return ingest(self, paths, label_sink=store_imported_labels, **options)


