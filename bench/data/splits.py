"""What the corpus builders share: a seeded per-label train/test split written as ``text,category`` CSVs."""

from __future__ import annotations

import csv
import random
from pathlib import Path

TEST_SHARE = 0.25


def write_splits(out: Path, texts_by_label: dict[str, list[str]], seed: int = 0) -> tuple[int, int]:
    """A seeded ``TEST_SHARE`` of each label's texts to ``out/test.csv``, the rest to ``out/train.csv``;
    returns (train, test) counts."""
    rng = random.Random(seed)
    train, test = [], []
    for label, texts in sorted(texts_by_label.items()):
        rng.shuffle(texts)
        cut = round(len(texts) * TEST_SHARE)
        test += [(t, label) for t in texts[:cut]]
        train += [(t, label) for t in texts[cut:]]
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("test", test)):
        with (out / f"{name}.csv").open("w", newline="", encoding="utf-8") as target:
            writer = csv.writer(target)
            writer.writerow(["text", "category"])
            writer.writerows(rows)
    return len(train), len(test)
