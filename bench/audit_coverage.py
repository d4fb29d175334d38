"""How often the audit's 95 % precision intervals cover the tagger's true precision.

A hashing-linear tagger is fitted on part of BANKING77 train and tags the rest plus the test split (the
"corpus"); gold intents play the people. Over many seeds an audit sample of ``--per-label`` documents per
predicted label is drawn and each label's Wilson interval is compared with the precision measured on
every document. Prints the coverage over (label, seed) pairs and the mean interval width.

    .venv/bin/python bench/audit_coverage.py --seeds 20 --per-label 20
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path
from typing import Any

from tnt.distill.model import DistilledClassifier
from tnt.review.audit import audit_estimates, draw_audit_sample

DATA = Path(__file__).resolve().parent.parent / "data" / "banking77"


def banking77(split: str) -> list[tuple[str, str]]:
    with open(DATA / f"{split}.csv", newline="") as rows:
        return [(row["text"], row["category"]) for row in csv.DictReader(rows)]


def tagged_corpus(train_size: int, seed: int = 0) -> tuple[dict[str, str], dict[str, str]]:
    """({doc_id: predicted}, {doc_id: gold}) over the corpus the tagger did not learn from."""
    train = banking77("train")
    random.Random(seed).shuffle(train)
    fit, rest = train[:train_size], train[train_size:] + banking77("test")
    model = DistilledClassifier(kind="hashing-linear").fit([t for t, _ in fit], [y for _, y in fit])
    predicted = model.predict([t for t, _ in rest])
    ids = [f"d{i}" for i in range(len(rest))]
    return dict(zip(ids, map(str, predicted))), {i: y for i, (_, y) in zip(ids, rest)}


def coverage(predicted: dict[str, str], gold: dict[str, str], seeds: int, per_label: int) -> dict[str, Any]:
    labels = sorted(set(predicted.values()))
    true_precision = {
        label: sum(gold[d] == label for d, p in predicted.items() if p == label)
        / sum(p == label for p in predicted.values())
        for label in labels
    }
    covered = pairs = 0
    widths = []
    for seed in range(seeds):
        picks = draw_audit_sample(predicted, per_label, seed)
        truth = {pick.doc_id: gold[pick.doc_id] for pick in picks}
        for row in audit_estimates(predicted, truth, labels):
            assert row.precision is not None
            pairs += 1
            covered += row.precision.low - 1e-12 <= true_precision[row.label] <= row.precision.high + 1e-12
            widths.append(row.precision.high - row.precision.low)
    return {
        "pairs": pairs, "coverage": covered / pairs, "mean_width": sum(widths) / len(widths),
        "mean_true_precision": sum(true_precision.values()) / len(true_precision),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--per-label", type=int, default=20)
    parser.add_argument("--train-size", type=int, default=3000)
    args = parser.parse_args()
    predicted, gold = tagged_corpus(args.train_size)
    result = coverage(predicted, gold, args.seeds, args.per_label)
    print(f"corpus {len(predicted)} documents, {len(set(predicted.values()))} predicted labels, "
          f"mean true precision {result['mean_true_precision']:.3f}")
    print(f"95% Wilson intervals cover the true precision for {result['coverage']:.1%} of "
          f"{result['pairs']} (label, seed) pairs; mean width {result['mean_width']:.3f}")


if __name__ == "__main__":
    main()
