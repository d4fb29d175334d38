"""The workspace: one project directory, one SQLite file holding all state.

``Workspace`` is the one entry point of the library. It owns the database connection and the schema
migrations; each pipeline stage owns its tables behind a store, reached from here: ``ws.documents``,
``ws.labels``, ``ws.taxonomies``, ``ws.models`` and ``ws.runs``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
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


def default_workspace_dir() -> Path:
    return Path(os.environ.get(WORKSPACE_ENV, "."))


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
        """A run that is marked completed, or failed (with its stats so far) on an exception."""
        run = self.runs.start(kind, params)
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


