"""LLM labeling against a taxonomy version, over real HTTP against the scripted server."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import BANKING77
from tests.llm_server import Faults
from tnt.corpus.store import Document, DocumentStore, select_documents
from tnt.labels.labeling import Labeler, label_choices, label_documents
from tnt.labels.store import LabelStore
from tnt.llm.gateway import Gateway, LLMSettings
from tnt.llm.prompts import PromptLibrary
from tnt.taxonomy.store import OTHER_LABEL, Taxonomy, TaxonomyLabel, TaxonomyStore
from tnt.workspace import Workspace

DOCUMENT = re.compile(r"<document>\n(.*?)\n</document>", re.DOTALL)
NOT_A_LABEL = "Mortgage advice"


def banking_rows(count: int) -> list[tuple[str, str]]:
    """(text, category) pairs spread over the categories (the file is sorted by category)."""
    with (BANKING77 / "test.csv").open(encoding="utf-8") as handle:
        rows = [(row["text"], row["category"]) for row in csv.DictReader(handle)]
    return rows[:: len(rows) // count][:count]


def setup_corpus(
    workspace: Workspace, tmp_path: Path, count: int, n_labels: int = 30
) -> tuple[Taxonomy, dict[str, str]]:
    """``count`` documents and a taxonomy of the first ``n_labels`` categories; returns the taxonomy
    and each text's correct answer (Other for the categories left out)."""
    rows = banking_rows(count)
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text, _ in rows), encoding="utf-8")
    workspace.ingest([path])
    categories = list(dict.fromkeys(category for _, category in rows))[:n_labels]
    taxonomy = TaxonomyStore(workspace).save(
        Taxonomy(
            labels=[
                TaxonomyLabel(name=c, description=f"The customer asks about {c.replace('_', ' ')}.")
                for c in categories
            ],
            use_case="customer intent in banking support chats",
        )
    )
    truth = {text: category if category in categories else OTHER_LABEL for text, category in rows}
    return taxonomy, truth


def documents_in(body: dict) -> list[str]:
    return DOCUMENT.findall(body["messages"][1]["content"])


def is_repair(body: dict) -> bool:
    return len(body["messages"]) > 2


def answer(label: str) -> dict:
    return {"label": label, "explanation": f"It is about {label}.", "confidence": 0.75}


class Oracle:
    """Answers with each document's correct label, except where told to misbehave."""

    def __init__(
        self,
        truth: dict[str, str],
        always_wrong=(),
        wrong_first=(),
        wrong_shape_first=(),
        omit_from_batches=(),
    ):
        self.truth = truth
        self.always_wrong = set(always_wrong)
        self.wrong_first = set(wrong_first)
        self.wrong_shape_first = set(wrong_shape_first)
        self.omit_from_batches = set(omit_from_batches)

    def label_for(self, text: str, body: dict) -> str:
        if text in self.always_wrong or (text in self.wrong_first and not is_repair(body)):
            return NOT_A_LABEL
        return self.truth[text]

    def __call__(self, body: dict) -> str:
        texts = documents_in(body)
        if len(texts) == 1 and "Document 1:" not in body["messages"][1]["content"]:
            text = texts[0]
            if text in self.wrong_shape_first and not is_repair(body):
                return json.dumps({"category": self.truth[text]})
            return json.dumps(answer(self.label_for(text, body)))
        results = [
            {"id": number, **answer(self.label_for(text, body))}
            for number, text in enumerate(texts, start=1)
            if text not in self.omit_from_batches
        ]
        return json.dumps({"results": results})


def corpus(workspace: Workspace) -> list[Document]:
    store = DocumentStore(workspace)
    return store.get(store.ids())


def settings_for(server, **overrides) -> LLMSettings:
    values = {
        "model": "openai/scripted", "api_base": server.url, "api_key": "sk-test", "timeout_s": 0.5,
        "backoff_base_s": 0.01, "backoff_max_s": 0.05, "max_retries": 8, "max_concurrency": 8,
    }  # fmt: skip
    return LLMSettings(**(values | overrides))


def rows_of_run(workspace: Workspace, run_id: str) -> list[dict]:
    return list(workspace.db["labels"].rows_where("run_id = ?", [run_id]))


def test_answer_schema_takes_exactly_the_versions_names_and_other(workspace, tmp_path):
    taxonomy, _ = setup_corpus(workspace, tmp_path, 40, n_labels=5)
    labeler = Labeler(taxonomy, PromptLibrary(), multi=True)

    assert label_choices(taxonomy) == [*taxonomy.names, OTHER_LABEL]
    good = {"label": OTHER_LABEL, "extra_labels": [taxonomy.names[0]], "explanation": "x.", "confidence": 0.5}
    assert labeler.answer_schema.model_validate(good).label == OTHER_LABEL
    assert labeler.answer_schema.model_validate(good | {"confidence": 95}).confidence == 0.95  # a percentage
    for bad in ({"label": NOT_A_LABEL}, {"extra_labels": [NOT_A_LABEL]}, {"confidence": 1.5}, {"confidence": 250}):
        with pytest.raises(ValueError):
            labeler.answer_schema.model_validate(good | bad)
    enum = labeler.answer_schema.model_json_schema()["properties"]["label"]["enum"]
    assert enum == [*taxonomy.names, OTHER_LABEL]  # what providers constrain decoding with


def test_static_prompt_is_byte_identical_and_the_document_comes_last(workspace, tmp_path):
    taxonomy, _ = setup_corpus(workspace, tmp_path, 40)
    labeler = Labeler(taxonomy, PromptLibrary())
    docs = corpus(workspace)[:3]
    requests = [labeler.request([doc]) for doc in docs] + [
        labeler.request(docs[:2]),
        labeler.request(docs[1:]),
    ]
    for schema_mode in ("json_schema", "prompt"):
        gateway = Gateway(workspace, LLMSettings(model="openai/x", structured_output=schema_mode))
        sent = [gateway.prepare(r.messages, r.schema, max_tokens=r.max_tokens)[0] for r in requests]
        singles, batches = sent[:3], sent[3:]
        assert len({s[0]["content"] for s in singles}) == 1 and len({b[0]["content"] for b in batches}) == 1
        for messages, request in zip(sent, requests):
            assert all(doc.text not in messages[0]["content"] for doc in request.docs)
            assert documents_in({"messages": messages}) == [doc.text for doc in request.docs]
        assert all(name in singles[0][0]["content"] for name in label_choices(taxonomy))


def test_with_faults_every_document_ends_labeled_or_failed_and_a_rerun_asks_only_the_failed_again(
    workspace, tmp_path, llm_server
):
    taxonomy, truth = setup_corpus(workspace, tmp_path, 60)
    texts = list(truth)
    oracle = Oracle(truth, always_wrong=texts[0:4], wrong_first=texts[4:10], wrong_shape_first=texts[10:16])
    server = llm_server(oracle, faults=Faults(rate=0.3), seed=1)
    ids = select_documents(workspace)
    id_of = {doc.text: doc.id for doc in corpus(workspace)}

    result = label_documents(workspace, taxonomy.version, ids, settings_for(server))

    rows = rows_of_run(workspace, result.run_id)
    labeled = {row["doc_id"]: row for row in rows}
    issues = {
        issue["place"].removeprefix("document "): issue["message"]
        for issue in workspace.runs.issues(result.run_id)
    }
    assert sum(server.faults.values()) > 10
    assert len(rows) == len(labeled) == result.labeled  # one row per document per run
    assert set(labeled) | set(issues) == set(ids) and not set(labeled) & set(issues)
    assert result.failed == len(issues)
    # never valid: recorded with the reason; others fail only where a fault hit their repair round too
    assert {id_of[text] for text in texts[0:4]} <= set(issues) and len(issues) <= 10
    assert all(reason.startswith("attempt 1: invalid answer after one repair round") for reason in issues.values())
    why = [
        f"{NOT_A_LABEL!r} is not a label of the taxonomy",
        "Field required",
        "Invalid JSON",
    ]  # the last two: faults
    assert all(any(reason in issues[id_of[text]] for reason in why) for text in texts[0:4])
    assert any(why[0] in issues[id_of[text]] for text in texts[0:4])
    assert all(row["label"] == truth[text] for text in texts if (row := labeled.get(id_of[text])))
    assert {row["label"] for row in rows} <= set(label_choices(taxonomy))
    assert {(r["model"], r["taxonomy_version"], r["source"]) for r in rows} == {
        ("openai/scripted", taxonomy.version, "llm")
    }
    assert {r["prompt_hash"] for r in rows} == {PromptLibrary().get("label").hash}

    answered = server.count
    again = label_documents(workspace, taxonomy.version, ids, settings_for(server))

    relabeled = {row["doc_id"] for row in rows_of_run(workspace, again.run_id)}
    still_failed = {issue["place"].removeprefix("document ") for issue in workspace.runs.issues(again.run_id)}
    assert again.skipped == len(labeled) and relabeled | still_failed == set(issues)  # only the failed, asked again
    assert {id_of[text] for text in texts[0:4]} <= still_failed and relabeled
    assert {body["temperature"] for body in server.requests[answered:]} == {0.2}  # a second attempt, nudged
    bodies = Counter(json.dumps(body, sort_keys=True) for body in server.requests)
    assert bodies.most_common(1)[0][1] == 1, "an answered request was sent again"


def test_batched_answers_are_checked_per_document_and_left_out_ones_labeled_alone(
    workspace, tmp_path, llm_server
):
    taxonomy, truth = setup_corpus(workspace, tmp_path, 40)
    texts = list(truth)
    left_out = texts[3::8]  # one per batch of 8
    oracle = Oracle(truth, wrong_first=texts[9:10], omit_from_batches=left_out)
    server = llm_server(oracle)
    ids = select_documents(workspace)

    result = label_documents(workspace, taxonomy.version, ids, settings_for(server), batch_size=8)

    rows = rows_of_run(workspace, result.run_id)
    assert (result.labeled, result.failed, len(rows)) == (40, 0, 40)
    assert Counter(r["doc_id"] for r in rows).most_common(1)[0][1] == 1
    by_text = {doc.text: doc.id for doc in corpus(workspace)}
    label_of = {r["doc_id"]: r["label"] for r in rows}
    assert all(label_of[by_text[text]] == truth[text] for text in texts)
    alone = [documents_in(body)[0] for body in server.requests if len(documents_in(body)) == 1]
    assert sorted(alone) == sorted(left_out)
    hashes = {r["doc_id"]: r["prompt_hash"] for r in rows}
    library = PromptLibrary()
    assert {hashes[by_text[t]] for t in left_out} == {library.get("label").hash}
    assert {hashes[by_text[t]] for t in texts if t not in left_out} == {library.get("label_batch").hash}
    batches = [body for body in server.requests if len(documents_in(body)) > 1 and not is_repair(body)]
    assert len(batches) == 5 and sum(map(is_repair, server.requests)) == 1

    again = label_documents(workspace, taxonomy.version, ids, settings_for(server), batch_size=8)
    assert (again.requests, again.skipped) == (0, 40)


def test_multi_label_keeps_further_labels_from_the_taxonomy_only(workspace, tmp_path, llm_server):
    taxonomy, truth = setup_corpus(workspace, tmp_path, 40, n_labels=5)
    names = taxonomy.names

    def respond(body: dict) -> str:
        label = truth[documents_in(body)[0]]
        extra = [NOT_A_LABEL] if label == names[1] and not is_repair(body) else [names[0], label, names[0]]
        return json.dumps({**answer(label), "extra_labels": extra})

    server = llm_server(respond)
    result = label_documents(
        workspace, taxonomy.version, select_documents(workspace), settings_for(server), multi=True
    )

    rows = {r["doc_id"]: r for r in LabelStore(workspace).current(taxonomy.version, "llm").values()}
    assert (result.labeled, sum(map(is_repair, server.requests))) == (40, Counter(truth.values())[names[1]])
    assert all(r["extra_labels"] == ([] if r["label"] == names[0] else [names[0]]) for r in rows.values())
    assert {r["origin"] for r in rows.values()} == {"label:multi"}
    # a single-label run with the same model is a different labeling: it does not count as done
    single = label_documents(workspace, taxonomy.version, select_documents(workspace), settings_for(server))
    assert single.skipped == 0


def test_unknown_ids_in_an_ids_file_are_named_with_their_line(workspace, tmp_path):
    setup_corpus(workspace, tmp_path, 10)
    known = select_documents(workspace)
    path = tmp_path / "ids.txt"
    path.write_text(f"# picked by hand\n{known[0]}\n\nnope\n{known[1]}\n{known[0]}\n")
    with pytest.raises(ValueError, match=r"ids\.txt:4: no document 'nope'"):
        select_documents(workspace, ids_file=path)
    path.write_text(f"{known[1]}\n{known[0]}\n{known[1]}\n")
    assert select_documents(workspace, ids_file=path) == [known[1], known[0]]
    assert select_documents(workspace, sample=4, seed=3) == select_documents(workspace, sample=4, seed=3)
