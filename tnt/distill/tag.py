"""Bulk tagging: a distilled model over files (Parquet out) or over the workspace's own documents.

``tag_files`` streams each input shard (a JSONL/CSV/Parquet/Arrow file, or a datasets split) through
the model in chunks and writes one Parquet file per shard: ``id``, ``label``, ``probability``,
``top_k`` (``labels`` too for multi-label models; ``score`` for score models). A reader thread
parses the next chunk while the model works on the current one; inside a chunk the encoder batches
texts of similar length (``tnt.distill.encoders``). Memory is bounded by a few chunks.

Resumable per shard: output goes to a hidden temporary name and is renamed when the shard is
complete, so a restart skips finished shards and redoes only the interrupted one. A manifest in the
output directory pins the model and settings, so a restart with another model cannot mix results.

``tag_files_ray`` runs the same model on Ray Data (``read_parquet``/``read_json`` → ``map_batches``
on an actor pool, a GPU per actor when the cluster has them → ``write_parquet``). ``tag_corpus``
tags the workspace's documents and stores the results as labels with source ``model``.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tnt.corpus.readers import (
    Fields,
    FileError,
    RowError,
    Source,
    document_id,
    read_errors,
    read_rows,
    resolve_sources,
    to_read_row,
)  # fmt: skip
from tnt.distill.model import CascadeClassifier, TextModel
from tnt.labels.store import LabelRecord, LabelStore

if TYPE_CHECKING:
    from tnt.workspace import Workspace

CHUNK_DOCS = 4096
MANIFEST = "_tnt_tag.json"
MAX_CHARS = 1_000_000
TaggedCallback = Callable[[int], None]  # documents tagged since the last call


class TagError(Exception):
    """Tagging that cannot go on (bad input row, an output directory of another model); says where."""


@dataclass
class TagSummary:
    documents: int = 0
    shards_done: list[str] = field(default_factory=list)
    shards_skipped: list[str] = field(default_factory=list)  # complete from an earlier run
    seconds: float = 0.0
    out_dir: str | None = None
    routes: dict[str, Any] | None = None  # a cascade's documents per path: cheap tier, encoder tier

    def count_routes(self, model: TextModel, before: dict[str, int] | None = None) -> None:
        """The documents of this run that took each path of a cascade (``before``: its counts at the start)."""
        if isinstance(model, CascadeClassifier):
            counts = {path: model.routes[path] - (before or {}).get(path, 0) for path in model.routes}
            total = sum(counts.values())
            self.routes = {**counts, "encoder_share": round(counts["encoder"] / total, 4) if total else None}

    @property
    def docs_per_s(self) -> float:
        return self.documents / self.seconds if self.seconds else 0.0


# Results as Arrow


def result_table(model: TextModel, ids: Sequence[str], probabilities: np.ndarray, top_k: int) -> pa.Table:
    """The output rows for one chunk, built column-wise (no Python loop per document)."""
    if model.task == "score":
        return pa.table({"id": pa.array(ids, pa.string()), "score": pa.array(probabilities[:, 0], pa.float64())})
    labels = np.array(model.labels, dtype=object)
    k = min(top_k, probabilities.shape[1])
    ranked = np.argsort(-probabilities, axis=1)[:, :k]
    ranked_p = np.take_along_axis(probabilities, ranked, axis=1).astype(np.float32)
    offsets = pa.array(np.arange(0, len(ids) * k + 1, k, dtype=np.int32))
    entries = pa.StructArray.from_arrays(
        [pa.array(labels[ranked.ravel()], pa.string()), pa.array(ranked_p.ravel(), pa.float32())], ["label", "probability"]
    )
    columns = {
        "id": pa.array(ids, pa.string()),
        "label": pa.array(labels[ranked[:, 0]], pa.string()),
        "probability": pa.array(ranked_p[:, 0], pa.float32()),
        "top_k": pa.ListArray.from_arrays(offsets, entries),
    }
    if model.task == "multi":
        columns["labels"] = pa.array(model.decide(probabilities), pa.list_(pa.string()))
    return pa.table(columns)


# Files → Parquet, one shard at a time


def tag_files(
    model: TextModel,
    inputs: Sequence[str | Path],
    out_dir: Path | str,
    *,
    text_field: str = "text",
    id_field: str | None = None,
    top_k: int = 3,
    chunk_docs: int = CHUNK_DOCS,
    on_progress: TaggedCallback | None = None,
) -> TagSummary:
    """Tag every input shard into ``out_dir``; shards completed by an earlier run are skipped."""
    sources = resolve_sources(inputs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_manifest(out_dir, {"model": model.fingerprint(), "text_field": text_field, "id_field": id_field, "top_k": top_k})
    fields = Fields(text_field, id_field, None)
    summary = TagSummary(out_dir=str(out_dir))
    started = time.perf_counter()
    routes_before = dict(model.routes) if isinstance(model, CascadeClassifier) else None
    for source in sources:
        target = out_dir / shard_name(source)
        if target.exists():
            summary.shards_skipped.append(target.name)
            continue
        summary.documents += _tag_shard(model, source, fields, target, top_k, chunk_docs, on_progress)
        summary.shards_done.append(target.name)
    summary.seconds = time.perf_counter() - started
    summary.count_routes(model, routes_before)
    return summary


def shard_name(source: Source) -> str:
    """One output file per input, named after it; the hash keeps same-named inputs apart."""
    stem = Path(source.name).name.split(".")[0] or "shard"
    return f"{stem}-{hashlib.sha1(source.location.encode()).hexdigest()[:8]}.parquet"


def _check_manifest(out_dir: Path, settings: dict[str, Any]) -> None:
    path = out_dir / MANIFEST
    if path.exists():
        found = json.loads(path.read_text())
        if found != settings:
            raise TagError(
                f"{out_dir} holds results of another model or other settings ({found}); "
                "give another --out, or delete it to start over"
            )
    else:
        path.write_text(json.dumps(settings, indent=2))


def _tag_shard(
    model: TextModel, source: Source, fields: Fields, target: Path, top_k: int, chunk_docs: int,
    on_progress: TaggedCallback | None,
) -> int:  # fmt: skip
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)  # left by an interrupted run
    count = 0
    writer: pq.ParquetWriter | None = None
    try:
        for ids, texts in prefetched(_chunks(source, fields, chunk_docs)):
            table = result_table(model, ids, model.predict_proba(texts), top_k)
            writer = writer or pq.ParquetWriter(partial, table.schema)
            writer.write_table(table)
            count += len(ids)
            if on_progress:
                on_progress(len(ids))
        if writer is None:  # an empty shard still gets its (empty) output, so a restart skips it
            empty = result_table(model, [], np.zeros((0, max(len(model.labels), 1))), top_k)
            writer = pq.ParquetWriter(partial, empty.schema)
        writer.close()
        writer = None
        os.replace(partial, target)
    finally:
        if writer is not None:
            writer.close()
    return count


def _chunks(source: Source, fields: Fields, chunk_docs: int) -> Iterator[tuple[list[str], list[str]]]:
    ids: list[str] = []
    texts: list[str] = []
    try:
        for place, record in read_rows(source, fields, MAX_CHARS):
            try:
                if isinstance(record, RowError):
                    raise record
                candidate = to_read_row(record, fields, MAX_CHARS)
            except RowError as problem:
                raise TagError(f"{place}: {problem.message}") from None
            ids.append(candidate.id)
            texts.append(candidate.text)
            if len(ids) >= chunk_docs:
                yield ids, texts
                ids, texts = [], []
    except (FileError, *read_errors()) as exc:
        raise TagError(f"{source.name}: {exc}") from None
    if ids:
        yield ids, texts


def prefetched(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Run ``items`` in a reader thread, at most ``depth`` ahead (parsing overlaps with the model)."""
    buffer: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(("end", None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            buffer.put(("error", exc))

    reader = threading.Thread(target=produce, daemon=True)
    reader.start()
    try:
        while True:
            kind, value = buffer.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        reader.join(timeout=5)


# The workspace's documents → labels


def tag_corpus(
    workspace: Workspace, model_id: str, *, chunk_docs: int = CHUNK_DOCS, device: str | None = None,
    on_progress: TaggedCallback | None = None,
) -> TagSummary:  # fmt: skip
    """Label every workspace document with a registered model (source ``model``, origin ``model:<id>``).

    Resumable: documents that already carry a label from this model are skipped.
    """
    from tnt.corpus.store import DocumentStore
    from tnt.distill.store import ModelStore

    info = ModelStore(workspace).get(model_id)
    model = TextModel.load(info.path, device)
    origin = f"model:{info.id}"
    done = set(LabelStore(workspace).current(info.taxonomy_version, "model", origins_like=origin))
    todo = [doc_id for doc_id in DocumentStore(workspace).ids() if doc_id not in done]
    summary = TagSummary(shards_skipped=[f"{len(done)} documents already tagged"] if done else [])
    started = time.perf_counter()
    with workspace.run("tag", {"model": info.id}) as run:  # the same params after an interruption: it resumes
        for batch in DocumentStore(workspace).iter_batches(chunk_docs, ids=todo):  # SQLite: this thread only
            predictions = model.tag([doc.text for doc in batch])
            LabelStore(workspace).add(
                LabelRecord(
                    doc.id, "model", p.label, info.taxonomy_version, extra_labels=p.extra_labels, score=p.score,
                    confidence=p.confidence, origin=origin, run_id=run.id, model=info.id,
                )  # fmt: skip
                for doc, p in zip(batch, predictions)
            )
            summary.documents += len(batch)
            if on_progress:
                on_progress(len(batch))
        summary.seconds = time.perf_counter() - started
        summary.count_routes(model)  # loaded for this run: every count is this run's
        run.stats = {"model": info.id, "documents": summary.documents, "docs_per_s": round(summary.docs_per_s, 1),
                     **({"routes": summary.routes} if summary.routes else {})}  # fmt: skip
    return summary


# Ray Data


class RayTagger:
    """One actor of the pool: loads the model once, then tags Arrow batches."""

    def __init__(self, model_dir: str, text_field: str, id_field: str | None, top_k: int, threads: int):
        self.model = TextModel.load(model_dir, threads=threads)  # no more threads than the actor's CPUs
        self.text_field, self.id_field, self.top_k = text_field, id_field, top_k

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column(self.text_field).to_pylist()
        if self.id_field:
            ids = [str(value) for value in batch.column(self.id_field).to_pylist()]
        else:
            ids = [document_id(text) for text in texts]
        return result_table(self.model, ids, self.model.predict_proba(texts), self.top_k)


def tag_files_ray(
    model_dir: Path | str,
    inputs: Sequence[str | Path],
    out_dir: Path | str,
    *,
    text_field: str = "text",
    id_field: str | None = None,
    top_k: int = 3,
    batch_docs: int = CHUNK_DOCS,
    actors: int | None = None,
    cpus_per_actor: float = 1.0,
    address: str | None = None,
) -> TagSummary:
    """The same job on Ray Data: connects to ``address`` (or starts a local Ray) and writes Parquet.

    One actor per GPU when the cluster has GPUs (each actor takes one), else ``actors`` CPU actors
    (default: all CPUs but one, which stays free for the read and write tasks; an actor pool holding
    every CPU would starve them).
    """
    import ray

    sources = resolve_sources(inputs)
    started = time.perf_counter()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    columns = [text_field, *([id_field] if id_field else [])]
    dataset = _ray_dataset(sources, columns)
    pool = gpus or actors or max(1, int(ray.cluster_resources().get("CPU", 1) / cpus_per_actor) - 1)
    tagged = dataset.map_batches(
        RayTagger,
        fn_constructor_kwargs={"model_dir": str(Path(model_dir).resolve()), "text_field": text_field,
                               "id_field": id_field, "top_k": top_k, "threads": max(1, int(cpus_per_actor))},
        batch_size=batch_docs, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=pool),
        num_gpus=1 if gpus else 0, num_cpus=cpus_per_actor,
    )  # fmt: skip
    tagged.write_parquet(str(out_dir))
    seconds = time.perf_counter() - started
    documents = sum(pq.ParquetFile(path).metadata.num_rows for path in Path(out_dir).glob("*.parquet"))
    return TagSummary(documents=documents, shards_done=[s.name for s in sources], seconds=seconds, out_dir=str(out_dir))


def _ray_dataset(sources: list[Source], columns: list[str]) -> Any:
    import ray

    by_format: dict[str, list[str]] = {}
    for source in sources:
        by_format.setdefault(source.format, []).extend(str(path) for path in source.files)
    unsupported = set(by_format) - {"parquet", "jsonl"}
    if unsupported:
        raise TagError(f"--engine ray reads Parquet and JSON Lines, not {', '.join(sorted(unsupported))}")
    parts = []
    if "parquet" in by_format:
        parts.append(ray.data.read_parquet(by_format["parquet"]).select_columns(columns))
    if "jsonl" in by_format:
        parts.append(ray.data.read_json(by_format["jsonl"], lines=True).select_columns(columns))
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])
