"""``--method cluster`` on a small BANKING77 sample: real embeddings and k-means; names from the
scripted LLM server, or from c-TF-IDF keywords on real BANKING77 text."""

import asyncio
import csv
import json
import re

import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer
from typer.testing import CliRunner

from tests.conftest import BANKING77
from tnt.cli import app
from tnt.labels.store import LabelStore
from tnt.llm.gateway import LLMSettings
from tnt.taxonomy.cluster import Clusters
from tnt.taxonomy.guardrails import TaxonomyLimits, guardrail_problems
from tnt.taxonomy.keywords import KeywordNamer, class_tfidf, distinct, stop_words
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


# The keyword namer (c-TF-IDF, no LLM)

@pytest.fixture(scope="module")
def intent_clusters() -> tuple[list[str], list[str], Clusters]:
    """BANKING77's train texts with each of the 77 intents as one cluster (what a perfect k-means would find)."""
    with (BANKING77 / "train.csv").open() as f:
        rows = list(csv.DictReader(f))
    intents = sorted({row["category"] for row in rows})
    assignments = np.array([intents.index(row["category"]) for row in rows])
    return [row["text"] for row in rows], intents, Clusters(assignments, [[] for _ in intents])


def term_shares(texts: list[str], clusters: Clusters) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Terms (the namer's tokens), and each term's share of all terms inside each cluster and outside it."""
    vectorizer = CountVectorizer(stop_words=stop_words(), ngram_range=(1, 2))
    counts = vectorizer.fit_transform([" ".join(np.array(texts)[clusters.assignments == c]) for c in range(len(clusters.sizes))])
    counts = counts.toarray()
    rest = counts.sum(axis=0) - counts
    return list(vectorizer.get_feature_names_out()), counts / counts.sum(axis=1, keepdims=True), rest / rest.sum(axis=1, keepdims=True)


def test_keyword_names_are_words_that_set_each_cluster_apart(intent_clusters):
    texts, intents, clusters = intent_clusters
    named = asyncio.run(KeywordNamer().name(texts, clusters))
    assert guardrail_problems(named.labels, TaxonomyLimits(max_labels=77)) == []
    terms, inside, outside = term_shares(texts, clusters)
    for c, intent in enumerate(intents):
        name = named.label_of_cluster[c]
        keywords = name.split(", ")
        assert len(keywords) == 3 and len({w for k in keywords for w in k.split()}) == sum(len(k.split()) for k in keywords)
        first = terms.index(keywords[0])
        assert inside[c, first] > 2 * outside[c, first], (intent, name)  # far more frequent in its cluster
    words = {intent: named.label_of_cluster[c] for c, intent in enumerate(intents)}
    assert "card" in words["card_arrival"] and "activ" in words["activate_my_card"] and "top" in words["top_up_failed"]
    assert "rate" in words["exchange_rate"] and "phone" in words["lost_or_stolen_phone"]
    description = next(label.description for label in named.labels if label.name == words["card_arrival"])
    assert description.startswith("Top keywords: ") and ("arriv" in description or "deliver" in description)


def test_class_tfidf_is_frequency_in_the_cluster_times_log_of_average_words_over_frequency():
    weights, terms = class_tfidf(["apple apple banana", "banana cherry"], ngram_range=(1, 1))
    average_words = 5 / 2
    expected = {
        (0, "apple"): 2 / 3 * np.log(1 + average_words / 2), (0, "banana"): 1 / 3 * np.log(1 + average_words / 2),
        (1, "banana"): 1 / 2 * np.log(1 + average_words / 2), (1, "cherry"): 1 / 2 * np.log(1 + average_words / 1),
    }  # fmt: skip
    dense = weights.toarray()
    assert terms == ["apple", "banana", "cherry"] and dense[0, 2] == 0
    for (row, term), value in expected.items():
        assert dense[row, terms.index(term)] == pytest.approx(value)


def test_distinct_keywords_share_no_word_and_a_phrase_replaces_the_word_it_follows():
    assert distinct(["top", "top up", "up", "card", "new card", "new"]) == ["top up", "new card"]
    assert distinct(["card", "new", "new card", "card pin", "pin"]) == ["card", "new", "pin"]


def test_clusters_with_the_same_keywords_get_other_names_or_merge(intent_clusters):
    texts, _, clusters = intent_clusters
    # cluster 0's texts twice over, as two clusters: same keywords, so the smaller swaps its last one
    first = [t for t, a in zip(texts, clusters.assignments) if a == 0]
    twins = Clusters(np.array([0] * len(first) + [1] * (len(first) - 1)), [[], []])
    named = asyncio.run(KeywordNamer().name(first + first[:-1], twins))
    biggest, smaller = named.label_of_cluster
    assert biggest != smaller and biggest.split(", ")[:2] == smaller.split(", ")[:2]
    # one word each: nothing to swap in, so the two clusters keep one name and are merged
    alike = asyncio.run(KeywordNamer().name(["refund"] * 4, Clusters(np.array([0, 0, 1, 1]), [[], []])))
    assert [label.name for label in alike.labels] == ["refund"] and alike.merged == {"refund": [0, 1]}


def test_keyword_names_keep_to_the_word_limits(intent_clusters):
    texts, _, clusters = intent_clusters
    limits = TaxonomyLimits(max_name_words=2, max_description_words=6)
    named = asyncio.run(KeywordNamer(limits).name(texts, clusters))
    assert guardrail_problems(named.labels, limits.model_copy(update={"max_labels": 77})) == []
    assert all(len(label.description.split()) <= 6 for label in named.labels)


@pytest.mark.slow
def test_cli_cluster_method_with_keyword_names_calls_no_llm(workspace, banking_sample):
    w = ["-w", str(workspace.directory)]
    nowhere = ["--model", "openai/none", "--api-base", "http://127.0.0.1:9/v1"]  # any LLM call would fail
    generate = ["taxonomy", "generate", *w, "--use-case", "the customer's intent", "--method", "cluster",
                "--namer", "keywords", "--no-summarize", "--k", "3", "--reference", str(banking_sample), *nowhere]  # fmt: skip
    result = CliRunner().invoke(app, generate)
    assert result.exit_code == 0, result.output
    taxonomy = TaxonomyStore(workspace).get()
    assert taxonomy.method == "cluster" and taxonomy.model is None and taxonomy.prompt_hashes == {}
    assert len(taxonomy.names) == 3 and "c-TF-IDF keywords" in taxonomy.note
    assigned = LabelStore(workspace).current(taxonomy.version, "model")
    assert {row["origin"] for row in assigned.values()} == {f"cluster:{taxonomy.run_id}"}
    assert workspace.db["llm_calls"].count == 0
    assert re.search(r"ami_labels: 0\.[6-9]|ami_labels: 1\.0", result.output), result.output
