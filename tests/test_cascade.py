"""The tagging cascade: hashing-linear tags every document, the low-confidence ones go through embed-linear."""

from __future__ import annotations

import copy
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.test_distill import banking_rows, fill_workspace, subset
from tnt.distill.model import (
    CASCADE_TOLERANCE,
    CascadeClassifier,
    TextModel,
    lowest_threshold,
)
from tnt.distill.tag import tag_files
from tnt.distill.train import train


def test_lowest_threshold_is_the_cheapest_routing_within_tolerance():
    rng = np.random.default_rng(0)
    confidence = rng.random(400)
    cheap_right = rng.random(400) < confidence  # the cheap tier is right more often when confident
    encoder_right = rng.random(400) < 0.9
    threshold, accuracy, share = lowest_threshold(confidence, cheap_right, encoder_right, 0.01)

    def cascade_accuracy(t: float) -> float:
        return float(np.where(confidence < t, encoder_right, cheap_right).mean())

    assert accuracy == pytest.approx(cascade_accuracy(threshold)) and share == pytest.approx(np.mean(confidence < threshold))
    assert accuracy >= encoder_right.mean() - 0.01
    lower = [t for t in np.unique(confidence) if t < threshold]  # every lower threshold loses too much
    assert all(cascade_accuracy(t) < encoder_right.mean() - 0.01 for t in lower)
    assert 0 < share < 1


@pytest.fixture(scope="module")
def cascade(banking77) -> CascadeClassifier:
    texts, labels = subset(banking77["train"], per_label=60)
    return CascadeClassifier().fit(texts, labels)


@pytest.mark.slow
def test_cascade_takes_the_encoder_label_where_the_encoder_ran_and_the_cheap_one_elsewhere(cascade, banking77):
    texts, gold = subset(banking77["test"])
    assert cascade.cheap is not None and cascade.expensive is not None
    confidence = cascade.cheap.predict_proba(texts).max(axis=1)
    halved = copy.copy(cascade)  # ten easy intents leave few documents under the chosen threshold: route half
    halved.threshold, halved.routes = float(np.median(confidence)), {"cheap": 0, "encoder": 0}
    labels = halved.predict(texts)
    routed = confidence < halved.threshold
    assert 0 < routed.sum() < len(texts)
    np.testing.assert_array_equal(labels[routed], cascade.expensive.predict([t for t, r in zip(texts, routed) if r]))
    np.testing.assert_array_equal(labels[~routed], cascade.cheap.predict(texts)[~routed])
    assert halved.route_shares()["encoder"] == routed.sum()

    chosen = cascade.meta["cascade"]
    held = chosen["held_out_accuracy"]
    assert held["cascade"] >= held["encoder"] - CASCADE_TOLERANCE and chosen["threshold"] == cascade.threshold
    encoder_accuracy = np.mean(cascade.expensive.predict(texts) == np.array(gold))
    assert np.mean(cascade.predict(texts) == np.array(gold)) >= encoder_accuracy - 0.02  # a little test noise allowed


@pytest.mark.slow
def test_saved_cascade_tags_files_and_counts_each_path(cascade, banking77, tmp_path):
    texts = subset(banking77["test"])[0][:400]
    cascade.save(tmp_path / "cascade")
    loaded = TextModel.load(tmp_path / "cascade", device="cpu")
    assert isinstance(loaded, CascadeClassifier) and loaded.threshold == cascade.threshold
    assert loaded.fingerprint() == cascade.fingerprint()
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
    summary = tag_files(loaded, [tmp_path / "in.jsonl"], tmp_path / "out", id_field="id")
    table = pq.read_table(next((tmp_path / "out").glob("*.parquet")))
    assert table.column("label").to_pylist() == list(cascade.predict(texts))
    routed = int((cascade.cheap.predict_proba(texts).max(axis=1) < cascade.threshold).sum())
    assert summary.routes == {"cheap": len(texts) - routed, "encoder": routed, "encoder_share": round(routed / len(texts), 4)}


@pytest.mark.slow
def test_train_cascade_records_the_paths_taken_on_held_out_labels(workspace, tmp_path, banking77):
    version = fill_workspace(workspace, tmp_path, banking_rows(banking77, 50), n_human=0, llm_noise=0.0)
    report = train(workspace, version, kind="cascade", device="cpu")
    m = report.metrics
    assert report.model.kind == "cascade" and m["reference"] == "llm-holdout"
    assert m["routes"]["cheap"] + m["routes"]["encoder"] == m["n"] == m["evaluation"]["n_eval"]
    model = TextModel.load(report.model.path)
    assert isinstance(model, CascadeClassifier) and model.meta["cascade"]["threshold"] == model.threshold


def test_cascade_refuses_multi_label_and_scores(workspace, tmp_path, banking77):
    from tnt.distill.heads import DistillError

    version = fill_workspace(workspace, tmp_path, banking_rows(banking77, 5), n_human=0)
    with pytest.raises(DistillError, match="single-label only"):
        train(workspace, version, kind="cascade", multi_label=True)
