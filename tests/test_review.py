"""Review sampling (reasons, mix, exclusions) and agreement figures, against people and against a
reference version."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from sklearn.metrics import adjusted_mutual_info_score, cohen_kappa_score
from typer.testing import CliRunner

from tests.ls_server import banking_rows, banking_workspace, store_llm_labels
from tests.migration_state import split_first_label
from tnt.cli import app
from tnt.distill.store import load_model
from tnt.distill.train import train as train_model
from tnt.labels.migrate import migrate_labels
from tnt.labels.store import LabelRecord, LabelStore
from tnt.review.agreement import agreement, compare_labels
from tnt.review.sampling import (
    Pick,
    ReviewCandidate,
    ReviewSamples,
    choose_for_review,
    cluster_least_confident,
    margins,
    sample_for_review,
)
from tnt.review.uncertainty import neighbour_density
from tnt.taxonomy.store import Taxonomy, TaxonomyLabel, TaxonomyStore


def candidates() -> list[ReviewCandidate]:
    """60 documents over three labels; the classifier disagrees with the LLM on d00–d09."""
    result = []
    for i in range(60):
        llm = "abc"[i % 3]
        model = "abc"[(i + 1) % 3] if i < 10 else llm
        result.append(ReviewCandidate(f"d{i:02d}", llm, 0.5 + i / 200, model, model_margin=i / 60))
    return result


def test_the_mix_sets_each_strategys_share_and_every_pick_has_its_reason():
    picks = choose_for_review(candidates(), 20, {"disagreement": 0.25, "least_confident": 0.5, "stratified": 0.25})
    assert len(picks) == len({p.doc_id for p in picks}) == 20
    assert Counter(p.reason for p in picks) == {"disagreement": 5, "least_confident": 10, "stratified": 5}
    disagreeing = {f"d{i:02d}" for i in range(10)}
    assert all(p.doc_id in disagreeing for p in picks if p.reason == "disagreement")
    first = next(p for p in picks if p.reason == "disagreement")
    assert first.detail["llm_label"] != first.detail["model_label"]


def test_least_confident_takes_the_smallest_margins_in_turns_across_predicted_labels():
    pool = [ReviewCandidate(f"a{i}", model_label="a", model_margin=0.01 * i) for i in range(10)]
    pool += [ReviewCandidate(f"b{i}", model_label="b", model_margin=0.5 + 0.01 * i) for i in range(3)]
    picks = choose_for_review(pool, 4, {"least_confident": 1})
    assert [p.doc_id for p in picks] == ["a0", "b0", "a1", "b1"]
    assert picks[1].detail == {"model_label": "b", "model_margin": 0.5}


def test_least_confident_spreads_over_clusters_of_similar_texts():
    pool = [ReviewCandidate(f"a{i}", model_label="x", model_margin=0.01 * i) for i in range(10)]
    pool += [ReviewCandidate(f"b{i}", model_label="x", model_margin=0.1 + 0.01 * i) for i in range(10)]
    features = {c.doc_id: [1.0, 0.0] if c.doc_id[0] == "a" else [0.0, 1.0] for c in pool}
    clustered = cluster_least_confident(pool, np.array([features[c.doc_id] for c in pool]), 2)
    picks = choose_for_review(clustered, 2, {"least_confident": 1})
    assert [p.doc_id for p in picks] == ["a0", "b0"]  # margin order alone would take a0, a1
    assert picks[0].detail["cluster"] != picks[1].detail["cluster"]
    assert cluster_least_confident(pool[:2], np.zeros((2, 2)), 2) == pool[:2]


def test_least_confident_prefers_typical_documents_to_a_less_sure_outlier():
    typical = np.array([1.0, 0.0, 0.0]) + np.random.default_rng(0).normal(0, 0.01, (30, 3))
    features = np.vstack([typical, [[0.0, 0.0, 1.0]]])
    pool = [ReviewCandidate(f"t{i}", model_label="x", model_margin=0.10) for i in range(30)]
    pool.append(ReviewCandidate("outlier", model_label="x", model_margin=0.05))
    clustered = cluster_least_confident(pool, features, 1)
    assert clustered[-1].density < 0.1
    assert min(c.density for c in clustered[:-1]) > 0.9
    assert choose_for_review(clustered, 1, {"least_confident": 1})[0].doc_id != "outlier"
    assert choose_for_review(pool, 1, {"least_confident": 1})[0].doc_id == "outlier"  # margin alone


def test_neighbour_density_on_a_sample_ranks_rows_as_the_exact_one_does():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(8, 16))
    features = np.vstack([centre + rng.normal(0, spread, (300, 16)) for centre, spread in zip(centres, np.linspace(0.1, 2.0, 8))])
    exact = neighbour_density(features)
    sampled = neighbour_density(features, reference=600)
    assert np.corrcoef(exact, sampled)[0, 1] > 0.95


def test_stratified_reaches_every_label_rare_ones_first():
    pool = [ReviewCandidate(f"c{i}", llm_label="common") for i in range(50)] + [ReviewCandidate("r0", llm_label="rare")]
    picks = choose_for_review(pool, 2, {"stratified": 1}, seed=3)
    assert picks[0].doc_id == "r0" and picks[1].doc_id.startswith("c")


def test_a_strategy_with_nothing_to_offer_hands_its_share_on_and_unknown_documents_come_last():
    pool = [ReviewCandidate(f"x{i}", llm_label="a", llm_confidence=i / 10) for i in range(5)] + [ReviewCandidate("bare")]
    picks = choose_for_review(pool, 6)  # no classifier: no disagreement, margins from LLM confidence
    assert [p.doc_id for p in picks][:1] == ["x0"]
    assert {p.reason for p in picks} <= {"least_confident", "stratified", "random"}
    assert picks[-1] == Pick("bare", "random")
    assert len(choose_for_review(pool, 100)) == 6


def test_the_same_seed_gives_the_same_sample_and_bad_mixes_are_refused():
    assert choose_for_review(candidates(), 15, seed=4) == choose_for_review(candidates(), 15, seed=4)
    with pytest.raises(ValueError, match="unknown review strategies"):
        choose_for_review(candidates(), 5, {"loudest": 1.0})
    with pytest.raises(ValueError, match="non-negative"):
        choose_for_review(candidates(), 5, {"stratified": 0.0})


def test_margins_are_the_lead_of_the_best_label_over_the_second():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.45, 0.45]])
    assert margins(probabilities, ["a", "b", "c"]) == [
        {"model_label": "a", "model_margin": pytest.approx(0.5)},
        {"model_label": "b", "model_margin": pytest.approx(0.0)},
    ]


def test_sampling_a_workspace_skips_reviewed_and_already_sampled_documents(workspace, tmp_path):
    taxonomy, gold, _ = banking_workspace(workspace, tmp_path, categories=4, per_category=10)
    store_llm_labels(workspace, taxonomy.version, gold)
    LabelStore(workspace).add([LabelRecord("d000", "human", gold["d000"], taxonomy.version, origin="label-studio:1/1")])
    first = sample_for_review(workspace, 15, taxonomy_version=taxonomy.version)
    assert first.classifier is None and len(first.picks) == 15
    assert "d000" not in {p.doc_id for p in first.picks}
    assert {p.reason for p in first.picks} <= {"least_confident", "stratified"}
    second = sample_for_review(workspace, 30, taxonomy_version=taxonomy.version)
    assert len(second.picks) == 40 - 1 - 15  # what is left
    assert not {p.doc_id for p in first.picks} & {p.doc_id for p in second.picks}
    assert ReviewSamples(workspace).latest(taxonomy.version) == second.picks
    run = workspace.runs.get(second.run_id)
    assert run["kind"] == "review-sample" and run["stats"]["picked"] == 24


@pytest.mark.slow
def test_with_a_classifier_disagreements_between_it_and_the_llm_are_sampled(workspace, tmp_path):
    taxonomy, gold, texts = banking_workspace(workspace, tmp_path, categories=4, per_category=15)
    names = taxonomy.names
    noisy = {d: (names[(names.index(label) + 1) % 4] if i % 5 == 0 else label) for i, (d, label) in enumerate(gold.items())}
    seen_in_training = {d: l for i, (d, l) in enumerate(noisy.items()) if i % 3}  # the tagger refits on every label:
    store_llm_labels(workspace, taxonomy.version, seen_in_training)  # it disagrees on documents it never saw
    model = train_model(workspace, taxonomy_version=taxonomy.version, kind="hashing-linear").model
    store_llm_labels(workspace, taxonomy.version, {d: l for d, l in noisy.items() if d not in seen_in_training})
    sample = sample_for_review(workspace, 20, taxonomy_version=taxonomy.version)
    assert sample.classifier == model.id
    predicted = dict(zip(gold, load_model(workspace, model.id).predict(list(texts.values()))))
    disagreements = [p for p in sample.picks if p.reason == "disagreement"]
    assert disagreements and all(predicted[p.doc_id] != noisy[p.doc_id] for p in disagreements)
    assert all(p.detail["model_label"] == predicted[p.doc_id] for p in sample.picks if "model_label" in p.detail)


def test_compare_labels_matches_scikit_learn_and_lists_confusions():
    human = ["a", "a", "b", "b", "c", "c", "c"]
    llm = ["a", "b", "b", "b", "c", "a", "c"]
    pair = compare_labels(human, llm)
    assert pair.documents == 7
    assert pair.kappa == pytest.approx(cohen_kappa_score(human, llm))
    assert pair.accuracy == pytest.approx(5 / 7)
    assert pair.per_label["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert sorted(pair.confusions) == [("a", "b", 1), ("c", "a", 1)]
    assert compare_labels(["a", "a"], ["a", "a"]).kappa is None  # undefined with one label
    assert compare_labels([], []).documents == 0


def test_agreement_between_the_llm_and_people_and_between_people(workspace, tmp_path):
    taxonomy, gold, _ = banking_workspace(workspace, tmp_path, categories=3, per_category=4)
    v = taxonomy.version
    doc_ids = list(gold)
    llm = {d: gold[d] if i % 3 else taxonomy.names[0] for i, d in enumerate(doc_ids)}
    store_llm_labels(workspace, v, llm)
    store = LabelStore(workspace)
    store.add(LabelRecord(d, "human", gold[d], v, origin=f"label-studio:1/{i}") for i, d in enumerate(doc_ids[:9]))
    second = {doc_ids[0]: gold[doc_ids[0]], doc_ids[1]: taxonomy.names[2], doc_ids[2]: gold[doc_ids[2]]}
    store.add(LabelRecord(d, "human", label, v, origin=f"label-studio:1/{100 + i}") for i, (d, label) in enumerate(second.items()))
    report = agreement(workspace, v)
    humans = store.current(v, "human")
    expected = compare_labels([humans[d]["label"] for d in humans], [llm[d] for d in humans])
    assert report.llm_vs_human == expected and report.llm_vs_human.documents == 9
    assert report.human_vs_human.documents == 3 and report.human_vs_human.accuracy == pytest.approx(2 / 3)


def test_review_commands(workspace, tmp_path):
    taxonomy, gold, _ = banking_workspace(workspace, tmp_path, categories=3, per_category=5)
    store_llm_labels(workspace, taxonomy.version, gold)
    LabelStore(workspace).add(
        LabelRecord(d, "human", gold[d] if i else taxonomy.names[1], taxonomy.version, origin=f"label-studio:2/{i}")
        for i, d in enumerate(list(gold)[:6])
    )
    runner = CliRunner()
    w = ["-w", str(workspace.directory)]
    sampled = runner.invoke(app, ["review", "sample", "5", *w, "--mix", "least_confident=1"])
    assert sampled.exit_code == 0, sampled.output
    assert "5 of 9 candidates" in sampled.output and "least_confident 5" in sampled.output
    bad = runner.invoke(app, ["review", "sample", "5", *w, "--mix", "loudest=1"])
    assert bad.exit_code == 1 and "unknown review strategies" in bad.output
    shown = runner.invoke(app, ["review", "agreement", *w])
    assert shown.exit_code == 0 and "LLM vs human" in shown.output and "Most frequent disagreements" in shown.output
    as_json = json.loads(runner.invoke(app, ["review", "agreement", *w, "--json"]).output)
    assert as_json["llm_vs_human"]["documents"] == 6 and as_json["llm_vs_human"]["accuracy"] == pytest.approx(5 / 6)


def test_agreement_with_a_reference_version_through_the_cli(workspace, tmp_path):
    """A coarser version (two intents merged into one label) against the intents imported as human labels."""
    rows = banking_rows(3, 6)
    path = tmp_path / "intents.jsonl"
    path.write_text("".join(json.dumps({"id": f"d{i:02d}", "text": t, "intent": c}) + "\n" for i, (t, c) in enumerate(rows)))
    reference = workspace.ingest([path], id_field="id", label_field="intent").taxonomy_version
    gold = {f"d{i:02d}": c for i, (_, c) in enumerate(rows)}
    first, second, third = list(dict.fromkeys(gold.values()))
    coarse = {first: "Cards", second: "Cards", third: third.replace("_", " ")}
    version = TaxonomyStore(workspace).save(
        Taxonomy(labels=[TaxonomyLabel(name=n, description=n) for n in dict.fromkeys(coarse.values())], method="manual")
    ).version
    store_llm_labels(workspace, version, {d: coarse[c] for d, c in gold.items()})
    expected = adjusted_mutual_info_score(list(gold.values()), [coarse[c] for c in gold.values()])

    runner = CliRunner()
    w = ["-w", str(workspace.directory)]
    shown = runner.invoke(app, ["review", "agreement", *w, "--reference", str(reference)])
    assert shown.exit_code == 0, shown.output
    assert f"Taxonomy v{version} against the human labels of v{reference}: AMI {expected:.3f} over 18 documents" in shown.output
    assert "Each label's most frequent reference label" in shown.output and "0.50" in shown.output
    found = json.loads(runner.invoke(app, ["review", "agreement", *w, "--reference", str(reference), "--json"]).output)
    assert found["reference"]["ami"] == pytest.approx(expected) and 0 < expected < 1
    assert found["reference"]["mapping"]["Cards"] == {"reference": first, "share": 0.5, "count": 12}
    assert found["reference"]["mapping"][coarse[third]] == {"reference": third, "share": 1.0, "count": 6}

    itself = runner.invoke(app, ["review", "agreement", *w, "-t", str(reference), "--reference", str(reference)])
    assert itself.exit_code == 1 and "is the reference itself" in itself.output
    unlabeled = runner.invoke(app, ["review", "agreement", *w, "-t", str(reference), "--reference", str(version)])
    assert unlabeled.exit_code == 1 and f"taxonomy version {version} has no human labels" in unlabeled.output


def migrated_workspace(workspace, tmp_path):
    """v1 with LLM labels on every document and people's labels on every other one; v2 splits v1's
    first label; the migration carried what it could."""
    parent, gold, _ = banking_workspace(workspace, tmp_path, categories=3, per_category=6)
    store_llm_labels(workspace, parent.version, gold)
    reviewed = list(gold)[::2]
    LabelStore(workspace).add(
        LabelRecord(d, "human", gold[d], parent.version, origin=f"label-studio:1/{i}") for i, d in enumerate(reviewed)
    )
    child = split_first_label(workspace, parent)
    migrate_labels(workspace, child.version)
    return parent, child, gold, reviewed


def test_documents_whose_human_label_was_split_come_first_in_the_next_review_sample(workspace, tmp_path):
    parent, child, gold, reviewed = migrated_workspace(workspace, tmp_path)
    split = [d for d in reviewed if gold[d] == parent.labels[0].name]
    assert len(split) == 3
    sample = sample_for_review(workspace, 8, taxonomy_version=child.version)
    assert [p.doc_id for p in sample.picks[:3]] == split and len(sample.picks) == 8
    assert all(p.reason == "migration" for p in sample.picks[:3])
    assert sample.picks[0].detail == {"old_label": parent.labels[0].name, "offered": [label.name for label in child.labels[:2]]}
    assert "migration" not in {p.reason for p in sample.picks[3:]}
    assert not set(reviewed) - set(split) & {p.doc_id for p in sample.picks}  # carried labels need no review
    # Neither sampled again nor once a person labeled them under the new version.
    again = sample_for_review(workspace, 3, taxonomy_version=child.version)
    assert "migration" not in {p.reason for p in again.picks}


def test_a_split_document_a_person_already_relabeled_is_not_reviewed_again(workspace, tmp_path):
    parent, child, gold, reviewed = migrated_workspace(workspace, tmp_path)
    first, *rest = [d for d in reviewed if gold[d] == parent.labels[0].name]
    LabelStore(workspace).add([LabelRecord(first, "human", child.labels[0].name, child.version, origin="label-studio:2/1")])
    sample = sample_for_review(workspace, 5, taxonomy_version=child.version)
    assert [p.doc_id for p in sample.picks if p.reason == "migration"] == rest
    assert first not in {p.doc_id for p in sample.picks}


def test_carried_human_labels_count_in_agreement_as_peoples_labels(workspace, tmp_path):
    parent, child, gold, reviewed = migrated_workspace(workspace, tmp_path)
    carried = [d for d in reviewed if gold[d] != parent.labels[0].name]
    wrong = {d: next(n for n in child.leaf_names if n != gold[d]) for d in carried[:2]}  # the LLM disagrees twice
    store_llm_labels(workspace, child.version, {d: wrong.get(d, gold[d]) for d in gold if gold[d] != parent.labels[0].name})
    report = agreement(workspace, child.version)
    assert report.llm_vs_human.documents == len(carried) == 6
    assert report.llm_vs_human.accuracy == pytest.approx(4 / 6)
    assert report.human_vs_human is None
    # The carried label arriving in the new project as an annotation is the same person, not a second one.
    LabelStore(workspace).add([LabelRecord(carried[0], "human", gold[carried[0]], child.version, origin="label-studio:2/9")])
    assert agreement(workspace, child.version).human_vs_human is None
    other = next(n for n in child.leaf_names if n != gold[carried[0]])
    LabelStore(workspace).add([LabelRecord(carried[0], "human", other, child.version, origin="label-studio:2/10")])
    second_person = agreement(workspace, child.version).human_vs_human
    assert second_person.documents == 1 and second_person.accuracy == 0.0


def test_a_blind_share_is_marked_and_agreement_reports_blind_and_shown_apart(workspace, tmp_path):
    taxonomy, gold, _ = banking_workspace(workspace, tmp_path, categories=4, per_category=10)
    v = taxonomy.version
    llm = {d: gold[d] if i % 4 else taxonomy.names[0] for i, d in enumerate(gold)}
    store_llm_labels(workspace, v, llm)
    sample = sample_for_review(workspace, 20, taxonomy_version=v, blind_share=0.25, seed=3)
    blind = [p.doc_id for p in sample.picks if p.detail.get("blind")]
    assert len(blind) == 5 and len(set(blind)) == 5
    assert ReviewSamples(workspace).blind_doc_ids(v) == set(blind)
    assert blind == [p.doc_id for p in ReviewSamples(workspace).latest(v) if p.detail.get("blind")]
    with pytest.raises(ValueError, match="between 0 and 1"):
        sample_for_review(workspace, 5, taxonomy_version=v, blind_share=1.5)

    picked = [p.doc_id for p in sample.picks]
    LabelStore(workspace).add(LabelRecord(d, "human", gold[d], v, origin=f"label-studio:1/{i}") for i, d in enumerate(picked))
    report = agreement(workspace, v)
    shown = [d for d in picked if d not in blind]
    assert report.llm_vs_human_blind == compare_labels([gold[d] for d in blind], [llm[d] for d in blind])
    assert report.llm_vs_human_shown == compare_labels([gold[d] for d in shown], [llm[d] for d in shown])
    assert report.llm_vs_human.documents == 20
