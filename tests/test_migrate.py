"""Label maps between taxonomy versions, `tnt taxonomy migrate` and `tnt label --pending`, over real
HTTP against the scripted server, on BANKING77: a new version inherits every label whose meaning is
provable and the LLM is asked only about what changed."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.test_label import documents_in
from tnt.cli import app
from tnt.labels.labeling import label_documents
from tnt.labels.migrate import migrate_labels
from tnt.labels.pending import PendingLabels
from tnt.labels.store import LabelRecord, LabelStore
from tnt.llm.gateway import LLMSettings
from tnt.taxonomy.file import TaxonomyFileError, dump_taxonomy, import_taxonomy
from tnt.taxonomy.store import OTHER_LABEL, Taxonomy, TaxonomyLabel, TaxonomyStore
from tnt.workspace import Workspace

PER_INTENT = 80
# Version 1: twelve labels; "lost_or_stolen" covers two BANKING77 intents (it is split in version 2).
COVERS = {"lost_or_stolen": {"lost_or_stolen_card", "lost_or_stolen_phone"}}
V1_LABELS = [
    "card_arrival", "card_linking", "exchange_rate", "top_up_failed", "top_up_reverted", "lost_or_stolen",
    "cash_withdrawal_charge", "balance_not_updated_after_bank_transfer", "declined_card_payment",
    "pending_transfer", "transfer_timing", "wrong_amount_of_cash_received",
]  # fmt: skip
OTHER_INTENTS = ["apple_pay_or_google_pay", "cancel_transfer"]  # labeled Other under version 1
TAXONOMY_LINE = re.compile(r"^- (?P<name>[^:\n]+?)(?: \(under [^)]*\))?: ", re.MULTILINE)
runner = CliRunner()


def description(name: str) -> str:
    return f"The customer asks about {name.replace('_', ' ')}."


def offered(body: dict) -> list[str]:
    """The label names a request offers, read from its system message as the model reads them."""
    table = body["messages"][0]["content"].split("The taxonomy:\n", 1)[1].split("\n\n", 1)[0]
    return TAXONOMY_LINE.findall(table)


class GoldResponder:
    """Answers each document with the offered label covering its BANKING77 intent, else Other."""

    def __init__(self, gold: dict[str, str], covers: dict[str, set[str]]):
        self.gold, self.covers = gold, covers

    def label_for(self, text: str, choices: list[str]) -> str:
        intent = self.gold[text]
        return next((name for name in choices if intent in self.covers.get(name, {name})), OTHER_LABEL)

    def __call__(self, body: dict) -> str:
        choices = offered(body)
        answers = [
            {"label": self.label_for(text, choices), "explanation": "Its intent.", "confidence": 0.9}
            for text in documents_in(body)
        ]
        if "Document 1:" not in body["messages"][1]["content"]:
            return json.dumps(answers[0])
        return json.dumps({"results": [{"id": i, **a} for i, a in enumerate(answers, start=1)]})


def settings_for(server) -> LLMSettings:
    return LLMSettings(model="openai/scripted", api_base=server.url, api_key="test", max_concurrency=16, pii="off")


def llm_args(server) -> list[str]:
    return ["--model", "openai/scripted", "--api-base", server.url, "--api-key", "test", "--pii", "off"]


def corpus_and_version_1(workspace: Workspace, tmp_path: Path, banking77) -> dict[str, str]:
    """1,200 documents (80 per intent), version 1 and 120 human labels; returns each text's intent."""
    wanted = [*(i for name in V1_LABELS for i in COVERS.get(name, {name})), *OTHER_INTENTS]
    rows: dict[str, list[str]] = {intent: [] for intent in wanted}
    for text, intent in banking77["train"]:
        if intent in rows and len(rows[intent]) < PER_INTENT and text not in rows[intent]:
            rows[intent].append(text)
    gold = {text: intent for intent, texts in rows.items() for text in texts}
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in gold), encoding="utf-8")
    workspace.ingest([path])
    labels = [TaxonomyLabel(name=name, description=description(name)) for name in V1_LABELS]
    v1 = TaxonomyStore(workspace).save(Taxonomy(labels=labels, use_case="customer intent in banking chats"))
    ids = workspace.documents.ids()
    text_of = {doc.id: doc.text for doc in workspace.documents.get(ids)}
    responder = GoldResponder(gold, COVERS)
    LabelStore(workspace).add(
        LabelRecord(doc_id, "human", responder.label_for(text_of[doc_id], [*V1_LABELS, OTHER_LABEL]), v1.version,
                    origin="test:review")
        for doc_id in ids[::10]
    )  # fmt: skip
    return gold


def edited_file(workspace: Workspace, tmp_path: Path) -> Path:
    """Version 1 edited: one rename, one merge, one split, one label added, one removed, one reworded."""
    document = yaml.safe_load(dump_taxonomy(TaxonomyStore(workspace).get(1)))
    entries = {entry["name"]: entry for entry in document["labels"]}
    entries["exchange_rate"] |= {"name": "currency_exchange_rate", "from": "exchange_rate"}
    entries["card_linking"]["description"] = "Linking a card to the app, reworded."
    merged = {"name": "top_up_problems", "description": "A top-up failed or was reverted.", "from": ["top_up_failed", "top_up_reverted"]}
    parts = [{"name": n, "description": description(n), "from": "lost_or_stolen", "split": "true"}
             for n in sorted(COVERS["lost_or_stolen"])]  # fmt: skip
    kept = [e for n, e in entries.items() if n not in {"top_up_failed", "top_up_reverted", "lost_or_stolen", "cash_withdrawal_charge"}]
    added = {"name": "apple_pay_or_google_pay", "description": description("apple_pay_or_google_pay")}
    document["labels"] = [*kept, merged, *parts, added]
    path = tmp_path / "v2.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def covers_v2() -> dict[str, set[str]]:
    return {"top_up_problems": {"top_up_failed", "top_up_reverted"}, "currency_exchange_rate": {"exchange_rate"}}


def row(output: str, title: str) -> str:
    """The value beside ``title`` in a printed two-column table."""
    return next(line for line in output.splitlines() if title in line).split("│")[-2].strip()


def planned_requests(output: str) -> int:
    return int(row(output, "requests to send").replace(",", ""))


@pytest.mark.slow
def test_a_new_version_inherits_what_survives_and_asks_only_about_what_changed(
    workspace, tmp_path, banking77, llm_server
):
    gold = corpus_and_version_1(workspace, tmp_path, banking77)
    server = llm_server(GoldResponder(gold, COVERS | covers_v2()))  # the labels of both versions
    ids = workspace.documents.ids()
    assert label_documents(workspace, 1, ids, settings_for(server), batch_size=20).labeled == len(gold) == 1200
    server.reset_counts()
    ws = ["-w", str(workspace.directory)]
    v1_llm = LabelStore(workspace).current(1, "llm")
    docs_of = {name: {d for d, row in v1_llm.items() if row["label"] == name} for name in [*V1_LABELS, OTHER_LABEL]}
    people = Counter(row["label"] for row in LabelStore(workspace).current(1, "human").values())

    imported = runner.invoke(app, ["taxonomy", "import", str(edited_file(workspace, tmp_path)), *ws])

    assert imported.exit_code == 0, imported.output
    out = " ".join(imported.output.split())
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:5]] for line in imported.output.splitlines()
            if line.count("│") >= 5}  # fmt: skip
    assert rows["renamed"] == [str(len(docs_of["exchange_rate"])), str(people["exchange_rate"]), "0"]  # llm, human, model
    merged = ("top_up_failed", "top_up_reverted")
    assert rows["merged"] == [str(sum(len(docs_of[n]) for n in merged)), str(sum(people[n] for n in merged)), "0"]
    assert f"{len(docs_of['lost_or_stolen'])} split" in out and f"{len(docs_of['cash_withdrawal_charge'])} removed" in out
    assert f"{len(docs_of[OTHER_LABEL])} other" in out
    v2 = TaxonomyStore(workspace).get(2)
    assert v2.label_map.counts() == {"unchanged": 6, "reworded": 1, "renamed": 1, "merged": 1, "split": 1, "added": 1, "removed": 1}
    carried = LabelStore(workspace).current(2, "human")
    waiting = people["lost_or_stolen"] + people["cash_withdrawal_charge"] + people[OTHER_LABEL]
    assert len(carried) == 120 - waiting  # people's labels of the split, removed and Other documents wait
    assert all(row["origin"] == "migrate:v1→v2" and row["migrated_from"] for row in carried.values())
    pending = {p.doc_id: p for p in PendingLabels(workspace).all(2)}
    assert {d for d, p in pending.items() if p.reason == "split"} == docs_of["lost_or_stolen"]
    assert all(p.offered == sorted(COVERS["lost_or_stolen"]) for p in pending.values() if p.reason == "split")
    assert not pending.keys() & (docs_of["exchange_rate"] | docs_of["top_up_failed"] | docs_of["top_up_reverted"])

    batched = ["--batch-size", "10"]  # a split label's documents share requests only with each other
    dry = runner.invoke(app, ["label", *ws, "--taxonomy", "2", *batched, "--dry-run", *llm_args(server)])
    assert dry.exit_code == 0, dry.output
    assert "the default while some are open" in " ".join(dry.output.split())
    planned = planned_requests(dry.output)
    assert row(dry.output, "documents selected") == f"{len(pending):,}" and server.count == 0
    assert len(pending) / 10 <= planned < len(pending) / 10 + 4

    labeled = runner.invoke(app, ["label", *ws, "--taxonomy", "2", "--pending", *batched, *llm_args(server)])

    assert labeled.exit_code == 0, labeled.output
    assert server.count == planned
    text_of = {doc.id: doc.text for doc in workspace.documents.get(ids)}
    sent = [(offered(body), text) for body in server.requests for text in documents_in(body)]
    never_asked = {text_of[d] for d in docs_of["exchange_rate"] | docs_of["top_up_failed"] | docs_of["top_up_reverted"]}
    assert not {text for _, text in sent} & never_asked
    split_texts = {text_of[d] for d in docs_of["lost_or_stolen"]}
    assert all(choices == [*sorted(COVERS["lost_or_stolen"]), OTHER_LABEL] for choices, text in sent if text in split_texts)
    v2_llm = LabelStore(workspace).current(2, "llm")
    assert set(v2_llm) == set(ids) and PendingLabels(workspace).counts(2) == {}
    assert all(v2_llm[d]["label"] == gold[text_of[d]] for d in docs_of["lost_or_stolen"])
    again = runner.invoke(app, ["label", *ws, "--taxonomy", "2", "--pending", *batched, *llm_args(server)])
    assert again.exit_code == 0 and server.count == planned

    trained = runner.invoke(app, ["train", *ws, "--taxonomy", "2", "--kind", "hashing-linear"])
    assert trained.exit_code == 0, trained.output
    assert server.count == planned


def small_workspace(workspace: Workspace, tmp_path: Path, n_labels: int = 4, per_label: int = 5) -> Taxonomy:
    """A few documents per label, each with an LLM label and every fifth with a person's."""
    names = [f"label_{i}" for i in range(n_labels)]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": f"doc {n} {j}"}) + "\n" for n in names for j in range(per_label)))
    workspace.ingest([path])
    v1 = TaxonomyStore(workspace).save(Taxonomy(labels=[TaxonomyLabel(name=n, description=description(n)) for n in names]))
    docs = workspace.documents.get(workspace.documents.ids())
    LabelStore(workspace).add(LabelRecord(d.id, "llm", d.text.split()[1], v1.version, confidence=0.7, explanation="x") for d in docs)
    LabelStore(workspace).add(LabelRecord(d.id, "human", d.text.split()[1], v1.version) for d in docs[::5])
    return v1


def test_a_one_label_rename_sends_no_request_and_a_second_migrate_changes_nothing(workspace, tmp_path, llm_server):
    v1 = small_workspace(workspace, tmp_path)
    server = llm_server(GoldResponder({}, {}))
    path = tmp_path / "renamed.yaml"
    path.write_text(dump_taxonomy(v1).replace("name: label_0", "name: label zero"))  # same description: a rename
    ws = ["-w", str(workspace.directory)]

    assert runner.invoke(app, ["taxonomy", "import", str(path), "--no-migrate", *ws]).exit_code == 0
    first = migrate_labels(workspace, 2)
    rows = workspace.db.execute("select count(*) from labels").fetchone()[0]
    second = runner.invoke(app, ["taxonomy", "migrate", "2", *ws])
    dry = runner.invoke(app, ["label", *ws, "--taxonomy", "2", "--pending", "--dry-run", *llm_args(server)])
    dry_all = runner.invoke(app, ["label", *ws, "--taxonomy", "2", "--all", "--dry-run", *llm_args(server)])

    people = Counter(row["label"] for row in LabelStore(workspace).current(1, "human").values())
    assert first.carried == {"renamed": {"llm": 5, "human": people["label_0"]}, "unchanged": {"llm": 15, "human": 4 - people["label_0"]}}
    assert first.pending == {}
    assert "nothing new to carry (24 carried before)" in " ".join(second.output.split())
    assert workspace.db.execute("select count(*) from labels").fetchone()[0] == rows
    assert dry.exit_code == 0 and planned_requests(dry.output) == 0 and server.count == 0
    assert dry_all.exit_code == 0 and planned_requests(dry_all.output) == 0  # carried labels are not asked again
    labels = LabelStore(workspace).current(2, "llm")
    assert sorted({row["label"] for row in labels.values()}) == ["label zero", "label_1", "label_2", "label_3"]
    originals = {row["id"]: row for row in LabelStore(workspace).current(1, "llm").values()}
    assert all(originals[row["migrated_from"]]["doc_id"] == doc for doc, row in labels.items())
    assert all((row["confidence"], row["explanation"]) == (0.7, "x") for row in labels.values())


def test_a_label_given_under_the_new_version_is_never_replaced_by_a_carried_one(workspace, tmp_path):
    v1 = small_workspace(workspace, tmp_path, n_labels=2, per_label=2)
    path = tmp_path / "same.yaml"
    path.write_text(dump_taxonomy(v1))
    import_taxonomy(workspace, path)
    doc = workspace.documents.ids()[0]
    LabelStore(workspace).add([LabelRecord(doc, "llm", "label_1", 2, origin="label")])
    LabelStore(workspace).add([LabelRecord(doc, "llm", "label_0", 1, origin="label")])  # a later v1 answer

    migrate_labels(workspace, 2)

    assert LabelStore(workspace).current(2, "llm")[doc]["label"] == "label_1"


BAD_FILES = {
    "unknown": ("""\
version: 1
labels:
  - name: Everything
    description: anything at all
    from: [label_0, label_9]
""", 5, "'label_9', which is not a label of the parent"),
    "two merges": ("""\
version: 1
labels:
  - name: First
    description: zero and one
    from: [label_0, label_1]
  - name: Second
    description: one and two
    from: [label_1, label_2]
""", 8, "'label_1' is claimed by 'First' and by 'Second'"),
    "lonely split": ("""\
version: 1
labels:
  - name: label_1
    description: one
  - name: Zero part
    description: part of zero
    from: label_0
    split: true
  - name: Zero other part
    description: the rest of zero, but it forgot its `from`
""", 7, "the split of 'label_0' has one part ('Zero part')"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_wrong_from_is_reported_on_its_line_and_nothing_is_saved(workspace, tmp_path, case):
    small_workspace(workspace, tmp_path)
    text, line, message = BAD_FILES[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(TaxonomyFileError) as caught:
        import_taxonomy(workspace, path)
    assert any(at == line and message in said for at, said in caught.value.problems), caught.value.problems
    result = runner.invoke(app, ["taxonomy", "import", str(path), "-w", str(workspace.directory)])
    assert result.exit_code == 1 and f"bad.yaml:{line}:" in " ".join(result.output.split())
    assert len(TaxonomyStore(workspace).all()) == 1 and workspace.db["pending_labels"].count == 0


def test_diff_shows_the_label_map(workspace, tmp_path):
    small_workspace(workspace, tmp_path)
    path = tmp_path / "v2.yaml"
    path.write_text("""\
version: 1
labels:
  - name: Zero and one
    description: zero or one
    from: [label_0, label_1]
  - name: Two a
    description: two, first half
    from: label_2
  - name: Two b
    description: two, second half
    from: label_2
  - name: New
    description: something new
""")
    import_taxonomy(workspace, path)
    shown = runner.invoke(app, ["taxonomy", "diff", "1", "2", "-w", str(workspace.directory)])
    lines = [" ".join(line.split()) for line in shown.output.splitlines()]
    assert "~ label_0, label_1 → Zero and one (merged)" in lines
    assert "~ label_2 → Two a, Two b (split)" in lines
    assert "+ New: something new" in lines and any(line.startswith("- label_3") for line in lines)


# Killed by SIGKILL the moment SQLite is asked to write the pending rows: the carried labels are
# written by then, in the same transaction, not yet committed.
MIGRATE_AND_DIE = """
import os, signal, sys
from tnt.labels.migrate import migrate_labels
from tnt.workspace import Workspace

def die_at_pending_rows(sql):
    if sql.lstrip().upper().startswith("INSERT") and "pending_labels" in sql:
        os.kill(os.getpid(), signal.SIGKILL)

workspace = Workspace.open(sys.argv[1])
workspace.db.conn.set_trace_callback(die_at_pending_rows)
migrate_labels(workspace, 2)
"""


def test_a_migration_killed_before_it_commits_leaves_nothing_and_resumes_to_the_same_result(workspace, tmp_path):
    v1 = small_workspace(workspace, tmp_path)
    document = yaml.safe_load(dump_taxonomy(v1))
    document["labels"] = [entry for entry in document["labels"] if entry["name"] != "label_3"]
    (tmp_path / "v2.yaml").write_text(yaml.safe_dump(document))
    import_taxonomy(workspace, tmp_path / "v2.yaml")  # label_3 removed
    before = workspace.db.execute("select count(*) from labels").fetchone()[0]

    killed = subprocess.run([sys.executable, "-c", MIGRATE_AND_DIE, str(workspace.directory)], check=False, timeout=120)

    assert killed.returncode == -signal.SIGKILL
    assert workspace.db.execute("select count(*) from labels").fetchone()[0] == before
    assert workspace.db["pending_labels"].count == 0
    result = migrate_labels(workspace, 2)
    people = Counter(row["label"] for row in LabelStore(workspace).current(1, "human").values())
    assert result.carried == {"unchanged": {"llm": 15, "human": 4 - people["label_3"]}} and result.pending == {"removed": 5}
    assert workspace.db["pending_labels"].count == 5


def test_refine_answers_with_from_its_claims_are_checked_and_the_labels_carried(workspace, tmp_path, llm_server):
    small_workspace(workspace, tmp_path)
    bad = {"id": 1, "name": "Low labels", "description": "zero or one", "from": ["label_0", "label_9"]}
    good = bad | {"from": ["label_0", "label_1"]}
    rest = [{"id": i, "name": n, "description": description(n), "from": [n]} for i, n in ((2, "label_2"), (3, "label_3"))]
    answers = iter([bad, good])

    def responder(body: dict) -> str:
        assert body["response_format"]["json_schema"]["name"] == "RefineAnswer"
        return json.dumps({"changes": ["merged label_0 and label_1"], "labels": [next(answers), *rest]})

    server = llm_server(responder)
    refined = runner.invoke(app, ["taxonomy", "refine", "--feedback", "merge 0 and 1", "--no-corrections",
                                  "-w", str(workspace.directory), *llm_args(server)])  # fmt: skip

    assert refined.exit_code == 0, refined.output
    assert server.count == 2  # the first answer named a label the table lacks: sent back
    assert "'label_9', which is not a label of the parent" in server.requests[1]["messages"][-1]["content"]
    v2 = TaxonomyStore(workspace).get(2)
    assert [str(change) for change in v2.label_map.changes] == [
        "merged: label_0, label_1 → Low labels", "unchanged: label_2", "unchanged: label_3"
    ]
    assert Counter(row["label"] for row in LabelStore(workspace).current(2, "llm").values()) == {
        "Low labels": 10, "label_2": 5, "label_3": 5
    }
