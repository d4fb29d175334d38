"""Reading corpus files: paths to sources, sources to rows, rows to validated candidates.

Formats: JSON Lines, CSV/TSV (these three also gzipped), Parquet, Arrow IPC, and Hugging Face
``datasets`` directories. Every reader streams: memory is bounded by one line, one CSV record or one
record batch, never by the file. A reader yields ``(place, record)`` or ``(place, RowError)`` and
raises ``FileError`` for a problem that stops the whole file.
"""

from __future__ import annotations

import csv
import glob
import gzip
import hashlib
import json
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

RECORD_BATCH_ROWS = 1000
ID_HEX_CHARS = 24  # 96 bits of sha256: collisions are not expected, and would be reported as conflicts
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv",
           ".parquet": "parquet", ".arrow": "arrow"}  # fmt: skip
COMPRESSIBLE = {"jsonl", "csv", "tsv"}  # these may also end in .gz
_INVALID_UNICODE = re.compile("[\ud800-\udfff]")  # undecodable bytes (surrogateescape) or lone surrogates


class IngestError(Exception):
    """An import that cannot start (bad path) or was stopped by ``on_error="fail"``."""

    def __init__(self, message: str, run_id: str | None = None):
        super().__init__(message)
        self.run_id = run_id


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def document_id(text: str) -> str:
    """The id of a document imported without ``--id-field``: stable across runs, machines and versions."""
    return content_hash(text)[:ID_HEX_CHARS]


# Where things are, and what went wrong there


@dataclass(frozen=True)
class Source:
    """One input as the user named it: a file, or one split of a Hugging Face datasets directory."""

    name: str  # as given on the command line (plus /split), used in messages
    location: str  # absolute, recorded with each document and label
    format: str
    files: tuple[Path, ...]  # read in order; several for a sharded datasets directory


@dataclass(frozen=True)
class Place:
    source: str
    unit: str = ""  # "line" (text files, 1-based) or "row" (columnar files, 0-based like pandas/datasets)
    number: int | None = None

    def __str__(self) -> str:
        return f"{self.source} {self.unit} {self.number}" if self.unit else self.source


class RowError(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


class FileError(Exception):
    """A problem that stops reading a whole file (missing column, wrong column type, unreadable file)."""


@dataclass(frozen=True)
class Fields:
    text: str
    id: str | None
    label: str | None


# Resolving the paths given


def resolve_sources(paths: Iterable[str | Path]) -> list[Source]:
    """Files, globs (expanded here, so quoted globs work) and datasets directories, in the order given.

    Every problem with the paths is raised before anything is read, so a typo never half-imports.
    """
    sources: dict[str, Source] = {}
    for raw in map(str, paths):
        matches = sorted(glob.glob(raw, recursive=True)) if _is_glob(raw) else [raw]
        if not matches:
            raise IngestError(f"no files match {raw!r}")
        for match in matches:
            for source in _sources_at(Path(match)):
                sources.setdefault(source.location, source)
    if not sources:
        raise IngestError("no input files given")
    return list(sources.values())


def _is_glob(raw: str) -> bool:
    return any(char in raw for char in "*?[") and not Path(raw).exists()


def _sources_at(path: Path) -> list[Source]:
    if not path.exists():
        raise IngestError(f"{path}: no such file or directory")
    if path.is_dir():
        return _dataset_sources(path, str(path))
    return [Source(str(path), str(path.resolve()), _format_of(path), (path,))]


def _format_of(path: Path) -> str:
    suffixes = [suffix.lower() for suffix in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    fmt = FORMATS.get(suffixes[-2] if compressed and len(suffixes) > 1 else (suffixes[-1] if suffixes else ""))
    if fmt is None or (compressed and fmt not in COMPRESSIBLE):
        known = ", ".join(FORMATS) + " (text formats also .gz)"
        raise IngestError(f"{path}: unknown format; tnt reads {known} and Hugging Face datasets directories")
    return fmt


def _dataset_sources(directory: Path, name: str) -> list[Source]:
    """A ``save_to_disk`` directory: a Dataset (state.json) or a DatasetDict (one source per split)."""
    try:
        if (directory / "dataset_dict.json").exists():
            splits = json.loads((directory / "dataset_dict.json").read_text())["splits"]
            return [s for split in splits for s in _dataset_sources(directory / split, f"{name}/{split}")]
        if (directory / "state.json").exists():
            state = json.loads((directory / "state.json").read_text())
            files = tuple(directory / entry["filename"] for entry in state["_data_files"])
            return [Source(name, str(directory.resolve()), "arrow", files)]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IngestError(f"{name}: unreadable Hugging Face datasets directory ({exc!r})") from None
    raise IngestError(
        f"{name}: a directory must be a Hugging Face datasets directory (save_to_disk output, "
        "with state.json or dataset_dict.json); give files or a glob such as 'dir/*.jsonl' instead"
    )


# Readers: each yields (place, record or RowError) and raises FileError for a whole-file problem


Row = tuple[Place, "dict[str, Any] | RowError"]


def read_rows(source: Source, fields: Fields, max_chars: int) -> Iterator[Row]:
    readers = {"jsonl": _read_jsonl, "csv": _read_csv, "tsv": _read_csv, "parquet": _read_parquet, "arrow": _read_arrow}
    return readers[source.format](source, fields, max_chars)


def _open(path: Path, mode: str, **kwargs: Any) -> IO[Any]:
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    return opener(path, mode, **kwargs)


def _read_jsonl(source: Source, fields: Fields, max_chars: int) -> Iterator[Row]:
    # JSON escapes take up to 12 bytes per character (a surrogate pair), plus room for other fields
    max_line = 12 * max_chars + (1 << 20)
    with _open(source.files[0], "rb") as lines:
        for number, line in enumerate(_bounded_lines(lines, max_line), start=1):
            place = Place(source.name, "line", number)
            if line is None:
                yield place, RowError("", f"line is longer than {max_line:,} bytes (the limit follows --max-chars)")
            elif line.strip():
                yield place, _parse_json_line(line)


def _bounded_lines(stream: IO[bytes], max_line: int) -> Iterator[bytes | None]:
    """Lines of at most ``max_line`` bytes; None for a longer one, which is skipped without being held."""
    while line := stream.readline(max_line):
        if len(line) == max_line and not line.endswith(b"\n"):
            while (rest := stream.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
            yield None
        else:
            yield line


def _parse_json_line(line: bytes) -> dict[str, Any] | RowError:
    if line.startswith(b"\xef\xbb\xbf"):  # a byte-order mark, as some Windows tools write
        line = line[3:]
    try:
        record = json.loads(line.rstrip(b"\r\n").decode("utf-8", "surrogateescape"))
    except json.JSONDecodeError as exc:
        return RowError("", f"malformed JSON: {exc.msg} (column {exc.colno})")
    if not isinstance(record, dict):
        return RowError("", f"a line must hold a JSON object, not {_type_name(record)}")
    return record


def _read_csv(source: Source, fields: Fields, max_chars: int) -> Iterator[Row]:
    # Undecodable bytes become surrogates, so one bad byte costs one row, not the rest of the file.
    # The field size limit (process-wide) bounds memory when a stray quote swallows the file.
    csv.field_size_limit(max(16 * max_chars, 1 << 17))
    delimiter = "\t" if source.format == "tsv" else ","
    with _open(source.files[0], "rt", encoding="utf-8-sig", errors="surrogateescape", newline="") as text:
        reader = csv.reader(text, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return
        _require_columns(header, fields)
        while True:
            start = reader.line_num + 1  # a quoted field may span lines: report where the record starts
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield Place(source.name, "line", start), RowError("", f"malformed CSV: {exc}")
                continue
            if not values:
                continue
            place = Place(source.name, "line", start)
            if len(values) != len(header):
                yield place, RowError("", f"row has {len(values)} fields, the header has {len(header)}")
            else:
                yield place, dict(zip(header, values))


def _require_columns(columns: Sequence[str], fields: Fields) -> None:
    for name in (fields.text, fields.id, fields.label):
        if name is not None and name not in columns:
            raise FileError(f"no column {name!r} (columns: {', '.join(columns)})")


def _read_parquet(source: Source, fields: Fields, max_chars: int) -> Iterator[Row]:
    import pyarrow.parquet as pq

    with pq.ParquetFile(source.files[0]) as parquet:
        columns = _columns_to_read(parquet.schema_arrow, fields)
        batches = parquet.iter_batches(RECORD_BATCH_ROWS, columns=columns)
        yield from _read_record_batches(source, parquet.schema_arrow, batches, fields)


def _read_arrow(source: Source, fields: Fields, max_chars: int) -> Iterator[Row]:
    """Arrow IPC files: the shards of a datasets directory (stream format), or a .arrow file (either format)."""
    first_row = 0
    for path in source.files:
        with _ipc_batches(path) as (schema, batches):
            columns = _columns_to_read(schema, fields)
            selected = (batch.select(columns) for batch in batches)
            for place, item in _read_record_batches(source, schema, selected, fields, first_row):
                first_row = place.number + 1
                yield place, item


@contextmanager
def _ipc_batches(path: Path) -> Iterator[tuple[Any, Iterator[Any]]]:
    import pyarrow as pa

    with pa.OSFile(str(path)) as file:  # read sequentially, not memory-mapped, so memory stays flat
        try:
            reader = pa.ipc.open_stream(file)
            batches = iter(reader)
        except pa.ArrowInvalid:
            file.seek(0)
            reader = pa.ipc.open_file(file)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        yield reader.schema, batches


def _columns_to_read(schema: Any, fields: Fields) -> list[str]:
    """The columns tnt uses, after checking their types, plus scalar columns kept as metadata.

    Nested and binary columns (embeddings, images) are not read at all.
    """
    import pyarrow as pa

    _require_columns(schema.names, fields)
    wanted = {fields.text: "a string", fields.id: "a string or integer", fields.label: "a string or integer"}
    for name, expected in wanted.items():
        if name is not None and not _arrow_type_fits(schema.field(name).type, integers=name != fields.text):
            raise FileError(f"column {name!r} has type {schema.field(name).type}; it must be {expected}")
    scalar = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer, pa.types.is_floating,
              pa.types.is_boolean, pa.types.is_temporal, pa.types.is_decimal, pa.types.is_dictionary)  # fmt: skip
    return [f.name for f in schema if f.name in wanted or any(test(f.type) for test in scalar)]


def _arrow_type_fits(arrow_type: Any, integers: bool) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    is_string = (
        pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_string_view(arrow_type)
    )
    return is_string or (integers and pa.types.is_integer(arrow_type))


def _read_record_batches(
    source: Source, schema: Any, batches: Iterable[Any], fields: Fields, first_row: int = 0
) -> Iterator[Row]:
    names = _class_label_names(schema, fields.label)
    number = first_row
    for batch in batches:
        for record in batch.to_pylist():
            place = Place(source.name, "row", number)
            number += 1
            if names is not None and isinstance(record.get(fields.label), int):
                try:
                    record[fields.label] = _class_name(names, record[fields.label], fields.label)
                except RowError as exc:
                    yield place, exc
                    continue
            yield place, record


def _class_label_names(schema: Any, label_field: str | None) -> list[str] | None:
    """The names of a ``datasets`` ClassLabel column (stored as integers), from the schema's metadata."""
    metadata = (schema.metadata or {}).get(b"huggingface")
    if label_field is None or metadata is None:
        return None
    feature = json.loads(metadata).get("info", {}).get("features", {}).get(label_field, {})
    return feature.get("names") if feature.get("_type") == "ClassLabel" else None


def _class_name(names: list[str], value: int, field: str) -> str | None:
    if value == -1:  # datasets' "no label"
        return None
    if not 0 <= value < len(names):
        raise RowError(field, f"field {field!r} holds class {value}, outside the {len(names)} ClassLabel names")
    return names[value]


# Validating one record


@dataclass(frozen=True)
class ReadRow:
    id: str
    text: str
    content_hash: str
    label: str | None
    meta: str | None


def to_read_row(record: dict[str, Any], fields: Fields, max_chars: int) -> ReadRow:
    _check_unicode(record)
    text = _text(record, fields.text, max_chars)
    digest = content_hash(text)
    doc_id = _id(record, fields.id) if fields.id else digest[:ID_HEX_CHARS]
    label = _label(record, fields.label) if fields.label else None
    rest = {k: v for k, v in record.items() if k not in (fields.text, fields.id, fields.label)}
    meta = json.dumps(rest, ensure_ascii=False, default=str) if rest else None
    return ReadRow(doc_id, text, digest, label, meta)


def _check_unicode(record: dict[str, Any]) -> None:
    for name, value in record.items():
        if isinstance(value, str) and (bad := _INVALID_UNICODE.search(value)):
            raise RowError(name, f"field {name!r} is not valid UTF-8 (at character {bad.start() + 1:,})")


def _text(record: dict[str, Any], name: str, max_chars: int) -> str:
    text = _present(record, name)
    if not isinstance(text, str):
        raise RowError(name, f"field {name!r} must be a string, not {_type_name(text)}")
    if "\x00" in text:
        raise RowError(name, f"field {name!r} contains a NUL character (at character {text.index(chr(0)) + 1:,})")
    if not text.strip():
        raise RowError(name, f"field {name!r} is empty")
    if len(text) > max_chars:
        raise RowError(name, f"field {name!r} has {len(text):,} characters; the limit is {max_chars:,} (--max-chars)")
    return text


def _id(record: dict[str, Any], name: str) -> str:
    value = _present(record, name)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise RowError(name, f"field {name!r} must be a string or an integer, not {_type_name(value)}")
    if not value.strip():
        raise RowError(name, f"field {name!r} is empty")
    if "\x00" in value:
        raise RowError(name, f"field {name!r} contains a NUL character")
    return value


def _label(record: dict[str, Any], name: str) -> str | None:
    """The imported label; missing, null or blank means the row is unlabeled, not broken."""
    value = record.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if value is not None and not isinstance(value, str):
        raise RowError(name, f"field {name!r} must be a string or an integer, not {_type_name(value)}")
    if value is None or not value.strip():
        return None
    if "\x00" in value:
        raise RowError(name, f"field {name!r} contains a NUL character")
    return value.strip()


def _present(record: dict[str, Any], name: str) -> Any:
    if name not in record:
        raise RowError(name, f"missing field {name!r} (fields: {', '.join(record) or 'none'})")
    if record[name] is None:
        raise RowError(name, f"field {name!r} is null")
    return record[name]


def _type_name(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", list: "an array", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def read_errors() -> tuple[type[BaseException], ...]:
    """What reading a broken file raises (besides FileError): stops that file, not the import."""
    import pyarrow as pa

    return (OSError, EOFError, UnicodeDecodeError, csv.Error, zlib.error, pa.ArrowException)


def describe_read_error(exc: BaseException) -> str:
    if isinstance(exc, FileError):
        return str(exc)
    return f"unreadable: {exc}" if str(exc) else f"unreadable: {type(exc).__name__}"
