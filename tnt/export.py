"""Exports: the workspace's labels and selections in open formats, so the work is never locked in tnt.db.

``export_labels`` writes the current label per document and source (the newest live row, as
``LabelStore.current`` has it) for every taxonomy version, or one, with everything the label row
records of where it came from (run, model, prompt hash, origin, time). Quality scores (numeric labels
without a taxonomy version) are current per document, source and judge (the origin up to its first
':', ``ask-llm`` say), so the scores of two judges both come out. JSONL (stdlib) or Parquet (pyarrow).

``export_dataset`` writes a recorded selection as a Hugging Face ``datasets`` directory
(``Dataset.save_to_disk``; ``datasets.load_from_disk`` reads it back), in the selection's order.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tnt.corpus.store import DocumentStore
from tnt.labels.store import SOURCES, LabelStore
from tnt.runs import WorkspaceError
from tnt.selection_io import (
    BATCH_SIZE,
    load_selection,
    record_batches,
    selection_records,
    selection_schema,
    write_parquet,
)
from tnt.taxonomy.store import TaxonomyStore

if TYPE_CHECKING:
    import pyarrow as pa

    from tnt.selection_io import EligibleDocument
    from tnt.workspace import Workspace

LABEL_FORMATS = {".jsonl": "jsonl", ".parquet": "parquet"}
KINDS = ("labels", "quality", "all")
HIDDEN_COLUMNS = {"retracted_at"}  # always empty on a current label
DATASET_EXTRA = "export"  # the pyproject extra that installs `datasets`
DATASET_MARKER = "state.json"  # what Dataset.save_to_disk writes: --force replaces only such a directory


class ExportError(WorkspaceError):
    """An export that cannot be made as asked; the message says which argument and why."""


@dataclass
class LabelExport:
    out: Path | None  # None: written to a stream
    format: str
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (labels | quality, source) -> rows

    @property
    def rows(self) -> int:
        return sum(self.counts.values())


@dataclass
class DatasetExport:
    path: Path
    run_id: str
    taxonomy_version: int
    rows: int


# Labels


def label_format(path: Path | None, fmt: str | None) -> str:
    """The format asked for, or the one the file name says; JSONL when neither (a stream)."""
    if fmt is not None and fmt not in LABEL_FORMATS.values():
        raise ExportError(f"unknown format {fmt!r}; use jsonl or parquet")
    named = LABEL_FORMATS.get(path.suffix.lower()) if path is not None else None
    if path is not None and fmt is None and named is None:
        raise ExportError(
            f"{path}: cannot tell the format from the file name; name it .jsonl or .parquet, or give --format"
        )
    if fmt is not None and named is not None and fmt != named:
        raise ExportError(f"{path}: the name says {named}, but the format asked for is {fmt}")
    chosen = fmt or named or "jsonl"
    if chosen == "parquet" and path is None:
        raise ExportError("Parquet is written to a file, not to stdout: give -o FILE.parquet")
    return chosen


def current_labels(
    workspace: Workspace, kind: str = "all", taxonomy_version: int | None = None
) -> Iterator[dict[str, Any]]:
    """Current label rows: taxonomy labels by version, then source (llm, human, model); then quality
    scores by judge, then source. Within a group, in the order they were stored. The arguments are
    checked here, before the first row is read."""
    if kind not in KINDS:
        raise ExportError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    taxonomies = TaxonomyStore(workspace)
    versions = [taxonomies.get(taxonomy_version)] if taxonomy_version is not None else taxonomies.all()
    return _current_rows(
        workspace,
        [taxonomy.version for taxonomy in versions] if kind in ("labels", "all") else [],
        _quality_judges(workspace) if kind in ("quality", "all") else [],
    )


def _current_rows(workspace: Workspace, versions: list[int], judges: list[str | None]) -> Iterator[dict[str, Any]]:
    store = LabelStore(workspace)
    columns = [name for name in workspace.db["labels"].columns_dict if name not in HIDDEN_COLUMNS]
    for version in versions:
        for source in SOURCES:
            yield from _in_order(store.current(version, source).values(), columns)
    for judge in judges:
        for source in SOURCES:
            rows = store.current(None, source, origins_like=f"{judge}:%" if judge else None)
            yield from _in_order((row for row in rows.values() if _judge(row["origin"]) == judge), columns)


def _in_order(rows: Iterable[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    return [{name: row[name] for name in columns} for row in sorted(rows, key=lambda row: row["id"])]


def _judge(origin: str | None) -> str | None:
    return origin.partition(":")[0] if origin else None


def _quality_judges(workspace: Workspace) -> list[str | None]:
    origins = workspace.db.execute(
        "select distinct origin from labels where taxonomy_version is null and retracted_at is null"
    ).fetchall()
    return sorted({_judge(origin) for (origin,) in origins}, key=lambda judge: judge or "")


def export_labels(
    workspace: Workspace,
    out: Path | str | TextIO,
    fmt: str | None = None,
    kind: str = "all",
    taxonomy_version: int | None = None,
) -> LabelExport:
    """Write the current labels (``kind``: labels, quality or all) to a file or a text stream.

    A file is written beside its target and renamed when complete, so a failure never leaves half one.
    """
    path = Path(out) if isinstance(out, (str, Path)) else None
    result = LabelExport(out=path, format=label_format(path, fmt))
    rows = _counted(current_labels(workspace, kind, taxonomy_version), result.counts)
    if path is None:
        _write_jsonl(out, rows)  # type: ignore[arg-type]  # a stream
        return result
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        if result.format == "parquet":
            write_parquet(partial, rows, _label_schema(workspace))
        else:
            with partial.open("w", encoding="utf-8") as handle:
                _write_jsonl(handle, rows)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
    return result


def _counted(rows: Iterable[dict[str, Any]], counts: Counter[tuple[str, str]]) -> Iterator[dict[str, Any]]:
    for row in rows:
        counts["labels" if row["taxonomy_version"] is not None else "quality", row["source"]] += 1
        yield row


def _write_jsonl(handle: TextIO, rows: Iterable[dict[str, Any]]) -> None:
    handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _label_schema(workspace: Workspace) -> pa.Schema:
    """The labels table's columns, typed as stored; ``extra_labels`` is a list of strings."""
    import pyarrow as pa

    types = {str: pa.string(), int: pa.int64(), float: pa.float64()}
    columns = workspace.db["labels"].columns_dict
    return pa.schema(
        [
            (name, pa.list_(pa.string()) if name == "extra_labels" else types[kind])
            for name, kind in columns.items()
            if name not in HIDDEN_COLUMNS
        ]
    )


# Datasets


def export_dataset(
    workspace: Workspace, directory: Path | str, run_id: str | None = None, force: bool = False
) -> DatasetExport:
    """Write a selection (default: the latest) as a ``datasets`` directory: id, text, label,
    label_source, quality, tokens and meta (the document's metadata as JSON text), in order.

    Written beside the target and moved in place when complete; ``force`` replaces an earlier export
    there, and nothing else: a directory that is not a saved dataset is never deleted.
    """
    datasets = _import_datasets()
    directory = Path(directory)
    loaded = load_selection(workspace, run_id)
    if loaded is None:
        raise ExportError("the workspace has no selection yet; make one with `tnt select`")
    run, selected = loaded
    _check_target(directory, force)
    version = run["stats"]["taxonomy_version"]
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # what an interrupted export left
    partial.mkdir(parents=True)
    try:
        # Through an Arrow file on disk, which the dataset maps instead of holding it in memory.
        arrow_file = partial / "selection.arrow"
        _write_arrow(arrow_file, _dataset_records(workspace, selected), _dataset_schema())
        info = datasets.DatasetInfo(description=f"tnt selection {run['id']} (taxonomy version {version})")
        datasets.Dataset.from_file(str(arrow_file), info=info).save_to_disk(str(partial / "dataset"))
        if directory.exists():
            shutil.rmtree(directory)
        (partial / "dataset").replace(directory)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return DatasetExport(directory, run["id"], version, len(selected))


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise ExportError(
            f"exporting a dataset needs the `datasets` package: pip install 'tnt[{DATASET_EXTRA}]'"
        ) from None
    return datasets


def _check_target(directory: Path, force: bool) -> None:
    if not directory.exists():
        return
    if not directory.is_dir():
        raise ExportError(f"{directory} is a file, not a directory")
    if not any(directory.iterdir()):
        return
    if not force:
        raise ExportError(
            f"{directory} is not empty; choose another directory, or replace an earlier export there (--force)"
        )
    if not (directory / DATASET_MARKER).is_file():
        raise ExportError(
            f"{directory} is not empty and holds no saved dataset ({DATASET_MARKER}): "
            "it is not replaced, even when forced"
        )


def _dataset_records(workspace: Workspace, selected: list[EligibleDocument]) -> Iterator[dict[str, Any]]:
    documents = DocumentStore(workspace)
    records = selection_records(workspace, selected)
    for start in range(0, len(selected), BATCH_SIZE):
        batch = selected[start : start + BATCH_SIZE]
        meta = documents.meta([c.doc_id for c in batch])
        for record in islice(records, len(batch)):
            yield {**record, "meta": meta[record["id"]]}


def _dataset_schema() -> pa.Schema:
    import pyarrow as pa

    return selection_schema().append(pa.field("meta", pa.string()))  # meta: JSON text, its keys vary


def _write_arrow(path: Path, records: Iterable[dict[str, Any]], schema: pa.Schema) -> None:
    """An Arrow stream file, the format ``datasets`` keeps its tables in."""
    import pyarrow as pa

    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for batch in record_batches(records, schema):
            writer.write_batch(batch)
