"""``train``: a distilled model from a workspace's labels. LLM labels (and the k-means assignments of
``--method cluster``, which the LLM's override), overridden by human labels that also weigh more;
evaluated against human labels when there are enough of them, else against a held-out share of the
others."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tnt.distill.heads import DistillError
from tnt.distill.model import CascadeClassifier, TextModel, new_model
from tnt.distill.store import ModelInfo, ModelStore
from tnt.labels.store import LabelStore
from tnt.metrics import classification_metrics, multilabel_metrics, regression_metrics
from tnt.runs import fingerprint

if TYPE_CHECKING:
    from tnt.workspace import Workspace

TARGETS = ("label", "quality")


CLUSTER_ORIGINS = "cluster:%"  # labels of source "model" that k-means assigned, not a distilled model


HUMAN_WEIGHT = 3.0  # a person's label counts this many times an LLM label


MIN_HUMAN_EVAL = 50  # fewer human-labeled documents than this: evaluate on held-out LLM labels


HUMAN_EVAL_SHARE = 0.3  # else this share of them (at least MIN_HUMAN_EVAL) is held out to evaluate on


LLM_HOLDOUT = 0.2


def evaluate(model: TextModel, texts: Sequence[str], y_true: Sequence[Any], features: Any | None = None) -> dict[str, Any]:
    """``features``: the texts' rows of ``model.reusable_features``, when already computed."""
    predicted = model.predict(texts, features)
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


@dataclass
class Example:
    doc_id: str
    target: Any  # a label, a list of labels (multi-label) or a number
    source: str  # "human", "llm" or "cluster"


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
    if task != "score":
        rows["cluster"] = store.current(taxonomy_version, "model", origins_like=CLUSTER_ORIGINS)
    targets = {source: {d: _target(row, task) for d, row in rows[source].items()} for source in rows}
    targets = {source: {d: t for d, t in found.items() if t is not None} for source, found in targets.items()}
    examples = {d: Example(d, t, "cluster") for d, t in targets.get("cluster", {}).items()}
    examples |= {d: Example(d, t, "llm") for d, t in targets["llm"].items()}
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
    """(training ids, evaluation ids, reference): people's labels when there are enough, else the
    others (``llm-holdout``, ``cluster-holdout`` or ``cluster+llm-holdout``)."""
    rng = random.Random(seed)
    human = sorted(d for d, e in examples.items() if e.source == "human")
    if len(human) >= min_human_eval:
        rng.shuffle(human)
        held = set(human[: max(min_human_eval, int(len(human) * HUMAN_EVAL_SHARE))])
        reference = "human"
    else:
        others = sorted(d for d, e in examples.items() if e.source != "human")
        rng.shuffle(others)
        held = set(others[: int(len(others) * LLM_HOLDOUT)])
        reference = "+".join(sorted({examples[d].source for d in others}) or ["llm"]) + "-holdout"
    train_ids = [d for d in examples if d not in held]
    return train_ids, [d for d in examples if d in held], reference


@dataclass
class TrainReport:
    model: ModelInfo
    metrics: dict[str, Any]


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
        from tnt.taxonomy.store import TaxonomyStore

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
        inputs = training_fingerprint({**params, "score_origin": score_origin}, data)
        held = model_trained_on(workspace, inputs)
        if held is not None:  # the same labels, texts and parameters: that model is this run's result
            run.stats = {"model": held.id, "unchanged": f"model {held.id}"}
            return TrainReport(held, held.metrics)
        train_ids, eval_ids, reference = split_for_evaluation(data.examples, min_human_eval, seed)
        model, evaluation = fit_evaluate_refit(workspace, data, train_ids, eval_ids, human_weight, kind, task, encoder, device, seed)
        metrics = {
            "reference": reference,
            "n_train": len(data.examples),
            "n_train_human": sum(e.source == "human" for e in data.examples.values()),
            **evaluation,
            "llm_vs_human": _llm_vs_human(task, data) if data.llm_on_human else None,
            "encoder_runtime": getattr(model.encoder, "runtime", None),
            "inputs": inputs,
        }
        _record_unseen_labels(run, workspace, version, model)
        info = ModelStore(workspace).add(model, version, target, metrics, run.id)
        run.stats = {"model": info.id, "reference": reference, "n_train": metrics["n_train"], "n_eval": metrics["n"],
                     **{k: metrics[k] for k in ("accuracy", "macro_f1", "kappa", "mae", "spearman") if k in metrics}}  # fmt: skip
    return TrainReport(info, metrics)


def training_fingerprint(params: dict[str, Any], data: Examples) -> str:
    """What a model is trained from: the parameters and every example (document, target, source).
    Documents are immutable, so their ids stand for their texts."""
    return fingerprint(params, sorted((e.doc_id, json.dumps(e.target), e.source) for e in data.examples.values()))


def model_trained_on(workspace: Workspace, inputs: str) -> ModelInfo | None:
    """The latest registered model (with its files) trained from exactly these inputs."""
    found = [info for info in ModelStore(workspace).all() if info.metrics.get("inputs") == inputs]
    return next((info for info in reversed(found) if info.path.exists()), None)


def fit_evaluate_refit(
    workspace: Workspace, data: Examples, train_ids: list[str], eval_ids: list[str], human_weight: float,
    kind: str, task: str, encoder: str | None, device: str | None, seed: int,
) -> tuple[TextModel, dict[str, Any]]:  # fmt: skip
    """Fit without the held-out documents and evaluate on them, then refit on every label: the model
    registered learns from all of them. Each text is encoded once; both fits reuse the embeddings."""
    ids = train_ids + eval_ids
    texts = _texts(workspace, ids)
    all_texts = [texts[d] for d in ids]
    targets = [data.examples[d].target for d in ids]
    weights = [human_weight if data.examples[d].source == "human" else 1.0 for d in ids]
    model = new_model(kind, task, encoder=encoder, device=device, seed=seed)
    features = model.reusable_features(all_texts)
    n_fit = len(train_ids)

    def rows(part: slice) -> Any:
        return None if features is None else features[part]

    fit_part, eval_part = slice(0, n_fit), slice(n_fit, None)
    model.fit(all_texts[fit_part], targets[fit_part], weights[fit_part], features=rows(fit_part))
    metrics = evaluate(model, all_texts[eval_part], targets[eval_part], rows(eval_part))
    if isinstance(model, CascadeClassifier):
        metrics["routes"] = model.route_shares()  # on the held-out documents
    share = round(len(eval_ids) / len(ids), 4)
    metrics["evaluation"] = {"method": "held-out", "share": share, "n_fit": n_fit, "n_eval": len(eval_ids), "refit_on": len(ids)}
    if features is None and (features := model.reusable_features(all_texts)) is not None:
        metrics["evaluation"]["encoder_fitted_on"] = n_fit  # embed-finetune: fine-tuned once, then the head refitted on all
    model.fit(all_texts, targets, weights, features=features)
    return model, metrics


def _texts(workspace: Workspace, doc_ids: list[str]) -> dict[str, str]:
    from tnt.corpus.store import DocumentStore

    return {doc.id: doc.text for doc in DocumentStore(workspace).get(doc_ids)}


def _llm_vs_human(task: str, data: Examples) -> dict[str, Any]:
    """The LLM's labels scored against people's on every document both labeled."""
    ids = sorted(data.llm_on_human)
    return compare(task, [data.examples[d].target for d in ids], [data.llm_on_human[d] for d in ids])


def _record_unseen_labels(run: Any, workspace: Workspace, version: int | None, model: TextModel) -> None:
    """Taxonomy labels with no training document can never be predicted: say so in the run."""
    if version is None:
        return
    from tnt.taxonomy.store import TaxonomyStore

    unseen = [name for name in TaxonomyStore(workspace).get(version).leaf_names if name not in set(model.labels)]
    if unseen:
        run.record_issue(f"taxonomy v{version}", f"{len(unseen)} label(s) have no training documents: {', '.join(unseen[:20])}", "label")
