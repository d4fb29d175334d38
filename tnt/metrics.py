"""Every agreement and accuracy metric tnt reports, in one place (all scikit-learn underneath):
classification (accuracy, macro F1, Cohen's kappa, confusions), multi-label, regression, and
agreement with a reference taxonomy (adjusted mutual information and the label mapping).

The distilled models' evaluation, ``tnt review agreement``, the cluster method, ``tnt taxonomy
evaluate`` and the HTML report all call these functions, so one figure means the same everywhere."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro F1 over the labels of ``y_true`` (a label only ``y_pred`` uses would add a
    meaningless 0), Cohen's kappa (None where it is undefined: one label is all there is) and
    precision, recall, F1 and support per label."""
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        precision_recall_fscore_support,
    )

    labels = sorted(set(y_true) | set(y_pred))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=sorted(set(y_true)), average="macro", zero_division=0)),
        "kappa": kappa(y_true, y_pred),
        "per_label": {
            label: {"f1": float(f), "precision": float(p), "recall": float(r), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
    }


def kappa(y_true: Sequence[Any], y_pred: Sequence[Any]) -> float | None:
    """Cohen's kappa; None when both sides use one and the same label (chance agreement is 1)."""
    from sklearn.metrics import cohen_kappa_score

    if len(set(y_true) | set(y_pred)) < 2:
        return None
    return float(cohen_kappa_score(y_true, y_pred))


def confusion(y_true: Sequence[str], y_pred: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The labels (sorted) and the confusion matrix: rows ``y_true``, columns ``y_pred``."""
    from sklearn.metrics import confusion_matrix

    labels = sorted(set(y_true) | set(y_pred))
    return labels, confusion_matrix(y_true, y_pred, labels=labels)


def confusions(y_true: Sequence[str], y_pred: Sequence[str]) -> list[tuple[str, str, int]]:
    """Every (true, predicted, count) where the two differ, most frequent first."""
    counts = Counter((t, p) for t, p in zip(y_true, y_pred) if t != p)
    return [(t, p, n) for (t, p), n in counts.most_common()]


def multilabel_metrics(y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Exact-match accuracy, macro/micro F1, and Cohen's κ averaged over labels."""
    from sklearn.metrics import (
        cohen_kappa_score,
        f1_score,
        precision_recall_fscore_support,
    )
    from sklearn.preprocessing import MultiLabelBinarizer

    binarizer = MultiLabelBinarizer().fit(list(y_true) + list(y_pred))
    T, P = binarizer.transform(y_true), binarizer.transform(y_pred)
    precision, recall, f1, support = precision_recall_fscore_support(T, P, zero_division=0)
    kappas = [cohen_kappa_score(T[:, j], P[:, j]) for j in range(T.shape[1]) if len(set(T[:, j]) | set(P[:, j])) > 1]
    return {
        "n": len(T),
        "accuracy": float((T == P).all(axis=1).mean()),
        "macro_f1": float(f1_score(T, P, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(T, P, average="micro", zero_division=0)),
        "kappa": float(np.mean(kappas)) if kappas else 1.0,
        "per_label": {
            label: {"f1": float(f), "precision": float(p), "recall": float(r), "support": int(s)}
            for label, p, r, f, s in zip(binarizer.classes_, precision, recall, f1, support)
        },
    }


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, Any]:
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import mean_absolute_error, r2_score

    t, p = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    constant = t.min() == t.max() or p.min() == p.max()
    return {
        "n": len(t),
        "mae": float(mean_absolute_error(t, p)),
        "rmse": float(np.sqrt(np.mean((t - p) ** 2))),
        "r2": float(r2_score(t, p)) if len(t) > 1 else None,
        "spearman": None if constant else float(spearmanr(t, p).statistic),
        "pearson": None if constant else float(pearsonr(t, p).statistic),
    }


def reference_agreement(
    assigned: dict[str, str], reference: dict[str, str]
) -> tuple[float, dict[str, dict[str, Any]]]:
    """AMI over the documents both cover, and for each assigned label (most documents first) its most
    frequent reference label, that label's share of its documents, and how many documents it has."""
    from sklearn.metrics import adjusted_mutual_info_score

    common = sorted(assigned.keys() & reference.keys())
    if not common:
        raise ValueError("no document has both an assigned and a reference label")
    ami = float(adjusted_mutual_info_score([reference[d] for d in common], [assigned[d] for d in common]))
    by_label: dict[str, Counter[str]] = defaultdict(Counter)
    for doc in common:
        by_label[assigned[doc]][reference[doc]] += 1
    mapping = {}
    for label, counts in sorted(by_label.items(), key=lambda kv: (-kv[1].total(), kv[0])):
        top, n = counts.most_common(1)[0]
        mapping[label] = {"reference": top, "share": round(n / counts.total(), 3), "count": counts.total()}
    return ami, mapping
