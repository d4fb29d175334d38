"""Distilled models: BANKING77 subsets (train labels stand in for LLM labels), saving as data, and
training from a workspace's LLM and human labels."""

from __future__ import annotations

import csv
import json
import pickle
import random

import numpy as np
import pytest
from typer.testing import CliRunner

from tnt.cli import app
from tnt.distill.model import DistilledClassifier, DistilledRegressor, TextModel
from tnt.distill.store import ModelStore, latest_model, load_model
from tnt.distill.train import evaluate, train
from tnt.labels.store import LabelRecord, LabelStore
from tnt.taxonomy.store import Taxonomy, TaxonomyLabel, TaxonomyStore

INTENTS = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed", "pin_blocked",
           "cash_withdrawal_charge", "declined_transfer", "age_limit", "apple_pay_or_google_pay", "terminate_account"]  # fmt: skip


def subset(rows: list[tuple[str, str]], per_label: int | None = None) -> tuple[list[str], list[str]]:
    """The rows of ten intents, at most ``per_label`` of each."""
    kept: dict[str, list[str]] = {}
    for text, label in rows:
        if label in INTENTS and (per_label is None or len(kept.setdefault(label, [])) < per_label):
            kept.setdefault(label, []).append(text)
    pairs = [(text, label) for label, texts in kept.items() for text in texts]
    return [t for t, _ in pairs], [label for _, label in pairs]


@pytest.mark.slow
def test_embed_linear_on_a_banking77_subset(banking77):
    texts, labels = subset(banking77["train"], per_label=60)
    test_texts, test_labels = subset(banking77["test"])
    model = DistilledClassifier("embed-linear").fit(texts, labels)
    metrics = evaluate(model, test_texts, test_labels)
    assert metrics["accuracy"] >= 0.9
    assert metrics["macro_f1"] >= 0.9 and metrics["kappa"] >= 0.88
    assert set(metrics["per_label"]) == set(INTENTS)
    probabilities = model.predict_proba(test_texts[:5])
    assert probabilities.shape == (5, 10) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_hashing_linear_on_a_banking77_subset(banking77):
    texts, labels = subset(banking77["train"], per_label=100)
    test_texts, test_labels = subset(banking77["test"])
    model = DistilledClassifier("hashing-linear").fit(texts, labels)
    metrics = evaluate(model, test_texts, test_labels)
    assert metrics["accuracy"] >= 0.88
    assert 0.2 < model.temperature < 5  # fitted on a held-out share, not left at 1
    assert model.temperature != 1.0


@pytest.mark.slow
def test_embed_mlp_learns(banking77):
    texts, labels = subset(banking77["train"], per_label=40)
    test_texts, test_labels = subset(banking77["test"])
    model = DistilledClassifier("embed-mlp", epochs=30).fit(texts, labels)
    assert evaluate(model, test_texts, test_labels)["accuracy"] >= 0.85


def test_save_and_load_round_trip_uses_no_pickle(banking77, tmp_path, monkeypatch):
    texts, labels = subset(banking77["train"], per_label=30)
    model = DistilledClassifier("hashing-linear").fit(texts, labels)
    before = model.predict_proba(texts[:50])
    model.save(tmp_path / "m", note="round trip")

    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["model.json", "weights.safetensors"]
    config = json.loads((tmp_path / "m" / "model.json").read_text())
    assert config["labels"] == sorted(INTENTS) and config["kind"] == "hashing-linear" and config["note"] == "round trip"

    def refuse(*args, **kwargs):
        raise AssertionError("loading a model must not unpickle anything")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    loaded = TextModel.load(tmp_path / "m")
    assert isinstance(loaded, DistilledClassifier)
    np.testing.assert_allclose(loaded.predict_proba(texts[:50]), before, rtol=1e-5, atol=1e-6)
    assert loaded.fingerprint() == model.fingerprint()


@pytest.mark.slow
def test_embed_model_directory_carries_its_onnx_encoder(banking77, tmp_path):
    texts, labels = subset(banking77["train"], per_label=15)
    model = DistilledClassifier("embed-linear").fit(texts, labels)
    model.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"model.json", "weights.safetensors", "encoder.onnx", "encoder-fp32.onnx", "tokenizer.json"}
    loaded = TextModel.load(tmp_path / "m", device="cpu")
    assert list(loaded.predict(texts[:40])) == list(model.predict(texts[:40]))


def test_multi_label_one_vs_rest(banking77):
    texts, labels = subset(banking77["train"], per_label=40)
    card = {"card_arrival", "lost_or_stolen_card", "pin_blocked", "apple_pay_or_google_pay"}
    targets = [[label, "card"] if label in card else [label] for label in labels]
    model = DistilledClassifier("hashing-linear", multi_label=True).fit(texts, targets)
    assert "card" in model.labels
    predicted = model.predict(texts[:200])
    assert all(isinstance(p, list) for p in predicted)
    metrics = evaluate(model, texts[:200], targets[:200])
    assert metrics["micro_f1"] > 0.8 and "card" in metrics["per_label"]
    tagged = model.tag(["my card has not arrived yet"])[0]
    assert {tagged.label, *tagged.extra_labels} == {"card_arrival", "card"}


def test_score_regression(banking77, tmp_path):
    texts, labels = subset(banking77["train"], per_label=40)
    # a stand-in quality score the text determines: questions about cards score high
    scores = [0.9 if "card" in text.lower() else 0.1 for text in texts]
    model = DistilledRegressor("hashing-linear").fit(texts, scores)
    metrics = evaluate(model, texts, scores)
    assert metrics["spearman"] > 0.7 and metrics["mae"] < 0.2
    model.save(tmp_path / "q")
    assert np.allclose(TextModel.load(tmp_path / "q").predict(texts[:20]), model.predict(texts[:20]), atol=1e-5)


# Training from a workspace


def fill_workspace(workspace, tmp_path, rows, n_human: int, llm_noise: float = 0.2, seed: int = 0) -> int:
    """Import documents, an LLM labeling with some errors, and ``n_human`` correct human labels."""
    path = tmp_path / "docs.csv"
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "text"])
        writer.writerows((f"d{i}", text) for i, (text, _) in enumerate(rows))
    workspace.ingest([path], id_field="id")
    version = TaxonomyStore(workspace).save(Taxonomy(labels=[TaxonomyLabel(name=n) for n in INTENTS])).version
    rng = random.Random(seed)
    llm = [
        LabelRecord(f"d{i}", "llm", rng.choice(INTENTS) if rng.random() < llm_noise else label, version, origin="test")
        for i, (_, label) in enumerate(rows)
    ]
    human = [LabelRecord(f"d{i}", "human", label, version, origin="test") for i, (_, label) in enumerate(rows[:n_human])]
    LabelStore(workspace).add(llm + human)
    return version


def banking_rows(banking77, per_label: int) -> list[tuple[str, str]]:
    texts, labels = subset(banking77["train"], per_label=per_label)
    rows = list(zip(texts, labels))
    random.Random(1).shuffle(rows)
    return rows


def test_train_evaluates_on_human_labels_and_reports_llm_agreement(workspace, tmp_path, banking77):
    rows = banking_rows(banking77, 60)
    version = fill_workspace(workspace, tmp_path, rows, n_human=120, llm_noise=0.2)
    report = train(workspace, version, kind="hashing-linear")
    m = report.metrics
    assert m["reference"] == "human"
    assert m["n"] == 50 and m["n_train"] == len(rows) and m["n_train_human"] == 120  # refit on every label
    assert m["evaluation"] == {"method": "held-out", "share": round(50 / len(rows), 4), "n_fit": len(rows) - 50,
                               "n_eval": 50, "refit_on": len(rows)}  # fmt: skip
    assert m["accuracy"] >= 0.75 and {"macro_f1", "kappa", "per_label"} <= set(m)
    llm = m["llm_vs_human"]
    assert llm["n"] == 120 and 0.7 < llm["accuracy"] < 0.9  # 20 % of LLM labels were replaced at random

    info = latest_model(workspace, version)
    assert info is not None and info.id == report.model.id and info.path.is_dir()
    assert info.path.parent == workspace.directory / "models"
    model = load_model(workspace, info.id)
    assert model.id == info.id and model.meta["taxonomy_version"] == version and model.meta["metrics"]["n"] == 50
    run = workspace.runs.get(m_run := model.meta["run_id"])
    assert run["kind"] == "train" and run["status"] == "completed" and run["stats"]["model"] == info.id and m_run


@pytest.mark.slow
def test_registered_model_is_refitted_on_every_label(workspace, tmp_path, banking77):
    """Evaluated on the held-out share, but the model registered learned from all labels, held-out ones too."""
    rows = banking_rows(banking77, 30)
    version = fill_workspace(workspace, tmp_path, rows, n_human=0, llm_noise=0.0)
    report = train(workspace, version, kind="hashing-linear")
    assert report.metrics["reference"] == "llm-holdout" and report.metrics["evaluation"]["refit_on"] == len(rows)
    texts, labels = zip(*rows)
    on_all = DistilledClassifier("hashing-linear").fit(texts, labels)
    without_held_out = DistilledClassifier("hashing-linear").fit(texts[: int(len(rows) * 0.8)], labels[: int(len(rows) * 0.8)])
    registered = load_model(workspace, report.model.id)
    probe = subset(banking77["test"])[0][:300]
    assert list(registered.predict(probe)) == list(on_all.predict(probe))
    assert not np.allclose(registered.predict_proba(probe), without_held_out.predict_proba(probe), atol=1e-3)


@pytest.mark.slow
def test_embed_training_encodes_each_text_once(workspace, tmp_path, banking77, monkeypatch):
    from tnt.distill.encoders import OnnxSentenceEncoder

    rows = banking_rows(banking77, 20)
    version = fill_workspace(workspace, tmp_path, rows, n_human=0, llm_noise=0.0)
    encoded: list[int] = []
    real_encode = OnnxSentenceEncoder.encode
    monkeypatch.setattr(OnnxSentenceEncoder, "encode", lambda self, texts: encoded.append(len(texts)) or real_encode(self, texts))
    report = train(workspace, version, kind="embed-linear", device="cpu")
    assert sum(encoded) == len(rows)  # the held-out fit, the evaluation and the refit share one encoding
    assert report.metrics["evaluation"]["refit_on"] == len(rows) and report.metrics["accuracy"] > 0.8
    # the model carries both exports and runs in the precision asked for, or in int8 where fp32 is missing
    monkeypatch.setenv("TNT_ONNX_PRECISION", "fp32")
    assert TextModel.load(report.model.path).encoder.runtime == "onnx-fp32"
    (report.model.path / "encoder-fp32.onnx").unlink()
    assert TextModel.load(report.model.path).encoder.runtime == "onnx-int8"


def test_human_labels_override_llm_labels_in_training(workspace, tmp_path, banking77):
    rows = banking_rows(banking77, 30)
    version = fill_workspace(workspace, tmp_path, rows, n_human=0, llm_noise=0.0)
    # the LLM calls every card_arrival document exchange_rate; people correct 20 of them
    wrong = [i for i, (_, label) in enumerate(rows) if label == "card_arrival"]
    LabelStore(workspace).add(LabelRecord(f"d{i}", "llm", "exchange_rate", version, origin="bad") for i in wrong)
    LabelStore(workspace).add(LabelRecord(f"d{i}", "human", "card_arrival", version, origin="fix") for i in wrong[:20])
    report = train(workspace, version, kind="hashing-linear", min_human_eval=50)
    assert report.metrics["reference"] == "llm-holdout"
    assert "card_arrival" in report.model.labels
    model = load_model(workspace, report.model.id)
    assert model.predict(["my new card still hasn't arrived, where is it?"])[0] == "card_arrival"


def test_too_few_labels_is_a_clear_error(workspace, tmp_path, banking77):
    from tnt.distill.heads import DistillError

    version = fill_workspace(workspace, tmp_path, banking_rows(banking77, 30)[:5], n_human=0)
    with pytest.raises(DistillError, match="only 5 labeled documents"):
        train(workspace, version, kind="hashing-linear")


def test_quality_target_regresses_scores_without_taxonomy(workspace, tmp_path, banking77):
    rows = banking_rows(banking77, 20)
    fill_workspace(workspace, tmp_path, rows, n_human=0)
    scores = [LabelRecord(f"d{i}", "llm", score=0.9 if "card" in t.lower() else 0.1, origin="ask-llm:x") for i, (t, _) in enumerate(rows)]
    LabelStore(workspace).add(scores)
    report = train(workspace, target="quality", kind="hashing-linear")
    assert report.model.taxonomy_version is None and report.model.target == "quality"
    assert report.metrics["reference"] == "llm-holdout" and report.metrics["spearman"] > 0.5
    assert ModelStore(workspace).latest(None, "quality").id == report.model.id


def test_cli_train_prints_metrics(workspace, tmp_path, banking77):
    version = fill_workspace(workspace, tmp_path, banking_rows(banking77, 30), n_human=60)
    result = CliRunner().invoke(
        app, ["train", "-w", str(workspace.directory), "--taxonomy", str(version), "--kind", "hashing-linear"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "against human labels" in result.output and "accuracy" in result.output and "LLM vs human" in result.output
    listing = CliRunner().invoke(app, ["models", "-w", str(workspace.directory)], env={"COLUMNS": "200"})
    assert "hashing-linear" in listing.output


@pytest.mark.slow
def test_torch_runtime_and_onnx_runtimes_agree(banking77):
    """The GPU runtime (exercised here on CPU) and the fp32 export match sentence-transformers, and an
    fp32 row does not depend on its batch-mates; the int8 export stays close."""
    from sentence_transformers import SentenceTransformer

    from tnt.distill.encoders import (
        TorchSentenceEncoder,
        resolve_model_path,
        sentence_encoder,
    )

    texts = [t for t, _ in banking77["test"][:64]]
    reference = SentenceTransformer(str(resolve_model_path(None)), device="cpu").encode(texts)
    torch_runtime = TorchSentenceEncoder("all-MiniLM-L6-v2", device="cpu").encode(texts)
    np.testing.assert_allclose(torch_runtime, reference, atol=1e-4)
    fp32 = sentence_encoder(None, device="cpu", precision="fp32")
    assert fp32.runtime == "onnx-fp32"
    np.testing.assert_allclose(fp32.encode(texts), reference, atol=1e-4)
    np.testing.assert_allclose(np.vstack([fp32.encode([text]) for text in texts]), reference, atol=1e-4)
    int8 = sentence_encoder(None, device="cpu", precision="int8")
    assert int8.runtime == "onnx-int8" and (int8.encode(texts) * reference).sum(axis=1).min() > 0.97


def test_onnx_precision_can_be_overridden_and_a_wrong_one_is_named(monkeypatch):
    from tnt.distill.encoders import EncoderError, onnx_precision

    monkeypatch.setenv("TNT_ONNX_PRECISION", "int8")
    assert onnx_precision() == "int8"
    monkeypatch.setenv("TNT_ONNX_PRECISION", "fp16")
    with pytest.raises(EncoderError, match="TNT_ONNX_PRECISION='fp16': expected one of int8, fp32"):
        onnx_precision()


@pytest.mark.slow
def test_a_text_that_recurs_is_encoded_once(banking77, monkeypatch):
    """On the fp32 runtime, whose rows do not depend on the batch (int8's activation scale does)."""
    from tnt.distill.encoders import TorchSentenceEncoder

    queries = [" ".join(t.split()[:3]) for t, _ in banking77["test"][:200]]  # first words repeat: "I want to"
    assert len(set(queries)) < len(queries)
    encoder = TorchSentenceEncoder("all-MiniLM-L6-v2", device="cpu")
    encoded: list[str] = []
    encode_distinct = TorchSentenceEncoder.encode_distinct
    monkeypatch.setattr(TorchSentenceEncoder, "encode_distinct", lambda self, texts: encoded.extend(texts) or encode_distinct(self, texts))
    rows = encoder.encode(queries)
    assert sorted(encoded) == sorted(set(queries))
    one_by_one = np.vstack([encode_distinct(encoder, [query]) for query in queries])
    np.testing.assert_allclose(rows, one_by_one, atol=1e-4)


def test_regularisation_is_chosen_on_the_calibration_share_unless_given(banking77):
    texts, labels = subset(banking77["train"], per_label=60)
    chosen = DistilledClassifier("hashing-linear").fit(texts, labels)
    choice = chosen.meta["regularisation"]
    assert choice["C"] == min(choice["calibration_log_loss"], key=choice["calibration_log_loss"].get)
    assert chosen.head.params() == {"C": choice["C"]} and choice["n_calibration"] == len(texts) // 10
    given = DistilledClassifier("hashing-linear", C=1.0).fit(texts, labels)
    assert "regularisation" not in given.meta and given.head.params() == {"C": 1.0}
