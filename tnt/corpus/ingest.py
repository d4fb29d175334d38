"""``ingest``: documents from files into the corpus (``tnt.corpus.store`` owns the ``documents`` table).

It streams JSON Lines, CSV/TSV, Parquet, Arrow and Hugging Face ``datasets`` directories in bounded
batches.

Import rules, in one place:

- A document's id is ``--id-field`` when given, else a hash of its text, so re-importing the same
  data adds nothing: a row whose id is already stored with the same text counts as "already present".
- A row that cannot be imported (malformed line, missing/empty/over-long text, invalid UTF-8, NUL,
  an id already holding another text, ...) is a ``Problem`` naming file, line/row and field. With
  ``on_error="skip"`` it is recorded in the run and the rest is imported (batches commit as they
  go, so an interrupted import resumes by re-running it); with ``on_error="fail"`` the first
  problem stops the run and the whole run is rolled back: nothing of it is written.
- ``--label-field`` values are staged with the documents' transactions and handed to a ``LabelSink``
  at the end; ``Workspace.ingest`` passes ``tnt.labels.imported.store_imported_labels``, which makes
  them human labels (origin ``import:<file>#<field>``) of a taxonomy version whose labels are the
  distinct imported values (reused when that version exists).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tnt.corpus.readers import (
    Fields,
    FileError,
    IngestError,
    Place,
    ReadRow,
    RowError,
    Source,
    describe_read_error,
    document_id,
    read_errors,
    read_rows,
    resolve_sources,
    to_read_row,
)
from tnt.corpus.store import chunks
from tnt.runs import Run, utc_now

if TYPE_CHECKING:
    from tnt.workspace import Workspace

__all__ = ["DEFAULT_MAX_CHARS", "FileSummary", "ImportedLabels", "IngestError", "IngestSummary", "LabelSink",
           "OnError", "Problem", "document_id", "ingest"]  # fmt: skip

DEFAULT_MAX_CHARS = 1_000_000
BATCH_ROWS = 1000
BATCH_CHARS = 8_000_000  # a batch of long documents is written early, so memory stays bounded
LEADING_FAILURES = 1000  # a file whose first this-many rows all fail is given up (wrong --text-field?)
ISSUES_KEPT = 20  # problems kept in the summary; the run record holds all of them

RowsReadCallback = Callable[[int], None]  # rows read since the last call
StagedLabels = Iterator[tuple[str, list[tuple[str, str]]]]  # (origin, a page of (doc_id, label))


@dataclass
class ImportedLabels:
    """Where a label sink put the imported labels."""

    taxonomy_version: int
    added: int
    already_present: int


class LabelSink(Protocol):
    """Stores labels read with ``--label-field``; the corpus stage itself owns only documents."""

    def __call__(self, run: Run, label_field: str, names: list[str], labels: StagedLabels) -> ImportedLabels: ...


class OnError(str, Enum):
    skip = "skip"
    fail = "fail"


# Documents, for every stage


@dataclass(frozen=True)
class Problem:
    place: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.place}: {self.message}"


# Importing


@dataclass
class FileSummary:
    name: str
    format: str
    rows_read: int = 0
    added: int = 0
    already_present: int = 0
    skipped: int = 0
    labeled: int = 0
    stopped: str | None = None  # why the rest of the file was not read


@dataclass
class IngestSummary:
    run_id: str
    files: list[FileSummary]
    issues: list[Problem]  # the first ISSUES_KEPT; the run record holds all
    issue_count: int = 0
    taxonomy_version: int | None = None
    taxonomy_labels: int = 0
    labels_added: int = 0
    labels_already_present: int = 0
    rolled_back: bool = False  # on_error="fail" stopped the run: the counts were not kept

    def total(self, name: str) -> int:
        return sum(getattr(summary, name) for summary in self.files)

    def stats(self) -> dict[str, Any]:
        names = ("rows_read", "added", "already_present", "skipped", "labeled")
        return {
            **{name: self.total(name) for name in names},
            "issues": self.issue_count,
            "taxonomy_version": self.taxonomy_version,
            "labels_added": self.labels_added,
            "labels_already_present": self.labels_already_present,
            "rolled_back": self.rolled_back,
            "files": [asdict(summary) for summary in self.files],
        }


class _Stop(Exception):
    """``on_error="fail"`` met a problem: unwinds (and rolls back) the run."""

    def __init__(self, problem: Problem):
        self.problem = problem


def ingest(
    workspace: Workspace,
    paths: Iterable[str | Path],
    *,
    text_field: str = "text",
    id_field: str | None = None,
    label_field: str | None = None,
    on_error: OnError | str = OnError.skip,
    max_chars: int = DEFAULT_MAX_CHARS,
    on_progress: RowsReadCallback | None = None,
    label_sink: LabelSink | None = None,
) -> IngestSummary:
    """Import documents (and optionally their labels) from files into the workspace.

    With ``label_field``, the values read are handed to ``label_sink`` once the documents are in
    (``Workspace.ingest`` passes the one that stores them as human labels of a taxonomy version).
    Raises ``IngestError`` for unusable paths (before anything is read) and, with ``on_error="fail"``,
    for the first bad row or file, after rolling the whole run back.
    """
    if label_field and label_sink is None:
        raise ValueError("label_field needs a label_sink to store the labels (Workspace.ingest passes one)")
    sources = resolve_sources(paths)
    on_error = OnError(on_error)
    fields = Fields(text_field, id_field, label_field)
    params = {"paths": [s.location for s in sources], "text_field": text_field, "id_field": id_field,
              "label_field": label_field, "on_error": on_error.value, "max_chars": max_chars}  # fmt: skip
    with workspace.run("ingest", params) as run:
        importer = _Importer(workspace, run, fields, on_error, max_chars, on_progress, label_sink)
        importer.import_all(sources)
        return importer.summary


class _Importer:
    def __init__(
        self,
        workspace: Workspace,
        run: Run,
        fields: Fields,
        on_error: OnError,
        max_chars: int,
        on_progress: RowsReadCallback | None,
        label_sink: LabelSink | None = None,
    ):
        self.workspace = workspace
        self.db = workspace.db
        self.run = run
        self.fields = fields
        self.on_error = on_error
        self.max_chars = max_chars
        self.on_progress = on_progress or (lambda rows: None)
        self.summary = IngestSummary(run.id, [], [])
        self.label_sink = label_sink
        self.staged_labels = _StagedLabels(workspace) if fields.label else None
        self.unrecorded: list[Problem] = []

    def import_all(self, sources: list[Source]) -> None:
        # skip: every batch commits on its own; fail: one transaction, rolled back by _Stop
        run_transaction = self.db.conn if self.on_error is OnError.fail else nullcontext()
        try:
            with run_transaction:
                for source in sources:
                    self._import_source(source)
        except BaseException as exc:
            self.summary.rolled_back = self.on_error is OnError.fail
            if isinstance(exc, _Stop):
                self.run.record_issue(exc.problem.place, exc.problem.message, exc.problem.field)
                raise IngestError(f"{exc.problem}", self.run.id) from None
            raise
        finally:
            self.record_problems()
            self.run.stats = self.summary.stats()  # also for a failed or interrupted run
        if self.staged_labels is not None:
            self._import_labels()
            self.run.stats = self.summary.stats()

    def batch_transaction(self) -> AbstractContextManager[Any]:
        return nullcontext() if self.on_error is OnError.fail else self.db.conn

    def _import_source(self, source: Source) -> None:
        file = FileSummary(source.name, source.format)
        self.summary.files.append(file)
        batch = _Batch(self, source, file)
        place = Place(source.name)
        try:
            for place, item in read_rows(source, self.fields, self.max_chars):
                file.rows_read += 1
                try:
                    if isinstance(item, RowError):
                        raise item
                    batch.add(to_read_row(item, self.fields, self.max_chars), place)
                except RowError as exc:
                    file.skipped += 1
                    self.problem(Problem(str(place), exc.field, exc.message))
                    if file.skipped >= LEADING_FAILURES and file.skipped == file.rows_read:
                        raise FileError(
                            f"its first {LEADING_FAILURES:,} rows all failed; check --text-field and the format"
                        ) from None
                if batch.full():
                    batch.flush()
            batch.flush()
        except (FileError, *read_errors()) as exc:
            batch.flush()
            where = f"{source.name} (stopped after {place.unit} {place.number})" if place.unit else source.name
            file.stopped = describe_read_error(exc)
            self.problem(Problem(where, "", file.stopped))
        if self.fields.label and file.labeled == 0 and file.added + file.already_present > 0:
            self.problem(Problem(source.name, self.fields.label, f"no row has a value in field {self.fields.label!r}"))

    def problem(self, problem: Problem) -> None:
        if self.on_error is OnError.fail:
            raise _Stop(problem)
        self.summary.issue_count += 1
        if len(self.summary.issues) < ISSUES_KEPT:
            self.summary.issues.append(problem)
        self.unrecorded.append(problem)

    def record_problems(self) -> None:
        """Written after a batch commits: record_issue commits too, and must not split a batch."""
        for problem in self.unrecorded:
            self.run.record_issue(problem.place, problem.message, problem.field)
        self.unrecorded.clear()

    def _import_labels(self) -> None:
        assert self.staged_labels is not None and self.label_sink is not None and self.fields.label
        names = self.staged_labels.names()
        if not names:
            return
        imported = self.label_sink(self.run, self.fields.label, names, self.staged_labels.pages())
        self.staged_labels.drop()
        self.summary.taxonomy_version = imported.taxonomy_version
        self.summary.taxonomy_labels = len(names)
        self.summary.labels_added = imported.added
        self.summary.labels_already_present = imported.already_present


class _Batch:
    """Up to BATCH_ROWS valid rows of one source, checked against the workspace and written together."""

    def __init__(self, importer: _Importer, source: Source, file: FileSummary):
        self.importer = importer
        self.db = importer.db
        self.source = source
        self.file = file
        self.rows: list[tuple[ReadRow, Place]] = []
        self.chars = 0
        self.reported = 0  # rows read when progress was last reported
        self.origin = f"import:{source.location}#{importer.fields.label}"

    def add(self, candidate: ReadRow, place: Place) -> None:
        self.rows.append((candidate, place))
        self.chars += len(candidate.text)

    def full(self) -> bool:
        # every BATCH_ROWS rows read, good or bad, so progress and recorded issues keep up too
        return self.file.rows_read % BATCH_ROWS == 0 or self.chars >= BATCH_CHARS

    def flush(self) -> None:
        if self.rows:
            with self.importer.batch_transaction():
                self._write()
        if self.importer.on_error is OnError.skip:
            self.importer.record_problems()
        self.importer.on_progress(self.file.rows_read - self.reported)
        self.reported = self.file.rows_read
        self.rows, self.chars = [], 0

    def _write(self) -> None:
        stored = self._stored([candidate.id for candidate, _ in self.rows])
        staged = self.importer.staged_labels
        labels = staged.get(self.origin, [c.id for c, _ in self.rows if c.label]) if staged else {}
        new_docs: list[tuple[Any, ...]] = []
        new_labels: list[tuple[str, str, str, str]] = []
        now = utc_now()
        for candidate, place in self.rows:
            try:
                prior = self._check_text(candidate, stored)
                self._check_label(candidate, labels)
            except RowError as exc:
                self.file.skipped += 1
                self.importer.problem(Problem(str(place), exc.field, exc.message))
                continue
            here = f"{self.source.location} {place.unit} {place.number}"
            if prior is None:
                stored[candidate.id] = (candidate.content_hash, here)
                new_docs.append(self._row(candidate, here, now))
                self.file.added += 1
            else:
                self.file.already_present += 1
            if candidate.label is not None:
                self.file.labeled += 1
                if candidate.id not in labels:
                    labels[candidate.id] = (candidate.label, str(place))
                    new_labels.append((self.origin, candidate.id, candidate.label, str(place)))
        self.db.conn.executemany(
            "insert into documents (id, text, meta, source, content_hash, n_chars, run_id, created_at) "
            "values (?, ?, ?, ?, ?, ?, ?, ?)",
            new_docs,
        )
        if staged and new_labels:
            staged.add(new_labels)

    def _stored(self, ids: list[str]) -> dict[str, tuple[str, str]]:
        """Content hash and source of the ids already in the workspace."""
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(f"select id, content_hash, source from documents where id in ({marks})", ids)
        return {doc_id: (digest, source) for doc_id, digest, source in rows}

    def _check_text(self, candidate: ReadRow, stored: dict[str, tuple[str, str]]) -> tuple[str, str] | None:
        prior = stored.get(candidate.id)
        if prior is not None and prior[0] != candidate.content_hash:
            field = self.importer.fields.id or self.importer.fields.text
            raise RowError(field, f"id {candidate.id!r} already holds a different text (from {prior[1]})")
        return prior

    def _check_label(self, candidate: ReadRow, labels: dict[str, tuple[str, str]]) -> None:
        prior = labels.get(candidate.id)
        if candidate.label is not None and prior is not None and prior[0] != candidate.label:
            raise RowError(
                self.importer.fields.label or "",
                f"label {candidate.label!r} contradicts label {prior[0]!r} given to the same document at {prior[1]}",
            )

    def _row(self, candidate: ReadRow, here: str, now: str) -> tuple[Any, ...]:
        return (candidate.id, candidate.text, candidate.meta, here, candidate.content_hash,
                len(candidate.text), self.importer.run.id, now)  # fmt: skip


class _StagedLabels:
    """Imported labels held in a temporary table until the run knows its taxonomy version.

    Staged rows share the document writes' transactions, so a rolled-back run stages nothing.
    """

    TABLE = "temp.tnt_ingest_labels"

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.db = workspace.db
        self.db.execute(f"drop table if exists {self.TABLE}")
        self.db.execute(
            f"create table {self.TABLE} (origin text, doc_id text, label text, place text, primary key (origin, doc_id))"
        )

    def get(self, origin: str, doc_ids: list[str]) -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        for chunk in chunks(doc_ids, 500):
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"select doc_id, label, place from {self.TABLE} where origin = ? and doc_id in ({marks})",
                [origin, *chunk],
            )
            found.update((doc_id, (label, place)) for doc_id, label, place in rows)
        return found

    def add(self, rows: list[tuple[str, str, str, str]]) -> None:
        self.db.conn.executemany(f"insert into {self.TABLE} values (?, ?, ?, ?)", rows)

    def names(self) -> list[str]:
        return [row[0] for row in self.db.execute(f"select distinct label from {self.TABLE} order by label")]

    def pages(self) -> StagedLabels:
        origins = [row[0] for row in self.db.execute(f"select distinct origin from {self.TABLE}")]
        for origin in origins:
            for page in self._staged(origin):
                yield origin, page

    def drop(self) -> None:
        self.db.execute(f"drop table {self.TABLE}")

    def _staged(self, origin: str) -> Iterator[list[tuple[str, str]]]:
        last = ""  # pages follow the (origin, doc_id) key, so each page is an index seek
        while rows := self.db.execute(
            f"select doc_id, label from {self.TABLE} where origin = ? and doc_id > ? order by doc_id limit ?",
            [origin, last, BATCH_ROWS],
        ).fetchall():
            last = rows[-1][0]
            yield rows


