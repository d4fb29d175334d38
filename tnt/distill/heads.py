"""Classifier heads: features in, raw scores out. Training uses scikit-learn or torch; inference is
numpy only, and a head is saved as arrays (safetensors) plus a JSON config."""

from __future__ import annotations

from typing import Any

import numpy as np


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


class DistillError(Exception):
    """Training or loading that cannot go on; the message says why."""
