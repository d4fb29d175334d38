"""Build ``data/chatterbot/{train,test}.csv`` from the ``chatterbot-corpus`` package (PyPI, BSD licence):
every English statement labelled with its file's topic, a second labelled corpus for
``bench/review_efficiency.py`` beside BANKING77.

    .venv/bin/pip install chatterbot-corpus==1.3.3 && .venv/bin/python bench/data/build_chatterbot.py

Statements are stripped and de-duplicated; one that appears under two topics is dropped (its label
is ambiguous), and so are topics with fewer than ``MIN_PER_TOPIC`` statements. A seeded split puts a
quarter of each topic in the test set.
"""

from __future__ import annotations

from collections import defaultdict
from importlib.resources import files
from pathlib import Path

import yaml
from splits import write_splits

OUT = Path(__file__).resolve().parents[2] / "data" / "chatterbot"
MIN_PER_TOPIC = 30


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


def main() -> None:
    by_label = unambiguous(statements_by_topic())
    n_train, n_test = write_splits(OUT, by_label)
    print(f"{n_train} train, {n_test} test statements over {len(by_label)} labels -> {OUT}")


if __name__ == "__main__":
    main()
