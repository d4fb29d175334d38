"""End to end against a real Label Studio 1.23 server: push, connect, predict, annotate, pull, agree.

Label Studio runs from its own virtualenv (``.ci/label-studio.sh`` installs it; ``TNT_LABEL_STUDIO_BIN``
points elsewhere). The test is skipped only when that binary is missing and ``TNT_REQUIRE_LABEL_STUDIO``
is unset; CI sets it, so there a missing Label Studio fails the run.
"""

from __future__ import annotations

import os
import time

import pytest
from typer.testing import CliRunner

from label_studio_backend import BackendSettings, create_app
from tests.ls_server import (
    REQUIRE_ENV,
    BackendThread,
    LabelStudioServer,
    banking_workspace,
    label_studio_binary,
    oracle,
    store_llm_labels,
)
from tests.migration_state import split_first_label
from tnt.cli import app
from tnt.distill.store import latest_model
from tnt.labels.labeling import label_documents
from tnt.labels.migrate import migrate_labels
from tnt.labels.store import LabelStore
from tnt.llm.gateway import LLMSettings
from tnt.review.agreement import agreement
from tnt.review.labelstudio import WEBHOOK_SECRET_HEADER, label_config
from tnt.review.labelstudio_sync import client, connect, pull, push
from tnt.review.sampling import sample_for_review
from tnt.status import workspace_status

pytestmark = pytest.mark.slow

USER, PASSWORD, SECRET = "tnt", "e2e-backend-password", "e2e-webhook-secret"


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    binary = label_studio_binary()
    if not binary.exists():
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"Label Studio is required ({REQUIRE_ENV} is set) but {binary} does not exist")
        pytest.skip(f"no Label Studio at {binary}: run .ci/label-studio.sh or set TNT_LABEL_STUDIO_BIN")
    # A fresh database's first start takes ~40 s alone, minutes on a busy machine.
    server = LabelStudioServer(tmp_path_factory.mktemp("label-studio"), binary, start_timeout_s=1500).start()
    yield server
    server.stop()


def wait_for(condition, timeout_s: float = 60.0, message: str = ""):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, message
        time.sleep(0.5)
    return value


def choices(label: str) -> list[dict]:
    return [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


def test_review_loop_through_a_real_label_studio(label_studio, workspace, tmp_path, llm_server):
    taxonomy, gold, texts = banking_workspace(workspace, tmp_path, categories=5, per_category=6)
    version = taxonomy.version
    # The LLM is wrong on every fourth document; it labels 25 now, the backend asks it for the rest.
    llm_answer = {texts[d]: (gold[d] if i % 4 else taxonomy.names[(taxonomy.names.index(gold[d]) + 1) % 5])
                  for i, d in enumerate(gold)}  # fmt: skip
    server = llm_server(oracle(llm_answer))
    llm = LLMSettings(model="openai/scripted", api_base=server.url, api_key="sk-test", backoff_base_s=0.01)
    label_documents(workspace, version, list(gold)[:25], llm)
    sample = sample_for_review(workspace, 20, taxonomy_version=version, blind_share=0.25)
    assert len(sample.picks) == 20 and set(sample.counts) <= {"least_confident", "stratified", "random"}
    blind = {p.doc_id for p in sample.picks if p.detail.get("blind")}
    assert len(blind) == 5

    ls = client(label_studio.url, label_studio.api_key)
    pushed = push(workspace, ls, [p.doc_id for p in sample.picks], taxonomy_version=version,
                  reasons={p.doc_id: p.reason for p in sample.picks}, predictions=False, blind=blind)  # fmt: skip
    assert pushed.created and pushed.imported == 20
    project = ls.projects.get(id=pushed.project_id)
    assert project.label_config == label_config(taxonomy) and project.task_number == 20
    again = push(workspace, ls, [p.doc_id for p in sample.picks], taxonomy_version=version)
    assert (again.created, again.imported, again.already_there) == (False, 0, 20)

    settings = BackendSettings(workspace.directory, USER, PASSWORD, SECRET, llm=llm, retrain_every=0,
                               train_kind="hashing-linear")  # fmt: skip
    with BackendThread(create_app(settings)) as backend:
        connected = connect(workspace, ls, project.id, backend.url, username=USER, password=PASSWORD, webhook_secret=SECRET)
        llm_version = f"tnt-v{version}/llm/openai/scripted"
        assert connected.state == "CO" and connected.model_version == llm_version
        (hook,) = [h for h in ls.webhooks.list(project=str(project.id)) if h.url == f"{backend.url}/webhook"]
        assert hook.headers == {WEBHOOK_SECRET_HEADER: SECRET}

        # Predictions through Label Studio's own action; visible on the tasks.
        ls.actions.create(id="retrieve_tasks_predictions", project=project.id, selected_items={"all": True, "excluded": []})
        tasks = list(ls.tasks.list(project=project.id, fields="all"))
        assert len(tasks) == 20
        llm_labels = LabelStore(workspace).current(version, "llm")
        for task in tasks:
            doc_id = task.data["tnt_doc_id"]
            if doc_id in blind:  # people see no prediction: the backend serves none for a blind task
                assert task.data["tnt_blind"] is True and all(not p.result for p in task.predictions)
                continue
            (prediction,) = task.predictions
            assert prediction.model_version == llm_version
            assert prediction.result[0]["value"]["choices"] == [llm_labels[doc_id]["label"]]
            assert task.data["tnt_review_reason"] in sample.counts

        # People annotate through Label Studio's API; the webhook stores each label at once.
        annotations = {}
        for task in tasks[:12]:
            doc_id = task.data["tnt_doc_id"]
            annotations[doc_id] = ls.annotations.create(id=task.id, result=choices(gold[doc_id])).id
        human = LabelStore(workspace).current(version, "human")
        assert {d: human[d]["label"] for d in human} == {d: gold[d] for d in annotations}
        assert {human[d]["origin"] for d in human} == {f"label-studio:{project.id}/{a}" for a in annotations.values()}
        corrected, removed = list(annotations)[:2]
        ls.annotations.update(id=annotations[corrected], result=choices(taxonomy.names[0]))
        ls.annotations.delete(id=annotations[removed])
        human = LabelStore(workspace).current(version, "human")
        assert human[corrected]["label"] == taxonomy.names[0] and removed not in human
        # A second person on three tasks: agreeing twice, disagreeing once.
        for task in tasks[2:5]:
            doc_id = task.data["tnt_doc_id"]
            second = gold[doc_id] if task is not tasks[4] else next(n for n in taxonomy.names if n != gold[doc_id])
            ls.annotations.create(id=task.id, result=choices(second))

        pulled = pull(workspace, ls, project.id)
        assert (pulled.added, pulled.updated, pulled.retracted, pulled.unchanged) == (0, 0, 0, 11 + 3)
        command = ["ls", "pull", "-w", str(workspace.directory), "--project", str(project.id), "--url", label_studio.url]
        shown = CliRunner().invoke(app, command, env={"LABEL_STUDIO_API_KEY": label_studio.api_key})
        assert shown.exit_code == 0 and "0 label(s) added, 0 updated, 0 retracted, 14 unchanged" in shown.output

        report = agreement(workspace, version)
        shared = [d for d in LabelStore(workspace).current(version, "human") if d in llm_labels]
        assert report.llm_vs_human.documents == len(shared) == 11
        assert report.llm_vs_human.kappa is not None and report.llm_vs_human.accuracy < 1.0
        assert report.human_vs_human is not None and report.human_vs_human.documents == 3
        assert report.human_vs_human.accuracy == pytest.approx(2 / 3)
        annotated_blind = len(blind & set(LabelStore(workspace).current(version, "human")) & set(llm_labels))
        assert (report.llm_vs_human_blind.documents, report.llm_vs_human_shown.documents) == (annotated_blind, 11 - annotated_blind)
        rows = CliRunner().invoke(app, ["review", "agreement", "-w", str(workspace.directory)]).output
        assert "blind tasks" in rows and "prediction shown" in rows

        # "Start training" in Label Studio: a new model, a new model_version, new predictions.
        ml_backend = ls.ml.list(project=project.id)[0]
        ls.ml.train(id=ml_backend.id)
        model = wait_for(lambda: latest_model(workspace, version), 120, "no model was trained")
        ls.actions.create(id="retrieve_tasks_predictions", project=project.id, selected_items={"all": True, "excluded": []})
        versions = [{p.model_version for p in t.predictions if p.result}
                    for t in ls.tasks.list(project=project.id, fields="all") if t.data["tnt_doc_id"] not in blind]  # fmt: skip
        assert all(v == {llm_version, f"tnt-v{version}/{model.id}"} for v in versions)

    # Pushing more documents attaches the newest model's predictions to the new tasks.
    more = [d for d in gold if d not in {p.doc_id for p in sample.picks}][:2]
    extra = push(workspace, ls, more, taxonomy_version=version)
    assert extra.imported == 2 and extra.model_version == f"tnt-v{version}/{model.id}"
    new_tasks = [t for t in ls.tasks.list(project=project.id, fields="all") if t.data["tnt_doc_id"] in more]
    assert [[p.model_version for p in t.predictions] for t in new_tasks] == [[extra.model_version]] * 2


def test_a_refined_versions_project_carries_peoples_labels_and_puts_split_ones_first(label_studio, workspace, tmp_path):
    parent, gold, _ = banking_workspace(workspace, tmp_path, categories=3, per_category=6)
    store_llm_labels(workspace, parent.version, gold)
    ls = client(label_studio.url, label_studio.api_key)
    reviewed = list(gold)[::2]
    old = push(workspace, ls, reviewed, taxonomy_version=parent.version, title="refined v1", predictions=False)
    for task in ls.tasks.list(project=old.project_id, fields="task_only"):
        ls.annotations.create(id=task.id, result=choices(gold[task.data["tnt_doc_id"]]))
    assert pull(workspace, ls, old.project_id).added == len(reviewed) == 9

    child = split_first_label(workspace, parent)
    migrate_labels(workspace, child.version)
    split = [d for d in reviewed if gold[d] == parent.labels[0].name]
    carried = {d: gold[d] for d in reviewed if d not in split}
    sample = sample_for_review(workspace, 6, taxonomy_version=child.version)
    assert [p.doc_id for p in sample.picks if p.reason == "migration"] == split == [p.doc_id for p in sample.picks[:3]]

    command = ["ls", "push", "-w", str(workspace.directory), "-t", str(child.version), "--title", "refined v2",
               "--no-predictions", "--url", label_studio.url]  # fmt: skip
    env = {"LABEL_STUDIO_API_KEY": label_studio.api_key}
    shown = CliRunner().invoke(app, command, env=env)
    assert shown.exit_code == 0, shown.output
    assert f"12 task(s) imported ({len(carried)} with a carried human label), 0 already there" in shown.output
    assert "label-studio" not in {item.kind for item in workspace_status(workspace).stale}  # v2 has its project now
    (project,) = [p for p in ls.projects.list() if p.title == "refined v2"]
    assert project.label_config == label_config(child)
    tasks = sorted(ls.tasks.list(project=project.id, fields="all"), key=lambda task: task.id)
    assert [t.data["tnt_doc_id"] for t in tasks[:3]] == split and {t.data["tnt_review_reason"] for t in tasks[:3]} == {"migration"}
    annotated = {t.data["tnt_doc_id"]: t.annotations for t in tasks if t.annotations}
    assert set(annotated) == set(carried) and all(t.data["tnt_review_reason"] == "carried" for t in tasks[6:])
    assert {d: [a["result"][0]["value"]["choices"] for a in found] for d, found in annotated.items()} == {
        d: [[label]] for d, label in carried.items()
    }
    assert all(not t.annotations for t in tasks[:6])  # split and sampled documents wait for people

    again = CliRunner().invoke(app, command, env=env)
    assert again.exit_code == 0 and "0 task(s) imported, 12 already there" in again.output
    pulled = pull(workspace, ls, project.id)
    assert (pulled.added, pulled.retracted) == (len(carried), 0)
    human = LabelStore(workspace).current(child.version, "human")
    assert {d: row["label"] for d, row in human.items()} == carried
    assert agreement(workspace, child.version).human_vs_human is None  # the imported annotation is the same person


def test_an_audit_sample_goes_to_its_own_project_blind_and_only_once(label_studio, workspace, tmp_path):
    from tnt.distill.model import DistilledClassifier
    from tnt.distill.store import ModelStore
    from tnt.distill.tag import tag_corpus
    from tnt.review.audit import audit_report, push_audit, sample_for_audit

    taxonomy, gold, texts = banking_workspace(workspace, tmp_path, categories=3, per_category=8)
    fit = list(gold)[::2]
    model = DistilledClassifier("hashing-linear").fit([texts[d] for d in fit], [gold[d] for d in fit])
    tag_corpus(workspace, ModelStore(workspace).add(model, taxonomy.version, "label", {}, None).id)
    sample = sample_for_audit(workspace, per_label=4)

    ls = client(label_studio.url, label_studio.api_key)
    first = push_audit(workspace, ls)
    assert first.created and first.imported == len(sample.picks)
    project = ls.projects.get(id=first.project_id)
    assert project.title == f"tnt audit v{taxonomy.version}" and not ls.ml.list(project=project.id)
    tasks = list(ls.tasks.list(project=project.id, fields="all"))
    assert all(t.data["tnt_blind"] is True and not t.predictions for t in tasks)
    again = push_audit(workspace, ls)
    assert (again.created, again.imported, again.already_there) == (False, 0, len(sample.picks))
    assert ls.projects.get(id=project.id).task_number == len(sample.picks)

    for task in tasks:  # people label blind; the pull stores their labels
        ls.annotations.create(id=task.id, result=choices(gold[task.data["tnt_doc_id"]]))
    pull(workspace, ls, project.id)
    report = audit_report(workspace)
    assert report.audited == len(sample.picks)
    assert all(row.precision is not None for row in report.labels if row.tagged)
