"""tnt.metrics, the one place agreement figures are computed: against scikit-learn, and by definition."""

from __future__ import annotations

import random

import pytest
from sklearn.metrics import adjusted_mutual_info_score, cohen_kappa_score, f1_score

from tnt.metrics import classification_metrics, confusion, confusions, kappa, reference_agreement

HUMAN = ["a", "a", "b", "b", "c", "c", "c"]
MODEL = ["a", "b", "b", "b", "c", "a", "d"]  # "d": a label people never used


def test_classification_metrics_agree_with_scikit_learn():
    metrics = classification_metrics(HUMAN, MODEL)
    assert metrics["n"] == 7 and metrics["accuracy"] == pytest.approx(4 / 7)
    assert metrics["kappa"] == pytest.approx(cohen_kappa_score(HUMAN, MODEL))
    # macro F1 over the labels people used: "d" would only add a meaningless 0
    assert metrics["macro_f1"] == pytest.approx(f1_score(HUMAN, MODEL, labels=["a", "b", "c"], average="macro"))
    assert metrics["per_label"]["b"] == pytest.approx({"f1": 0.8, "precision": 2 / 3, "recall": 1.0, "support": 2})
    assert metrics["per_label"]["d"]["support"] == 0


def test_kappa_is_none_only_where_it_is_undefined():
    assert kappa(["a", "a"], ["a", "a"]) is None
    assert classification_metrics(["a", "a"], ["a", "a"])["kappa"] is None
    assert kappa(["a", "a"], ["b", "b"]) == pytest.approx(cohen_kappa_score(["a", "a"], ["b", "b"]))


def test_confusion_matrix_and_the_disagreements_most_frequent_first():
    labels, matrix = confusion(HUMAN, MODEL)
    assert labels == ["a", "b", "c", "d"]
    assert matrix.sum() == len(HUMAN) and matrix.trace() == sum(h == m for h, m in zip(HUMAN, MODEL))
    assert matrix[labels.index("c"), labels.index("d")] == 1  # rows: people, columns: the model
    assert confusions(HUMAN + ["a"], MODEL + ["b"]) == [("a", "b", 2), ("c", "a", 1), ("c", "d", 1)]


def test_reference_agreement_is_ami_over_shared_documents_and_each_labels_majority():
    rng = random.Random(0)
    reference = {f"d{i}": rng.choice("xyz") for i in range(300)}
    # label "p" holds the x documents, "q" the rest; documents d300+ have no reference label
    assigned = {doc: "p" if gold == "x" else "q" for doc, gold in reference.items()} | {"d300": "p", "d301": "q"}
    ami, mapping = reference_agreement(assigned, reference)
    shared = sorted(reference)
    assert ami == pytest.approx(adjusted_mutual_info_score([reference[d] for d in shared], [assigned[d] for d in shared]))
    in_q = [reference[d] for d in shared if assigned[d] == "q"]
    majority = max("yz", key=in_q.count)
    assert mapping["p"] == {"reference": "x", "share": 1.0, "count": 300 - len(in_q)}
    assert mapping["q"] == {"reference": majority, "share": round(in_q.count(majority) / len(in_q), 3), "count": len(in_q)}
    assert list(mapping) == sorted(mapping, key=lambda label: -mapping[label]["count"])  # most documents first


def test_reference_agreement_ignores_names_and_scores_partitions():
    reference = {f"d{i}": "xyz"[i % 3] for i in range(30)}
    renamed = {doc: {"x": "one", "y": "two", "z": "three"}[gold] for doc, gold in reference.items()}
    ami, mapping = reference_agreement(renamed, reference)
    assert ami == pytest.approx(1.0) and {row["reference"] for row in mapping.values()} == {"x", "y", "z"}


def test_reference_agreement_without_shared_documents_says_so():
    with pytest.raises(ValueError, match="no document has both"):
        reference_agreement({"a": "p"}, {"b": "x"})
