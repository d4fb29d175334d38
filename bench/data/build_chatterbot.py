"""Build ``data/chatterbot/{train,test}.csv`` from the ``chatterbot-corpus`` package (PyPI, BSD licence):
every English statement labelled with its file's topic, a second labelled corpus for
``bench/review_efficiency.py`` beside BANKING77.

    .venv/bin/pip install chatterbot-corpus==1.3.3 && .venv/bin/python bench/data/build_chatterbot.py

Statements are stripped and de-duplicated; one that appears under two topics is dropped (its label
is ambiguous), and so are topics with fewer than ``MIN_PER_TOPIC`` statements. A seeded split puts a
quarter of each topic in the test set.
"""

from __future__ import annotations

import csv
import random
from collections import defaultdict
from importlib.resources import files
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parents[2] / "data" / "chatterbot"
MIN_PER_TOPIC = 30
TEST_SHARE = 0.25


def statements_by_topic() -> dict[str, set[str]]:
    topics: dict[str, set[str]] = defaultdict(set)
    english = files("chatterbot_corpus").joinpath("data", "english")
    for path in sorted(p for p in english.iterdir() if p.name.endswith(".yml")):
        topic = path.name.removesuffix(".yml")
        for conversation in yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations", []):
            topics[topic].update(" ".join(str(s).split()) for s in conversation if str(s).strip())
    return topics


def unambiguous(topics: dict[str, set[str]]) -> dict[str, list[str]]:
    seen: dict[str, int] = defaultdict(int)
    for texts in topics.values():
        for text in texts:
            seen[text] += 1
    kept = {topic: sorted(t for t in texts if seen[t] == 1) for topic, texts in topics.items()}
    return {topic: texts for topic, texts in kept.items() if len(texts) >= MIN_PER_TOPIC}


def write(name: str, rows: list[tuple[str, str]]) -> None:
    with (OUT / f"{name}.csv").open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["text", "category"])
        writer.writerows(rows)


def main() -> None:
    rng = random.Random(0)
    train, test = [], []
    for topic, texts in sorted(unambiguous(statements_by_topic()).items()):
        rng.shuffle(texts)
        cut = round(len(texts) * TEST_SHARE)
        test += [(t, topic) for t in texts[:cut]]
        train += [(t, topic) for t in texts[cut:]]
    OUT.mkdir(parents=True, exist_ok=True)
    write("train", train)
    write("test", test)
    print(f"{len(train)} train, {len(test)} test statements over {len({c for _, c in train})} topics -> {OUT}")


if __name__ == "__main__":
    main()
