"""Bulk tagging: Parquet output, resuming after SIGKILL, the Ray engine, tagging the corpus into labels."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tnt.cli import app
from tnt.distill.model import DistilledClassifier
from tnt.distill.store import ModelStore
from tnt.distill.tag import TagError, tag_corpus, tag_files, tag_files_ray
from tnt.labels.store import LabelStore
from tnt.taxonomy.store import Taxonomy, TaxonomyLabel, TaxonomyStore

TNT = str(Path(sys.executable).parent / "tnt")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, banking77) -> Path:
    """A hashing-linear model of all 77 intents, trained on 20 examples each (fast to train and to run)."""
    seen: dict[str, int] = {}
    rows = [(t, c) for t, c in banking77["train"] if (seen := seen | {c: seen.get(c, 0) + 1})[c] <= 20]
    model = DistilledClassifier("hashing-linear").fit([t for t, _ in rows], [c for _, c in rows])
    return model.save(tmp_path_factory.mktemp("model") / "hashing")


def write_jsonl(path: Path, texts: list[str], start: int = 0) -> list[str]:
    ids = [f"doc-{start + i}" for i in range(len(texts))]
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in zip(ids, texts)))
    return ids


def read_output(out: Path) -> dict[str, dict]:
    return {p.name: pq.read_table(p).to_pydict() for p in sorted(out.glob("*.parquet"))}


def test_tags_jsonl_and_parquet_inputs_with_globs(model_dir, banking77, tmp_path):
    from tnt.distill.model import TextModel

    texts = [t for t, _ in banking77["test"][:300]]
    write_jsonl(tmp_path / "a.jsonl", texts[:100])
    write_jsonl(tmp_path / "b.jsonl", texts[100:200], start=100)
    pq.write_table(pa.table({"id": [f"doc-{i}" for i in range(200, 300)], "text": texts[200:]}), tmp_path / "c.parquet")
    model = TextModel.load(model_dir)
    summary = tag_files(model, [str(tmp_path / "*.jsonl"), tmp_path / "c.parquet"], tmp_path / "out", id_field="id", top_k=3)

    assert summary.documents == 300 and len(summary.shards_done) == 3
    tables = [pq.read_table(p) for p in sorted((tmp_path / "out").glob("*.parquet"))]
    assert tables[0].column_names == ["id", "label", "probability", "top_k"]
    rows = pa.concat_tables(tables).to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(f"doc-{i}" for i in range(300))
    expected = dict(zip((f"doc-{i}" for i in range(300)), model.predict(texts)))
    for row in rows:
        assert row["label"] == expected[row["id"]] == row["top_k"][0]["label"]
        assert len(row["top_k"]) == 3 and row["probability"] == row["top_k"][0]["probability"]
        assert row["top_k"][0]["probability"] >= row["top_k"][1]["probability"] >= row["top_k"][2]["probability"]


def test_ids_default_to_the_ingest_content_hash(model_dir, tmp_path):
    from tnt.corpus.readers import document_id
    from tnt.distill.model import TextModel

    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "where is my card?"}) + "\n")
    tag_files(TextModel.load(model_dir), [tmp_path / "in.jsonl"], tmp_path / "out")
    (table,) = read_output(tmp_path / "out").values()
    assert table["id"] == [document_id("where is my card?")]


def test_a_bad_row_names_the_file_line_and_field(model_dir, tmp_path):
    from tnt.distill.model import TextModel

    lines = [{"id": "1", "text": "hello"}, {"id": "2", "text": "card?"}, {"id": "3", "body": "no text"}]
    (tmp_path / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(TagError, match=r"bad.jsonl line 3: missing field 'text'"):
        tag_files(TextModel.load(model_dir), [tmp_path / "bad.jsonl"], tmp_path / "out", id_field="id")
    assert not list((tmp_path / "out").glob("*.parquet"))


def test_an_output_directory_of_another_model_is_refused(model_dir, banking77, tmp_path):
    from tnt.distill.model import TextModel

    write_jsonl(tmp_path / "a.jsonl", ["card arrival", "exchange rate"])
    tag_files(TextModel.load(model_dir), [tmp_path / "a.jsonl"], tmp_path / "out", id_field="id")
    other = DistilledClassifier("hashing-linear").fit([t for t, _ in banking77["train"][:300]], [c for _, c in banking77["train"][:300]])
    with pytest.raises(TagError, match="another model"):
        tag_files(other, [tmp_path / "a.jsonl"], tmp_path / "out", id_field="id")


@pytest.mark.slow
def test_sigkill_mid_run_then_restart_equals_an_uninterrupted_run(model_dir, banking77, tmp_path):
    texts = [t for t, _ in banking77["train"]]
    shards, expected_ids = 8, []
    for s in range(shards):
        chunk = [texts[(s * 5000 + i) % len(texts)] for i in range(5000)]
        expected_ids += write_jsonl(tmp_path / f"part-{s}.jsonl", chunk, start=s * 5000)
    command = [TNT, "tag", str(tmp_path / "part-*.jsonl"), "--model", str(model_dir), "--id-field", "id"]

    killed = subprocess.Popen([*command, "--out", str(tmp_path / "resumed")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "resumed").glob("*.parquet")) and time.monotonic() < deadline and killed.poll() is None:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    finished_before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "resumed").glob("*.parquet")}
    assert 1 <= len(finished_before) < shards, "the run must be killed part-way"

    resumed = subprocess.run([*command, "--out", str(tmp_path / "resumed")], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(finished_before)} already done" in resumed.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "resumed").glob("*.parquet") if p.name in finished_before} == finished_before
    whole = subprocess.run([*command, "--out", str(tmp_path / "whole")], capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr

    assert read_output(tmp_path / "resumed") == read_output(tmp_path / "whole")
    ids = [i for table in read_output(tmp_path / "resumed").values() for i in table["id"]]
    assert sorted(ids) == sorted(expected_ids)  # none missing, none twice
    assert not list((tmp_path / "resumed").glob(".*partial"))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ray_engine_gives_the_same_labels_as_the_local_engine(model_dir, banking77, tmp_path):
    import ray

    texts = [t for t, _ in banking77["test"][:400]]
    write_jsonl(tmp_path / "a.jsonl", texts[:200])
    pq.write_table(pa.table({"id": [f"doc-{i}" for i in range(200, 400)], "text": texts[200:]}), tmp_path / "b.parquet")
    inputs = [tmp_path / "a.jsonl", tmp_path / "b.parquet"]
    from tnt.distill.model import TextModel

    tag_files(TextModel.load(model_dir), inputs, tmp_path / "local", id_field="id")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = tag_files_ray(model_dir, inputs, tmp_path / "ray", id_field="id", batch_docs=64, actors=2, cpus_per_actor=0.5)
    finally:
        ray.shutdown()
    assert summary.documents == 400
    local = {r["id"]: r for t in read_output(tmp_path / "local").values() for r in pa.table(t).to_pylist()}
    on_ray = {r["id"]: r for t in read_output(tmp_path / "ray").values() for r in pa.table(t).to_pylist()}
    assert on_ray.keys() == local.keys()
    assert {i: r["label"] for i, r in on_ray.items()} == {i: r["label"] for i, r in local.items()}
    assert all(abs(on_ray[i]["probability"] - local[i]["probability"]) < 1e-5 for i in local)


def test_tag_corpus_stores_model_labels_and_resumes(model_dir, banking77, workspace, tmp_path):
    from tnt.distill.model import TextModel

    texts = [t for t, _ in banking77["test"][:120]]
    write_jsonl(tmp_path / "docs.jsonl", texts)
    workspace.ingest([tmp_path / "docs.jsonl"], id_field="id")
    model = TextModel.load(model_dir)
    version = TaxonomyStore(workspace).save(Taxonomy(labels=[TaxonomyLabel(name=n) for n in model.labels])).version
    info = ModelStore(workspace).add(model, version, "label", {"note": "test"}, None)

    first = tag_corpus(workspace, info.id, chunk_docs=50)
    assert first.documents == 120
    labels = LabelStore(workspace).current(version, "model")
    assert len(labels) == 120 and {row["model"] for row in labels.values()} == {info.id}
    assert labels["doc-0"]["label"] == model.predict([texts[0]])[0] and 0 < labels["doc-0"]["confidence"] <= 1
    assert tag_corpus(workspace, info.id).documents == 0  # all done: nothing redone

    result = CliRunner().invoke(app, ["tag", "--corpus", "-w", str(workspace.directory), "--model", info.id[:8]])
    assert result.exit_code == 0, result.output
    assert "Tagged 0 documents" in result.output


def test_cli_needs_inputs_or_corpus(model_dir):
    result = CliRunner().invoke(app, ["tag", "--model", str(model_dir)])
    assert result.exit_code == 1 and "--corpus" in result.output
