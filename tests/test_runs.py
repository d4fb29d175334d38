"""Runs know their process: one whose process died reads as interrupted (and is marked so), a live
one keeps its heartbeat fresh, and the next identical command says it resumes the interrupted one."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from tests.test_label import Oracle, setup_corpus
from tests.test_label_resume import (
    CONCURRENCY,
    Gate,
    label_args,
    tnt_label_process,
    wait_for,
)
from tnt.cli import app
from tnt.labels.store import LabelRecord, LabelStore
from tnt.runs import STALE_AFTER_S, Heartbeat
from tnt.workspace import Workspace


def stored_status(workspace, run_id: str) -> str:
    return workspace.db.execute("select status from runs where id = ?", [run_id]).fetchone()[0]


def test_a_run_records_its_process_and_reads_running_while_it_lives(workspace):
    run = workspace.runs.start("x", {"a": 1})
    row = workspace.runs.get(run.id)
    assert row["status"] == "running" and row["heartbeat_at"] == row["started_at"]
    assert row["pid"] > 0 and row["host"]
    run.finish("completed")
    assert workspace.runs.get(run.id)["status"] == "completed"


def test_a_running_run_whose_process_died_reads_interrupted_and_is_marked_so(workspace):
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    run = workspace.runs.start("label", {"v": 1})
    run.heartbeat.stop()
    workspace.db["runs"].update(run.id, {"pid": process.pid})

    assert stored_status(workspace, run.id) == "running"
    assert [r["status"] for r in workspace.runs.list()] == ["interrupted"]
    assert stored_status(workspace, run.id) == "interrupted"
    assert workspace.runs.last("label")["status"] == workspace.runs.get(run.id)["status"] == "interrupted"
    assert workspace.runs.get(run.id)["finished_at"] == workspace.runs.get(run.id)["heartbeat_at"]


def test_a_reader_does_not_wait_for_another_writer_to_mark_a_dead_run(workspace):
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    run = workspace.runs.start("label")
    run.heartbeat.stop()
    workspace.db["runs"].update(run.id, {"pid": process.pid})
    with Workspace.open(workspace.directory) as writer, writer.write():
        started = time.monotonic()
        assert workspace.runs.get(run.id)["status"] == "interrupted"
        assert time.monotonic() - started < 10
        assert stored_status(workspace, run.id) == "running"  # marked by a later reader
    assert workspace.runs.last()["status"] == "interrupted" == stored_status(workspace, run.id)


def test_a_run_on_another_host_is_interrupted_only_once_its_heartbeat_is_stale(workspace):
    fresh, stale = workspace.runs.start("x"), workspace.runs.start("y")
    for run in (fresh, stale):
        run.heartbeat.stop()
    old = (datetime.now(timezone.utc) - timedelta(seconds=STALE_AFTER_S + 5)).isoformat()
    workspace.db["runs"].update(fresh.id, {"host": "elsewhere", "pid": 1})
    workspace.db["runs"].update(stale.id, {"host": "elsewhere", "pid": 1, "heartbeat_at": old})
    assert workspace.runs.get(fresh.id)["status"] == "running"
    assert workspace.runs.get(stale.id)["status"] == "interrupted"


def test_the_heartbeat_is_refreshed_while_the_run_lives_and_stops_at_finish(workspace):
    run = workspace.runs.start("x")
    started = workspace.runs.get(run.id)["heartbeat_at"]
    beat = Heartbeat(workspace.path, run.id, interval_s=0.05)
    wait_for(lambda: workspace.runs.get(run.id)["heartbeat_at"] > started, 10, "a heartbeat")
    beat.stop()
    run.finish("completed")
    last = workspace.runs.get(run.id)["heartbeat_at"]
    time.sleep(0.2)
    assert workspace.runs.get(run.id)["heartbeat_at"] == last


def test_the_next_run_of_the_same_kind_and_params_resumes_an_interrupted_one(workspace):
    told = []
    workspace.on_resume = told.append
    with pytest.raises(KeyboardInterrupt), workspace.run("label", {"v": 1}) as stopped:
        raise KeyboardInterrupt
    with workspace.run("label", {"v": 2}) as other:
        pass
    assert other.resumes is None  # other params: a run of its own
    with workspace.run("label", {"v": 1}) as resumed:
        pass
    with workspace.run("label", {"v": 1}) as again:
        pass
    assert [r["id"] for r in told] == [stopped.id]
    assert workspace.runs.get(resumed.id)["resumes"] == stopped.id
    assert again.resumes is None  # the latest identical run completed: nothing to resume


@pytest.mark.slow
def test_tnt_label_killed_reads_interrupted_and_the_next_run_resumes_it(tmp_path, llm_server, workspace):
    taxonomy, truth = setup_corpus(workspace, tmp_path, 40)
    gate = Gate(Oracle(truth), open_for=12)
    server = llm_server(gate, latency_s=0.05)
    args = label_args(workspace.directory, server, batch_size=1)

    killed = tnt_label_process(args, tmp_path / "first.log")
    try:
        wait_for(lambda: gate.held >= CONCURRENCY or killed.poll() is not None, 90, "requests to be held")
    finally:
        killed.kill()
    killed.wait()
    gate.release()
    assert killed.returncode == -9, (tmp_path / "first.log").read_text()
    (killed_run,) = workspace.runs.list("label")

    listed = CliRunner().invoke(app, ["runs", "-w", str(workspace.directory)])
    assert listed.exit_code == 0, listed.output
    assert killed_run["id"] in listed.output and "interrupted" in listed.output
    assert killed_run["status"] == "interrupted"

    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert f"resuming interrupted run {killed_run['id']} (started {killed_run['started_at']})" in second.output
    resumed = workspace.runs.last("label")
    assert (resumed["status"], resumed["resumes"]) == ("completed", killed_run["id"])
    assert LabelStore(workspace).count(taxonomy.version, "llm") == 40
    bodies = Counter(json.dumps(body, sort_keys=True) for body in server.requests)
    assert bodies.most_common(1)[0][1] == 1, "a request the server answered was sent again"


# Reruns whose inputs are all the same return the stored result instead of a copy


@pytest.mark.slow  # the first CLI taxonomy command of a session imports litellm: slow on a busy machine
def test_a_generate_rerun_from_the_cache_returns_the_version_it_made(workspace, tmp_path, llm_server):
    from tests.test_taxonomy_generate import USE_CASE, add_documents, simple_responder

    add_documents(workspace, tmp_path, [f"text {i}" for i in range(12)])
    server = llm_server(simple_responder)
    generate = ["taxonomy", "generate", "-w", str(workspace.directory), "--use-case", USE_CASE, "--epochs", "1",
                "--batch-size", "5", "--model", "openai/scripted", "--api-base", server.url, "--api-key", "test"]  # fmt: skip
    first = CliRunner().invoke(app, generate)
    assert first.exit_code == 0, first.output
    assert server.count > 0 and "unchanged" not in first.output
    (made,) = workspace.taxonomies.all()

    server.reset_counts()
    again = CliRunner().invoke(app, generate)
    assert again.exit_code == 0, again.output
    assert server.count == 0
    assert f"unchanged: version {made.version} already holds this result" in again.output
    assert [t.version for t in workspace.taxonomies.all()] == [made.version]
    assert workspace.runs.last("taxonomy.generate")["status"] == "completed"

    other = CliRunner().invoke(app, [*generate, "--max-labels", "9"])  # another parameter: a version of its own
    assert other.exit_code == 0, other.output
    assert len(workspace.taxonomies.all()) == 2


@pytest.mark.slow
def test_a_train_rerun_on_the_same_labels_returns_the_model_it_registered(workspace, tmp_path, banking77):
    from tests.test_distill import banking_rows, fill_workspace

    version = fill_workspace(workspace, tmp_path, banking_rows(banking77, 20), n_human=0)
    command = ["train", "-w", str(workspace.directory), "--taxonomy", str(version), "--kind", "hashing-linear"]
    first = CliRunner().invoke(app, command)
    assert first.exit_code == 0, first.output
    (model,) = workspace.models.all()

    again = CliRunner().invoke(app, command)
    assert again.exit_code == 0, again.output
    assert f"unchanged: model {model.id} already holds this result" in again.output
    assert [m.id for m in workspace.models.all()] == [model.id]
    assert workspace.runs.last("train")["status"] == "completed"

    assert CliRunner().invoke(app, [*command, "--seed", "1"]).exit_code == 0  # another parameter
    LabelStore(workspace).add([LabelRecord("d0", "human", "card_arrival", version, origin="fix")])
    assert CliRunner().invoke(app, command).exit_code == 0  # another label
    assert len(workspace.models.all()) == 3


def test_a_select_rerun_over_the_same_inputs_returns_the_selection_it_recorded(workspace, tmp_path):
    from tests.test_select import corpus_rows, ingest_rows
    from tnt.selection_io import load_selection

    version = ingest_rows(workspace, corpus_rows(), tmp_path / "corpus.jsonl")
    out = tmp_path / "selection.txt"
    command = ["select", "-w", str(workspace.directory), "--size", "20", "--seed", "3", "--out", str(out)]
    first = CliRunner().invoke(app, command)
    assert first.exit_code == 0, first.output
    made = workspace.runs.last("select")
    ids = out.read_text()
    out.unlink()

    for _ in range(2):
        again = CliRunner().invoke(app, command)
        assert again.exit_code == 0, again.output
        assert f"unchanged: selection {made['id']} already holds this result" in again.output
        assert out.read_text() == ids  # the file is written again, the same
    assert workspace.db["selections"].count == 20
    latest_run, latest = load_selection(workspace)
    assert latest_run["id"] != made["id"] and "\n".join(c.doc_id for c in latest) + "\n" == ids

    relabeled = "gamma" if latest[0].label != "gamma" else "beta"
    LabelStore(workspace).add([LabelRecord(latest[0].doc_id, "human", relabeled, version, origin="fix")])
    changed = CliRunner().invoke(app, command)  # another eligible input: a selection of its own
    assert changed.exit_code == 0 and "unchanged" not in changed.output
    assert workspace.db["selections"].count == 40
