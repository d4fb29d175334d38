"""The ML backend over HTTP: credentials, bad bodies, config checks, predictions, webhook, retraining."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from label_studio_backend import BackendSettings, create_app
from tests.ls_server import (
    BackendThread,
    banking_workspace,
    free_port,
    oracle,
    store_llm_labels,
)
from tests.migration_state import split_first_label
from tnt.distill.store import latest_model
from tnt.distill.train import gather_examples
from tnt.distill.train import train as train_model
from tnt.labels.migrate import migrate_labels
from tnt.labels.store import LabelRecord, LabelStore
from tnt.llm.gateway import LLMSettings
from tnt.review.labelstudio import (
    WEBHOOK_SECRET_HEADER,
    ProjectLink,
    ProjectLinks,
    label_config,
)
from tnt.taxonomy.store import TaxonomyStore

USER, PASSWORD, SECRET = "tnt", "backend-password", "webhook-secret"
PROJECT = 7


def basic(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def corpus(workspace, tmp_path):
    """A linked project over 40 BANKING77 documents, LLM labels cached for all but the last five."""
    taxonomy, gold, texts = banking_workspace(workspace, tmp_path)
    ProjectLinks(workspace).save(ProjectLink(PROJECT, "http://ls", "test project", taxonomy.version, False))
    cached = dict(list(gold.items())[:-5])
    store_llm_labels(workspace, taxonomy.version, cached)
    return taxonomy, gold, texts


def make_client(workspace, llm: LLMSettings | None = None, **options) -> TestClient:
    settings = BackendSettings(workspace.directory, USER, PASSWORD, SECRET, llm=llm or LLMSettings(), **options)
    return TestClient(create_app(settings), raise_server_exceptions=False)


def predict_body(taxonomy, doc_ids, texts, config=None) -> dict:
    return {
        "tasks": [{"id": i + 1, "data": {"text": texts[d], "tnt_doc_id": d}} for i, d in enumerate(doc_ids)],
        "project": f"{PROJECT}.1700000000",
        "label_config": config or label_config(taxonomy),
        "params": {"context": None},
    }


def annotation_payload(action: str, annotation_id: int, doc_id: str, label: str | None, cancelled: bool = False) -> dict:
    result = [] if label is None else [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}
    ]  # fmt: skip
    return {
        "action": action,
        "annotation": {"id": annotation_id, "task": 100 + annotation_id, "result": result, "was_cancelled": cancelled,
                       "completed_by": 1},
        "task": {"id": 100 + annotation_id, "data": {"text": "…", "tnt_doc_id": doc_id}},
        "project": {"id": PROJECT, "title": "test project"},
    }  # fmt: skip


def test_every_route_refuses_missing_or_wrong_credentials(workspace, corpus):
    taxonomy, _, texts = corpus
    client = make_client(workspace)
    requests = [
        ("GET", "/health", None),
        ("POST", "/setup", {"project": f"{PROJECT}.1", "schema": label_config(taxonomy)}),
        ("POST", "/predict", predict_body(taxonomy, ["d000"], texts)),
        ("POST", "/webhook", annotation_payload("ANNOTATION_CREATED", 1, "d000", taxonomy.names[0])),
    ]
    bad_credentials = [{}, basic(password="wrong"), basic(user="someone"), {"Authorization": "Basic !!!"},
                       {"Authorization": "Bearer " + PASSWORD}, {WEBHOOK_SECRET_HEADER: "wrong"}]  # fmt: skip
    for method, path, body in requests:
        for headers in bad_credentials:
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.headers["www-authenticate"].startswith("Basic")
        assert client.request(method, path, json=body, headers=basic()).status_code == 200, path
    # The secret header opens the webhook only; Label Studio's ML calls use basic auth.
    assert client.post("/webhook", json=requests[3][2], headers={WEBHOOK_SECRET_HEADER: SECRET}).status_code == 200
    assert client.post("/predict", json=requests[2][2], headers={WEBHOOK_SECRET_HEADER: SECRET}).status_code == 401


def test_malformed_bodies_get_400_with_the_reason_and_no_trace(workspace, corpus):
    taxonomy, _, texts = corpus
    client = make_client(workspace)
    good = predict_body(taxonomy, ["d000"], texts)
    cases = [
        ("/predict", b'{"tasks": [', "not valid JSON"),
        ("/predict", b"\xff\xfe", "not valid JSON"),
        ("/predict", {k: v for k, v in good.items() if k != "tasks"}, "tasks: Field required"),
        ("/predict", good | {"tasks": [{"id": 1}]}, "tasks.0.data: Field required"),
        ("/predict", good | {"project": "no-id"}, "project must look like"),
        ("/setup", {"project": f"{PROJECT}.1"}, "schema: Field required"),
        ("/webhook", [1, 2], "body: Input should be a valid dictionary"),
        ("/webhook", {"annotation": {}}, "action: Field required"),
        ("/webhook", annotation_payload("ANNOTATION_CREATED", 1, "d000", "x") | {"project": None}, "names no project"),
        ("/webhook", {**annotation_payload("ANNOTATION_CREATED", 1, "d000", "x"), "annotation": {"id": "one"}},
         "annotation id must be an integer"),
        ("/webhook", {**annotation_payload("ANNOTATION_CREATED", 1, "d000", "x"), "task": {"id": 101, "data": {}}},
         "no tnt document id"),
    ]  # fmt: skip
    for path, body, reason in cases:
        content = body if isinstance(body, bytes) else None
        response = client.post(path, content=content, json=None if content else body, headers=basic())
        assert response.status_code == 400, (path, body, response.text)
        assert reason in response.json()["error"], (reason, response.json())
        assert "Traceback" not in response.text and ".py" not in response.text


def test_unexpected_errors_answer_500_without_a_trace(workspace, corpus):
    taxonomy, _, texts = corpus
    ProjectLinks(workspace).save(ProjectLink(8, "http://ls", "broken", 999, False))  # no taxonomy v999
    client = make_client(workspace)
    response = client.post("/predict", json=predict_body(taxonomy, ["d000"], texts) | {"project": "8.1"}, headers=basic())
    assert response.status_code == 500
    assert response.json() == {"error": "internal error (WorkspaceError); see the tnt backend's log"}


def test_a_config_whose_control_has_another_name_is_a_clear_error(workspace, corpus):
    taxonomy, _, texts = corpus
    client = make_client(workspace)
    renamed = label_config(taxonomy).replace('name="label"', 'name="intent"')
    for path, body in (
        ("/predict", predict_body(taxonomy, ["d000"], texts, config=renamed)),
        ("/setup", {"project": f"{PROJECT}.1", "schema": renamed}),
    ):
        response = client.post(path, json=body, headers=basic())
        assert response.status_code == 422
        error = response.json()["error"]
        assert "'from_name' 'label' not found in configuration" in error
        assert "tnt ls config" in error
    # A config missing one of the taxonomy's labels is refused the same way, naming the label.
    missing = label_config(taxonomy).replace(f'<Choice value="{taxonomy.names[1]}" />', "")
    response = client.post("/predict", json=predict_body(taxonomy, ["d000"], texts, config=missing), headers=basic())
    assert response.status_code == 422 and "Invalid value for control 'label'" in response.json()["error"]


def test_an_unlinked_project_is_named(workspace, corpus):
    taxonomy, _, _ = corpus
    response = make_client(workspace).post(
        "/setup", json={"project": "41.1700000000", "schema": label_config(taxonomy)}, headers=basic()
    )
    assert response.status_code == 422
    assert "project 41 is not linked" in response.json()["error"] and "tnt ls push" in response.json()["error"]


def test_predict_serves_cached_llm_labels_as_validated_choices(workspace, corpus):
    taxonomy, gold, texts = corpus
    client = make_client(workspace)
    setup = client.post("/setup", json={"project": f"{PROJECT}.1", "schema": label_config(taxonomy)}, headers=basic())
    model_version = f"tnt-v{taxonomy.version}/llm/local/smollm2"
    assert setup.json() == {"model_version": model_version}
    doc_ids = ["d000", "d009", "d020", "d034"]
    response = client.post("/predict", json=predict_body(taxonomy, doc_ids, texts), headers=basic())
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["result"][0]["value"]["choices"] for r in results] == [[gold[d]] for d in doc_ids]
    assert all(r["model_version"] == model_version and r["score"] == 0.8 for r in results)
    assert all(r["result"][0] | {"value": None} == {"from_name": "label", "to_name": "text", "type": "choices", "value": None}
               for r in results)  # fmt: skip


def test_a_blind_task_gets_no_prediction_and_costs_nothing(workspace, corpus, llm_server):
    taxonomy, gold, texts = corpus
    server = llm_server(oracle({texts[d]: gold[d] for d in gold}))
    llm = LLMSettings(model="openai/scripted", api_base=server.url, api_key="sk-test", backoff_base_s=0.01)
    body = predict_body(taxonomy, ["d000", list(gold)[-1]], texts)
    for task in body["tasks"]:
        task["data"]["tnt_blind"] = True
    results = make_client(workspace, llm=llm).post("/predict", json=body, headers=basic()).json()["results"]
    assert [r["result"] for r in results] == [[], []] and all(r["model_version"].endswith("/blind") for r in results)
    assert server.count == 0  # not even the uncached document went to the LLM


def test_predict_labels_uncached_documents_through_the_llm(workspace, corpus, llm_server):
    taxonomy, gold, texts = corpus
    server = llm_server(oracle({texts[d]: gold[d] for d in gold}))
    llm = LLMSettings(model="openai/scripted", api_base=server.url, api_key="sk-test", backoff_base_s=0.01)
    client = make_client(workspace, llm=llm)
    uncached = list(gold)[-5:]
    response = client.post("/predict", json=predict_body(taxonomy, ["d000", *uncached], texts), headers=basic())
    results = response.json()["results"]
    assert [r["result"][0]["value"]["choices"][0] for r in results] == [gold[d] for d in ["d000", *uncached]]
    assert server.count == 5  # only the uncached documents went to the LLM
    assert set(LabelStore(workspace).current(taxonomy.version, "llm")) >= set(uncached)
    client.post("/predict", json=predict_body(taxonomy, uncached, texts), headers=basic())
    assert server.count == 5  # and now they are cached


@pytest.mark.slow
def test_concurrent_requests_for_the_same_unlabeled_documents_pay_the_llm_once(workspace, corpus, llm_server):
    taxonomy, gold, texts = corpus
    server = llm_server(oracle({texts[d]: gold[d] for d in gold}), latency_s=0.2)
    llm = LLMSettings(model="openai/scripted", api_base=server.url, api_key="sk-test", backoff_base_s=0.01)
    uncached = list(gold)[-5:]

    async def fire(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, headers=basic(), timeout=60) as client:
            body = predict_body(taxonomy, uncached, texts)
            return await asyncio.gather(*(client.post("/predict", json=body) for _ in range(10)))

    with BackendThread(create_app(BackendSettings(workspace.directory, USER, PASSWORD, SECRET, llm=llm))) as backend:
        responses = asyncio.run(fire(backend.url))
    assert [r.status_code for r in responses] == [200] * 10
    assert all([x["result"][0]["value"]["choices"][0] for x in r.json()["results"]] == [gold[d] for d in uncached]
               for r in responses)  # fmt: skip
    assert server.count == 5


def test_a_task_without_a_label_gets_an_empty_result_that_label_studio_will_ask_for_again(workspace, corpus):
    taxonomy, _, texts = corpus
    body = predict_body(taxonomy, ["d000"], texts)
    body["tasks"].append({"id": 99, "data": {"text": "imported by hand, no tnt id"}})
    results = make_client(workspace).post("/predict", json=body, headers=basic()).json()["results"]
    assert len(results) == 2 and results[0]["result"]
    assert results[1] == {"result": [], "score": None, "model_version": f"tnt-v{taxonomy.version}/llm/local/smollm2/unavailable"}


def test_a_two_level_taxonomy_gets_taxonomy_paths(workspace, tmp_path):
    taxonomy, gold, texts = banking_workspace(workspace, tmp_path, categories=4, per_category=3, groups=True)
    ProjectLinks(workspace).save(ProjectLink(PROJECT, "http://ls", "grouped", taxonomy.version, False))
    store_llm_labels(workspace, taxonomy.version, gold)
    config = label_config(taxonomy)
    assert "<Taxonomy" in config and "<Choices" not in config
    response = make_client(workspace).post("/predict", json=predict_body(taxonomy, ["d000", "d011"], texts, config), headers=basic())
    parent = {label.name: label.parent for label in taxonomy.labels}
    for result, doc_id in zip(response.json()["results"], ["d000", "d011"]):
        assert result["result"][0]["type"] == "taxonomy"
        assert result["result"][0]["value"] == {"taxonomy": [[parent[gold[doc_id]], gold[doc_id]]]}


@pytest.mark.slow
@pytest.mark.parametrize("source", ["cached LLM labels", "distilled model"])
def test_fifty_concurrent_predicts_all_succeed(workspace, corpus, source):
    taxonomy, _, texts = corpus
    if source == "distilled model":
        model = train_model(workspace, taxonomy_version=taxonomy.version, kind="hashing-linear").model
    settings = BackendSettings(workspace.directory, USER, PASSWORD, SECRET)
    doc_ids = list(texts)[:20]

    async def fire(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, headers=basic(), timeout=60) as client:
            bodies = [predict_body(taxonomy, doc_ids[: 1 + i % 20], texts) for i in range(50)]
            return await asyncio.gather(*(client.post("/predict", json=body) for body in bodies))

    with BackendThread(create_app(settings)) as backend:
        responses = asyncio.run(fire(backend.url))
    assert [r.status_code for r in responses] == [200] * 50
    assert [len(r.json()["results"]) for r in responses] == [1 + i % 20 for i in range(50)]
    expected = f"tnt-v{taxonomy.version}/" + (model.id if source == "distilled model" else "llm/local/smollm2")
    assert {r.json()["model_version"] for r in responses} == {expected}


def test_webhook_stores_updates_and_retracts_human_labels_at_once(workspace, corpus):
    taxonomy, _, _ = corpus
    client = make_client(workspace, retrain_every=0)
    first, second = taxonomy.names[:2]
    human = lambda: LabelStore(workspace).current(taxonomy.version, "human")

    def send(payload: dict) -> dict:
        response = client.post("/webhook", json=payload, headers={WEBHOOK_SECRET_HEADER: SECRET})
        assert response.status_code == 200, response.text
        return response.json()

    assert send(annotation_payload("ANNOTATION_CREATED", 1, "d000", first))["added"] == 1
    assert human()["d000"]["label"] == first and human()["d000"]["origin"] == f"label-studio:{PROJECT}/1"
    assert human()["d000"]["model"] == "label-studio-user:1"
    assert send(annotation_payload("ANNOTATION_CREATED", 1, "d000", first))["unchanged"] == 1  # a resend
    assert send(annotation_payload("ANNOTATION_UPDATED", 1, "d000", second))["updated"] == 1
    assert human()["d000"]["label"] == second
    send({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 1}], "project": {"id": PROJECT}})
    assert "d000" not in human()
    send(annotation_payload("ANNOTATION_CREATED", 2, "d001", first))
    assert send(annotation_payload("ANNOTATION_UPDATED", 2, "d001", first, cancelled=True))["retracted"] == 1
    assert "d001" not in human()
    # Bulk creation (Label Studio's import of annotations) sends lists.
    bulk = [annotation_payload("ANNOTATIONS_CREATED", i, d, first) for i, d in ((5, "d005"), (6, "d006"))]
    reply = send({"action": "ANNOTATIONS_CREATED", "annotation": [b["annotation"] for b in bulk],
                  "task": [b["task"] for b in bulk], "project": {"id": PROJECT}})  # fmt: skip
    assert reply["added"] == 2 and {"d005", "d006"} <= set(human())
    assert send({"action": "PROJECT_UPDATED", "project": {"id": PROJECT}}) == {"status": "ignored", "action": "PROJECT_UPDATED"}


@pytest.mark.slow
def test_new_human_labels_and_start_training_retrain_in_the_background(workspace, corpus):
    taxonomy, gold, texts = corpus
    client = make_client(workspace, retrain_every=3, train_kind="hashing-linear")
    backend = client.app.state.backend
    schema = {"project": f"{PROJECT}.1", "schema": label_config(taxonomy)}
    before = client.post("/setup", json=schema, headers=basic()).json()["model_version"]
    replies = [
        client.post("/webhook", json=annotation_payload("ANNOTATION_CREATED", i, doc_id, gold[doc_id]),
                    headers={WEBHOOK_SECRET_HEADER: SECRET}).json()
        for i, doc_id in enumerate(["d001", "d010", "d020"], start=1)
    ]  # fmt: skip
    assert [reply["training_started"] for reply in replies] == [False, False, True]
    backend.retrainer.wait(120)
    first_model = latest_model(workspace, taxonomy.version)
    assert first_model is not None and first_model.kind == "hashing-linear"
    after = client.post("/setup", json=schema, headers=basic()).json()["model_version"]
    assert after == f"tnt-v{taxonomy.version}/{first_model.id}" != before

    # One more annotation (below retrain_every), then Label Studio's "Start training" button sends
    # START_TRAINING (with basic auth) to the webhook. (Without a new label it would return the same model.)
    client.post("/webhook", json=annotation_payload("ANNOTATION_CREATED", 4, "d030", gold["d030"]),
                headers={WEBHOOK_SECRET_HEADER: SECRET})  # fmt: skip
    reply = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": PROJECT}}, headers=basic())
    assert reply.json() == {"status": "training started"}
    backend.retrainer.wait(120)
    assert latest_model(workspace, taxonomy.version).id != first_model.id
    assert client.get("/health", headers=basic()).json()["training"][str(taxonomy.version)]["trained"] == 2
    # The distilled model now answers /predict.
    results = client.post("/predict", json=predict_body(taxonomy, ["d000"], texts), headers=basic()).json()["results"]
    assert results[0]["model_version"] == f"tnt-v{taxonomy.version}/{latest_model(workspace, taxonomy.version).id}"
    assert results[0]["result"][0]["value"]["choices"][0] in TaxonomyStore(workspace).get(taxonomy.version).names


@pytest.mark.slow
def test_tnt_serve_starts_the_backend_and_needs_its_secrets(workspace, corpus):
    port = free_port()
    env = {**os.environ, "TNT_BACKEND_PASSWORD": PASSWORD, "TNT_WEBHOOK_SECRET": SECRET}
    command = [str(Path(sys.executable).parent / "tnt"), "serve", "-w", str(workspace.directory), "--port", str(port)]
    missing = subprocess.run(command, check=False, env={**env, "TNT_BACKEND_PASSWORD": ""}, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "set TNT_BACKEND_PASSWORD" in missing.stderr
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health", headers=basic(), timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None, process.stdout.read().decode()
                time.sleep(0.2)
        assert response.status_code == 200 and response.json()["status"] == "UP"
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 401
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0].decode()
    assert PASSWORD not in output and SECRET not in output


@pytest.mark.slow
def test_a_refined_version_is_served_from_carried_llm_labels_until_its_model_exists(workspace, corpus):
    """After ``tnt taxonomy migrate``, the new version's project gets the carried LLM labels under the
    new version's model_version; ``tnt train`` learns the carried labels (people's included), and from
    then on the new version's model answers, while the old project keeps its own."""
    taxonomy, gold, texts = corpus
    people = list(gold)[-5:]  # documents the LLM never labeled; people did, under v1
    LabelStore(workspace).add(LabelRecord(d, "human", gold[d], taxonomy.version, origin=f"label-studio:{PROJECT}/{i}")
                              for i, d in enumerate(people))  # fmt: skip
    child = split_first_label(workspace, taxonomy)
    migrate_labels(workspace, child.version)
    ProjectLinks(workspace).save(ProjectLink(PROJECT + 1, "http://ls", "refined", child.version, False))
    client = make_client(workspace)
    old_schema = {"project": f"{PROJECT}.1", "schema": label_config(taxonomy)}
    new_schema = {"project": f"{PROJECT + 1}.1", "schema": label_config(child)}
    llm_version = f"tnt-v{child.version}/llm/local/smollm2"
    assert client.post("/setup", json=new_schema, headers=basic()).json() == {"model_version": llm_version}

    kept = ["d010", "d020", "d030"]  # labels the split left as they were
    body = predict_body(child, kept, texts) | {"project": f"{PROJECT + 1}.1"}
    results = client.post("/predict", json=body, headers=basic()).json()["results"]
    assert [r["result"][0]["value"]["choices"] for r in results] == [[gold[d]] for d in kept]
    assert {r["model_version"] for r in results} == {llm_version}

    split = {d for d in gold if gold[d] == taxonomy.labels[0].name}
    examples = gather_examples(workspace, child.version, "single").examples  # what `tnt train` learns
    assert {d: (e.target, e.source) for d, e in examples.items()} == {
        d: (gold[d], "human" if d in people else "llm") for d in gold if d not in split
    }  # every carried label once, people's as people's
    report = train_model(workspace, taxonomy_version=child.version, kind="hashing-linear")
    assert report.metrics["n_train_human"] == len(people)
    assert set(report.model.labels) == set(child.leaf_names[2:])  # the split's parts have no documents yet
    model_version = f"tnt-v{child.version}/{report.model.id}"
    assert client.post("/setup", json=new_schema, headers=basic()).json() == {"model_version": model_version}
    results = client.post("/predict", json=body, headers=basic()).json()["results"]
    assert {r["model_version"] for r in results} == {model_version}
    assert all(r["result"][0]["value"]["choices"][0] in child.leaf_names for r in results)
    assert client.post("/setup", json=old_schema, headers=basic()).json() == {
        "model_version": f"tnt-v{taxonomy.version}/llm/local/smollm2"
    }
