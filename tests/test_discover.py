"""``tnt taxonomy discover``: intents the taxonomy lacks come back as candidate labels, from what the
tagger left in Other, at one LLM call per candidate."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter, defaultdict

import pytest
from typer.testing import CliRunner

from tnt.cli import app
from tnt.distill.tag import tag_corpus
from tnt.distill.train import train
from tnt.labels.labeling import label_documents
from tnt.labels.migrate import migrate_labels
from tnt.labels.store import LabelStore
from tnt.llm.gateway import LLMSettings
from tnt.taxonomy.discover import DiscoverOptions, accept_candidates, discover_labels
from tnt.taxonomy.store import OTHER_LABEL, Taxonomy, TaxonomyLabel, TaxonomyStore

DOCUMENT = re.compile(r"<document>\n(.*?)\n</document>", re.DOTALL)
PER_INTENT = 40


class Scripted:
    """Labels with the gold intent when the taxonomy offers it, else Other; names a cluster after a
    digest of its members. Counts the naming calls."""

    def __init__(self, truth: dict[str, str]):
        self.truth = truth
        self.namings = 0

    def __call__(self, body: dict) -> str:
        system = body["messages"][0]["content"]
        if system.startswith("You name a cluster"):
            self.namings += 1
            digest = hashlib.sha1(body["messages"][-1]["content"].encode()).hexdigest()[:6]
            return json.dumps({"name": f"topic {digest}", "description": "Documents alike in what they ask."})
        text = DOCUMENT.findall(body["messages"][1]["content"])[0]
        return json.dumps({"label": self.truth[text], "explanation": "scripted", "confidence": 0.9})


@pytest.mark.slow
def test_discover_finds_the_held_out_intents(workspace, banking77, llm_server, tmp_path):
    intents = sorted({c for _, c in banking77["train"]})
    random.Random(7).shuffle(intents)
    known, held_out = intents[:20], intents[20:25]
    by_intent: dict[str, list[str]] = defaultdict(list)
    for text, intent in banking77["train"]:
        if intent in known + held_out and len(by_intent[intent]) < PER_INTENT:
            by_intent[intent].append(text)
    rows = [(text, intent) for intent in known + held_out for text in by_intent[intent]]
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "text": t}) + "\n" for i, (t, _) in enumerate(rows)))
    workspace.ingest([path], id_field="id")
    gold = {f"q{i}": intent for i, (_, intent) in enumerate(rows)}
    taxonomy = TaxonomyStore(workspace).save(
        Taxonomy(labels=[TaxonomyLabel(name=c, description=f"The customer asks about {c.replace('_', ' ')}.") for c in known],
                 use_case="customer intent in banking support chats")
    )  # fmt: skip
    scripted = Scripted({t: (c if c in known else OTHER_LABEL) for t, c in rows})
    server = llm_server(scripted)
    settings = LLMSettings(model="openai/scripted", api_base=server.url, api_key="test")

    runner = CliRunner()
    untagged = runner.invoke(app, ["taxonomy", "discover", "-w", str(workspace.directory), "--namer", "keywords"])
    assert untagged.exit_code == 1 and "tnt train" in untagged.output and "Traceback" not in untagged.output
    bad = runner.invoke(app, ["taxonomy", "discover", "-w", str(workspace.directory), "--threshold", "1.5"])
    assert bad.exit_code == 1 and "between 0 and 1" in bad.output

    labeled = random.Random(0).sample(sorted(gold), 400)
    label_documents(workspace, taxonomy.version, labeled, settings)
    model = train(workspace, taxonomy.version).model
    tag_corpus(workspace, model.id)

    plan = runner.invoke(app, ["taxonomy", "discover", "-w", str(workspace.directory), "--dry-run",
                               "--model", settings.model, "--api-base", server.url])  # fmt: skip
    assert plan.exit_code == 0, plan.output
    requests_before = server.http_requests
    discovery = discover_labels(workspace, DiscoverOptions(), settings)
    assert f"{len(discovery.candidates)} candidate(s)" in plan.output
    assert scripted.namings == len(discovery.candidates) == server.http_requests - requests_before  # one call each

    found = {}
    for intent in held_out:
        total = sum(g == intent for g in gold.values())
        best = max(discovery.candidates, key=lambda c: Counter(gold[d] for d in c.doc_ids)[intent] / c.size)
        hits = Counter(gold[d] for d in best.doc_ids)[intent]
        found[intent] = {"purity": round(hits / best.size, 2), "recall": round(hits / total, 2), "candidate": best.number}
    print("held-out intents:", json.dumps(found, indent=1))
    assert sum(f["purity"] >= 0.6 for f in found.values()) >= 4, found
    for candidate in discovery.candidates:
        assert len(candidate.examples) == 5 and candidate.closest in known and 0 < candidate.share < 1

    accepted = accept_candidates(workspace, discovery, [1, 2])
    assert accepted.parent == taxonomy.version and accepted.names[-2:] == [c.name for c in discovery.candidates[:2]]
    migration = migrate_labels(workspace, accepted.version)  # the new version inherits every label still meant
    known_labels = sum(label != OTHER_LABEL for label in _llm_labels(workspace, taxonomy.version))
    assert 0.8 * known_labels <= migration.carried["unchanged"]["llm"] <= known_labels
    assert migration.pending.get("added", 0) + migration.pending.get("other", 0) > 0  # candidates asked, nothing guessed


def _llm_labels(workspace, version) -> list[str]:
    return [row["label"] for row in LabelStore(workspace).current(version, "llm").values()]
