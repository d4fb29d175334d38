"""embed-finetune: MiniLM fine-tuned on a few labels, exported to ONNX inside the model directory."""

from __future__ import annotations

import gc
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from tests.test_distill import subset
from tnt.distill.encoders import TorchSentenceEncoder, onnx_cache_dir
from tnt.distill.finetune import FINETUNE_LR, distinct_label_batches, finetune_sentence_model, same_label_pairs
from tnt.distill.model import (
    FINETUNED_DIR,
    DistilledClassifier,
    FinetunedClassifier,
    TextModel,
    remove_abandoned_staging,
    staging_owner,
)
from tnt.paths import cache_dir


def test_batches_pair_texts_of_one_label_and_never_repeat_a_label():
    labels = ["a"] * 5 + ["b"] * 3 + ["c"] * 4 + ["d"]  # "d" has no partner
    rng = random.Random(0)
    pairs = same_label_pairs(labels, rng)
    assert sorted(anchor for anchor, _, _ in pairs) == [i for i, label in enumerate(labels) if label != "d"]
    assert all(anchor != positive and labels[anchor] == labels[positive] == label for anchor, positive, label in pairs)
    batches = distinct_label_batches(pairs, 2, rng)
    assert all(len({label for _, _, label in batch}) == len(batch) for batch in batches)
    assert sum(len(batch) for batch in batches) >= len(pairs) - 2  # only a last lone label's pairs are left out


def test_an_unknown_loss_is_named_before_any_training(tmp_path):
    from tnt.distill.encoders import resolve_model_path
    from tnt.distill.heads import DistillError

    with pytest.raises(DistillError, match="unknown fine-tuning loss 'triplet'; choose one of contrastive, classification"):
        finetune_sentence_model(resolve_model_path(None), ["a", "b"], ["x", "y"], tmp_path / "tuned", loss="triplet")
    assert not (tmp_path / "tuned").exists()


def test_the_staging_of_a_killed_fine_tune_is_removed_and_a_running_or_remote_ones_kept(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    abandoned = tmp_path / f"finetune-{staging_owner(int(finished.stdout))}-a1"
    running = tmp_path / f"finetune-{staging_owner(os.getpid())}-b2"
    elsewhere = tmp_path / f"finetune-{finished.stdout.strip()}@another-host-c3"  # a cache shared between machines
    for directory in (abandoned, running, elsewhere, tmp_path / "onnx"):
        (directory / "finetuned").mkdir(parents=True)
    assert remove_abandoned_staging(tmp_path) == [abandoned]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([running.name, elsewhere.name, "onnx"])


@pytest.mark.slow
@pytest.mark.parametrize(("loss", "epochs", "least_gain"), [("classification", 2, 0.004), ("contrastive", 1, 0.01)])
def test_finetuned_model_moves_same_label_texts_together_and_tags_from_its_directory(banking77, tmp_path, loss, epochs, least_gain):
    texts, labels = subset(banking77["train"], per_label=8)
    base = DistilledClassifier("embed-linear").fit(texts, labels)
    cached_exports = sorted(onnx_cache_dir().iterdir())
    model = FinetunedClassifier(device="cpu", loss=loss, finetune_epochs=epochs).fit(texts, labels)
    assert model.meta["finetune"] == {"loss": loss, "epochs": epochs, "lr": FINETUNE_LR, "texts": len(texts)}

    def same_label_margin(encoder) -> float:  # mean cosine to same-label texts minus to the others
        embedded = encoder.encode(texts)
        similarity = embedded @ embedded.T
        same = np.equal.outer(np.array(labels), np.array(labels)) & ~np.eye(len(texts), dtype=bool)
        return float(similarity[same].mean() - similarity[~np.equal.outer(np.array(labels), np.array(labels))].mean())

    # measured on 80 texts: classification +0.007 (6 steps), contrastive +0.018 (8 steps)
    assert same_label_margin(model.encoder) > same_label_margin(base.encoder) + least_gain

    directory = model.save(tmp_path / "tuned")
    assert (directory / FINETUNED_DIR / "config.json").exists() and (directory / "encoder.onnx").exists()
    loaded = TextModel.load(directory, device="cpu")
    assert loaded.kind == "embed-finetune" and loaded.encoder.model_name == FINETUNED_DIR
    test_texts, test_labels = subset(banking77["test"])
    predicted = loaded.predict(test_texts)
    assert list(predicted) == list(model.predict(test_texts))
    assert np.mean(predicted == np.array(test_labels)) > 0.7

    model.encoder = TorchSentenceEncoder(str(model.tuned), "cpu")  # as it is after fine-tuning on a GPU
    on_torch = model.save(tmp_path / "tuned-on-torch")
    assert (on_torch / "encoder.onnx").samefile(directory / "encoder.onnx")

    del model
    gc.collect()
    assert not list(cache_dir().glob("finetune-*")), "the fine-tuned weights and their export stay only in the saved model"
    assert sorted(onnx_cache_dir().iterdir()) == cached_exports
    assert list(TextModel.load(directory, device="cpu").predict(test_texts)) == list(predicted)
