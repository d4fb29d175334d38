"""``tnt train`` and ``tnt models``: distil the LLM's (and people's) labels into a small model."""

from enum import Enum
from typing import Annotated, Any

import typer
from rich.table import Table

from tnt.cli.common import (
    WorkspaceOption,
    console,
    fail,
    open_workspace,
    print_unchanged,
)

LABELS_SHOWN = 10


class Kind(str, Enum):
    embed_linear = "embed-linear"
    embed_mlp = "embed-mlp"
    hashing_linear = "hashing-linear"
    cascade = "cascade"
    embed_finetune = "embed-finetune"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Target(str, Enum):
    label = "label"
    quality = "quality"


def train(
    workspace: WorkspaceOption,
    taxonomy: Annotated[
        int | None, typer.Option("--taxonomy", help="Taxonomy version whose labels to learn; default: the latest.")
    ] = None,
    kind: Annotated[
        Kind,
        typer.Option(
            "--kind",
            help="Encoder + head; cascade: hashing-linear first, embed-linear for its unsure documents; "
            "embed-finetune: MiniLM fine-tuned on the labels.",
        ),
    ] = Kind.embed_linear,
    multi: Annotated[bool, typer.Option("--multi", help="Multi-label (one-vs-rest) instead of one label per document.")] = False,
    target: Annotated[
        Target, typer.Option("--target", help="label: taxonomy labels; quality: regress numeric quality scores.")
    ] = Target.label,
    encoder: Annotated[
        str | None, typer.Option("--encoder", help="Local sentence-transformers model directory; default all-MiniLM-L6-v2.")
    ] = None,
    human_weight: Annotated[float, typer.Option("--human-weight", help="Weight of a human label against an LLM label.")] = 3.0,
    min_human_eval: Annotated[
        int, typer.Option("--min-human-eval", help="Evaluate on human labels when at least this many documents have one.")
    ] = 50,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the evaluation split and the MLP.")] = 0,
    device: Annotated[Device, typer.Option("--device", help="auto: CUDA when present, else CPU (ONNX, int8 or fp32 by the CPU).")] = Device.auto,
) -> None:
    """Train a classifier on LLM labels (human labels override them), evaluate it and register it."""
    from tnt.distill.heads import DistillError
    from tnt.distill.train import train as train_model

    with open_workspace(workspace) as ws:
        try:
            with console.status("training…"):
                report = train_model(
                    ws, taxonomy, kind=kind.value, multi_label=multi, target=target.value, encoder=encoder,
                    human_weight=human_weight, min_human_eval=min_human_eval, seed=seed,
                    device=None if device is Device.auto else device.value,
                )  # fmt: skip
        except DistillError as exc:
            fail(str(exc))
        if print_unchanged(ws):
            return
    print_metrics(report.model.id, str(report.model.path), report.metrics)


def print_metrics(model_id: str, path: str, metrics: dict[str, Any]) -> None:
    reference = {"human": "human labels", "llm-holdout": "held-out LLM labels", "cluster-holdout": "held-out cluster labels",
                 "cluster+llm-holdout": "held-out cluster and LLM labels"}[metrics["reference"]]  # fmt: skip
    console.print(f"Model [bold]{model_id}[/] saved in {path}")
    console.print(f"trained on {metrics['n_train']:,} documents ({metrics['n_train_human']:,} human-labeled); "
                  f"evaluated on {metrics['n']:,} documents against {reference}")  # fmt: skip
    evaluation = metrics.get("evaluation")
    if evaluation:
        console.print(f"(the model evaluated learned from the other {evaluation['n_fit']:,}; the model saved was "
                      f"then refitted on all {evaluation['refit_on']:,})")  # fmt: skip
    routes = metrics.get("routes")
    if routes:
        console.print(f"cascade: {routes['encoder_share']:.1%} of the evaluated documents went through the encoder tier")
    table = Table("measure", "model", "LLM vs human", title="Evaluation")
    llm = metrics.get("llm_vs_human") or {}
    for name in ("accuracy", "macro_f1", "micro_f1", "kappa", "mae", "rmse", "spearman", "r2"):
        if name in metrics:
            table.add_row(name, _number(metrics[name]), _number(llm.get(name)))
    if llm:
        table.add_row("documents", f"{metrics['n']:,}", f"{llm['n']:,}")
    console.print(table)
    per_label = metrics.get("per_label") or {}
    if per_label:
        worst = sorted(per_label.items(), key=lambda item: item[1]["f1"])[:LABELS_SHOWN]
        labels = Table("label", "F1", "precision", "recall", "support", title=f"Lowest F1 ({len(per_label)} labels in model.json)")
        for label, row in worst:
            labels.add_row(label, *(_number(row[k]) for k in ("f1", "precision", "recall")), str(row["support"]))
        console.print(labels)


def _number(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}"


def models(workspace: WorkspaceOption) -> None:
    """List the trained models of the workspace with their evaluation."""
    from tnt.distill.store import ModelStore

    with open_workspace(workspace) as ws:
        table = Table("model", "taxonomy", "kind", "target", "evaluated on", "n", "accuracy", "macro F1", "κ", "created")
        for info in ModelStore(ws).all():
            m = info.metrics
            table.add_row(
                info.id, str(info.taxonomy_version or "–"), info.kind, info.target, m.get("reference", "–"),
                str(m.get("n", "–")), *(_number(m.get(k)) for k in ("accuracy", "macro_f1", "kappa")), info.created_at[:19],
            )  # fmt: skip
        console.print(table)
