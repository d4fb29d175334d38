"""Corpus import: formats, ids, idempotency, every kind of bad input, labels, and the CLI."""

from __future__ import annotations

import csv
import gzip
import json
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.conftest import BANKING77
from tnt.cli import app
from tnt.corpus.ingest import BATCH_ROWS, IngestError, document_id, ingest
from tnt.corpus.store import DocumentStore
from tnt.labels.store import LabelStore
from tnt.runs import WorkspaceError
from tnt.taxonomy.store import TaxonomyStore
from tnt.workspace import Workspace


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def texts(ws: Workspace) -> list[str]:
    return [doc.text for batch in DocumentStore(ws).iter_batches() for doc in batch]


def issues(ws: Workspace, run_id: str) -> list[tuple[str, str, str]]:
    return [(i["place"], i["field"], i["message"]) for i in ws.runs.issues(run_id)]


def banking77_head(tmp_path: Path, rows: int) -> Path:
    with open(BANKING77 / "train.csv", newline="") as src, open(tmp_path / "banking.csv", "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerows(islice(csv.reader(src), rows + 1))
    return tmp_path / "banking.csv"


# Formats, ids, idempotency


def test_jsonl_documents_get_content_hash_ids_and_keep_other_fields_as_metadata(workspace, tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "first", "lang": "en"}, {"text": "second"}])
    summary = workspace.ingest([path])
    assert (summary.total("rows_read"), summary.total("added"), summary.issue_count) == (2, 2, 0)
    row = next(workspace.db["documents"].rows_where("id = ?", [document_id("first")]))
    assert json.loads(row["meta"]) == {"lang": "en"}
    assert row["source"] == f"{path.resolve()} line 1" and row["run_id"] == summary.run_id


def test_the_content_hash_id_is_stable():
    # Changing the scheme would orphan every label of every existing workspace
    assert document_id("hello world") == "b94d27b9934d3e08a52e52d7"
    assert document_id("hello world ") != document_id("hello world")


def test_reimporting_adds_nothing_twice(workspace, tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "one"}, {"text": "two"}, {"text": "one"}])
    first = workspace.ingest([path])
    assert (first.total("added"), first.total("already_present")) == (2, 1)  # the repeat inside the file
    second = workspace.ingest([path])
    assert (second.total("added"), second.total("already_present"), second.issue_count) == (0, 3, 0)
    assert DocumentStore(workspace).count() == 2


def test_id_field_accepts_strings_and_integers(workspace, tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"id": "a-1", "body": "x"}, {"id": 7, "body": "y"}])
    workspace.ingest([path], text_field="body", id_field="id")
    assert DocumentStore(workspace).ids() == ["a-1", "7"]


def test_csv_with_quoted_newlines_reports_the_line_where_a_later_record_starts(workspace, tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('text,category\n"two\nlines",a\n"three\nmore\nlines",b\n"",c\nlast,d\n')
    summary = workspace.ingest([path])
    assert sorted(texts(workspace)) == ["last", "three\nmore\nlines", "two\nlines"]
    assert issues(workspace, summary.run_id) == [(f"{path} line 7", "text", "field 'text' is empty")]


def test_tsv_and_gzipped_jsonl(workspace, tmp_path):
    (tmp_path / "a.tsv").write_text("id\ttext\n1\ttab separated\n")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as out:
        out.write('{"text": "compressed"}\n')
    summary = workspace.ingest([tmp_path / "a.tsv", tmp_path / "b.jsonl.gz"])
    assert summary.total("added") == 2 and sorted(texts(workspace)) == ["compressed", "tab separated"]


def test_parquet_is_read_in_batches_with_integer_ids(workspace, tmp_path):
    n = BATCH_ROWS * 2 + 5
    table = pa.table({"id": list(range(n)), "text": [f"doc {i}" for i in range(n)], "vec": [[0.1, 0.2]] * n})
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=700)
    summary = workspace.ingest([tmp_path / "a.parquet"], id_field="id")
    assert summary.total("added") == n
    assert DocumentStore(workspace).get(["2004"])[0].text == "doc 2004"
    assert workspace.db["documents"].get("0")["meta"] is None  # nested columns (embeddings) are not read


@pytest.mark.parametrize("writer", [pa.ipc.new_stream, pa.ipc.new_file])
def test_arrow_ipc_files_in_either_format(workspace, tmp_path, writer):
    table = pa.table({"text": ["one", "two"], "score": [0.5, 0.7]})
    with writer(str(tmp_path / "a.arrow"), table.schema) as out:
        out.write_table(table, max_chunksize=1)
    summary = workspace.ingest([tmp_path / "a.arrow"])
    assert summary.total("added") == 2 and texts(workspace) == ["one", "two"]
    assert json.loads(workspace.db["documents"].get(document_id("two"))["meta"]) == {"score": 0.7}


def test_globs_expand_in_order_and_a_glob_matching_nothing_is_an_error(workspace, tmp_path):
    for name in ("b", "a", "c"):
        write_jsonl(tmp_path / f"{name}.jsonl", [{"text": f"from {name}"}])
    summary = workspace.ingest([str(tmp_path / "*.jsonl"), tmp_path / "a.jsonl"])  # a.jsonl only once
    assert [f.name for f in summary.files] == [str(tmp_path / f"{n}.jsonl") for n in "abc"]
    assert texts(workspace) == ["from a", "from b", "from c"]
    with pytest.raises(IngestError, match=r"no files match '.*\*\.csv'"):
        workspace.ingest([str(tmp_path / "*.csv")])
    assert len(workspace.runs.list("ingest")) == 1  # nothing started


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing.jsonl", "no such file"),
        ("data.xlsx", "unknown format"),
        ("plain_dir", "must be a Hugging Face datasets directory"),
    ],
)
def test_unusable_paths_fail_before_anything_is_read(workspace, tmp_path, name, message):
    good = write_jsonl(tmp_path / "good.jsonl", [{"text": "ok"}])
    (tmp_path / "data.xlsx").write_bytes(b"PK")
    (tmp_path / "plain_dir").mkdir()
    with pytest.raises(IngestError, match=message):
        workspace.ingest([good, tmp_path / name])
    assert DocumentStore(workspace).count() == 0


def test_huggingface_datasets_directories_with_class_labels_and_splits(workspace, tmp_path):
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    train = datasets.Dataset.from_dict({"text": ["bad film", "great film", "unlabeled"], "label": [0, 1, -1]}, features)
    test = datasets.Dataset.from_dict({"text": ["fine film"], "label": [1]}, features)
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(tmp_path / "movies")
    summary = workspace.ingest([tmp_path / "movies"], label_field="label")
    assert [f.name for f in summary.files] == [f"{tmp_path / 'movies'}/train", f"{tmp_path / 'movies'}/test"]
    assert summary.total("added") == 4 and summary.labels_added == 3
    current = LabelStore(workspace).current(summary.taxonomy_version, "human")
    assert {DocumentStore(workspace).get([d])[0].text: row["label"] for d, row in current.items()} == {
        "bad film": "neg", "great film": "pos", "fine film": "pos"
    }  # fmt: skip
    train.save_to_disk(tmp_path / "single")  # a Dataset, not a DatasetDict
    assert workspace.ingest([tmp_path / "single"]).total("already_present") == 3


# Bad input: every kind names file, line/row and field, and the good rows land


BAD_JSONL_LINES = {
    "malformed JSON": (b'{"text": "oops"', "", "malformed JSON: Expecting ',' delimiter (column 16)"),
    "not an object": (b'["text"]', "", "a line must hold a JSON object, not an array"),
    "missing text": (b'{"body": "x"}', "text", "missing field 'text' (fields: body)"),
    "null text": (b'{"text": null}', "text", "field 'text' is null"),
    "number text": (b'{"text": 42}', "text", "field 'text' must be a string, not an integer"),
    "list text": (b'{"text": ["a"]}', "text", "field 'text' must be a string, not an array"),
    "empty text": (b'{"text": "  \\n "}', "text", "field 'text' is empty"),
    "invalid UTF-8": (b'{"text": "caf\xe9"}', "text", "field 'text' is not valid UTF-8 (at character 4)"),
    "invalid UTF-8 elsewhere": (b'{"text": "ok", "src": "\xff"}', "src", "field 'src' is not valid UTF-8"),
    "lone surrogate": (b'{"text": "a\\ud800"}', "text", "field 'text' is not valid UTF-8 (at character 2)"),
    "NUL": (b'{"text": "a\\u0000b"}', "text", "field 'text' contains a NUL character (at character 2)"),
}


@pytest.mark.parametrize("kind", BAD_JSONL_LINES)
def test_a_bad_jsonl_line_is_skipped_with_its_place_and_the_rest_lands(workspace, tmp_path, kind):
    line, field, message = BAD_JSONL_LINES[kind]
    path = write_lines(tmp_path / "in.jsonl", [b'{"text": "before"}', line, b'{"text": "after"}'])
    summary = workspace.ingest([path])
    assert texts(workspace) == ["before", "after"]
    [(place, got_field, got_message)] = issues(workspace, summary.run_id)
    assert (place, got_field) == (f"{path} line 2", field)
    assert got_message.startswith(message)
    assert summary.files[0].skipped == 1 and workspace.runs.get(summary.run_id)["status"] == "completed"


def test_a_10_mb_document_is_rejected_by_the_length_limit(workspace, tmp_path):
    path = write_jsonl(tmp_path / "big.jsonl", [{"text": "x" * 10_000_000}, {"text": "small"}])
    summary = workspace.ingest([path])
    assert texts(workspace) == ["small"]
    assert issues(workspace, summary.run_id) == [
        (f"{path} line 1", "text", "field 'text' has 10,000,000 characters; the limit is 1,000,000 (--max-chars)")
    ]
    assert workspace.ingest([path], max_chars=10_000_000).total("added") == 1  # the limit is a choice


def test_a_line_too_long_to_hold_is_skipped_without_reading_it_whole(workspace, tmp_path):
    path = write_lines(tmp_path / "long.jsonl", [b'{"text": "' + b"y" * 3_000_000 + b'"}', b'{"text": "ok"}'])
    summary = workspace.ingest([path], max_chars=10)
    assert texts(workspace) == ["ok"]
    [(place, _, message)] = issues(workspace, summary.run_id)
    assert place == f"{path} line 1" and message.startswith("line is longer than 1,048,696 bytes")


def test_duplicate_ids_with_different_text_in_one_file(workspace, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": 1, "text": "a"}, {"id": 1, "text": "a"}, {"id": 1, "text": "b"}])
    summary = workspace.ingest([path], id_field="id")
    assert texts(workspace) == ["a"] and summary.files[0].already_present == 1
    assert issues(workspace, summary.run_id) == [
        (f"{path} line 3", "id", f"id '1' already holds a different text (from {path.resolve()} line 1)")
    ]


def test_duplicate_ids_with_different_text_against_the_workspace(workspace, tmp_path):
    workspace.ingest([write_jsonl(tmp_path / "old.jsonl", [{"id": "k", "text": "old"}])], id_field="id")
    path = write_jsonl(tmp_path / "new.jsonl", [{"id": "k", "text": "new"}, {"id": "m", "text": "fresh"}])
    summary = workspace.ingest([path], id_field="id")
    assert texts(workspace) == ["old", "fresh"]
    [(place, field, message)] = issues(workspace, summary.run_id)
    assert (place, field) == (f"{path} line 1", "id") and f"from {(tmp_path / 'old.jsonl').resolve()} line 1" in message


def test_bad_csv_rows(workspace, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(
        b"text,category\n"
        b"good one,a\n"
        b'"spans\ntwo lines",b\n'
        b"caf\xe9,c\n"  # Latin-1, not UTF-8
        b"nul\x00here,d\n"
        b"too,many,fields\n"
        b"good two,e\n"
    )
    summary = workspace.ingest([path])
    assert texts(workspace) == ["good one", "spans\ntwo lines", "good two"]
    assert issues(workspace, summary.run_id) == [
        (f"{path} line 5", "text", "field 'text' is not valid UTF-8 (at character 4)"),
        (f"{path} line 6", "text", "field 'text' contains a NUL character (at character 4)"),
        (f"{path} line 7", "", "row has 3 fields, the header has 2"),
    ]


def test_a_csv_without_the_text_column_is_skipped_whole_and_other_files_still_land(workspace, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("body,category\nx,y\n")
    good = write_jsonl(tmp_path / "good.jsonl", [{"text": "fine"}])
    summary = workspace.ingest([bad, good])
    assert texts(workspace) == ["fine"]
    assert issues(workspace, summary.run_id) == [(str(bad), "", "no column 'text' (columns: body, category)")]
    assert summary.files[0].stopped


def test_a_parquet_column_of_the_wrong_type(workspace, tmp_path):
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "ints.parquet")
    pq.write_table(pa.table({"text": ["fine", None, ""]}), tmp_path / "strings.parquet")
    summary = workspace.ingest([tmp_path / "ints.parquet", tmp_path / "strings.parquet"])
    assert texts(workspace) == ["fine"]
    assert issues(workspace, summary.run_id) == [
        (str(tmp_path / "ints.parquet"), "", "column 'text' has type int64; it must be a string"),
        (f"{tmp_path / 'strings.parquet'} row 1", "text", "field 'text' is null"),
        (f"{tmp_path / 'strings.parquet'} row 2", "text", "field 'text' is empty"),
    ]


def test_a_corrupt_parquet_file_is_reported_not_raised(workspace, tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    summary = workspace.ingest([tmp_path / "broken.parquet"])
    [(place, _, message)] = issues(workspace, summary.run_id)
    assert place == str(tmp_path / "broken.parquet") and message.startswith("unreadable:")


def test_a_file_whose_first_rows_all_fail_is_given_up_early(workspace, tmp_path):
    path = write_jsonl(tmp_path / "wrong.jsonl", [{"body": f"doc {i}"} for i in range(BATCH_ROWS + 500)])
    summary = workspace.ingest([path])
    assert summary.files[0].rows_read == BATCH_ROWS
    assert summary.issues[0].message == "missing field 'text' (fields: body)"
    assert "first 1,000 rows all failed" in issues(workspace, summary.run_id)[-1][2]


def test_on_error_fail_stops_at_the_first_problem_and_writes_nothing_of_the_run(workspace, tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", [{"text": "from the first file"}])
    records = [{"text": f"doc {i}"} for i in range(BATCH_ROWS * 2)] + [{"text": 3}]
    second = write_jsonl(tmp_path / "b.jsonl", records)
    with pytest.raises(IngestError) as raised:
        workspace.ingest([first, second], on_error="fail")
    assert str(raised.value) == f"{second} line {BATCH_ROWS * 2 + 1}: field 'text' must be a string, not an integer"
    assert DocumentStore(workspace).count() == 0
    run = workspace.runs.get(raised.value.run_id)
    assert run["status"] == "failed" and run["stats"]["rolled_back"]
    assert issues(workspace, run["id"]) == [
        (f"{second} line 2001", "text", "field 'text' must be a string, not an integer")
    ]


def test_an_interrupted_import_keeps_its_committed_batches_and_a_rerun_finishes_it(workspace, tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": f"doc {i}"} for i in range(BATCH_ROWS * 3)])

    def interrupt(rows: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        workspace.ingest([path], on_progress=interrupt)
    interrupted = workspace.runs.last("ingest")
    assert interrupted["status"] == "interrupted" and DocumentStore(workspace).count() == BATCH_ROWS
    rerun = workspace.ingest([path])
    assert (rerun.total("already_present"), rerun.total("added")) == (BATCH_ROWS, BATCH_ROWS * 2)


def test_progress_reports_every_row_read(workspace, tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": f"t{i}"} for i in range(2500)] + [{"text": ""}])
    reported: list[int] = []
    workspace.ingest([path], on_progress=reported.append)
    assert sum(reported) == 2501 and len(reported) >= 3


# Labels


def test_label_field_imports_human_labels_under_an_import_taxonomy(workspace, tmp_path):
    path = banking77_head(tmp_path, 200)
    summary = workspace.ingest([path], label_field="category")
    with open(path, newline="") as f:
        categories = {row["category"] for row in csv.DictReader(f)}
    taxonomy = TaxonomyStore(workspace).get(summary.taxonomy_version)
    assert taxonomy.method == "import" and taxonomy.names == sorted(categories)
    current = LabelStore(workspace).current(taxonomy.version, "human")
    assert len(current) == 200 == summary.labels_added
    assert {row["origin"] for row in current.values()} == {f"import:{path.resolve()}#category"}
    doc = DocumentStore(workspace).get([document_id("I am still waiting on my card?")])[0]
    assert current[doc.id]["label"] == "card_arrival" and current[doc.id]["run_id"] == summary.run_id

    again = workspace.ingest([path], label_field="category")
    assert (again.taxonomy_version, again.labels_added, again.labels_already_present) == (taxonomy.version, 0, 200)
    assert len(TaxonomyStore(workspace).all()) == 1 and LabelStore(workspace).count() == 200


def test_labels_beyond_one_batch_are_imported_once(workspace, tmp_path):
    rows = [{"text": f"doc {i}", "y": f"class {i % 3}"} for i in range(BATCH_ROWS * 2 + 500)]
    path = write_jsonl(tmp_path / "l.jsonl", rows)
    first = workspace.ingest([path], label_field="y")
    again = workspace.ingest([path], label_field="y")
    assert (first.labels_added, again.labels_added, again.labels_already_present) == (len(rows), 0, len(rows))
    assert LabelStore(workspace).count(first.taxonomy_version, "human") == len(rows)


def test_a_failed_run_imports_no_labels_and_makes_no_taxonomy(workspace, tmp_path):
    path = write_jsonl(tmp_path / "l.jsonl", [{"text": "a", "y": "x"}, {"text": "b", "y": ["not", "a", "label"]}])
    with pytest.raises(IngestError, match="line 2: field 'y' must be a string or an integer, not an array"):
        workspace.ingest([path], label_field="y", on_error="fail")
    assert (LabelStore(workspace).count(), TaxonomyStore(workspace).all(), DocumentStore(workspace).count()) == (0, [], 0)


def test_a_document_given_two_labels_by_one_file_keeps_the_first(workspace, tmp_path):
    path = write_jsonl(tmp_path / "l.jsonl", [{"text": "t", "y": "a"}, {"text": "t", "y": "b"}, {"text": "u"}])
    summary = workspace.ingest([path], label_field="y")
    assert issues(workspace, summary.run_id) == [
        (f"{path} line 2", "y", f"label 'b' contradicts label 'a' given to the same document at {path} line 1")
    ]
    assert summary.labels_added == 1 and summary.files[0].added == 2  # "u" is simply unlabeled


def test_a_label_field_no_row_has_is_reported(workspace, tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "t", "category": "x"}])
    summary = workspace.ingest([path], label_field="categry")
    assert issues(workspace, summary.run_id) == [(str(path), "categry", "no row has a value in field 'categry'")]
    assert summary.taxonomy_version is None and DocumentStore(workspace).count() == 1


# Reading documents back


def test_document_store_batches_lookups_and_seeded_samples(workspace, tmp_path):
    ingest(
        workspace,
        [write_jsonl(tmp_path / "a.jsonl", [{"id": i, "text": f"doc {i}"} for i in range(50)])],
        id_field="id",
    )
    store = DocumentStore(workspace)
    assert store.count() == 50 and store.ids() == [str(i) for i in range(50)]
    assert [len(b) for b in store.iter_batches(batch_size=20)] == [20, 20, 10]
    assert [d.text for b in store.iter_batches(batch_size=2, ids=["9", "3", "9"]) for d in b] == [
        "doc 9",
        "doc 3",
        "doc 9",
    ]
    with pytest.raises(WorkspaceError, match="unknown document id"):
        store.get(["3", "nope"])
    sample = store.sample(10, seed=1)
    assert len(sample) == 10 and sample == store.sample(10, seed=1) and sample != store.sample(10, seed=2)
    ingest(
        workspace,
        [write_jsonl(tmp_path / "b.jsonl", [{"id": f"n{i}", "text": f"new {i}"} for i in range(5)])],
        id_field="id",
    )
    kept = {d.id for d in store.sample(10, seed=1)} & {d.id for d in sample}
    assert len(kept) >= 5  # a bottom-k sample: new documents displace old ones only by ranking before them


# CLI


def test_cli_ingest_prints_the_summary_and_the_first_problems(workspace, tmp_path):
    path = write_lines(tmp_path / "in.jsonl", [b'{"text": "a"}', b"{oops", b'{"text": "b"}'])
    result = CliRunner().invoke(app, ["ingest", str(path), "--workspace", str(workspace.directory)])
    assert result.exit_code == 0, result.output
    run_id = workspace.runs.last("ingest")["id"]
    assert f"Ingest run {run_id}" in result.output
    assert "│ 3         │ 2     │ 0               │ 1" in result.output
    assert "1 problem(s)" in result.output and "in.jsonl line 2: malformed JSON" in result.output


def test_cli_label_field_reports_the_taxonomy_version(workspace, tmp_path):
    path = banking77_head(tmp_path, 200)
    result = CliRunner().invoke(app, ["ingest", str(path), "-w", str(workspace.directory), "--label-field", "category"])
    assert result.exit_code == 0, result.output
    assert "200 human labels added" in result.output and "taxonomy version 1" in result.output


def test_cli_on_error_fail_exits_1_with_the_place(workspace, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}, {"text": None}])
    result = CliRunner().invoke(app, ["ingest", str(path), "-w", str(workspace.directory), "--on-error", "fail"])
    output = " ".join(result.output.split())  # rich wraps long paths
    assert result.exit_code == 1
    assert "in.jsonl line 2: field 'text' is null" in output and "was written" in output
    assert DocumentStore(workspace).count() == 0


def test_cli_glob_matching_nothing_exits_1(workspace, tmp_path):
    result = CliRunner().invoke(app, ["ingest", str(tmp_path / "*.jsonl"), "-w", str(workspace.directory)])
    assert result.exit_code == 1 and "no files match" in result.output
