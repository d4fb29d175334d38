"""Fine-tuning a sentence-transformers encoder on labels, for ``embed-finetune``.

Contrastive, with in-batch negatives (``MultipleNegativesRankingLoss``): each training text is paired
with another text of the same label, and a batch holds at most one pair per label, so every other
text in the batch is a true negative. Plain torch steps on the sentence-transformers model (no
trainer, no extra dependency); the result is saved as a sentence-transformers directory, which
``tnt.distill.encoders`` exports to int8 ONNX like any other encoder.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

FINETUNE_EPOCHS = 1
FINETUNE_BATCH = 32  # pairs per step, each of another label
FINETUNE_LR = 5e-5
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
    base: Path, texts: Sequence[str], labels: Sequence[str], target: Path, *, epochs: int = FINETUNE_EPOCHS,
    batch_size: int = FINETUNE_BATCH, lr: float = FINETUNE_LR, seed: int = 0, device: str | None = None,
) -> Path:  # fmt: skip
    """Fine-tune the sentence-transformers model in ``base`` on (text, label) pairs; saved to ``target``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import (
        MultipleNegativesRankingLoss,
    )

    from tnt.distill.heads import DistillError

    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = SentenceTransformer(str(base), device=device or "cpu")
    model.max_seq_length = min(model.max_seq_length, MAX_TOKENS)
    loss = MultipleNegativesRankingLoss(model)
    steps = [batch for _ in range(epochs) for batch in distinct_label_batches(same_label_pairs(labels, rng), batch_size, rng)]
    if not steps:
        raise DistillError("embed-finetune needs at least two labels with two or more training texts each")
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
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
            columns = [[texts[anchor] for anchor, _, _ in batch], [texts[positive] for _, positive, _ in batch]]
            features = [_on_device(model.preprocess(column), model.device) for column in columns]
            value = loss(features, None)
            value.backward()
            optimiser.step()
            schedule.step()
            optimiser.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.save(str(target))
    return target


def _on_device(features: dict, device: object) -> dict:
    import torch

    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
