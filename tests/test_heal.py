"""Failures heal on rerun: a failed document is asked again (a new attempt, told why the last answer
failed, its temperature nudged) up to --max-attempts across runs; valid answers come from the cache;
--refresh asks again regardless of the cache. Over real HTTP against the scripted server."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.llm_server import Faults, Reply
from tests.test_label import NOT_A_LABEL, documents_in, settings_for, setup_corpus
from tests.test_quality import yes_no_alternatives
from tnt.cli import app
from tnt.corpus.store import DocumentStore, select_documents
from tnt.labels.labeling import estimate_labeling, label_documents
from tnt.labels.quality import origin_prefix, score_quality
from tnt.labels.store import LabelStore
from tnt.taxonomy.store import OTHER_LABEL, Taxonomy, TaxonomyLabel, TaxonomyStore
from tnt.workspace import Workspace

CORPUS_SIZE = 3000


class GoldIntent:
    """Answers each document's BANKING77 intent if the request offers it (else Other); the texts in
    ``always_wrong`` always get a name outside the taxonomy."""

    def __init__(self, intent_of: dict[str, str], always_wrong: set[str] = frozenset()):
        self.intent_of = intent_of
        self.always_wrong = always_wrong

    def __call__(self, body: dict) -> str:
        (text,) = documents_in(body)
        offered = body["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"]
        label = self.intent_of[text] if self.intent_of[text] in offered else OTHER_LABEL
        if text in self.always_wrong:
            label = NOT_A_LABEL
        return json.dumps({"label": label, "explanation": f"The customer asks about {label}.", "confidence": 0.9})


def banking_corpus(workspace: Workspace, tmp_path: Path, rows: list[tuple[str, str]]) -> dict[str, str]:
    """``CORPUS_SIZE`` distinct BANKING77 texts ingested, and a taxonomy of all their intents."""
    intent_of: dict[str, str] = {}
    for text, intent in rows[:: len(rows) // CORPUS_SIZE]:
        intent_of.setdefault(text, intent)
    intent_of = dict(list(intent_of.items())[:CORPUS_SIZE])
    path = tmp_path / "banking.jsonl"
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in intent_of), encoding="utf-8")
    workspace.ingest([path])
    labels = [
        TaxonomyLabel(name=intent, description=f"The customer asks about {intent.replace('_', ' ')}.")
        for intent in sorted(set(intent_of.values()))
    ]
    TaxonomyStore(workspace).save(Taxonomy(labels=labels, use_case="customer intent in banking support chats"))
    return intent_of


def current_labels(workspace: Workspace) -> dict[str, dict]:
    return LabelStore(workspace).current(TaxonomyStore(workspace).get(None).version, "llm")


def issues_of(workspace: Workspace, run_id: str) -> dict[str, str]:
    return {issue["place"].removeprefix("document "): issue["message"] for issue in workspace.runs.issues(run_id)}


def failed_attempts(workspace: Workspace) -> list[dict]:
    return list(workspace.db.query("select * from failed_attempts order by doc_id, attempt"))


@pytest.mark.slow
def test_3000_documents_with_30_percent_faults_heal_within_three_reruns(workspace, tmp_path, llm_server, banking77):
    intent_of = banking_corpus(workspace, tmp_path, banking77["train"])
    hopeless = set(list(intent_of)[:: CORPUS_SIZE // 5][:5])  # never answered validly
    faults = Faults(rate=0.3, kinds=("429", "500", "bad_json", "wrong_shape"), retry_after_s=0.01)
    server = llm_server(GoldIntent(intent_of, hopeless), faults=faults, seed=3)
    # one retry per request: some requests run out of them, so transport failures heal on rerun too;
    # PII masking off, so the server sees each text as the gold table has it
    settings = settings_for(server, max_retries=1, max_concurrency=32, timeout_s=5.0, pii="off")
    ids = select_documents(workspace)
    id_of = {doc.text: doc.id for doc in DocumentStore(workspace).get(ids)}
    assert len(ids) == CORPUS_SIZE

    started = time.perf_counter()
    runs = [label_documents(workspace, None, ids, settings)]
    first_failures = {row["outcome"] for row in failed_attempts(workspace)}
    for _ in range(3):  # three reruns
        runs.append(label_documents(workspace, None, ids, settings))
        print(f"run {len(runs)}: {time.perf_counter() - started:.1f} s")
    elapsed = time.perf_counter() - started
    last = runs[-1]  # every document is labeled or out of attempts after the second rerun

    assert runs[0].failed > 30 and first_failures == {"invalid", "error"}  # answers and transport both failed
    labels = current_labels(workspace)
    assert len(labels) >= 0.995 * CORPUS_SIZE
    text_of = {doc_id: text for text, doc_id in id_of.items()}
    assert all(row["label"] == intent_of[text_of[doc_id]] for doc_id, row in labels.items())
    assert {id_of[text] for text in hopeless} <= set(ids) - set(labels)
    assert (last.requests, last.labeled, last.skipped) == (0, 0, len(labels))
    remaining = issues_of(workspace, last.run_id)
    assert set(remaining) == set(ids) - set(labels)
    for message in remaining.values():  # each remaining failure lists every attempt's reason
        assert message.startswith("gave up after 3 attempts (--max-attempts 3): attempt 1: ")
        assert " | attempt 2: " in message and " | attempt 3: " in message
    assert any(f"{NOT_A_LABEL!r} is not a label of the taxonomy" in remaining[id_of[text]] for text in hopeless)

    bodies = Counter(json.dumps(body, sort_keys=True) for body in server.requests)
    assert bodies.most_common(1)[0][1] == 1, "a request answered 200 was sent (and paid) again"
    retries = [body for body in server.requests if body["temperature"] > 0]
    assert {body["temperature"] for body in retries} == {0.2, 0.4}  # attempts 2 and 3, nudged
    told = [body for body in retries if "could not be used" in body["messages"][-1]["content"]]
    assert told and all(documents_in(body) for body in told)  # the document stays in the request
    print(
        f"\n{CORPUS_SIZE} documents, 30 % faults: failed per run {[run.failed for run in runs]}, "
        f"labeled {len(labels)}, HTTP requests {server.http_requests}, 200 answers {server.count}, "
        f"faults {dict(server.faults)}, {elapsed:.1f} s"
    )


def test_max_attempts_stops_asking_and_dry_run_counts_the_documents_asked_again(workspace, tmp_path, llm_server):
    _, truth = setup_corpus(workspace, tmp_path, 10)
    texts = list(truth)
    server = llm_server(GoldIntent(truth, {texts[0], texts[1]}))
    ids = select_documents(workspace)
    id_of = {doc.text: doc.id for doc in DocumentStore(workspace).get(ids)}
    settings = settings_for(server)

    first = label_documents(workspace, None, ids, settings, max_attempts=2)
    assert (first.labeled, first.failed) == (8, 2)
    plan = estimate_labeling(workspace, None, ids, settings, max_attempts=2)
    assert (plan["skipped"], plan["retried"], plan["given_up"], plan["requests"], plan["cached"]) == (8, 2, 0, 2, 0)

    sent = server.count
    second = label_documents(workspace, None, ids, settings, max_attempts=2)
    assert (second.labeled, second.failed, second.skipped) == (0, 2, 8)
    assert server.count - sent == 4  # each of the two asked again, and its repair round
    message = issues_of(workspace, second.run_id)[id_of[texts[0]]]
    assert message.startswith("gave up after 2 attempts (--max-attempts 2): attempt 1: invalid answer")
    assert " | attempt 2: invalid answer" in message and message.count(NOT_A_LABEL) == 2
    plan = estimate_labeling(workspace, None, ids, settings, max_attempts=2)
    assert (plan["retried"], plan["given_up"], plan["requests"]) == (0, 2, 0)

    sent = server.count
    third = label_documents(workspace, None, ids, settings, max_attempts=2)
    assert (third.requests, server.count - sent, third.failed) == (0, 0, 2)  # stopped: nothing sent
    assert set(issues_of(workspace, third.run_id)) == {id_of[texts[0]], id_of[texts[1]]}

    more = label_documents(workspace, None, ids, settings, max_attempts=3)  # a larger budget asks once more
    assert (more.failed, server.count - sent) == (2, 4)
    assert [row["attempt"] for row in failed_attempts(workspace) if row["doc_id"] == id_of[texts[0]]] == [1, 2, 3]
    third_tries = [body for body in server.requests[-4:] if len(body["messages"]) == 2]  # not the repairs
    assert len(third_tries) == 2 and {body["temperature"] for body in server.requests[-4:]} == {0.4}
    assert all("(Attempt 3.) An earlier answer" in body["messages"][-1]["content"] for body in third_tries)


def test_refresh_asks_again_regardless_of_the_cache_and_keeps_the_old_labels(workspace, tmp_path, llm_server):
    _, truth = setup_corpus(workspace, tmp_path, 12)
    server = llm_server(GoldIntent(truth))
    ids = select_documents(workspace)
    label_documents(workspace, None, ids, settings_for(server))
    before = current_labels(workspace)

    chosen = ids[:4]
    ids_file = tmp_path / "chosen.txt"
    ids_file.write_text("\n".join(chosen) + "\n", encoding="utf-8")
    server.responder = GoldIntent({text: OTHER_LABEL for text in truth})  # the model now answers otherwise
    common = [
        "label", "-w", str(workspace.directory), "--ids", str(ids_file), "--refresh",
        "--model", "openai/scripted", "--api-base", server.url, "--api-key", "sk-test",
    ]  # fmt: skip
    dry = CliRunner().invoke(app, [*common, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "│ requests to send                 │ 4 " in dry.output and "already done (skipped)           │ 0 " in dry.output

    sent = server.count
    result = CliRunner().invoke(app, common)
    assert result.exit_code == 0, result.output
    assert "4 done, 0 failed, 0 already done, 4 requests sent" in result.output
    assert server.count - sent == 4
    bodies = Counter(json.dumps(body, sort_keys=True) for body in server.requests)
    assert sorted(bodies.values())[-4:] == [2] * 4  # the identical requests, sent again despite the cache

    after = current_labels(workspace)
    assert {doc_id: after[doc_id]["label"] for doc_id in chosen} == dict.fromkeys(chosen, OTHER_LABEL)
    assert all(after[doc_id] == before[doc_id] for doc_id in ids[4:])
    history = workspace.db.execute("select count(*) from labels where doc_id in (?, ?, ?, ?)", chosen).fetchone()
    assert history[0] == 8  # the old labels stay in the history
    sent = server.count
    again = label_documents(workspace, None, ids, settings_for(server))  # without --refresh: nothing to do
    assert (again.requests, again.skipped, server.count - sent) == (0, 12, 0)


def test_quality_scoring_heals_a_transport_failure_and_refreshes(workspace, tmp_path, llm_server):
    _, truth = setup_corpus(workspace, tmp_path, 6)
    broken = next(iter(truth))
    failures_left = {"count": 2}  # the first request and its one retry get a 500

    def respond(body: dict) -> Reply:
        if documents_in(body) == [broken] and failures_left["count"]:
            failures_left["count"] -= 1
            return Reply("the server had an error", status=500)
        return Reply("yes", top_logprobs=yes_no_alternatives(0.7))

    server = llm_server(respond)
    ids = select_documents(workspace)
    settings = settings_for(server, max_retries=1)

    first = score_quality(workspace, ids, settings)
    assert (first.labeled, first.failed) == (5, 1)
    (message,) = issues_of(workspace, first.run_id).values()
    assert message.startswith("attempt 1: gave up after 2 attempts") and "2 of 3 attempts left" in message

    sent = server.count
    second = score_quality(workspace, ids, settings)
    assert (second.labeled, second.failed, second.skipped, server.count - sent) == (1, 0, 5, 1)
    healed = server.requests[-1]  # the same request as the failed one: it never had an answer to nudge away from
    assert (documents_in(healed), healed["temperature"], healed["top_logprobs"]) == ([broken], 0.0, 20)

    refreshed = score_quality(workspace, ids[:2], settings, refresh=True)
    assert (refreshed.labeled, refreshed.skipped, refreshed.requests) == (2, 0, 2)
    scores = workspace.db.execute(
        "select count(*) from labels where origin like ? and doc_id in (?, ?)", [f"{origin_prefix()}:%", *ids[:2]]
    ).fetchone()
    assert scores[0] == 4  # old scores kept, new ones current
