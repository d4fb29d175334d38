"""Distilled models: small classifiers (and score regressors) trained on LLM and human labels.

An LLM labels thousands of documents; a distilled model tags the rest of the corpus. A model is an
encoder (``tnt.distill.encoders``) plus a head, both small objects:

- kinds: ``embed-linear`` (sentence embeddings + temperature-calibrated logistic regression, the
  default), ``embed-mlp`` (the same embeddings + a small torch MLP), ``hashing-linear`` (hashed word
  and character n-grams + logistic regression: no neural encoder, for CPU corpora where speed rules),
  ``cascade`` (hashing-linear for every document, embed-linear for those it is unsure of),
  ``embed-finetune`` (embed-linear on the encoder fine-tuned on the labels);
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
from tnt.distill.finetune import FINETUNE_EPOCHS, FINETUNE_LOSS, FINETUNE_LR
from tnt.distill.heads import (
    DistillError,
    LinearHead,
    MLPHead,
    fit_temperature,
    sigmoid,
    softmax,
)

KINDS = ("embed-linear", "embed-mlp", "hashing-linear", "cascade", "embed-finetune")
TASKS = ("single", "multi", "score")
CALIBRATION_SHARE = 0.1  # of the training documents, to fit the softmax temperature (and choose C)
DEFAULT_C = 10.0
# Regularisation tried for a linear head when none is given, kept by log-loss on the calibration
# share: noisy LLM labels want more of it (BANKING77 test, int8 MiniLM, 85 %-right labels: C = 3
# 0.910, C = 10 0.904; gold labels: C = 10 0.930, C = 3 0.921)
C_GRID = (3.0, 10.0, 30.0)
MIN_CALIBRATION = 50
MULTI_THRESHOLD = 0.5
CASCADE_TOLERANCE = 0.005  # the cascade may lose at most this much accuracy against its encoder tier alone
CASCADE_HOLDOUT = 0.2  # of its training documents, to choose the confidence threshold on
MIN_CASCADE_HOLDOUT = 50  # fewer: no threshold can be trusted, every document takes the encoder tier
MODEL_FORMAT = "tnt-model/1"
CONFIG_FILE, WEIGHTS_FILE = "model.json", "weights.safetensors"
FINETUNED_DIR = "finetuned"  # embed-finetune: the fine-tuned sentence-transformers weights, in the model directory


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
        C: float | None = None, hidden: int = 512, epochs: int = 40, seed: int = 0,
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
        return LinearHead(self.task, C=self.C or DEFAULT_C)

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

    def reusable_features(self, texts: Sequence[str]) -> Any | None:
        """The texts' features for fits that keep this encoder (held-out fit, then refit on all), or
        None where the encoder itself learns from the training texts (hashing-linear)."""
        if self.kind == "hashing-linear":
            return None
        self.encoder = self.encoder or self._build_encoder(texts)
        return self.features(texts)

    def fit_features(
        self, texts: Sequence[str], Y: np.ndarray, sample_weight: Sequence[float] | None, features: Any | None = None
    ) -> TextModel:
        """``features``: the rows of ``reusable_features`` for ``texts``, so nothing is encoded twice."""
        weight = np.ones(len(texts)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if features is None:
            self.encoder = self._build_encoder(texts)
            features = self.features(texts)
        elif self.encoder is None:
            raise DistillError("features given to fit before the encoder was built (call reusable_features first)")
        self._fit_head(features, Y, weight)
        return self

    def raw_scores(self, texts: Sequence[str], features: Any | None = None) -> np.ndarray:
        return self.head.scores(self.features(texts) if features is None else features)

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

    def onnx_exports(self) -> Path:
        """The directory of the ONNX exports a saved model of this sentence encoder carries."""
        return encoders.exports_of(self.encoder)

    def save(self, directory: Path | str, **meta: Any) -> Path:
        from safetensors.numpy import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.meta.update(meta)
        arrays = {f"head.{k}": np.ascontiguousarray(v) for k, v in self.head.arrays().items()}
        if isinstance(self.encoder, encoders.HashingEncoder):
            arrays |= {f"encoder.{k}": v for k, v in self.encoder.arrays().items()}
        else:
            encoders.save_sentence_encoder_files(self.onnx_exports(), directory)
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
        if config["kind"] == "cascade":
            return CascadeClassifier.from_directory(directory, config, device, threads)
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

    def fit(
        self, texts: Sequence[str], y: Sequence[Any], sample_weight: Sequence[float] | None = None, features: Any | None = None
    ) -> DistilledClassifier:
        """``y``: one label per text, or (multi-label) a list of labels per text; ``features``: see ``fit_features``."""
        if self.task == "multi":
            self.labels = sorted({label for labels in y for label in labels})
            Y = np.array([[label in set(labels) for label in self.labels] for labels in y], dtype=np.float32)
        else:
            self.labels = sorted(set(y))
            index = {label: i for i, label in enumerate(self.labels)}
            Y = np.array([index[label] for label in y])
        if len(self.labels) < 2 and self.task == "single":
            raise DistillError(f"a classifier needs at least two labels in its training data, got {self.labels}")
        return self.fit_features(texts, Y, sample_weight, features)

    def _fit_head(self, X: Any, Y: np.ndarray, weight: np.ndarray) -> None:
        """Single-label: fit on most of the data (choosing C there, see ``_calibrated_head``), fit
        the temperature on the rest, then refit on all."""
        n_calibration = int(len(Y) * CALIBRATION_SHARE)
        if self.task == "single" and n_calibration >= MIN_CALIBRATION:
            order = np.random.default_rng(self.seed).permutation(len(Y))
            held, kept = order[:n_calibration], order[n_calibration:]
            if len(np.unique(Y[kept])) == len(self.labels):
                head = self._calibrated_head(X, Y, weight, kept, held)
                self.temperature = fit_temperature(head.scores(X[held]), Y[held])
                if isinstance(head, LinearHead):
                    self.head = head.fit(X, Y, weight)  # warm-started
                    return
        super()._fit_head(X, Y, weight)

    def _calibrated_head(self, X: Any, Y: np.ndarray, weight: np.ndarray, kept: np.ndarray, held: np.ndarray) -> Any:
        """The head fitted on ``kept``. A linear head without a given C tries each of ``C_GRID`` and
        keeps the one whose probabilities fit ``held`` best (log-loss, which tells noisy labels'
        overfitting apart where accuracy on as noisy held-out labels does not); the refit on all
        keeps that C, and the model's config records the choice (``regularisation``)."""
        from sklearn.metrics import log_loss

        if self.C is not None or self.kind == "embed-mlp":
            return self._new_head().fit(X[kept], Y[kept], weight[kept])
        heads = {C: LinearHead(self.task, C=C).fit(X[kept], Y[kept], weight[kept]) for C in C_GRID}
        losses = {C: float(log_loss(Y[held], softmax(head.scores(X[held])), labels=range(len(self.labels)))) for C, head in heads.items()}
        best = min(losses, key=losses.__getitem__)
        self.meta["regularisation"] = {"C": best, "calibration_log_loss": losses, "n_calibration": len(held)}
        return heads[best]

    def predict_proba(self, texts: Sequence[str], features: Any | None = None) -> np.ndarray:
        scores = self.raw_scores(texts, features)
        return sigmoid(scores) if self.task == "multi" else softmax(scores / self.temperature)

    def predict(self, texts: Sequence[str], features: Any | None = None) -> np.ndarray | list[list[str]]:
        return self.decide(self.predict_proba(texts, features))

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

    def fit(
        self, texts: Sequence[str], y: Sequence[float], sample_weight: Sequence[float] | None = None, features: Any | None = None
    ) -> DistilledRegressor:
        self.labels = []
        return self.fit_features(texts, np.asarray(y, dtype=np.float64), sample_weight, features)

    def predict(self, texts: Sequence[str], features: Any | None = None) -> np.ndarray:
        return self.raw_scores(texts, features)[:, 0]

    def tag(self, texts: Sequence[str], top_k: int = 3) -> list[Prediction]:
        return self.predictions(self.predict(texts)[:, None], top_k)

    def predictions(self, scores: np.ndarray, top_k: int = 3) -> list[Prediction]:
        return [Prediction(None, None, score=float(s)) for s in scores[:, 0]]

    def predict_proba(self, texts: Sequence[str], features: Any | None = None) -> np.ndarray:
        """The scores as a one-column matrix, so taggers treat every model alike."""
        return self.predict(texts, features)[:, None]


class CascadeClassifier(DistilledClassifier):
    """A cheap tier (hashing-linear) tags every document; those whose calibrated confidence is below
    ``threshold`` go through the encoder tier (embed-linear) instead.

    The threshold is the lowest one that keeps accuracy within ``CASCADE_TOLERANCE`` of the encoder
    tier alone on a held-out share of the training labels; both tiers are then refitted on all of
    them. ``routes`` counts the documents that took each path since the model was built or loaded.
    """

    def __init__(self, kind: str = "cascade", multi_label: bool = False, **options: Any):
        if multi_label:
            raise DistillError("the cascade is single-label only; use embed-linear or hashing-linear with --multi")
        super().__init__(kind, **options)
        self.threshold = 1.0
        self.cheap: DistilledClassifier | None = None
        self.expensive: DistilledClassifier | None = None
        self.routes = {"cheap": 0, "encoder": 0}

    def _tiers(self) -> tuple[DistilledClassifier, DistilledClassifier]:
        cheap = DistilledClassifier("hashing-linear", seed=self.seed, C=self.C)
        expensive = DistilledClassifier("embed-linear", encoder=self.encoder_name, device=self.device, seed=self.seed, C=self.C)
        expensive.encoder = self.encoder
        return cheap, expensive

    def fit(
        self, texts: Sequence[str], y: Sequence[Any], sample_weight: Sequence[float] | None = None, features: Any | None = None
    ) -> CascadeClassifier:
        texts, y = list(texts), list(y)
        weight = np.ones(len(texts)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if features is None:
            features = self.reusable_features(texts)
        self.labels = sorted(set(y))
        if len(self.labels) < 2:
            raise DistillError(f"a classifier needs at least two labels in its training data, got {self.labels}")
        self.meta["cascade"] = self._choose_threshold(texts, y, weight, features)
        self.cheap, self.expensive = self._tiers()
        self.cheap.fit(texts, y, weight)
        self.expensive.fit(texts, y, weight, features=features)
        self.head, self.temperature = self.expensive.head, self.expensive.temperature
        return self

    def _choose_threshold(self, texts: list[str], y: list[Any], weight: np.ndarray, features: np.ndarray) -> dict[str, Any]:
        """Fit both tiers without a held-out share, then pick the threshold on it (see ``lowest_threshold``)."""
        order = np.random.default_rng(self.seed).permutation(len(texts))
        n_held = int(len(texts) * CASCADE_HOLDOUT)
        held, kept = order[:n_held], order[n_held:]
        if n_held < MIN_CASCADE_HOLDOUT or len({y[i] for i in kept}) < 2:
            self.threshold = 1.01  # above every confidence: all documents take the encoder tier
            return {"threshold": self.threshold, "n_held_out": n_held, "reason": "too few labels to choose a threshold"}
        cheap, expensive = self._tiers()
        pick = lambda values, rows: [values[i] for i in rows]
        cheap.fit(pick(texts, kept), pick(y, kept), weight[kept])
        expensive.fit(pick(texts, kept), pick(y, kept), weight[kept], features=features[kept])
        truth = np.array(pick(y, held), dtype=object)
        cheap_p = cheap.predict_proba(pick(texts, held))
        cheap_right = cheap.classes_[cheap_p.argmax(axis=1)] == truth
        encoder_right = expensive.predict(pick(texts, held), features[held]) == truth
        self.threshold, accuracy, share = lowest_threshold(cheap_p.max(axis=1), cheap_right, encoder_right, CASCADE_TOLERANCE)
        return {
            "threshold": self.threshold, "tolerance": CASCADE_TOLERANCE, "n_held_out": n_held,
            "held_out_accuracy": {"cheap": float(cheap_right.mean()), "encoder": float(encoder_right.mean()), "cascade": accuracy},
            "held_out_encoder_share": share,
        }  # fmt: skip

    def predict_proba(self, texts: Sequence[str], features: Any | None = None) -> np.ndarray:
        if self.cheap is None or self.expensive is None:
            raise DistillError("the model is not fitted")
        texts = list(texts)
        probabilities = self.cheap.predict_proba(texts)
        routed = np.flatnonzero(probabilities.max(axis=1) < self.threshold)
        if len(routed):
            rows = None if features is None else features[routed]
            probabilities[routed] = self.expensive.predict_proba([texts[i] for i in routed], rows)
        self.routes["cheap"] += len(texts) - len(routed)
        self.routes["encoder"] += len(routed)
        return probabilities

    def route_shares(self) -> dict[str, Any]:
        total = sum(self.routes.values())
        return {**self.routes, "encoder_share": round(self.routes["encoder"] / total, 4) if total else None}

    def fingerprint(self) -> str:
        assert self.cheap is not None and self.expensive is not None
        parts = [self.kind, self.labels, self.threshold, self.cheap.fingerprint(), self.expensive.fingerprint()]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]

    def save(self, directory: Path | str, **meta: Any) -> Path:
        assert self.cheap is not None and self.expensive is not None
        directory = Path(directory)
        self.meta.update(meta)
        self.cheap.save(directory / "cheap")
        self.expensive.save(directory / "encoder")
        config = {
            "format": MODEL_FORMAT, "kind": self.kind, "task": self.task, "labels": self.labels,
            "encoder": self.expensive.encoder.config(), "threshold": self.threshold,
            "tiers": {"cheap": "cheap", "encoder": "encoder"}, **self.meta,
        }  # fmt: skip
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=_json_default))
        return directory

    @classmethod
    def from_directory(cls, directory: Path, config: dict[str, Any], device: str | None, threads: int | None) -> CascadeClassifier:
        model = cls(encoder=config["encoder"].get("model"), device=device)
        model.labels, model.threshold = config["labels"], config["threshold"]
        tiers = {name: TextModel.load(directory / sub, device, threads) for name, sub in config["tiers"].items()}
        model.cheap, model.expensive = tiers["cheap"], tiers["encoder"]  # type: ignore[assignment]
        assert model.cheap is not None and model.expensive is not None
        if model.cheap.labels != model.labels or model.expensive.labels != model.labels:
            raise DistillError(f"{directory}: the cascade's tiers were trained on other labels than the cascade")
        model.encoder, model.head, model.temperature = model.expensive.encoder, model.expensive.head, model.expensive.temperature
        known = {"format", "kind", "task", "labels", "encoder", "threshold", "tiers"}
        model.meta = {k: v for k, v in config.items() if k not in known}
        return model


def lowest_threshold(
    confidence: np.ndarray, cheap_right: np.ndarray, encoder_right: np.ndarray, tolerance: float
) -> tuple[float, float, float]:
    """(threshold, cascade accuracy, share sent to the encoder): the lowest confidence threshold whose
    cascade (below it: the encoder's label, else the cheap one's) is within ``tolerance`` of the
    encoder alone on these documents."""
    candidates = np.append(np.unique(confidence), np.inf)  # routing everything meets the target by definition
    order = np.argsort(confidence, kind="stable")
    ranked = confidence[order]
    routed = np.searchsorted(ranked, candidates, side="left")  # documents below each candidate
    encoder_gain = np.concatenate([[0], np.cumsum(encoder_right[order])])
    cheap_tail = np.concatenate([np.cumsum(cheap_right[order][::-1])[::-1], [0]])
    accuracy = (encoder_gain[routed] + cheap_tail[routed]) / len(confidence)
    best = int(np.flatnonzero(accuracy >= encoder_right.mean() - tolerance)[0])
    threshold = float(min(candidates[best], 1.01))
    return threshold, float(accuracy[best]), float(routed[best] / len(confidence))


class FinetunedClassifier(DistilledClassifier):
    """embed-finetune: the sentence encoder fine-tuned on the labels (``tnt.distill.finetune``), then
    embed-linear on it: its ONNX export and a calibrated logistic regression. The fine-tuned
    weights are saved in the model directory (``finetuned/``) beside the export."""

    def __init__(
        self, kind: str = "embed-finetune", multi_label: bool = False, loss: str = FINETUNE_LOSS,
        finetune_epochs: int = FINETUNE_EPOCHS, finetune_lr: float = FINETUNE_LR, **options: Any,
    ):  # fmt: skip
        if multi_label:
            raise DistillError("embed-finetune is single-label only; use embed-linear with --multi")
        super().__init__(kind, **options)
        self.tuned: Path | None = None
        self.exports: Path | None = None
        self.loss, self.finetune_epochs, self.finetune_lr = loss, finetune_epochs, finetune_lr

    def reusable_features(self, texts: Sequence[str]) -> Any | None:
        """None until the encoder is fine-tuned (the first fit does it); then its embeddings, for refits of the head."""
        return None if self.tuned is None else self.features(texts)

    def fit(
        self, texts: Sequence[str], y: Sequence[Any], sample_weight: Sequence[float] | None = None, features: Any | None = None
    ) -> FinetunedClassifier:
        """Without ``features``: fine-tune the encoder on these labels, then fit the head; with them: the head only."""
        if features is None:
            from tnt.distill.finetune import finetune_sentence_model

            staging = self._staging_directory()
            base = encoders.resolve_model_path(self.encoder_name)
            self.tuned = finetune_sentence_model(
                base, list(texts), list(y), staging / FINETUNED_DIR, loss=self.loss, epochs=self.finetune_epochs,
                lr=self.finetune_lr, seed=self.seed, device=self.device,
            )  # fmt: skip
            self.exports = encoders.exported_onnx(self.tuned, staging / "onnx")  # also on GPU: the saved model tags on CPUs
            self.encoder = encoders.sentence_encoder(str(self.tuned), self.device, exports=self.exports)
            self.meta["finetune"] = {"loss": self.loss, "epochs": self.finetune_epochs, "lr": self.finetune_lr, "texts": len(texts)}
            features = self.features(texts)
        return super().fit(texts, y, sample_weight, features)

    def _staging_directory(self) -> Path:
        """Where the fine-tuned weights and their export wait to be saved; removed with this classifier,
        so fine-tuning leaves nothing behind in the cache (a saved model holds its own copies)."""
        import os
        import shutil
        import tempfile
        import weakref

        from tnt.paths import cache_dir

        cache_dir().mkdir(parents=True, exist_ok=True)
        remove_abandoned_staging(cache_dir())
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{staging_owner(os.getpid())}-", dir=cache_dir()))
        weakref.finalize(self, shutil.rmtree, staging, True)
        return staging

    def onnx_exports(self) -> Path:
        return self.exports or super().onnx_exports()

    def save(self, directory: Path | str, **meta: Any) -> Path:
        """The fine-tuned weights go in the directory; the encoder is recorded relative to it."""
        import shutil

        directory = Path(directory)
        if self.tuned is not None and self.tuned != directory / FINETUNED_DIR:
            shutil.copytree(self.tuned, directory / FINETUNED_DIR, dirs_exist_ok=True)
        self.encoder.model_name = FINETUNED_DIR
        return super().save(directory, **meta)


STAGING_PREFIX = "finetune-"  # then its owner and a random suffix: finetune-<pid>@<host>-<random>


def staging_owner(pid: int) -> str:
    import socket

    return f"{pid}@{socket.gethostname()}"


def remove_abandoned_staging(directory: Path) -> list[Path]:
    """Remove the staging directories of this machine's fine-tuning processes that are gone (killed
    before they could clean up); those of live processes, and of other machines sharing the cache,
    stay. Returns what was removed."""
    import shutil

    from tnt.runs import pid_alive

    removed = []
    for staging in directory.glob(f"{STAGING_PREFIX}*@*-*"):
        owner = staging.name.removeprefix(STAGING_PREFIX).rsplit("-", 1)[0]
        pid = owner.partition("@")[0]
        if pid.isdigit() and owner == staging_owner(int(pid)) and not pid_alive(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)
            removed.append(staging)
    return removed


def new_model(kind: str, task: str, **options: Any) -> TextModel:
    """A model of ``kind`` for ``task`` (``single``, ``multi`` or ``score``)."""
    if task == "score":
        if kind == "cascade":
            raise DistillError("the cascade predicts labels, not scores; use embed-linear or hashing-linear for --target quality")
        return DistilledRegressor(kind, **options)
    cls = {"cascade": CascadeClassifier, "embed-finetune": FinetunedClassifier}.get(kind, DistilledClassifier)
    return cls(kind, task == "multi", **options)
