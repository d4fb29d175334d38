"""How many LLM labels budgeted active labeling (``tnt label --budget N``) needs: the test accuracy
that 3,000 random LLM labels give the tagger, reached with how few chosen ones.

The LLM is simulated through the scripted OpenAI-compatible server (``tests/llm_server.py``, in this
process): it answers BANKING77's gold label for 85 % of the documents and, for the rest, a wrong
label fixed per document. Both arms go through ``tnt.active.label_on_budget`` on a workspace of
BANKING77's train split: ``random`` spends the reference budget in one round, ``uncertain`` spends
``--budget`` in a seed and rounds. After each round the bench scores the tagger trained on the labels
so far (``tnt.active.tagger``, the embed-linear head of ``tnt train`` over the same cached embeddings)
on the test split.

    .venv/bin/python bench/label_budget.py [--budget 1200] [--reference 3000] [--rounds 11]

Prints the LLM calls each arm made, the accuracy after each uncertain round, the calls at which it
first reached the random arm's accuracy, and the ratio (goal: ≤ 0.4).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.llm_server import ScriptedLLMServer
from tnt.active import cached_embeddings, label_on_budget, load_pool, tagger
from tnt.labels.store import LabelStore
from tnt.llm.gateway import LLMSettings
from tnt.taxonomy.store import Taxonomy, TaxonomyLabel, TaxonomyStore
from tnt.workspace import Workspace

DATA = ROOT / "data" / "banking77"
DOCUMENT = re.compile(r"<document>\n(.*?)\n</document>", re.DOTALL)
LLM_ACCURACY = 0.85


def read_split(name: str) -> list[tuple[str, str]]:
    with (DATA / f"{name}.csv").open(encoding="utf-8") as rows:
        return [(row["text"], row["category"]) for row in csv.DictReader(rows)]


class NoisyLLM:
    """The gold label for 85 % of the documents, else a wrong one; both fixed per document."""

    def __init__(self, gold: dict[str, str], labels: list[str]):
        self.gold, self.labels = gold, labels

    def label(self, text: str) -> str:
        """A text tnt changed before sending it (PII masking rewrites URL-like spans) has no gold
        label here: it gets a label fixed by its text, as an LLM guessing would."""
        draw = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
        gold = self.gold.get(text)
        if gold is not None and draw % 1000 < LLM_ACCURACY * 1000:
            return gold
        wrong = [label for label in self.labels if label != gold]
        return wrong[(draw // 1000) % len(wrong)]

    def __call__(self, body: dict) -> str:
        (text,) = DOCUMENT.findall(body["messages"][1]["content"])
        return json.dumps({"label": self.label(text), "explanation": "Simulated.", "confidence": 0.8})


def make_workspace(directory: Path, train: list[tuple[str, str]]) -> int:
    corpus = directory / "train.jsonl"
    corpus.write_text("".join(json.dumps({"text": text}) + "\n" for text, _ in train), encoding="utf-8")
    with Workspace.create(directory / "ws") as ws:
        ws.ingest([corpus])
        labels = sorted({label for _, label in train})
        taxonomy = Taxonomy(
            labels=[TaxonomyLabel(name=name, description=f"The customer asks about {name.replace('_', ' ')}.") for name in labels],
            use_case="customer intent in banking support chats",
        )
        version = TaxonomyStore(ws).save(taxonomy).version
    assert version is not None
    return version


def run_arm(directory: Path, version: int, strategy: str, budget: int, rounds: int, llm: NoisyLLM, test: list[tuple[str, str]]) -> tuple[int, list[tuple[int, float]]]:
    """(LLM calls answered, [(labels so far, test accuracy) after each round])."""
    server = ScriptedLLMServer(llm).start()
    settings = LLMSettings(model="openai/scripted", api_base=server.url, api_key="test", max_concurrency=16)
    curve: list[tuple[int, float]] = []
    try:
        with Workspace.open(directory / "ws") as ws:
            pool_ids = list(ws.db.execute("select id from documents order by rowid").fetchall())
            pool = load_pool(ws, [row[0] for row in pool_ids])
            x_test = cached_embeddings(pool.encoder, [text for text, _ in test])
            y_test = np.array([label for _, label in test])

            def score(number: int, plan) -> None:  # called as each round starts: score the rounds before
                if number:
                    curve.append(accuracy_so_far(ws, version, pool, x_test, y_test))

            started = time.perf_counter()
            label_on_budget(ws, version, pool.ids, budget, settings, strategy=strategy, rounds=rounds, on_round=score)
            curve.append(accuracy_so_far(ws, version, pool, x_test, y_test))
            print(f"  {strategy}: {server.count} LLM calls, {time.perf_counter() - started:.0f} s", flush=True)
    finally:
        server.stop()
    return server.count, curve


def accuracy_so_far(ws: Workspace, version: int, pool, x_test: np.ndarray, y_test: np.ndarray) -> tuple[int, float]:
    labels = {doc_id: row["label"] for doc_id, row in LabelStore(ws).current(version, "llm").items()}
    model = tagger(pool, labels, seed=0)
    assert model is not None
    accuracy = float((model.predict([""] * len(y_test), x_test) == y_test).mean())
    print(f"    {len(labels):5d} LLM labels: test accuracy {accuracy:.3f}", flush=True)
    return len(labels), accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=1200)
    parser.add_argument("--reference", type=int, default=3000, help="random LLM labels of the reference arm")
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()

    train, test = read_split("train"), read_split("test")
    gold = dict(train)
    llm = NoisyLLM(gold, sorted(set(gold.values())))
    print(f"simulated LLM accuracy on the train split: {np.mean([llm.label(t) == g for t, g in gold.items()]):.3f}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        arms = {}
        for strategy, budget in (("random", args.reference), ("uncertain", args.budget)):
            directory = Path(tmp) / strategy
            directory.mkdir()
            version = make_workspace(directory, train)
            arms[strategy] = run_arm(directory, version, strategy, budget, args.rounds, llm, test)
    target = arms["random"][1][-1][1]
    calls, curve = arms["uncertain"]
    reached = next((n for n, accuracy in curve if accuracy >= target), None)
    print(f"\nrandom: {arms['random'][0]} LLM calls, test accuracy {target:.3f}")
    print(f"uncertain: {calls} LLM calls, test accuracy {curve[-1][1]:.3f}; "
          f"reached {target:.3f} at {reached if reached else 'not within the budget'} labels")
    if reached:
        print(f"calls to reach the random arm's accuracy: {reached} / {args.reference} = {reached / args.reference:.2f}× random")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
