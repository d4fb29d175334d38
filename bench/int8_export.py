"""Which of MiniLM's matrix products to keep in fp32 in the int8 ONNX export: closeness to fp32, speed, accuracy.

The fp32 export (``tnt.distill.encoders.exported_onnx``) is quantised again with each variant's nodes
left in fp32 (``quantize_int8``), and each runs the 3,080 BANKING77 test texts on one thread. Per
variant: mean cosine to the fp32 embeddings, texts per CPU-second and its ratio to fp32, and the test
accuracy of logistic regression fitted on the variant's embeddings of BANKING77 train, with the gold
labels (C = 10) and with the simulated 85 %-right LLM labels of ``bench/finetune.py`` (C = 3 and 10).
int8 outruns fp32 only on CPUs with int8 dot-product instructions (VNNI, AMX, Arm dot product), which
the first line names.

    OMP_NUM_THREADS=1 .venv/bin/python bench/int8_export.py        # about 10 minutes on 2 cores
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from finetune import load, simulated_llm  # bench/finetune.py: the corpus and the simulated LLM labels

from tnt.distill.encoders import (
    ONNX_FILES,
    TOKENIZER_FILE,
    OnnxSentenceEncoder,
    exported_onnx,
    int8_dot_product_instructions,
    quantize_int8,
    resolve_model_path,
)


def variants(graph) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    """Each variant's nodes kept in fp32 (the fused attention nodes are named by layer: Attention_0, ...)."""
    products = [node.name for node in graph.node if node.op_type in ("MatMul", "Attention")]
    return {
        "every product int8 (shipped)": [],
        "first layer's feed-forward fp32": [n for n in products if "/layer.0/intermediate/" in n or "/layer.0/output/dense/" in n],
        "first layer fp32": [n for n in products if "/layer.0/" in n or n == "Attention_0"],
        "every feed-forward down-projection fp32": [n for n in products if "/output/dense/" in n and "/attention/" not in n],
    }


def main() -> None:
    import onnx
    from sklearn.linear_model import LogisticRegression

    train_texts, train_labels = load("train")
    test_texts, test_labels = load("test")
    gold, llm_labels = np.array(test_labels), simulated_llm(train_labels, seed=0)
    exports = exported_onnx(resolve_model_path(None))
    fp32_path = exports / ONNX_FILES["fp32"]
    graph = onnx.load(fp32_path).graph
    print(f"CPU int8 dot-product instructions: {', '.join(int8_dot_product_instructions()) or 'none'}")

    def measure(directory: Path, precision: str) -> tuple[np.ndarray, np.ndarray, float]:
        encoder = OnnxSentenceEncoder("all-MiniLM-L6-v2", directory, 256, precision=precision, threads=1)
        encoder.encode(test_texts[:200])  # warm-up
        started = time.process_time()
        test = encoder.encode(test_texts)
        return encoder.encode(train_texts), test, len(test_texts) / (time.process_time() - started)

    def accuracy(train: np.ndarray, test: np.ndarray, labels: list[str], C: float) -> float:
        return float(np.mean(LogisticRegression(C=C, max_iter=2000).fit(train, labels).predict(test) == gold))

    reference = measure(exports, "fp32")
    print(f"{'variant':42} {'fp32 nodes':>10} {'cosine':>7} {'texts/CPU-s':>11} {'vs fp32':>7} {'gold C10':>8} {'LLM C3':>7} {'LLM C10':>7}")

    def report(variant: str, fp32_nodes: int | str, train: np.ndarray, test: np.ndarray, speed: float) -> None:
        cosine = float(np.mean(np.sum(test * reference[1], axis=1)))
        print(f"{variant:42} {fp32_nodes:>10} {cosine:>7.4f} {speed:>11.0f} {speed / reference[2]:>6.2f}x "
              f"{accuracy(train, test, train_labels, 10):>8.4f} {accuracy(train, test, llm_labels, 3):>7.4f} "
              f"{accuracy(train, test, llm_labels, 10):>7.4f}", flush=True)  # fmt: skip

    report("fp32", "all", *reference)
    with tempfile.TemporaryDirectory() as scratch:
        for number, (variant, kept) in enumerate(variants(graph).items()):
            directory = Path(scratch) / str(number)
            directory.mkdir()
            (directory / TOKENIZER_FILE).symlink_to(exports / TOKENIZER_FILE)
            quantize_int8(fp32_path, directory / ONNX_FILES["int8"], kept)
            report(variant, len(kept), *measure(directory, "int8"))


if __name__ == "__main__":
    main()
