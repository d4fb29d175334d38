"""Distilled models: small classifiers (and score regressors) trained on LLM and human labels.

An LLM labels thousands of documents; a distilled model tags the rest of the corpus. A model is an
encoder (``tnt.encoders``) plus a head, both small objects:

- kinds: ``embed-linear`` (sentence embeddings + temperature-calibrated logistic regression, the
  default), ``embed-mlp`` (the same embeddings + a small torch MLP), ``hashing-linear`` (hashed word
  and character n-grams + logistic regression: no neural encoder, for CPU corpora where speed rules);
- tasks: ``single`` (one label per document), ``multi`` (one-vs-rest), ``score`` (regression of a
  numeric label such as an Ask-LLM quality score).

``DistilledClassifier`` / ``DistilledRegressor`` are scikit-learn-style (``fit``, ``predict_proba``,
``predict``). Models are saved as data, never pickles: ``model.json`` (labels, encoder, head, metrics)
+ ``weights.safetensors`` (+ ``encoder.onnx`` and ``tokenizer.json`` for the embed kinds).

This module owns the ``models`` table; ``train`` builds a model from a workspace's labels: LLM labels,
overridden by human labels that also weigh more, evaluated against human labels when there are
enough of them, else against a held-out share of the LLM labels.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tnt import encoders
from tnt.label import LabelStore
from tnt.workspace import Workspace, WorkspaceError, utc_now

KINDS = ("embed-linear", "embed-mlp", "hashing-linear")
TASKS = ("single", "multi", "score")
TARGETS = ("label", "quality")
HUMAN_WEIGHT = 3.0  # a person's label counts this many times an LLM label
MIN_HUMAN_EVAL = 50  # fewer human-labeled documents than this: evaluate on held-out LLM labels
HUMAN_EVAL_SHARE = 0.3  # else this share of them (at least MIN_HUMAN_EVAL) is held out to evaluate on
LLM_HOLDOUT = 0.2
CALIBRATION_SHARE = 0.1  # of the training documents, to fit the softmax temperature
MIN_CALIBRATION = 50
MULTI_THRESHOLD = 0.5
MODEL_FORMAT = "tnt-model/1"
CONFIG_FILE, WEIGHTS_FILE = "model.json", "weights.safetensors"


class DistillError(Exception):
    """Training or loading that cannot go on; the message says why."""


# Heads: features in, raw scores out; inference is numpy only


class LinearHead:
    """Logistic regression (softmax, or one binary model per label) or ridge regression."""

    name = "linear"

    def __init__(self, task: str, C: float = 10.0, W: np.ndarray | None = None, b: np.ndarray | None = None):
        self.task, self.C = task, C
        self.W, self.b = W, b

    def fit(self, X: Any, Y: np.ndarray, weight: np.ndarray) -> LinearHead:
        from sklearn.linear_model import LogisticRegression, Ridge

        if self.task == "score":
            ridge = Ridge(alpha=1.0 / self.C).fit(X, Y, sample_weight=weight)
            self.W, self.b = np.atleast_2d(ridge.coef_), np.atleast_1d(ridge.intercept_)
        elif self.task == "single":
            # a second fit (on all the data, after calibration) starts from the first one's solution
            self._estimator = getattr(self, "_estimator", None) or LogisticRegression(C=self.C, max_iter=2000, warm_start=True)
            model = self._estimator.fit(X, Y, sample_weight=weight)
            self.W, self.b = model.coef_, model.intercept_
            if self.W.shape[0] == 1:  # sklearn keeps one row for two classes
                self.W, self.b = np.vstack([-self.W / 2, self.W / 2]), np.array([-self.b[0] / 2, self.b[0] / 2])
        else:
            rows = [_binary_logistic(X, Y[:, j], weight, self.C) for j in range(Y.shape[1])]
            self.W, self.b = np.vstack([w for w, _ in rows]), np.array([b for _, b in rows])
        self.W, self.b = self.W.astype(np.float32), self.b.astype(np.float32)
        return self

    def scores(self, X: Any) -> np.ndarray:
        return np.asarray(X @ self.W.T) + self.b

    def params(self) -> dict[str, Any]:
        return {"C": self.C}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"W": self.W, "b": self.b}


def _binary_logistic(X: Any, y: np.ndarray, weight: np.ndarray, C: float) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    if y.min() == y.max():  # a label every (or no) training document has: a constant
        return np.zeros(X.shape[1]), 20.0 if y[0] else -20.0
    model = LogisticRegression(C=C, max_iter=2000).fit(X, y, sample_weight=weight)
    return model.coef_[0], float(model.intercept_[0])


class MLPHead:
    """One hidden layer (ReLU, dropout), trained with AdamW in torch; for when linear underfits."""

    name = "mlp"

    def __init__(
        self, task: str, hidden: int = 512, epochs: int = 40, lr: float = 1e-3, dropout: float = 0.2,
        seed: int = 0, W1: np.ndarray | None = None, b1: np.ndarray | None = None,
        W2: np.ndarray | None = None, b2: np.ndarray | None = None,
    ):  # fmt: skip
        self.task, self.hidden, self.epochs, self.lr, self.dropout, self.seed = task, hidden, epochs, lr, dropout, seed
        self.W1, self.b1, self.W2, self.b2 = W1, b1, W2, b2

    def fit(self, X: np.ndarray, Y: np.ndarray, weight: np.ndarray) -> MLPHead:
        import torch

        if not isinstance(X, np.ndarray):
            raise DistillError("the MLP head needs dense embeddings (use embed-mlp, not with hashing features)")
        torch.manual_seed(self.seed)
        n_out = 1 if self.task == "score" else (Y.shape[1] if self.task == "multi" else int(Y.max()) + 1)
        net = torch.nn.Sequential(
            torch.nn.Linear(X.shape[1], self.hidden), torch.nn.ReLU(), torch.nn.Dropout(self.dropout),
            torch.nn.Linear(self.hidden, n_out),
        )  # fmt: skip
        optimiser = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=1e-2)
        inputs = torch.from_numpy(X.astype(np.float32))
        targets = torch.from_numpy(Y.astype(np.int64 if self.task == "single" else np.float32))
        weights = torch.from_numpy((weight / weight.mean()).astype(np.float32))
        generator = torch.Generator().manual_seed(self.seed)
        net.train()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # steps this small only lose time to thread hand-offs, badly so on a busy machine
        try:
            for _ in range(self.epochs):
                for batch in torch.randperm(len(inputs), generator=generator).split(64):
                    optimiser.zero_grad()
                    loss = (self._losses(net(inputs[batch]), targets[batch]) * weights[batch]).mean()
                    loss.backward()
                    optimiser.step()
        finally:
            torch.set_num_threads(threads)
        first, last = net[0], net[3]
        self.W1, self.b1 = first.weight.detach().numpy(), first.bias.detach().numpy()
        self.W2, self.b2 = last.weight.detach().numpy(), last.bias.detach().numpy()
        return self

    def _losses(self, out: Any, target: Any) -> Any:
        import torch.nn.functional as F

        if self.task == "single":
            return F.cross_entropy(out, target, reduction="none")
        if self.task == "multi":
            return F.binary_cross_entropy_with_logits(out, target, reduction="none").mean(dim=1)
        return F.mse_loss(out[:, 0], target, reduction="none")

    def scores(self, X: np.ndarray) -> np.ndarray:
        hidden = np.maximum(X @ self.W1.T + self.b1, 0)
        return hidden @ self.W2.T + self.b2

    def params(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "epochs": self.epochs, "lr": self.lr, "dropout": self.dropout, "seed": self.seed}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"W1": self.W1, "b1": self.b1, "W2": self.W2, "b2": self.b2}


HEADS = {"linear": LinearHead, "mlp": MLPHead}


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def fit_temperature(scores: np.ndarray, y: np.ndarray) -> float:
    """The softmax temperature that minimises the log-loss on held-out scores (temperature scaling)."""
    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        p = softmax(scores / np.exp(log_t))
        return float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))


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


# Metrics


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, precision_recall_fscore_support

    labels = sorted(set(y_true) | set(y_pred))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=sorted(set(y_true)), average="macro", zero_division=0)),
        "kappa": float(cohen_kappa_score(y_true, y_pred)),
        "per_label": {
            label: {"f1": float(f), "precision": float(p), "recall": float(r), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
    }


def multilabel_metrics(y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Exact-match accuracy, macro/micro F1, and Cohen's κ averaged over labels."""
    from sklearn.metrics import cohen_kappa_score, f1_score, precision_recall_fscore_support
    from sklearn.preprocessing import MultiLabelBinarizer

    binarizer = MultiLabelBinarizer().fit(list(y_true) + list(y_pred))
    T, P = binarizer.transform(y_true), binarizer.transform(y_pred)
    precision, recall, f1, support = precision_recall_fscore_support(T, P, zero_division=0)
    kappas = [cohen_kappa_score(T[:, j], P[:, j]) for j in range(T.shape[1]) if len(set(T[:, j]) | set(P[:, j])) > 1]
    return {
        "n": len(T),
        "accuracy": float((T == P).all(axis=1).mean()),
        "macro_f1": float(f1_score(T, P, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(T, P, average="micro", zero_division=0)),
        "kappa": float(np.mean(kappas)) if kappas else 1.0,
        "per_label": {
            label: {"f1": float(f), "precision": float(p), "recall": float(r), "support": int(s)}
            for label, p, r, f, s in zip(binarizer.classes_, precision, recall, f1, support)
        },
    }


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, Any]:
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import mean_absolute_error, r2_score

    t, p = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    constant = t.min() == t.max() or p.min() == p.max()
    return {
        "n": len(t),
        "mae": float(mean_absolute_error(t, p)),
        "rmse": float(np.sqrt(np.mean((t - p) ** 2))),
        "r2": float(r2_score(t, p)) if len(t) > 1 else None,
        "spearman": None if constant else float(spearmanr(t, p).statistic),
        "pearson": None if constant else float(pearsonr(t, p).statistic),
    }


def evaluate(model: TextModel, texts: Sequence[str], y_true: Sequence[Any]) -> dict[str, Any]:
    predicted = model.predict(texts)
    if model.task == "score":
        return regression_metrics(y_true, predicted)
    if model.task == "multi":
        return multilabel_metrics(y_true, predicted)
    return classification_metrics(list(y_true), list(predicted))


def compare(task: str, reference: Sequence[Any], other: Sequence[Any]) -> dict[str, Any]:
    """How ``other`` agrees with ``reference`` on the same documents (e.g. the LLM against people)."""
    if task == "score":
        return regression_metrics(reference, other)
    if task == "multi":
        return multilabel_metrics(reference, other)
    return classification_metrics(list(reference), list(other))


# Training data from a workspace


@dataclass
class Example:
    doc_id: str
    target: Any  # a label, a list of labels (multi-label) or a number
    source: str  # "human" or "llm"


@dataclass
class Examples:
    """Each labeled document once (a human label overrides the LLM's), and LLM labels of human-labeled ones."""

    examples: dict[str, Example]
    llm_on_human: dict[str, Any]  # doc_id → the LLM's label, for documents people labeled too


def gather_examples(
    workspace: Workspace, taxonomy_version: int | None, task: str, score_origin: str | None = None
) -> Examples:
    store = LabelStore(workspace)
    origin = score_origin if task == "score" else None
    rows = {source: store.current(taxonomy_version, source, origins_like=origin) for source in ("llm", "human")}
    targets = {source: {d: _target(row, task) for d, row in rows[source].items()} for source in rows}
    targets = {source: {d: t for d, t in found.items() if t is not None} for source, found in targets.items()}
    examples = {d: Example(d, t, "llm") for d, t in targets["llm"].items()}
    examples |= {d: Example(d, t, "human") for d, t in targets["human"].items()}
    llm_on_human = {d: targets["llm"][d] for d in targets["human"] if d in targets["llm"]}
    return Examples(examples, llm_on_human)


def _target(row: dict[str, Any], task: str) -> Any:
    if task == "score":
        return row["score"]
    if task == "multi":
        return [row["label"], *row["extra_labels"]] if row["label"] else None
    return row["label"]


def split_for_evaluation(
    examples: dict[str, Example], min_human_eval: int, seed: int
) -> tuple[list[str], list[str], str]:
    """(training ids, evaluation ids, reference): people's labels when there are enough, else the LLM's."""
    rng = random.Random(seed)
    human = sorted(d for d, e in examples.items() if e.source == "human")
    if len(human) >= min_human_eval:
        rng.shuffle(human)
        held = set(human[: max(min_human_eval, int(len(human) * HUMAN_EVAL_SHARE))])
        reference = "human"
    else:
        llm = sorted(d for d, e in examples.items() if e.source == "llm")
        rng.shuffle(llm)
        held = set(llm[: int(len(llm) * LLM_HOLDOUT)])
        reference = "llm-holdout"
    train_ids = [d for d in examples if d not in held]
    return train_ids, [d for d in examples if d in held], reference


# The models table


@dataclass
class ModelInfo:
    id: str
    taxonomy_version: int | None
    kind: str
    target: str
    path: Path
    labels: list[str]
    encoder: dict[str, Any]
    metrics: dict[str, Any]
    run_id: str | None
    created_at: str


class ModelStore:
    """Trained models of one workspace: rows in ``models``, files under ``<workspace>/models/<id>/``."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.db = workspace.db

    def add(self, model: TextModel, taxonomy_version: int | None, target: str, metrics: dict[str, Any], run_id: str | None) -> ModelInfo:
        prefix = f"v{taxonomy_version}" if taxonomy_version is not None else target
        model_id = f"{prefix}-{model.kind}-{uuid.uuid4().hex[:6]}"
        models_dir = self.workspace.artefact_dir("models")
        staging = models_dir / f".{model_id}.tmp"
        model.save(staging, id=model_id, taxonomy_version=taxonomy_version, target=target, metrics=metrics, run_id=run_id)
        staging.rename(models_dir / model_id)
        row = {
            "id": model_id, "taxonomy_version": taxonomy_version, "kind": model.kind, "target": target,
            "path": str((models_dir / model_id).relative_to(self.workspace.directory)),
            "labels": json.dumps(model.labels), "encoder": json.dumps(model.encoder.config()),
            "metrics": json.dumps(metrics, default=_json_default), "run_id": run_id, "created_at": utc_now(),
        }  # fmt: skip
        self.db["models"].insert(row)
        return self.get(model_id)

    def get(self, model_id: str) -> ModelInfo:
        rows = list(self.db["models"].rows_where("id = ? or id like ?", [model_id, f"{model_id}%"]))
        if len(rows) != 1:
            raise WorkspaceError(f"no single model matches {model_id!r} ({len(rows)} found); see `tnt models`")
        return self._info(rows[0])

    def latest(self, taxonomy_version: int | None = None, target: str = "label") -> ModelInfo | None:
        rows = list(
            self.db["models"].rows_where(
                "taxonomy_version is ? and target = ?", [taxonomy_version, target], order_by="created_at desc", limit=1
            )
        )
        return self._info(rows[0]) if rows else None

    def all(self) -> list[ModelInfo]:
        return [self._info(row) for row in self.db["models"].rows_where(order_by="created_at")]

    def _info(self, row: dict[str, Any]) -> ModelInfo:
        return ModelInfo(
            id=row["id"], taxonomy_version=row["taxonomy_version"], kind=row["kind"], target=row["target"],
            path=self.workspace.directory / row["path"], labels=json.loads(row["labels"]),
            encoder=json.loads(row["encoder"]), metrics=json.loads(row["metrics"]), run_id=row["run_id"],
            created_at=row["created_at"],
        )  # fmt: skip


def latest_model(workspace: Workspace, taxonomy_version: int | None, target: str = "label") -> ModelInfo | None:
    return ModelStore(workspace).latest(taxonomy_version, target)


def load_model(workspace: Workspace, model_id: str, device: str | None = None) -> TextModel:
    return TextModel.load(ModelStore(workspace).get(model_id).path, device)


def resolve_model_dir(reference: str, workspace_dir: Path | None = None) -> Path:
    """A model directory as given, or the directory of a model id (or unique id prefix) in the workspace."""
    path = Path(reference)
    if (path / CONFIG_FILE).exists():
        return path
    with Workspace.open(workspace_dir) as workspace:
        return ModelStore(workspace).get(reference).path


def resolve_model(reference: str, workspace_dir: Path | None = None, device: str | None = None) -> TextModel:
    return TextModel.load(resolve_model_dir(reference, workspace_dir), device)


# Training from the workspace


@dataclass
class TrainReport:
    model: ModelInfo
    metrics: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"model": {**asdict(self.model), "path": str(self.model.path)}, "metrics": self.metrics}


def train(
    workspace: Workspace,
    taxonomy_version: int | None = None,
    kind: str = "embed-linear",
    multi_label: bool = False,
    target: str = "label",
    encoder: str | None = None,
    human_weight: float = HUMAN_WEIGHT,
    min_human_eval: int = MIN_HUMAN_EVAL,
    score_origin: str | None = None,
    seed: int = 0,
    device: str | None = None,
) -> TrainReport:
    """Train, evaluate and register a model for a taxonomy version (``target="label"``, the latest
    version when None) or for numeric quality scores (``target="quality"``)."""
    if target not in TARGETS:
        raise DistillError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if target == "label" and taxonomy_version is None:
        from tnt.taxonomy import TaxonomyStore

        taxonomy_version = TaxonomyStore(workspace).get().version
    version = taxonomy_version if target == "label" else None
    task = "score" if target == "quality" else ("multi" if multi_label else "single")
    params = {"taxonomy_version": version, "kind": kind, "task": task, "target": target, "encoder": encoder,
              "human_weight": human_weight, "min_human_eval": min_human_eval, "seed": seed}  # fmt: skip
    with workspace.run("train", params) as run:
        data = gather_examples(workspace, version, task, score_origin)
        if len(data.examples) < 10:
            raise DistillError(
                f"only {len(data.examples)} labeled documents for {'quality scores' if task == 'score' else f'taxonomy version {version}'}; "
                "label more first (`tnt label`, `tnt score`, or human labels)"
            )
        train_ids, eval_ids, reference = split_for_evaluation(data.examples, min_human_eval, seed)
        texts = _texts(workspace, train_ids + eval_ids)
        model: TextModel
        options = {"encoder": encoder, "device": device, "seed": seed}
        model = DistilledRegressor(kind, **options) if task == "score" else DistilledClassifier(kind, multi_label, **options)
        weights = [human_weight if data.examples[d].source == "human" else 1.0 for d in train_ids]
        model.fit([texts[d] for d in train_ids], [data.examples[d].target for d in train_ids], weights)
        metrics = {
            "reference": reference,
            "n_train": len(train_ids),
            "n_train_human": sum(data.examples[d].source == "human" for d in train_ids),
            **evaluate(model, [texts[d] for d in eval_ids], [data.examples[d].target for d in eval_ids]),
            "llm_vs_human": _llm_vs_human(task, data) if data.llm_on_human else None,
            "encoder_runtime": getattr(model.encoder, "runtime", None),
        }
        _record_unseen_labels(run, workspace, version, model)
        info = ModelStore(workspace).add(model, version, target, metrics, run.id)
        run.stats = {"model": info.id, "reference": reference, "n_train": len(train_ids), "n_eval": metrics["n"],
                     **{k: metrics[k] for k in ("accuracy", "macro_f1", "kappa", "mae", "spearman") if k in metrics}}  # fmt: skip
    return TrainReport(info, metrics)


def _texts(workspace: Workspace, doc_ids: list[str]) -> dict[str, str]:
    from tnt.corpus import DocumentStore

    return {doc.id: doc.text for doc in DocumentStore(workspace).get(doc_ids)}


def _llm_vs_human(task: str, data: Examples) -> dict[str, Any]:
    """The LLM's labels scored against people's on every document both labeled."""
    ids = sorted(data.llm_on_human)
    return compare(task, [data.examples[d].target for d in ids], [data.llm_on_human[d] for d in ids])


def _record_unseen_labels(run: Any, workspace: Workspace, version: int | None, model: TextModel) -> None:
    """Taxonomy labels with no training document can never be predicted: say so in the run."""
    if version is None:
        return
    from tnt.taxonomy import TaxonomyStore

    unseen = [name for name in TaxonomyStore(workspace).get(version).leaf_names if name not in set(model.labels)]
    if unseen:
        run.record_issue(f"taxonomy v{version}", f"{len(unseen)} label(s) have no training documents: {', '.join(unseen[:20])}", "label")
