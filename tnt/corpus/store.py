"""The ``documents`` table and the API every stage reads the corpus through: batches, lookups by id,
seeded samples, and the selection of document ids a command works on."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tnt.runs import WorkspaceError

if TYPE_CHECKING:
    from tnt.workspace import Workspace


def unique(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def select_documents(
    workspace: Workspace, *, sample: int | None = None, ids_file: Path | str | None = None, seed: int = 0
) -> list[str]:
    """Document ids to work on: a seeded sample of ``sample`` documents (the same seed gives the same
    documents, so rerunning a command resumes it), the ids listed in ``ids_file`` (one per line; blank
    lines and ``#`` comments skipped), or the whole corpus when neither is given."""
    if sample is not None and ids_file is not None:
        raise ValueError("give a sample size or an ids file, not both")
    store = DocumentStore(workspace)
    if not store.count():
        raise WorkspaceError("the workspace has no documents; add some with `tnt ingest`")
    if ids_file is not None:
        return _read_ids_file(Path(ids_file), set(store.ids()))
    if sample is not None:
        return [doc.id for doc in store.sample(sample, seed)]
    return store.ids()


def _read_ids_file(path: Path, known: set[str]) -> list[str]:
    ids, unknown = [], []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            doc_id = line.strip()
            if not doc_id or doc_id.startswith("#"):
                continue
            (ids if doc_id in known else unknown).append((number, doc_id))
    if unknown:
        shown = "; ".join(f"{path}:{number}: no document {doc_id!r}" for number, doc_id in unknown[:5])
        raise ValueError(f"{len(unknown)} ids in {path} are not in the workspace: {shown}")
    if not ids:
        raise ValueError(f"{path} lists no document ids")
    return unique(doc_id for _, doc_id in ids)


@dataclass(frozen=True)
class Document:
    id: str
    text: str


class DocumentStore:
    """Read access to the corpus. Batches come in import order; memory stays bounded by the batch."""

    def __init__(self, workspace: Workspace):
        self.db = workspace.db

    def count(self) -> int:
        return self.db["documents"].count

    def ids(self) -> list[str]:
        """Every document id, in import order."""
        return [row[0] for row in self.db.execute("select id from documents order by rowid")]

    def iter_batches(self, batch_size: int = 1000, ids: Sequence[str] | None = None) -> Iterator[list[Document]]:
        """All documents (``ids`` None) or the given ones in the given order, ``batch_size`` at a time."""
        if ids is not None:
            for start in range(0, len(ids), batch_size):
                yield self.get(ids[start : start + batch_size])
            return
        last = 0
        while True:
            rows = self.db.execute(
                "select rowid, id, text from documents where rowid > ? order by rowid limit ?", [last, batch_size]
            ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [Document(doc_id, text) for _, doc_id, text in rows]

    def get(self, ids: Sequence[str]) -> list[Document]:
        """The documents with these ids, in the same order; an unknown id is an error."""
        found: dict[str, str] = {}
        for chunk in chunks(list(dict.fromkeys(ids)), 500):
            marks = ",".join("?" * len(chunk))
            found.update(self.db.execute(f"select id, text from documents where id in ({marks})", chunk).fetchall())
        missing = [doc_id for doc_id in ids if doc_id not in found]
        if missing:
            shown = ", ".join(repr(doc_id) for doc_id in missing[:5])
            raise WorkspaceError(f"{len(missing)} unknown document id(s): {shown}")
        return [Document(doc_id, found[doc_id]) for doc_id in ids]

    def meta(self, ids: Sequence[str]) -> dict[str, str | None]:
        """Each document's metadata as ingested: JSON text of its row's other scalar fields, or None."""
        found: dict[str, str | None] = {}
        for chunk in chunks(unique(ids), 500):
            marks = ",".join("?" * len(chunk))
            found.update(self.db.execute(f"select id, meta from documents where id in ({marks})", chunk).fetchall())
        return found

    def sample(self, n: int, seed: int = 0) -> list[Document]:
        """``n`` documents chosen by a seeded hash of their ids: the same seed gives the same sample, and
        importing more documents keeps earlier members unless a new document ranks before them."""
        self.db.conn.create_function("tnt_sample_rank", 2, _sample_rank, deterministic=True)
        rows = self.db.execute(
            "select id from documents order by tnt_sample_rank(?, id), id limit ?", [seed, n]
        ).fetchall()
        return self.get([row[0] for row in rows])


def _sample_rank(seed: int, doc_id: str) -> int:
    digest = hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1  # SQLite integers are signed 64-bit


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
