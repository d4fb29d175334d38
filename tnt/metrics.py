"""Every agreement and accuracy metric tnt reports, in one place: classification (accuracy, macro F1,
Cohen's kappa), multi-label and regression metrics."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, Any]:
    from sklearn.metrics import (
        accuracy_score,
        cohen_kappa_score,
        f1_score,
        precision_recall_fscore_support,
    )

    labels = sorted(set(y_true) | set(y_pred))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=sorted(set(y_true)), average="macro", zero_division=0)),
        "kappa": float(cohen_kappa_score(y_true, y_pred)),
        "per_label": {
            label: {"f1": float(f), "precision": float(p), "recall": float(r), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
    }


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
    """AMI over the documents both cover, and each label's most frequent reference label."""
    from sklearn.metrics import adjusted_mutual_info_score

    common = sorted(assigned.keys() & reference.keys())
    if not common:
        raise ValueError("no document has both an assigned and a reference label")
    ami = float(adjusted_mutual_info_score([reference[d] for d in common], [assigned[d] for d in common]))
    by_label: dict[str, Counter[str]] = defaultdict(Counter)
    for doc in common:
        by_label[assigned[doc]][reference[doc]] += 1
    mapping = {}
    for label, counts in sorted(by_label.items(), key=lambda kv: -sum(kv[1].values())):
        top, n = counts.most_common(1)[0]
        mapping[label] = {"reference": top, "share": round(n / sum(counts.values()), 3), "count": sum(counts.values())}
    return ami, mapping
