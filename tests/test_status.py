"""``tnt status``: what it reports, and the next command, as a workspace goes through the pipeline and
through a migration to a refined taxonomy version."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tests.ls_server import banking_workspace, store_llm_labels
from tests.migration_state import split_first_label
from tnt.cli import app
from tnt.distill.train import train as train_model
from tnt.labels.migrate import migrate_labels
from tnt.labels.store import LabelRecord, LabelStore
from tnt.review.labelstudio import ProjectLink, ProjectLinks
from tnt.review.sampling import sample_for_review
from tnt.status import workspace_status


def human_labels(workspace, version, gold, doc_ids, project=1):
    LabelStore(workspace).add(
        LabelRecord(d, "human", gold[d], version, origin=f"label-studio:{project}/{i}") for i, d in enumerate(doc_ids)
    )


def status_command(workspace, *options):
    result = CliRunner().invoke(app, ["status", "-w", str(workspace.directory), *options])
    assert result.exit_code == 0, result.output
    return result.output


def test_an_empty_workspace_asks_for_documents_then_a_taxonomy(workspace, tmp_path):
    status = workspace_status(workspace)
    assert (status.documents, status.taxonomy_version, status.next.command) == (0, None, "tnt ingest FILE --id-field id")
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text('{"id": "a", "text": "my card has not arrived"}\n', encoding="utf-8")
    workspace.ingest([corpus], id_field="id")
    status = workspace_status(workspace)
    assert status.documents == 1 and status.next.command.startswith("tnt taxonomy generate")


def test_before_and_after_labeling_the_next_command_moves_along_the_pipeline(workspace, tmp_path):
    taxonomy, gold, _ = banking_workspace(workspace, tmp_path, categories=3, per_category=6)
    version = taxonomy.version
    before = workspace_status(workspace)
    assert before.labeled == {"llm": 0, "human": 0, "model": 0}
    assert before.next.command == f"tnt label -t {version} --sample 18"

    store_llm_labels(workspace, version, gold)
    labeled = workspace_status(workspace)
    assert labeled.labeled["llm"] == len(gold) and labeled.next.command == f"tnt review sample 100 -t {version}"

    sample = sample_for_review(workspace, 5, taxonomy_version=version)
    sampled = workspace_status(workspace)
    assert [item.kind for item in sampled.stale] == ["review-sample"] and sample.run_id in sampled.stale[0].message
    assert sampled.next.command == f"tnt ls push -t {version}"

    ProjectLinks(workspace).save(ProjectLink(3, "http://ls", "tnt taxonomy v1", version, False))  # what a push records
    human_labels(workspace, version, gold, [p.doc_id for p in sample.picks], project=3)
    pushed = workspace_status(workspace)
    assert pushed.stale == [] and pushed.labeled["human"] == 5
    assert pushed.next.command == f"tnt train --taxonomy {version}"


@pytest.mark.slow
def test_a_model_older_than_its_labels_is_stale_and_training_comes_next(workspace, tmp_path):
    taxonomy, gold, _ = banking_workspace(workspace, tmp_path, categories=3, per_category=6)
    store_llm_labels(workspace, taxonomy.version, gold)
    human_labels(workspace, taxonomy.version, gold, list(gold)[:3])
    model = train_model(workspace, taxonomy_version=taxonomy.version, kind="hashing-linear").model
    trained = workspace_status(workspace)
    assert trained.model == model.id and trained.stale == []
    assert trained.next.command == f"tnt tag --corpus --model {model.id}"

    human_labels(workspace, taxonomy.version, gold, list(gold)[3:4], project=2)
    later = workspace_status(workspace)
    assert [item.kind for item in later.stale] == ["model"] and model.id in later.stale[0].message
    assert later.next.command == f"tnt train --taxonomy {taxonomy.version}"


def test_a_refined_version_waits_for_migration_then_for_the_split_documents(workspace, tmp_path):
    parent, gold, _ = banking_workspace(workspace, tmp_path, categories=3, per_category=4)
    store_llm_labels(workspace, parent.version, gold)
    reviewed = list(gold)[::2]
    human_labels(workspace, parent.version, gold, reviewed)
    ProjectLinks(workspace).save(ProjectLink(1, "http://ls", "tnt taxonomy v1", parent.version, False))
    child = split_first_label(workspace, parent)

    before = workspace_status(workspace)
    assert [(step.version, step.method) for step in before.lineage] == [(child.version, "refine"), (parent.version, "manual")]
    assert before.labeled == {"llm": 0, "human": 0, "model": 0}
    assert [item.kind for item in before.stale] == ["migration", "label-studio"]
    assert before.next.command == f"tnt taxonomy migrate {child.version}"

    migrate_labels(workspace, child.version)
    split = parent.labels[0].name
    split_docs = [d for d in gold if gold[d] == split]
    after = workspace_status(workspace)
    assert after.labeled == {"llm": len(gold) - len(split_docs), "human": sum(gold[d] != split for d in reviewed), "model": 0}
    assert after.pending == {"llm": {"split": len(split_docs)}, "human": {"split": sum(gold[d] == split for d in reviewed)}}
    assert [item.kind for item in after.stale] == ["label-studio"]
    assert after.next.command == f"tnt label -t {child.version} --pending"

    part = child.labels[0].name
    store_llm_labels(workspace, child.version, {d: part for d in split_docs})  # what `tnt label --pending` adds
    relabeled = workspace_status(workspace)
    assert "llm" not in relabeled.pending
    assert relabeled.next.command == f"tnt review sample 100 -t {child.version}"  # people's split labels first


def test_unfinished_runs_and_spend_are_shown(workspace, tmp_path):
    banking_workspace(workspace, tmp_path, categories=2, per_category=2)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = workspace.runs.start("label", {"documents": 4})
    workspace.db["runs"].update(run.id, {"pid": dead.pid})  # the process that ran it is gone
    workspace.db["llm_calls"].insert_all([
        {"run_id": run.id, "key": "k1", "model": "openai/scripted", "stage": "label", "outcome": "ok", "cost": 0.25, "attempts": 1},
        {"run_id": run.id, "key": "k2", "model": "openai/scripted", "stage": "label", "outcome": "cached", "cost": 0.0, "attempts": 0},
    ])  # fmt: skip
    status = workspace_status(workspace)
    assert [(r["id"], r["kind"], r["status"]) for r in status.unfinished_runs] == [(run.id, "label", "interrupted")]
    assert (status.spend.cost, status.spend.calls, status.spend.unknown_price_calls) == (0.25, 2, False)
    shown = status_command(workspace)
    assert f"interrupted run {run.id} (label" in shown and "LLM spend: $0.2500 over 2 call(s)\n" in shown
    workspace.db["llm_calls"].insert(
        {"run_id": run.id, "key": "k3", "model": "openai/unpriced", "stage": "label", "outcome": "ok", "cost": None, "attempts": 1}
    )
    assert workspace_status(workspace).spend.unknown_price_calls
    assert "LLM spend: $0.2500 over 3 call(s), plus calls whose price is not known" in status_command(workspace)


def test_status_prints_one_screen_and_json(workspace, tmp_path):
    parent, gold, _ = banking_workspace(workspace, tmp_path, categories=3, per_category=4)
    store_llm_labels(workspace, parent.version, gold)
    child = split_first_label(workspace, parent)
    migrate_labels(workspace, child.version)

    shown = status_command(workspace)
    assert f"Taxonomy v{child.version} (refine) ← v{parent.version} (manual)" in shown
    assert f"Labeled with v{child.version}: LLM 8, human 0, model 0" in shown
    assert "Need a label after the migration: LLM 4 (split 4)" in shown
    assert f"Next: tnt label -t {child.version} --pending" in shown

    data = json.loads(status_command(workspace, "--json"))
    assert set(data) == {"workspace", "documents", "taxonomy_version", "lineage", "labeled", "pending", "model",
                         "stale", "spend", "unfinished_runs", "next"}  # fmt: skip
    assert data["taxonomy_version"] == child.version and data["documents"] == 12
    assert data["lineage"][1] == {**data["lineage"][1], "version": parent.version, "method": "manual", "parent": None}
    assert data["pending"] == {"llm": {"split": 4}}
    assert data["next"]["command"] == f"tnt label -t {child.version} --pending" and data["next"]["why"]
