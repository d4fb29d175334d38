"""`tnt export`: current labels out as JSONL and Parquet, a selection out as a `datasets` directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tnt.cli import app
from tnt.export import ExportError, current_labels, export_dataset, export_labels
from tnt.labels.store import LabelRecord, LabelStore
from tnt.select import SelectionSpec, select
from tnt.selection_io import load_selection
from tnt.taxonomy.store import Taxonomy, TaxonomyLabel, TaxonomyStore
from tnt.workspace import Workspace

DOCUMENTS = [
    {
        "id": f"doc-{i:02d}",
        "text": f"query {i}: " + "card payment " * (1 + i % 4),
        "intent": "card" if i % 3 else "cash",
        "lang": ["en", "de"][i % 2],
        "channel": i,
    }
    for i in range(12)
]
MODEL = "gpt-test"


@pytest.fixture
def labelled(workspace: Workspace, tmp_path: Path) -> Workspace:
    """People's labels (imported), LLM labels with one corrected, a retracted human label, and quality
    scores from two judges, one document rescored."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(row) + "\n" for row in DOCUMENTS), encoding="utf-8")
    workspace.ingest([corpus], id_field="id", label_field="intent", on_error="fail")
    version = TaxonomyStore(workspace).get().version
    store = LabelStore(workspace)
    llm = {"origin": "label:abc", "model": MODEL}
    store.add(
        LabelRecord(row["id"], "llm", "card", version, extra_labels=["cash"], confidence=0.6,
                    explanation="mentions a card", run_id="run-1", prompt_hash="p1", **llm)
        for row in DOCUMENTS[:6]
    )  # fmt: skip
    store.add([LabelRecord("doc-00", "llm", "cash", version, confidence=0.9, prompt_hash="p2", **llm)])
    store.add([LabelRecord("doc-01", "human", "cash", version, origin="label-studio:annotation/7")])
    store.retract("label-studio:annotation/7")
    store.add(LabelRecord(row["id"], "llm", score=i / 10, origin="ask-llm:h1", model=MODEL) for i, row in enumerate(DOCUMENTS))
    store.add([LabelRecord("doc-03", "llm", score=0.95, origin="ask-llm:h2", model=MODEL)])
    store.add(LabelRecord(row["id"], "llm", score=3.0, origin="fineweb-edu:h3", model=MODEL) for row in DOCUMENTS[:4])
    return workspace


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def judge(row: dict) -> str:
    return (row["origin"] or "").split(":")[0]


def stored_rows(workspace: Workspace) -> dict[int, dict]:
    return {row["id"]: row for row in workspace.db["labels"].rows}


def test_jsonl_and_parquet_hold_the_current_labels_with_provenance(labelled: Workspace, tmp_path: Path) -> None:
    jsonl = export_labels(labelled, tmp_path / "labels.jsonl")
    parquet = export_labels(labelled, tmp_path / "labels.parquet")
    rows = read_jsonl(tmp_path / "labels.jsonl")
    assert pq.read_table(tmp_path / "labels.parquet").to_pylist() == rows
    assert jsonl.rows == parquet.rows == len(rows)

    version = TaxonomyStore(labelled).get().version
    by_key = {(row["doc_id"], row["source"], row["taxonomy_version"], judge(row)): row for row in rows}
    assert len(by_key) == len(rows), "one row per document, source and taxonomy version (or judge)"
    # The newest row wins; the correction keeps its own provenance.
    corrected = by_key["doc-00", "llm", version, "label"]
    assert (corrected["label"], corrected["confidence"], corrected["prompt_hash"], corrected["extra_labels"]) == (
        "cash", 0.9, "p2", []
    )
    first_run = by_key["doc-02", "llm", version, "label"]
    assert (first_run["extra_labels"], first_run["explanation"], first_run["run_id"], first_run["model"]) == (
        ["cash"], "mentions a card", "run-1", MODEL
    )
    # The retracted correction is gone; the imported label it would have replaced is current.
    assert by_key["doc-01", "human", version, "import"]["label"] == DOCUMENTS[1]["intent"]
    assert "retracted_at" not in rows[0]
    # Every row is the stored row, column for column.
    stored = stored_rows(labelled)
    for row in rows:
        as_stored = {**row, "extra_labels": json.dumps(row["extra_labels"]), "retracted_at": None}
        assert as_stored == stored[row["id"]]
    # Each current label of each source is there, and nothing else.
    for source in ("llm", "human", "model"):
        current = LabelStore(labelled).current(version, source)
        assert {row["id"] for row in rows if row["source"] == source and row["taxonomy_version"] == version} == {
            row["id"] for row in current.values()
        }
    # Quality: both judges' scores, the rescored document with its newest ask-llm score.
    scores = {(row["doc_id"], judge(row)): row["score"] for row in rows if row["taxonomy_version"] is None}
    assert len(scores) == len(DOCUMENTS) + 4
    assert scores["doc-03", "ask-llm"] == 0.95 and scores["doc-03", "fineweb-edu"] == 3.0


def test_kind_and_taxonomy_narrow_the_export(labelled: Workspace) -> None:
    first = TaxonomyStore(labelled).get().version
    second = TaxonomyStore(labelled).save(Taxonomy(labels=[TaxonomyLabel(name="payments")], parent=first)).version
    LabelStore(labelled).add([LabelRecord("doc-05", "model", "payments", second, confidence=0.8, origin="model:m1")])

    everything = list(current_labels(labelled))
    labels = list(current_labels(labelled, kind="labels"))
    quality = list(current_labels(labelled, kind="quality"))
    assert len(everything) == len(labels) + len(quality)
    assert {row["taxonomy_version"] for row in labels} == {first, second}
    assert {row["taxonomy_version"] for row in quality} == {None}
    only_second = list(current_labels(labelled, kind="labels", taxonomy_version=second))
    assert [(row["doc_id"], row["label"]) for row in only_second] == [("doc-05", "payments")]
    with pytest.raises(Exception, match="no taxonomy version 99"):
        list(current_labels(labelled, taxonomy_version=99))


def test_rerun_writes_the_same_file(labelled: Workspace, tmp_path: Path) -> None:
    export_labels(labelled, tmp_path / "a.parquet")
    first = (tmp_path / "a.parquet").read_bytes()
    export_labels(labelled, tmp_path / "a.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == first
    assert not list(tmp_path.glob("*.partial"))


def test_cli_writes_jsonl_to_stdout_and_counts_to_stderr(labelled: Workspace, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export", "labels", "-w", str(labelled.directory), "--kind", "quality"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows == list(current_labels(labelled, kind="quality"))
    assert f"Wrote {len(rows)} rows" in result.stderr and "to stdout" in result.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--format", "csv"], "unknown format 'csv'; use jsonl or parquet"),
        (["-o", "labels.csv"], "labels.csv: cannot tell the format from the file name"),
        (["-o", "labels.jsonl", "--format", "parquet"], "the name says jsonl, but the format asked for is parquet"),
        (["--format", "parquet"], "Parquet is written to a file, not to stdout: give -o FILE.parquet"),
        (["--kind", "scores"], "unknown kind 'scores'; use one of labels, quality, all"),
        (["--taxonomy", "99"], "no taxonomy version 99"),
        (["-o", "labels.jsonl", "--taxonomy", "99"], "no taxonomy version 99"),
    ],
)
def test_bad_label_export_arguments_get_one_clear_message(
    labelled: Workspace, tmp_path: Path, monkeypatch, arguments, message
) -> None:
    monkeypatch.chdir(tmp_path)
    command = ["export", "labels", "-w", str(labelled.directory), *arguments]
    result = CliRunner().invoke(app, command, catch_exceptions=False)
    assert result.exit_code == 1
    assert message in " ".join(result.stderr.split())
    assert result.stdout == ""
    assert not list(Path.cwd().glob("labels.*"))


def test_dataset_loads_back_as_the_selection_in_order(labelled: Workspace, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    selection = select(labelled, SelectionSpec(dedup="none", min_quality=0.3, quality_origin="ask-llm", seed=3))
    result = export_dataset(labelled, tmp_path / "dataset")
    loaded = datasets.load_from_disk(str(tmp_path / "dataset"))

    run, selected = load_selection(labelled)
    assert result.run_id == run["id"] == selection.run_id and result.rows == len(selected) == len(loaded)
    assert loaded["id"] == [c.doc_id for c in selected]
    assert loaded["label"] == [c.label for c in selected] and loaded["quality"] == [c.quality for c in selected]
    assert loaded["tokens"] == [c.tokens for c in selected] and loaded["label_source"] == [c.source for c in selected]
    documents = {row["id"]: row for row in DOCUMENTS}
    for record in loaded:
        document = documents[record["id"]]
        assert record["text"] == document["text"]
        assert json.loads(record["meta"]) == {"lang": document["lang"], "channel": document["channel"]}
    assert selection.run_id in loaded.info.description


def test_dataset_directory_is_replaced_only_when_forced_and_only_if_a_dataset(
    labelled: Workspace, tmp_path: Path
) -> None:
    datasets = pytest.importorskip("datasets")
    first = select(labelled, SelectionSpec(dedup="none", size=4))
    export_dataset(labelled, tmp_path / "out")
    second = select(labelled, SelectionSpec(dedup="none", size=6, seed=1))

    with pytest.raises(ExportError, match=r"out is not empty; choose another directory, or replace .* \(--force\)"):
        export_dataset(labelled, tmp_path / "out")
    assert len(datasets.load_from_disk(str(tmp_path / "out"))) == 4

    export_dataset(labelled, tmp_path / "out", run_id=first.run_id, force=True)
    assert len(datasets.load_from_disk(str(tmp_path / "out"))) == 4
    export_dataset(labelled, tmp_path / "out", force=True)
    assert datasets.load_from_disk(str(tmp_path / "out"))["id"] == [c.doc_id for c in second.selected]
    assert not list(tmp_path.glob("*.partial"))

    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "todo.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ExportError, match="holds no saved dataset"):
        export_dataset(labelled, keep, force=True)
    assert (keep / "todo.txt").read_text(encoding="utf-8") == "mine"


def test_dataset_errors_name_the_problem(workspace: Workspace, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("datasets")
    result = CliRunner().invoke(app, ["export", "dataset", str(tmp_path / "out"), "-w", str(workspace.directory)])
    assert result.exit_code == 1
    assert "the workspace has no selection yet; make one with `tnt select`" in result.stderr
    assert not (tmp_path / "out").exists()

    monkeypatch.setitem(sys.modules, "datasets", None)  # as if the extra were not installed
    with pytest.raises(ExportError, match=r"needs the `datasets` package: pip install 'tnt\[export\]'"):
        export_dataset(workspace, tmp_path / "out")
