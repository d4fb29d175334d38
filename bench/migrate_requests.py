"""LLM requests a new taxonomy version costs, with label maps and `tnt label --pending`, against
relabeling everything.

1,200 BANKING77 documents (80 per intent), version 1 with twelve labels labeled by the scripted
server (answering each document's intent from the labels offered) and 120 human labels, as in
``tests/test_migrate.py``. Then, each in a copy of that workspace, version 2 is imported with one
change (a rename; a split of "lost_or_stolen" into its two intents), migrated, and the pending
documents are labeled one per request. Prints, per change, the documents carried, pending and the
requests sent, beside a full relabel (what `tnt label --all` planned for the version before its
migration).

    .venv/bin/python bench/migrate_requests.py
"""

from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path

import yaml

from tests.llm_server import ScriptedLLMServer
from tests.test_migrate import (
    COVERS,
    GoldResponder,
    corpus_and_version_1,
    covers_v2,
    description,
    settings_for,
)
from tnt.labels.labeling import estimate_labeling, label_documents
from tnt.labels.migrate import migrate_labels
from tnt.labels.pending import pending_selection
from tnt.taxonomy.file import dump_taxonomy, import_taxonomy
from tnt.workspace import Workspace

DATA = Path(__file__).resolve().parent.parent / "data" / "banking77"


def rename(labels: list[dict]) -> list[dict]:
    return [entry | {"name": "currency_exchange_rate"} if entry["name"] == "exchange_rate" else entry for entry in labels]


def split(labels: list[dict]) -> list[dict]:
    parts = [{"name": n, "description": description(n), "from": "lost_or_stolen", "split": True} for n in sorted(COVERS["lost_or_stolen"])]
    return [entry for entry in labels if entry["name"] != "lost_or_stolen"] + parts


def measure(base: Path, work: Path, name: str, edit, server: ScriptedLLMServer) -> dict:
    directory = work / name
    shutil.copytree(base, directory)
    with Workspace.open(directory) as ws:
        document = yaml.safe_load(dump_taxonomy(ws.taxonomies.get(1)))
        document["labels"] = edit(document["labels"])
        (directory / "v2.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
        version = import_taxonomy(ws, directory / "v2.yaml").version
        full = estimate_labeling(ws, version, ws.documents.ids(), settings_for(server))["requests"]
        result = migrate_labels(ws, version)
        selection = pending_selection(ws, version)
        server.reset_counts()
        label_documents(ws, version, selection.doc_ids, settings_for(server), pending=selection)
        carried = sum(n for by_source in result.carried.values() for n in by_source.values())
        return {"change": name, "carried": carried, "pending": result.pending, "sent": server.count, "full relabel": full}


def main() -> None:
    with open(DATA / "train.csv", newline="") as rows:
        banking77 = {"train": [(row["text"], row["category"]) for row in csv.DictReader(rows)]}
    work = Path(tempfile.mkdtemp(prefix="tnt-migrate-bench-"))
    base = work / "v1"
    with Workspace.create(base) as ws:
        gold = corpus_and_version_1(ws, work, banking77)
        with ScriptedLLMServer(GoldResponder(gold, COVERS | covers_v2())) as server:
            label_documents(ws, 1, ws.documents.ids(), settings_for(server), batch_size=20)
            lost = sum(1 for row in ws.labels.current(1, "llm").values() if row["label"] == "lost_or_stolen")
    with ScriptedLLMServer(GoldResponder(gold, COVERS | covers_v2())) as server:
        for name, edit in (("rename one label", rename), ("split one label", split)):
            print(measure(base, work, name, edit, server))
    print(f"documents of the split label: {lost}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
