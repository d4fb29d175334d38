"""Fine-tuning a sentence-transformers encoder on labels, for ``embed-finetune``, with one of two losses:

- ``contrastive``: in-batch negatives (``MultipleNegativesRankingLoss``): each training text is paired
  with another text of the same label, and a batch holds at most one pair per label, so every other
  text in the batch is a true negative.
- ``classification``: cross-entropy over the labels through a cosine classifier (unit-length label
  vectors, started at the label centroids of the base model's embeddings, times a fixed scale), so
  training starts from the nearest-centroid classifier instead of a random head that would first
  pull the encoder about.

Plain torch steps on the sentence-transformers model (no trainer, no extra dependency); the result is
saved as a sentence-transformers directory, which ``tnt.distill.encoders`` exports to ONNX like any
other encoder.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# BANKING77 test against plain MiniLM + LR 0.9292 (docs/benchmarks.md): classification, 3 epochs at
# 1e-4, 0.9380; 2 epochs at 5e-5, 0.9338; contrastive, 1 epoch at 5e-5 (as many texts as 2), 0.9315
FINETUNE_LOSS = "classification"
FINETUNE_EPOCHS = 3
FINETUNE_BATCH = 32  # pairs (contrastive) or texts (classification) per step
FINETUNE_LR = 1e-4
HEAD_LR = 1e-2  # the cosine classifier's label vectors (classification)
COSINE_SCALE = 20.0  # logits = scale x cosine(text, label vector)
LOSSES = ("contrastive", "classification")
WARMUP_SHARE = 0.1
MAX_TOKENS = 128  # the texts tagged are short; longer ones are truncated while fine-tuning only


def same_label_pairs(labels: Sequence[str], rng: random.Random) -> list[tuple[int, int, str]]:
    """(anchor, positive, label): every text of a label with at least two once as anchor, with a random other text of its label."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_label[label].append(index)
    pairs = []
    for label, members in by_label.items():
        if len(members) < 2:
            continue
        for position, anchor in enumerate(members):
            partner = rng.randrange(len(members) - 1)
            pairs.append((anchor, members[partner + (partner >= position)], label))
    return pairs


def distinct_label_batches(pairs: list[tuple[int, int, str]], batch_size: int, rng: random.Random) -> list[list[tuple[int, int, str]]]:
    """Batches of pairs with no label twice, so no in-batch negative shares the anchor's label."""
    queues: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for pair in rng.sample(pairs, len(pairs)):
        queues[pair[2]].append(pair)
    batches = []
    while len(queues) >= 2:
        chosen = rng.sample(sorted(queues), min(batch_size, len(queues)))
        batches.append([queues[label].pop() for label in chosen])
        queues = {label: queue for label, queue in queues.items() if queue}
    return batches


def finetune_sentence_model(
    base: Path, texts: Sequence[str], labels: Sequence[str], target: Path, *, loss: str = FINETUNE_LOSS,
    epochs: int = FINETUNE_EPOCHS, batch_size: int = FINETUNE_BATCH, lr: float = FINETUNE_LR, seed: int = 0,
    device: str | None = None,
) -> Path:  # fmt: skip
    """Fine-tune the sentence-transformers model in ``base`` on (text, label) pairs; saved to ``target``."""
    import torch
    from sentence_transformers import SentenceTransformer

    from tnt.distill.heads import DistillError

    if loss not in LOSSES:
        raise DistillError(f"unknown fine-tuning loss {loss!r}; choose one of {', '.join(LOSSES)}")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = SentenceTransformer(str(base), device=device or "cpu")
    model.max_seq_length = min(model.max_seq_length, MAX_TOKENS)
    objective = (ContrastiveObjective if loss == "contrastive" else ClassificationObjective)(model, texts, labels)
    steps = [batch for _ in range(epochs) for batch in objective.batches(batch_size, rng)]
    if not steps:
        raise DistillError("embed-finetune needs at least two labels with two or more training texts each")
    optimiser = torch.optim.AdamW([{"params": model.parameters(), "lr": lr}, *objective.parameter_groups()])
    warmup = max(1, int(len(steps) * WARMUP_SHARE))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min((step + 1) / warmup, max(0.0, (len(steps) - step) / (len(steps) - warmup + 1)))
    )
    model.train()
    threads = torch.get_num_threads()
    if model.device.type == "cpu" and os.getloadavg()[0] > (os.cpu_count() or 1):
        torch.set_num_threads(1)  # on an oversubscribed CPU, one thread ran a step 8x faster than two (spin-waits)
    try:
        for batch in steps:
            objective.loss(batch).backward()
            optimiser.step()
            schedule.step()
            optimiser.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.save(str(target))
    return target


class ContrastiveObjective:
    """In-batch negatives over same-label pairs, no label twice in a batch."""

    def __init__(self, model: Any, texts: Sequence[str], labels: Sequence[str]):
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        self.model, self.texts, self.labels = model, texts, labels
        self.criterion = MultipleNegativesRankingLoss(model)

    def batches(self, batch_size: int, rng: random.Random) -> list[list[tuple[int, int, str]]]:
        return distinct_label_batches(same_label_pairs(self.labels, rng), batch_size, rng)

    def parameter_groups(self) -> list[dict]:
        return []

    def loss(self, batch: list[tuple[int, int, str]]) -> Any:
        columns = [[self.texts[anchor] for anchor, _, _ in batch], [self.texts[positive] for _, positive, _ in batch]]
        return self.criterion([_on_device(self.model.preprocess(column), self.model.device) for column in columns], None)


class ClassificationObjective:
    """Cross-entropy through a cosine classifier whose label vectors start at the label centroids."""

    def __init__(self, model: Any, texts: Sequence[str], labels: Sequence[str]):
        import numpy as np
        import torch

        self.model, self.texts = model, texts
        names = sorted(set(labels))
        self.targets = np.array([names.index(label) for label in labels]) if len(names) >= 2 else np.empty(0, dtype=int)
        if len(self.targets):
            embedded = model.encode(list(texts), batch_size=64, convert_to_numpy=True)
            centroids = np.vstack([embedded[self.targets == i].mean(axis=0) for i in range(len(names))])
            self.label_vectors = torch.nn.Parameter(torch.tensor(centroids, dtype=torch.float32, device=model.device))

    def batches(self, batch_size: int, rng: random.Random) -> list[list[int]]:
        order = rng.sample(range(len(self.targets)), len(self.targets))
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    def parameter_groups(self) -> list[dict]:
        return [{"params": [self.label_vectors], "lr": HEAD_LR}] if len(self.targets) else []

    def loss(self, batch: list[int]) -> Any:
        import torch
        import torch.nn.functional as F

        features = _on_device(self.model.preprocess([self.texts[i] for i in batch]), self.model.device)
        embedded = F.normalize(self.model(features)["sentence_embedding"], dim=-1)
        logits = COSINE_SCALE * embedded @ F.normalize(self.label_vectors, dim=-1).T
        return F.cross_entropy(logits, torch.as_tensor(self.targets[batch], device=self.model.device))


def _on_device(features: dict, device: object) -> dict:
    import torch

    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
