"""``--method cluster`` on a small BANKING77 sample: real embeddings and k-means, scripted names."""

import csv
import json
import re

import pytest

from tests.conftest import BANKING77
from tnt.labels.store import LabelStore
from tnt.llm.gateway import LLMSettings
from tnt.taxonomy.pipeline import (
    ClusterOptions,
    GenerateOptions,
    cluster_taxonomy,
    generate_taxonomy,
)
from tnt.taxonomy.proposer import ProposerSettings
from tnt.taxonomy.store import TaxonomyStore

INTENTS = ("card_arrival", "exchange_rate", "top_up_failed")
NAMES = {"card": "Card delivery", "exchange": "Exchange rates", "top": "Failed top-ups"}


@pytest.fixture
def banking_sample(workspace, tmp_path):
    """20 texts from each of three intents, their intents imported as reference labels."""
    with (BANKING77 / "train.csv").open() as f:
        rows = [row for row in csv.DictReader(f) if row["category"] in INTENTS]
    picked = [row for intent in INTENTS for row in [r for r in rows if r["category"] == intent][:20]]
    path = tmp_path / "sample.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["text", "category"])
        writer.writeheader()
        writer.writerows(picked)
    workspace.ingest([path], label_field="category")
    return TaxonomyStore(workspace).get().version


def members(body) -> str:
    return re.search(r"<document>\n(.*?)\n</document>", body["messages"][-1]["content"], re.DOTALL).group(1).lower()


def name_for(body) -> str:
    text = members(body)
    counts = {name: text.count(word) for word, name in NAMES.items()}
    return max(counts, key=counts.get)


def settings(server) -> LLMSettings:
    return LLMSettings(model="openai/scripted", api_base=server.url, api_key="test")


@pytest.mark.slow
def test_cluster_method_names_clusters_stores_labels_and_seeds_the_tnt_loop(workspace, banking_sample, llm_server):
    def responder(body):
        kind = body["response_format"]["json_schema"]["name"]
        if kind == "ClusterName":
            # the first answer clashes for every cluster; asked again with the taken names, it differs
            taken = "These names are taken" in body["messages"][0]["content"]
            name = name_for(body) if taken else "Banking question"
            return json.dumps({"name": name, "description": f"Customers asking about {name.lower()}."})
        if kind == "UpdateAnswer":
            rows = re.findall(r"^\d+\. (.+?): (.*)$", body["messages"][-1]["content"].split("<document>")[0], re.MULTILINE)
            labels = [{"id": i, "name": n, "description": d} for i, (n, d) in enumerate(rows, 1)]
            return json.dumps({"rating": 85, "explanation": "fits", "suggested_edits": [], "labels": labels})
        if kind == "TableAnswer":  # the review
            return json.dumps({"labels": [{"id": 1, "name": "Cards", "description": "Card delivery."},
                                          {"id": 2, "name": "Money in", "description": "Rates and top-ups."}]})  # fmt: skip
        raise AssertionError(kind)

    server = llm_server(responder)
    options = ClusterOptions(use_case="the customer's intent", k=3, representatives=5, reference=banking_sample)
    outcome = cluster_taxonomy(workspace, options, settings(server))

    taxonomy = outcome.taxonomy
    # the biggest cluster keeps the clashing name; the other two were asked again and renamed
    assert len(taxonomy.names) == 3 and "Banking question" in taxonomy.names
    assert set(taxonomy.names) - {"Banking question"} <= set(NAMES.values())
    assert taxonomy.method == "cluster" and set(taxonomy.prompt_hashes) == {"taxonomy_name_cluster", "summarize"}
    assert outcome.stats["ami_clusters"] > 0.6  # three well-separated intents
    assert outcome.stats["ami_labels"] == outcome.stats["ami_clusters"]  # no clusters merged
    assert {row["reference"] for row in outcome.stats["mapping"].values()} == set(INTENTS)
    assigned = LabelStore(workspace).current(taxonomy.version, "model")
    assert len(assigned) == 60 and {row["label"] for row in assigned.values()} == set(taxonomy.names)
    ask_counts = [b for b in server.requests if b["response_format"]["json_schema"]["name"] == "ClusterName"]
    assert len(ask_counts) == 3 + 2  # the biggest cluster keeps "Banking question" in round one, two asked again
    assert workspace.runs.issues(taxonomy.run_id) == []

    seeded = generate_taxonomy(workspace, GenerateOptions(
        use_case="the customer's intent", seed_version=taxonomy.version,
        proposer=ProposerSettings(batch_size=30, epochs=1, validation_share=0.0)), settings(server))  # fmt: skip
    assert seeded.parent == taxonomy.version and seeded.names == ["Cards", "Money in"]
    first_update = next(b for b in server.requests if b["response_format"]["json_schema"]["name"] == "UpdateAnswer")
    assert "Banking question" in first_update["messages"][-1]["content"]  # the loop started from the cluster table


@pytest.mark.slow
def test_clusters_that_keep_one_name_are_merged_and_reported(workspace, banking_sample, llm_server):
    server = llm_server(lambda body: json.dumps({"name": "Banking", "description": "Any banking question."}))
    options = ClusterOptions(use_case="the customer's intent", k=3, retries=1, reference=banking_sample)
    outcome = cluster_taxonomy(workspace, options, settings(server))

    assert outcome.taxonomy.names == ["Banking"]
    [issue] = workspace.runs.issues(outcome.taxonomy.run_id)
    assert "kept the same name and were merged into 'Banking'" in issue["message"]
    assert outcome.stats["ami_labels"] == pytest.approx(0.0, abs=1e-9) and outcome.stats["ami_clusters"] > 0.6
