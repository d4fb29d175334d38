"""The audit: a stratified blind sample of the tagged corpus, per-label precision with Wilson intervals
that cover the truth, prevalence corrected for the tagger's confusions."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from typer.testing import CliRunner

from tnt.cli import app
from tnt.distill.model import DistilledClassifier
from tnt.distill.store import ModelStore
from tnt.distill.tag import tag_corpus
from tnt.labels.store import LabelRecord, LabelStore
from tnt.report import build_report
from tnt.select import SelectionSpec, select
from tnt.review.audit import (
    AuditSamples,
    audit_estimates,
    audit_report,
    draw_audit_sample,
    sample_for_audit,
)
from tnt.taxonomy.store import Taxonomy, TaxonomyLabel, TaxonomyStore


@pytest.fixture(scope="module")
def tagged(banking77) -> tuple[dict[str, str], dict[str, str]]:
    """({doc_id: predicted}, {doc_id: gold}): a hashing-linear tagger fitted on 1,500 training queries
    tags the other 8,500 and the test split; gold intents play the people."""
    train = list(banking77["train"])
    random.Random(0).shuffle(train)
    fit, rest = train[:1500], train[1500:] + banking77["test"]
    model = DistilledClassifier("hashing-linear").fit([t for t, _ in fit], [c for _, c in fit])
    ids = [f"d{i}" for i in range(len(rest))]
    return dict(zip(ids, map(str, model.predict([t for t, _ in rest])))), {i: c for i, (_, c) in zip(ids, rest)}


def test_the_sample_takes_n_per_predicted_label_and_small_labels_whole():
    predicted = {f"a{i}": "A" for i in range(50)} | {f"b{i}": "B" for i in range(3)}
    picks = draw_audit_sample(predicted, 20, seed=1)
    assert sum(p.predicted == "A" for p in picks) == 20 and sum(p.predicted == "B" for p in picks) == 3
    assert picks == draw_audit_sample(predicted, 20, seed=1) != draw_audit_sample(predicted, 20, seed=2)
    assert {picks[0].predicted, picks[1].predicted} == {"A", "B"}  # interleaved: a short review covers both


@pytest.mark.slow
def test_wilson_intervals_cover_the_true_precision_over_20_seeds(tagged):
    predicted, gold = tagged
    labels = sorted(set(predicted.values()))
    precision = {
        label: sum(gold[d] == label for d, p in predicted.items() if p == label) / sum(p == label for p in predicted.values())
        for label in labels
    }
    assert 0.3 < min(precision.values()) < 0.95  # a tagger that errs, or coverage would prove nothing
    covered = pairs = 0
    for seed in range(20):
        picks = draw_audit_sample(predicted, 20, seed)
        rows = audit_estimates(predicted, {p.doc_id: gold[p.doc_id] for p in picks}, labels)
        for row in rows:
            pairs += 1
            covered += row.precision.low <= precision[row.label] <= row.precision.high
    assert pairs == 20 * len(labels)
    assert covered / pairs >= 0.90, covered / pairs


@pytest.mark.slow
def test_corrected_prevalence_is_closer_to_the_truth_than_the_raw_tags(tagged):
    predicted, gold = tagged
    labels = sorted(set(predicted.values()))
    picks = draw_audit_sample(predicted, 20, seed=0)
    rows = audit_estimates(predicted, {p.doc_id: gold[p.doc_id] for p in picks}, labels)
    true_share = {label: sum(g == label for g in gold.values()) / len(gold) for label in labels}
    raw_error = sum(abs(r.prevalence_tagged - true_share[r.label]) for r in rows)
    corrected_error = sum(abs(r.prevalence.estimate - true_share[r.label]) for r in rows)
    assert corrected_error < raw_error
    inside = sum(r.prevalence.low <= true_share[r.label] <= r.prevalence.high for r in rows)
    assert inside / len(rows) >= 0.85


def test_audit_through_the_workspace(workspace, banking77, tmp_path):
    rows = [(t, c) for t, c in banking77["test"] if c in ("card_arrival", "lost_or_stolen_card", "top_up_failed")]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": f"doc-{i}", "text": t}) + "\n" for i, (t, _) in enumerate(rows)))
    workspace.ingest([path], id_field="id")
    gold = {f"doc-{i}": c for i, (_, c) in enumerate(rows)}
    runner = CliRunner()
    ws_args = ["-w", str(workspace.directory)]

    no_taxonomy = runner.invoke(app, ["audit", "sample", *ws_args])
    assert no_taxonomy.exit_code == 1 and "no taxonomy" in no_taxonomy.output
    labels = sorted(set(gold.values()))
    version = TaxonomyStore(workspace).save(Taxonomy(labels=[TaxonomyLabel(name=n, description=n) for n in labels])).version
    no_model = runner.invoke(app, ["audit", "sample", *ws_args])
    assert no_model.exit_code == 1 and "tnt train" in no_model.output and "Traceback" not in no_model.output

    fit = rows[::4]  # a quarter of each intent: a tagger that errs a little
    model = DistilledClassifier("hashing-linear").fit([t for t, _ in fit], [c for _, c in fit])
    info = ModelStore(workspace).add(model, version, "label", {}, None)
    untagged = runner.invoke(app, ["audit", "sample", *ws_args])
    assert untagged.exit_code == 1 and "tnt tag --corpus" in untagged.output
    tag_corpus(workspace, info.id)

    sample = sample_for_audit(workspace, per_label=10)
    assert len(sample.picks) == sum(min(10, n) for n in _counts(workspace, version).values())
    assert sample_for_audit(workspace, per_label=10).run_id == sample.run_id  # a rerun records nothing new
    assert len(workspace.runs.list("audit-sample")) == 1
    LabelStore(workspace).add(
        LabelRecord(p.doc_id, "human", gold[p.doc_id], version, origin=f"label-studio:annotation/{i}")
        for i, p in enumerate(sample.picks)
    )
    report = audit_report(workspace)
    assert report.audited == len(sample.picks) and report.corpus == len(rows)
    for row in report.labels:  # the estimate is people's verdict on the label's audited documents
        audited = [p.doc_id for p in sample.picks if p.predicted == row.label]
        assert (row.audited, row.correct) == (len(audited), sum(gold[d] == row.label for d in audited))
        assert row.precision.low <= row.correct / row.audited <= row.precision.high

    shown = runner.invoke(app, ["audit", "report", *ws_args])
    assert shown.exit_code == 0, shown.output
    assert "precision" in shown.output and "card_arrival" in shown.output
    as_json = json.loads(runner.invoke(app, ["audit", "report", *ws_args, "--json"]).output)
    assert as_json["audited"] == len(sample.picks) and len(as_json["labels"]) == len(report.labels)
    assert AuditSamples(workspace).latest()["run_id"] == sample.run_id

    page = build_report(workspace, tmp_path / "report.html").read_text(encoding="utf-8")
    section = page[page.index('id="audit"') : page.index('id="reference"')]
    assert f"{report.audited:,} documents checked blind" in section and "card_arrival" in section

    selection = select(workspace, SelectionSpec(size=60, dedup="none"))  # counts carry the audit's precision
    picked = Counter((c.label, c.source) for c in selection.selected)
    assert selection.expected_on_label
    for label, numbers in selection.expected_on_label.items():
        precision = report.by_label()[label].precision
        assert numbers["expected"] == pytest.approx(picked[label, "human"] + picked[label, "model"] * precision.estimate)
        assert numbers["low"] <= numbers["expected"] <= numbers["high"]
    shown_selection = runner.invoke(app, ["select", *ws_args, "--size", "60", "--dedup", "none"])
    assert shown_selection.exit_code == 0 and "expected truly on label" in shown_selection.output

    bad = runner.invoke(app, ["audit", "sample", *ws_args, "--per-label", "0"])
    assert bad.exit_code != 0 and "--per-label" in bad.output


def _counts(workspace, version) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in LabelStore(workspace).current(version, "model").values():
        counts[row["label"]] = counts.get(row["label"], 0) + 1
    return counts
