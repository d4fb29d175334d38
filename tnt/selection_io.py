"""Recorded selections and their files: the ``selections`` table and the id manifest (.txt), JSONL or
Parquet a selection is written as. ``tnt.select`` makes selections; this module stores, reads back
and writes them (``tnt.export`` writes its files with the same Parquet helpers)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tnt.corpus.store import DocumentStore
from tnt.runs import WorkspaceError

if TYPE_CHECKING:
    import pyarrow as pa

    from tnt.workspace import Workspace

OUTPUT_FORMATS = {".txt": "ids", ".ids": "ids", ".jsonl": "jsonl", ".parquet": "parquet"}
BATCH_SIZE = 1000


class SelectionError(WorkspaceError):
    """A selection that cannot be made as asked; the message says which rule and why."""


@dataclass
class EligibleDocument:
    doc_id: str
    label: str
    source: str
    tokens: int
    quality: float | None = None


def record_selection(workspace: Workspace, run_id: str, selected: list[EligibleDocument]) -> None:
    rows = ({"run_id": run_id, "position": position, **asdict(candidate)} for position, candidate in enumerate(selected))
    with workspace.write():
        workspace.db["selections"].insert_all(rows, batch_size=BATCH_SIZE)


def load_selection(workspace: Workspace, run_id: str | None = None) -> tuple[dict[str, Any], list[EligibleDocument]] | None:
    """A recorded selection (its run and its documents in output order); without a run id, the
    latest completed one, or None when there is none."""
    if run_id is None:
        completed = [run for run in workspace.runs.list("select") if run["status"] == "completed"]
        if not completed:
            return None
        run_id = completed[-1]["id"]
    run = workspace.runs.get(run_id)
    if run["kind"] != "select":
        raise SelectionError(f"run {run['id']} is a {run['kind']!r} run, not a selection")
    rows = workspace.db["selections"].rows_where("run_id = ?", [run["stats"].get("selection", run["id"])], order_by="position")
    fields = EligibleDocument.__dataclass_fields__
    return run, [EligibleDocument(**{k: row[k] for k in fields}) for row in rows]


def output_format(path: Path) -> str:
    try:
        return OUTPUT_FORMATS[path.suffix.lower()]
    except KeyError:
        raise SelectionError(
            f"{path}: unknown output format {path.suffix!r}; use .txt (ids), .jsonl or .parquet"
        ) from None


def write_selection(workspace: Workspace, selected: list[EligibleDocument], path: Path, fmt: str | None = None) -> Path:
    """Write ids (one per line), or the documents with label, quality and tokens as JSONL or Parquet.

    Written beside the target and renamed when complete, so a crash never leaves half a file.
    """
    fmt = fmt or output_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    if fmt == "ids":
        partial.write_text("".join(f"{c.doc_id}\n" for c in selected), encoding="utf-8")
    elif fmt == "jsonl":
        with partial.open("w", encoding="utf-8") as handle:
            for record in selection_records(workspace, selected):
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        write_parquet(partial, selection_records(workspace, selected), selection_schema())
    partial.replace(path)
    return path


def selection_records(workspace: Workspace, selected: list[EligibleDocument]) -> Iterator[dict[str, Any]]:
    """The selected documents with their text, label, label source, quality and tokens, in order."""
    documents = DocumentStore(workspace).iter_batches(BATCH_SIZE, ids=[c.doc_id for c in selected])
    for candidate, document in zip(selected, (doc for batch in documents for doc in batch), strict=True):
        yield {
            "id": candidate.doc_id,
            "text": document.text,
            "label": candidate.label,
            "label_source": candidate.source,
            "quality": candidate.quality,
            "tokens": candidate.tokens,
        }


def selection_schema() -> pa.Schema:
    """The columns of a selection written out (also the start of an exported dataset's)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.string()),
            ("text", pa.string()),
            ("label", pa.string()),
            ("label_source", pa.string()),
            ("quality", pa.float64()),
            ("tokens", pa.int64()),
        ]
    )


def write_parquet(path: Path, records: Iterable[dict[str, Any]], schema: pa.Schema) -> None:
    import pyarrow.parquet as pq

    with pq.ParquetWriter(path, schema) as writer:
        for batch in record_batches(records, schema):
            writer.write_batch(batch)


def record_batches(records: Iterable[dict[str, Any]], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Records as Arrow batches of ``BATCH_SIZE``, so memory stays bounded by a batch. The last batch
    may be empty: a file of no records still has its columns."""
    import pyarrow as pa

    batch: list[dict[str, Any]] = []
    for record in records:
        batch.append(record)
        if len(batch) == BATCH_SIZE:
            yield pa.RecordBatch.from_pylist(batch, schema=schema)
            batch = []
    yield pa.RecordBatch.from_pylist(batch, schema=schema)
