"""Tagging throughput: `tnt tag` against plain SentenceTransformer.encode + LogisticRegression, same inputs.

BANKING77: models are fitted on the train split (its labels stand in for LLM labels); the test split
(3,080 short texts) is what gets tagged, in full and cut to their first three words. Per set: docs/s
of plain sentence-transformers + scikit-learn, of `tnt tag` with embed-linear and with the cascade
(hashing-linear first, embed-linear for its unsure documents), the ratios, agreement and accuracy.
Then hashing-linear's docs/s per core, and, when CUDA is present, embed-linear on 256-token
documents on the GPU.

    .venv/bin/python bench/tag_throughput.py [--train-limit N] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import csv
import json
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
SHORT_WORDS = 3  # the short-text set: each test text cut to its first words


def load(split: str) -> tuple[list[str], list[str]]:
    with open(BANKING77 / f"{split}.csv", newline="") as rows:
        pairs = [(row["text"], row["category"]) for row in csv.DictReader(rows)]
    return [t for t, _ in pairs], [c for _, c in pairs]


def cpu_description() -> str:
    """The CPU model and its int8 dot-product instructions (VNNI, AMX), which decide the ONNX encoder's
    precision and its lead over fp32: measured 2x with them, none on an AVX2-only CPU (docs/benchmarks.md)."""
    from tnt.distill.encoders import int8_dot_product_instructions, onnx_precision

    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")
    int8 = ", ".join(int8_dot_product_instructions()) or "none"
    return f"{model}; int8 dot-product instructions: {int8}; ONNX encoder in {onnx_precision()}"


def best_of(repeats: int, run) -> tuple[float, float, object]:  # type: ignore[no-untyped-def]
    """Best wall seconds, best CPU seconds (this process, all threads) and the result, over ``repeats`` runs."""
    best_wall, best_cpu, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = run()
        best_wall, best_cpu = min(best_wall, time.perf_counter() - wall), min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-limit", type=int, default=None, help="fit on the first N training texts only")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per path; the best counts")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for both paths (default: all cores)")
    args = parser.parse_args()

    import pyarrow.parquet as pq
    import torch
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    from tnt.distill.encoders import resolve_model_path
    from tnt.distill.model import CascadeClassifier, TextModel
    from tnt.distill.tag import tag_files

    if args.threads:
        torch.set_num_threads(args.threads)
    train_texts, train_labels = load("train")
    if args.train_limit:
        keep = sorted(random.Random(0).sample(range(len(train_texts)), args.train_limit))  # the file is sorted by label
        train_texts, train_labels = [train_texts[i] for i in keep], [train_labels[i] for i in keep]
    test_texts, test_labels = load("test")
    gold = np.array(test_labels)
    print(f"fit on {len(train_texts):,} BANKING77 train texts; tag {len(test_texts):,} test texts; "
          f"{torch.get_num_threads()} CPU threads; best of {args.repeats}; load average {os.getloadavg()[0]:.1f}\n"
          f"CPU: {cpu_description()}")  # fmt: skip

    # Baseline: the plain recipe, as a data team would write it
    st = SentenceTransformer(str(resolve_model_path(None)), device="cpu")
    baseline_lr = LogisticRegression(C=10, max_iter=2000).fit(st.encode(train_texts, batch_size=32), train_labels)
    test_sets = {"full texts": test_texts, f"first {SHORT_WORDS} words": [" ".join(t.split()[:SHORT_WORDS]) for t in test_texts]}

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cascade = CascadeClassifier().fit(train_texts, train_labels)  # its tiers are the embed-linear and hashing-linear models
        cascade.save(work / "cascade")
        print(f"cascade threshold {cascade.threshold:.3f}, chosen on held-out labels: {cascade.meta['cascade']}")
        embed = TextModel.load(work / "cascade" / "encoder", device="cpu", threads=args.threads)
        tiered = TextModel.load(work / "cascade", device="cpu", threads=args.threads)
        run_numbers = iter(range(10**6))

        def tnt_tag(model: TextModel, input_file: Path) -> np.ndarray:
            out = work / f"out-{next(run_numbers)}"
            tag_files(model, [input_file], out, id_field="id")
            table = pq.read_table(next(out.glob("*.parquet")))
            order = np.argsort(np.array(table.column("id").to_pylist(), dtype=int))
            return np.array(table.column("label").to_pylist())[order]

        for set_name, texts in test_sets.items():
            input_file = work / f"{len(list(work.glob('*.jsonl')))}.jsonl"
            input_file.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
            paths = {
                "plain ST.encode + LR.predict": lambda texts=texts: baseline_lr.predict(st.encode(texts, batch_size=32)),
                "tnt tag (embed-linear)": lambda f=input_file: tnt_tag(embed, f),
                "tnt tag (cascade)": lambda f=input_file: tnt_tag(tiered, f),
            }
            for run in paths.values():  # warm-up
                run()
            timings: dict[str, list] = {name: [] for name in paths}
            routes_before = dict(tiered.routes)
            for _ in range(args.repeats):  # interleaved, so every path sees the same machine load
                for name, run in paths.items():
                    timings[name].append(best_of(1, run))
            routed = (tiered.routes["encoder"] - routes_before["encoder"]) / (args.repeats * len(texts))
            print(f"\n{set_name} ({len(texts):,} BANKING77 test texts, {len(set(texts)):,} distinct, {np.mean([len(t.split()) for t in texts]):.1f} words), CPU")
            best = {}
            for name, runs in timings.items():
                wall, cpu = min(r[0] for r in runs), min(r[1] for r in runs)
                best[name] = (wall, cpu, runs[0][2])
                print(f"  {name:29}: {len(texts) / wall:8,.0f} docs/s  {len(texts) / cpu:8,.0f} docs per CPU-second  "
                      f"accuracy {np.mean(runs[0][2] == gold):.4f}")  # fmt: skip
            base_s, base_cpu, base_pred = best["plain ST.encode + LR.predict"]
            for name in ("tnt tag (embed-linear)", "tnt tag (cascade)"):
                wall, cpu, pred = best[name]
                print(f"  {name}: {base_s / wall:.2f}x wall, {base_cpu / cpu:.2f}x CPU time; same label as plain on "
                      f"{np.mean(pred == base_pred):.2%}; accuracy {np.mean(pred == gold) - np.mean(base_pred == gold):+.4f} "
                      f"against plain, {np.mean(pred == gold) - np.mean(best['tnt tag (embed-linear)'][2] == gold):+.4f} against embed-linear")  # fmt: skip
            print(f"  cascade: {routed:.1%} of documents through the encoder tier")

        hashing = TextModel.load(work / "cascade" / "cheap")
        short = test_texts * 4
        hashing.predict_proba(short[:1000])
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        hashing.predict_proba(short)
        cpu_s, wall_s = time.process_time() - cpu_started, time.perf_counter() - wall_started
        tag_s, _, hash_pred = best_of(args.repeats, lambda: tnt_tag(hashing, work / "0.jsonl"))
        print("\nhashing-linear")
        print(f"  model alone: {len(short) / cpu_s:,.0f} docs per CPU-second (per core); {len(short) / wall_s:,.0f} docs/s wall")
        print(f"  tnt tag end to end (JSONL in, Parquet out): {len(test_texts) / tag_s:,.0f} docs/s; accuracy {np.mean(hash_pred == gold):.4f}")

        if torch.cuda.is_available():
            gpu_throughput(work / "cascade" / "encoder", test_texts, args.repeats)
        else:
            print("\nno CUDA device here: GPU throughput not measured")


def gpu_throughput(model_dir: Path, texts: list[str], repeats: int) -> None:
    """embed-linear on CUDA (fp16) over documents of about 256 tokens."""
    import torch

    from tnt.distill.model import TextModel

    model = TextModel.load(model_dir, device="cuda")
    tokenizer = model.encoder.model.tokenizer
    docs, current = [], ""
    for text in texts * 200:
        current = f"{current} {text}".strip()
        if len(tokenizer(current)["input_ids"]) >= 256:
            docs.append(current)
            current = ""
        if len(docs) == 20_000:
            break
    model.predict_proba(docs[:2048])
    torch.cuda.synchronize()
    seconds, _, _ = best_of(repeats, lambda: model.predict_proba(docs))
    print(f"\nGPU {torch.cuda.get_device_name()}: embed-linear on {len(docs):,} documents of ≥256 tokens "
          f"(truncated at {model.encoder.max_length}): {len(docs) / seconds:,.0f} docs/s")  # fmt: skip


if __name__ == "__main__":
    main()
