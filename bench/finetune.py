"""Accuracy of tnt's taggers against plain MiniLM + logistic regression fitted on the same labels, same run.

1. ``embed-finetune`` (MiniLM fine-tuned on the labels, int8 ONNX) against plain MiniLM embeddings +
   LogisticRegression, both fitted on BANKING77 train (gold labels); test-split accuracy and the
   fine-tuning wall time.
2. ``tnt train`` (the library function) on simulated LLM labels of BANKING77 train (gold with
   p = 0.85, else a wrong label fixed per document, seeded), then the registered model tags the test
   split; against plain MiniLM + LR fitted on the same noisy labels (all of them).

    .venv/bin/python bench/finetune.py [--train-limit N] [--kind embed-linear] [--skip-finetune] [--skip-simulated]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
BANKING77 = REPO / "data" / "banking77"
LLM_ACCURACY = 0.85


def load(split: str) -> tuple[list[str], list[str]]:
    with open(BANKING77 / f"{split}.csv", newline="") as rows:
        pairs = [(row["text"], row["category"]) for row in csv.DictReader(rows)]
    return [t for t, _ in pairs], [c for _, c in pairs]


def simulated_llm(gold: list[str], seed: int) -> list[str]:
    """Gold with probability LLM_ACCURACY, else one wrong label fixed per document (a seeded draw)."""
    rng = random.Random(seed)
    names = sorted(set(gold))
    return [label if rng.random() < LLM_ACCURACY else rng.choice([n for n in names if n != label]) for label in gold]


def main() -> None:
    from tnt.distill.finetune import FINETUNE_EPOCHS, FINETUNE_LOSS, FINETUNE_LR

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-limit", type=int, default=None, help="use N random training texts only")
    parser.add_argument("--kind", default="embed-linear", help="the kind `tnt train` fits on the simulated LLM labels")
    parser.add_argument("--skip-finetune", action="store_true")
    parser.add_argument("--loss", default=FINETUNE_LOSS, help="embed-finetune's loss: classification or contrastive")
    parser.add_argument("--epochs", type=int, default=FINETUNE_EPOCHS, help="embed-finetune's epochs")
    parser.add_argument("--lr", type=float, default=FINETUNE_LR, help="embed-finetune's encoder learning rate")
    parser.add_argument("--skip-simulated", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    from tnt.distill.encoders import resolve_model_path

    train_texts, train_labels = load("train")
    if args.train_limit:
        keep = sorted(random.Random(args.seed).sample(range(len(train_texts)), args.train_limit))
        train_texts, train_labels = [train_texts[i] for i in keep], [train_labels[i] for i in keep]
    test_texts, test_labels = load("test")
    gold = np.array(test_labels)
    print(f"BANKING77: {len(train_texts):,} train texts, {len(test_texts):,} test texts; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    st = SentenceTransformer(str(resolve_model_path(None)), device="cpu")
    train_embedded, test_embedded = st.encode(train_texts, batch_size=32), st.encode(test_texts, batch_size=32)

    def plain_accuracy(labels: list[str]) -> float:
        return float(np.mean(LogisticRegression(C=10, max_iter=2000).fit(train_embedded, labels).predict(test_embedded) == gold))

    if not args.skip_finetune:
        from tnt.distill.model import FinetunedClassifier

        plain = plain_accuracy(train_labels)
        started = time.perf_counter()
        tuned = FinetunedClassifier(device="cpu", seed=args.seed, loss=args.loss, finetune_epochs=args.epochs, finetune_lr=args.lr).fit(train_texts, train_labels)
        seconds = time.perf_counter() - started
        accuracy = float(np.mean(tuned.predict(test_texts) == gold))
        print("\ngold labels")
        print(f"  plain MiniLM + LR           : accuracy {plain:.4f}")
        print(f"  tnt embed-finetune ({args.loss}, {args.epochs} epoch(s), lr {args.lr:g}): accuracy {accuracy:.4f} ({accuracy - plain:+.4f}); "
              f"fine-tuning + export + head {seconds:.0f} s wall")  # fmt: skip

    if not args.skip_simulated:
        simulated_train(args, train_texts, train_labels, test_texts, gold, plain_accuracy)


def simulated_train(args, train_texts, train_labels, test_texts, gold, plain_accuracy) -> None:  # type: ignore[no-untyped-def]
    from tnt import Workspace
    from tnt.distill.model import TextModel
    from tnt.distill.train import train
    from tnt.labels.store import LabelRecord, LabelStore
    from tnt.taxonomy.store import Taxonomy, TaxonomyLabel, TaxonomyStore

    llm_labels = simulated_llm(train_labels, args.seed)
    with tempfile.TemporaryDirectory() as tmp, Workspace.create(Path(tmp) / "ws") as ws:
        docs = Path(tmp) / "train.csv"
        with open(docs, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["id", "text"])
            writer.writerows((f"d{i}", text) for i, text in enumerate(train_texts))
        ws.ingest([docs], id_field="id")
        version = TaxonomyStore(ws).save(Taxonomy(labels=[TaxonomyLabel(name=n) for n in sorted(set(train_labels))])).version
        LabelStore(ws).add(LabelRecord(f"d{i}", "llm", label, version, origin="simulated") for i, label in enumerate(llm_labels))
        started = time.perf_counter()
        report = train(ws, version, kind=args.kind, seed=args.seed)
        seconds = time.perf_counter() - started
        registered = TextModel.load(report.model.path)
        accuracy = float(np.mean(registered.predict(test_texts) == gold))
        regularisation = registered.meta.get("regularisation", {})
    plain = plain_accuracy(llm_labels)
    print(f"\nsimulated LLM labels (gold with p = {LLM_ACCURACY}, measured {np.mean(np.array(llm_labels) == np.array(train_labels)):.3f})")
    print(f"  plain MiniLM + LR on all of them : test accuracy {plain:.4f}")
    print(f"  tnt train --kind {args.kind:14}: test accuracy {accuracy:.4f} ({accuracy - plain:+.4f}); "
          f"held-out {report.metrics['accuracy']:.4f} on {report.metrics['n']:,}; train {seconds:.0f} s wall; "
          f"C chosen {regularisation.get('C')} of {sorted(regularisation.get('calibration_log_loss', {}))} by log-loss")  # fmt: skip


if __name__ == "__main__":
    main()
