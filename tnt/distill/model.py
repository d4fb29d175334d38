"""Distilled models: small classifiers (and score regressors) trained on LLM and human labels.

An LLM labels thousands of documents; a distilled model tags the rest of the corpus. A model is an
encoder (``tnt.distill.encoders``) plus a head, both small objects:

- kinds: ``embed-linear`` (sentence embeddings + temperature-calibrated logistic regression, the
  default), ``embed-mlp`` (the same embeddings + a small torch MLP), ``hashing-linear`` (hashed word
  and character n-grams + logistic regression: no neural encoder, for CPU corpora where speed rules);
- tasks: ``single`` (one label per document), ``multi`` (one-vs-rest), ``score`` (regression of a
  numeric label such as an Ask-LLM quality score).

``DistilledClassifier`` / ``DistilledRegressor`` are scikit-learn-style (``fit``, ``predict_proba``,
``predict``). Models are saved as data, never pickles: ``model.json`` (labels, encoder, head, metrics)
+ ``weights.safetensors`` (+ ``encoder.onnx`` and ``tokenizer.json`` for the embed kinds).

Heads live in ``tnt.distill.heads``; ``tnt.distill.train`` builds a model from a workspace's labels
and ``tnt.distill.store`` keeps the ``models`` table.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tnt.distill import encoders
from tnt.distill.heads import (
    DistillError,
    LinearHead,
    MLPHead,
    fit_temperature,
    sigmoid,
    softmax,
)

KINDS = ("embed-linear", "embed-mlp", "hashing-linear")
TASKS = ("single", "multi", "score")
CALIBRATION_SHARE = 0.1  # of the training documents, to fit the softmax temperature
MIN_CALIBRATION = 50
MULTI_THRESHOLD = 0.5
MODEL_FORMAT = "tnt-model/1"
CONFIG_FILE, WEIGHTS_FILE = "model.json", "weights.safetensors"


HEADS = {"linear": LinearHead, "mlp": MLPHead}


# Models: encoder + head


@dataclass
class Prediction:
    label: str | None
    confidence: float | None
    extra_labels: list[str] = field(default_factory=list)
    top_k: list[tuple[str, float]] = field(default_factory=list)
    score: float | None = None


class TextModel:
    """An encoder and a head; ``DistilledClassifier`` and ``DistilledRegressor`` say what they predict."""

    task: str

    def __init__(
        self, kind: str = "embed-linear", encoder: str | None = None, device: str | None = None,
        C: float = 10.0, hidden: int = 512, epochs: int = 40, seed: int = 0,
    ):  # fmt: skip
        if kind not in KINDS:
            raise DistillError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")
        self.kind, self.encoder_name, self.device = kind, encoder, device
        self.C, self.hidden, self.epochs, self.seed = C, hidden, epochs, seed
        self.encoder: Any = None
        self.head: Any = None
        self.temperature = 1.0
        self.labels: list[str] = []
        self.meta: dict[str, Any] = {}

    @property
    def id(self) -> str | None:
        return self.meta.get("id")

    def _new_head(self) -> Any:
        if self.kind == "embed-mlp":
            return MLPHead(self.task, hidden=self.hidden, epochs=self.epochs, seed=self.seed)
        return LinearHead(self.task, C=self.C)

    def _build_encoder(self, texts: Sequence[str]) -> Any:
        if self.kind == "hashing-linear":
            return encoders.HashingEncoder().fit(texts)
        return encoders.sentence_encoder(self.encoder_name, self.device)

    def features(self, texts: Sequence[str]) -> Any:
        if self.encoder is None:
            raise DistillError("the model is not fitted")
        return self.encoder.encode(list(texts))

    def _fit_head(self, X: Any, Y: np.ndarray, weight: np.ndarray) -> None:
        self.head = self._new_head().fit(X, Y, weight)

    def fit_features(self, texts: Sequence[str], Y: np.ndarray, sample_weight: Sequence[float] | None) -> TextModel:
        weight = np.ones(len(texts)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        self.encoder = self._build_encoder(texts)
        self._fit_head(self.features(texts), Y, weight)
        return self

    def raw_scores(self, texts: Sequence[str]) -> np.ndarray:
        return self.head.scores(self.features(texts))

    def fingerprint(self) -> str:
        """A hash of everything that decides the predictions, so results of two models never mix."""
        digest = hashlib.sha256(
            json.dumps([self.kind, self.task, self.labels, self.temperature, self.encoder.config()]).encode()
        )
        arrays = self.head.arrays() | (self.encoder.arrays() if hasattr(self.encoder, "arrays") else {})
        for name, array in sorted(arrays.items()):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:16]

    # Saving as data

    def save(self, directory: Path | str, **meta: Any) -> Path:
        from safetensors.numpy import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.meta.update(meta)
        arrays = {f"head.{k}": np.ascontiguousarray(v) for k, v in self.head.arrays().items()}
        if isinstance(self.encoder, encoders.HashingEncoder):
            arrays |= {f"encoder.{k}": v for k, v in self.encoder.arrays().items()}
        else:
            encoders.save_sentence_encoder_files(self.encoder, directory)
        save_file(arrays, str(directory / WEIGHTS_FILE))
        config = {
            "format": MODEL_FORMAT, "kind": self.kind, "task": self.task, "labels": self.labels,
            "temperature": self.temperature, "encoder": self.encoder.config(),
            "head": {"type": self.head.name, "params": self.head.params()}, **self.meta,
        }  # fmt: skip
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=_json_default))
        return directory

    @staticmethod
    def load(directory: Path | str, device: str | None = None, threads: int | None = None) -> TextModel:
        """A saved model; ``device`` None picks CUDA when present, ``threads`` caps CPU threads (default: all cores)."""
        from safetensors.numpy import load_file

        directory = Path(directory)
        try:
            config = json.loads((directory / CONFIG_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise DistillError(f"{directory}: not a tnt model directory ({exc})") from None
        if config.get("format") != MODEL_FORMAT:
            raise DistillError(f"{directory / CONFIG_FILE}: unknown model format {config.get('format')!r}")
        arrays = load_file(str(directory / WEIGHTS_FILE))
        cls = DistilledRegressor if config["task"] == "score" else DistilledClassifier
        model = cls.__new__(cls)
        TextModel.__init__(model, config["kind"], config["encoder"].get("model"), device, seed=0)
        model.task, model.labels, model.temperature = config["task"], config["labels"], config["temperature"]
        part = lambda prefix: {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}  # noqa: E731
        model.head = HEADS[config["head"]["type"]](config["task"], **config["head"]["params"], **part("head."))
        model.encoder = encoders.encoder_from_config(config["encoder"], part("encoder."), directory, device, threads)
        known = {"format", "kind", "task", "labels", "temperature", "encoder", "head"}
        model.meta = {k: v for k, v in config.items() if k not in known}
        return model


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class DistilledClassifier(TextModel):
    """Texts → labels. ``multi_label`` trains one binary model per label (one-vs-rest)."""

    def __init__(self, kind: str = "embed-linear", multi_label: bool = False, **options: Any):
        super().__init__(kind, **options)
        self.task = "multi" if multi_label else "single"

    @property
    def classes_(self) -> np.ndarray:
        return np.array(self.labels)

    def fit(self, texts: Sequence[str], y: Sequence[Any], sample_weight: Sequence[float] | None = None) -> DistilledClassifier:
        """``y``: one label per text, or (multi-label) a list of labels per text."""
        if self.task == "multi":
            self.labels = sorted({label for labels in y for label in labels})
            Y = np.array([[label in set(labels) for label in self.labels] for labels in y], dtype=np.float32)
        else:
            self.labels = sorted(set(y))
            index = {label: i for i, label in enumerate(self.labels)}
            Y = np.array([index[label] for label in y])
        if len(self.labels) < 2 and self.task == "single":
            raise DistillError(f"a classifier needs at least two labels in its training data, got {self.labels}")
        return self.fit_features(texts, Y, sample_weight)

    def _fit_head(self, X: Any, Y: np.ndarray, weight: np.ndarray) -> None:
        """Single-label: fit on most of the data, fit the temperature on the rest, then refit on all."""
        n_calibration = int(len(Y) * CALIBRATION_SHARE)
        if self.task == "single" and n_calibration >= MIN_CALIBRATION:
            order = np.random.default_rng(self.seed).permutation(len(Y))
            held, kept = order[:n_calibration], order[n_calibration:]
            if len(np.unique(Y[kept])) == len(self.labels):
                head = self._new_head().fit(X[kept], Y[kept], weight[kept])
                self.temperature = fit_temperature(head.scores(X[held]), Y[held])
                if isinstance(head, LinearHead):
                    self.head = head.fit(X, Y, weight)  # warm-started
                    return
        super()._fit_head(X, Y, weight)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        scores = self.raw_scores(texts)
        return sigmoid(scores) if self.task == "multi" else softmax(scores / self.temperature)

    def predict(self, texts: Sequence[str]) -> np.ndarray | list[list[str]]:
        return self.decide(self.predict_proba(texts))

    def decide(self, probabilities: np.ndarray) -> np.ndarray | list[list[str]]:
        if self.task == "multi":
            return [[self.labels[j] for j in np.flatnonzero(row >= MULTI_THRESHOLD)] for row in probabilities]
        return self.classes_[probabilities.argmax(axis=1)]

    def tag(self, texts: Sequence[str], top_k: int = 3) -> list[Prediction]:
        return self.predictions(self.predict_proba(texts), top_k)

    def predictions(self, probabilities: np.ndarray, top_k: int = 3) -> list[Prediction]:
        """Per row: the best label and its probability, the other labels over the threshold (multi-label), top k."""
        result = []
        for row, ranked in zip(probabilities, np.argsort(-probabilities, axis=1)):
            extra = [self.labels[j] for j in ranked[1:] if row[j] >= MULTI_THRESHOLD] if self.task == "multi" else []
            top = [(self.labels[j], float(row[j])) for j in ranked[:top_k]]
            result.append(Prediction(top[0][0], top[0][1], extra, top))
        return result


class DistilledRegressor(TextModel):
    """Texts → a number (e.g. a quality score learned from Ask-LLM scores)."""

    task = "score"

    def fit(self, texts: Sequence[str], y: Sequence[float], sample_weight: Sequence[float] | None = None) -> DistilledRegressor:
        self.labels = []
        return self.fit_features(texts, np.asarray(y, dtype=np.float64), sample_weight)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return self.raw_scores(texts)[:, 0]

    def tag(self, texts: Sequence[str], top_k: int = 3) -> list[Prediction]:
        return self.predictions(self.predict(texts)[:, None], top_k)

    def predictions(self, scores: np.ndarray, top_k: int = 3) -> list[Prediction]:
        return [Prediction(None, None, score=float(s)) for s in scores[:, 0]]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """The scores as a one-column matrix, so taggers treat every model alike."""
        return self.predict(texts)[:, None]
