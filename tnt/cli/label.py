"""``tnt label``: an LLM labels documents with a taxonomy version."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from tnt.cli.common import (
    DryRunOption,
    WorkspaceOption,
    console,
    fail,
    llm_options,
    open_workspace,
    print_run_issues,
    progress,
)
from tnt.cli.label_budget import (
    BudgetOption,
    RoundsOption,
    SeedShareOption,
    Strategy,
    StrategyOption,
    announce_round,
    plan_or_fail,
    print_plan,
    print_trained,
)

if TYPE_CHECKING:
    from tnt.labels.pending import PendingSelection
    from tnt.llm.gateway import LLMSettings
    from tnt.llm.stage import DocumentProgress, StageResult
    from tnt.workspace import Workspace

SampleOption = Annotated[
    int | None, typer.Option("--sample", min=1, help="A seeded random sample of N documents.")
]
IdsOption = Annotated[
    Path | None,
    typer.Option("--ids", exists=True, dir_okay=False, help="A file of document ids, one per line."),
]
AllOption = Annotated[bool, typer.Option("--all", help="Every document in the workspace.")]
PendingOption = Annotated[
    bool,
    typer.Option(
        "--pending",
        help="The documents a taxonomy migration left pending (a split label's are offered only its parts);"
        " the default when the version has some and no --sample, --ids or --all is given.",
    ),
]
SeedOption = Annotated[
    int, typer.Option("--seed", help="Seed of --sample: the same seed, the same documents.")
]
MaxAttemptsOption = Annotated[
    int,
    typer.Option(
        "--max-attempts", min=1,
        help="Attempts per document, across runs: a rerun asks failed documents again until this many failed.",
    ),
]  # fmt: skip
RefreshOption = Annotated[
    bool,
    typer.Option(
        "--refresh",
        help="Ask the chosen documents again regardless of the cache; the new answers become current.",
    ),
]
PromptsOption = Annotated[
    Path | None,
    typer.Option(
        "--prompts",
        envvar="TNT_PROMPTS",
        file_okay=False,
        help="Directory of prompt templates overriding the shipped ones.",
    ),
]


def selected_ids(
    ws: "Workspace", sample: int | None, ids: Path | None, all_documents: bool, seed: int
) -> list[str]:
    """Exactly one of --sample, --ids, --all: labeling costs money, so the choice is explicit."""
    if sum((sample is not None, ids is not None, all_documents)) != 1:
        fail("choose the documents: --sample N, --ids FILE or --all")
    from tnt.corpus.store import select_documents

    try:
        return select_documents(ws, sample=sample, ids_file=ids, seed=seed)
    except ValueError as exc:
        fail(str(exc))


def chosen_documents(
    ws: "Workspace", version: int | None, pending: bool, sample: int | None, ids: Path | None,
    all_documents: bool, seed: int,
) -> tuple[list[str], "PendingSelection | None"]:  # fmt: skip
    """The documents to label: the pending ones (asked for, or by default when there are some and
    nothing else was chosen), else exactly one of --sample, --ids, --all."""
    explicit = sample is not None or ids is not None or all_documents
    if pending and explicit:
        fail("--pending is a selection of its own: drop --sample, --ids and --all")
    if pending or not explicit:
        from tnt.labels.pending import pending_selection

        selection = pending_selection(ws, ws.taxonomies.get(version).version)
        if pending or selection.open:
            counts = ", ".join(f"{count:,} {reason}" for reason, count in selection.open_counts.items()) or "none"
            default = "" if pending else " (--pending, the default while some are open: choose others with --sample, --ids or --all)"
            console.print(f"Pending documents of taxonomy version {selection.taxonomy_version}: {counts}{default}")
            return selection.doc_ids, selection
    return selected_ids(ws, sample, ids, all_documents, seed), None


@contextmanager
def progress_bar(description: str) -> Iterator["DocumentProgress"]:
    """A progress callback drawing docs/s and the running cost."""
    with progress() as bar:
        task = bar.add_task(description, total=None, cost="")

        def update(done: int, total: int, cost: float | None) -> None:
            bar.update(
                task, completed=done, total=total, cost="cost unknown" if cost is None else f"${cost:,.4f}"
            )

        yield update


ESTIMATE_ROWS = {
    "documents": "documents selected",
    "skipped": "already done (skipped)",
    "retried": "failed before, asked again",
    "given_up": "out of attempts (not sent)",
    "requests": "requests to send",
    "cached": "requests answered from the cache",
    "prompt_tokens": "prompt tokens",
    "completion_tokens": "completion tokens (expected)",
}


def print_estimate(estimate: dict[str, Any]) -> None:
    table = Table("estimate", "", show_header=False)
    for key, title in ESTIMATE_ROWS.items():
        table.add_row(title, f"{estimate[key]:,}")
    cost = estimate["cost"]
    table.add_row("cost", "unknown (no price for this model)" if cost is None else f"${cost:,.4f}")
    console.print(table)
    console.print("Estimate only (no repairs); nothing was sent.")


def label_on_budget_command(
    ws: "Workspace", taxonomy: int | None, doc_ids: list[str], llm: "LLMSettings", budget: int,
    strategy: Strategy, seed_share: float, rounds: int, seed: int, dry_run: bool, options: dict[str, Any],
) -> None:  # fmt: skip
    """``tnt label --budget``: the plan, then (unless --dry-run) the rounds and the trained model."""
    from tnt.active import label_on_budget

    plan = plan_or_fail(budget, len(set(doc_ids)), strategy, seed_share, rounds)
    print_plan(plan)
    if dry_run:
        console.print("Plan only; nothing was sent.")
        return
    with progress_bar("Labeling") as on_progress:
        result = label_on_budget(
            ws, taxonomy, doc_ids, budget, llm, strategy=plan.strategy, seed_share=seed_share, rounds=rounds,
            seed=seed, on_progress=on_progress, on_round=announce_round, **options,
        )  # fmt: skip
    for labeled in result.rounds:
        if labeled is not None:
            print_result(ws, labeled, "label")
    print_trained(result)


def print_result(ws: "Workspace", result: "StageResult", counts_title: str) -> None:
    cost = "unknown" if result.cost is None else f"${result.cost:,.4f}"
    console.print(
        f"Run {result.run_id}: {result.labeled:,} done, {result.failed:,} failed, "
        f"{result.skipped:,} already done, {result.requests:,} requests sent, cost {cost}"
    )
    if result.counts:
        table = Table(counts_title, "documents")
        for name, count in sorted(result.counts.items(), key=lambda item: -item[1]):
            table.add_row(name, f"{count:,}")
        console.print(table)
    print_run_issues(ws, result.run_id)
    healing = result.failed - result.out_of_attempts
    if healing:
        console.print(
            f"The {result.failed:,} failures are kept with run {result.run_id}. Running the same command again"
            f" asks {healing:,} of them again (a new attempt, told why the last answer failed), up to"
            " --max-attempts per document; valid answers already received come from the cache."
        )
    if result.out_of_attempts:
        console.print(
            f"{result.out_of_attempts:,} documents are out of attempts and are not asked again:"
            " raise --max-attempts, choose them with --refresh, or try another model or prompt."
        )


@llm_options
def label(
    workspace: WorkspaceOption,
    taxonomy: Annotated[
        int | None, typer.Option("--taxonomy", "-t", help="Taxonomy version (default: the latest).")
    ] = None,
    sample: SampleOption = None,
    ids: IdsOption = None,
    all_documents: AllOption = False,
    pending: PendingOption = False,
    seed: SeedOption = 0,
    multi: Annotated[
        bool, typer.Option("--multi", help="Also give every further label that applies.")
    ] = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=50, help="Short documents labeled per request.")
    ] = 1,
    batch_max_chars: Annotated[
        int, typer.Option("--batch-max-chars", min=1, help="Longer documents are labeled alone.")
    ] = 1000,
    prompts: PromptsOption = None,
    max_attempts: MaxAttemptsOption = 3,
    refresh: RefreshOption = False,
    budget: BudgetOption = None,
    strategy: StrategyOption = Strategy.uncertain,
    seed_share: SeedShareOption = 0.1,
    rounds: RoundsOption = 10,
    dry_run: DryRunOption = False,
    *,
    llm: "LLMSettings",
) -> None:
    """Label documents with a taxonomy version: a label, a one-sentence explanation and a confidence.

    Running the same command again continues an interrupted run and asks failed documents again;
    answered requests are never paid twice. After `tnt taxonomy migrate`, it asks only about the
    documents whose labels did not carry (--pending).
    """
    from tnt.labels.labeling import estimate_labeling, label_documents
    from tnt.llm.prompts import PromptLibrary

    options = {
        "multi": multi,
        "batch_size": batch_size,
        "batch_max_chars": batch_max_chars,
        "prompts": PromptLibrary(prompts),
        "max_attempts": max_attempts,
        "refresh": refresh,
    }
    with open_workspace(workspace) as ws:
        all_documents = all_documents or (budget is not None and sample is None and ids is None and not pending)
        doc_ids, selection = chosen_documents(ws, taxonomy, pending, sample, ids, all_documents, seed)
        if selection is not None:
            options["pending"] = selection
        if budget is not None:
            label_on_budget_command(ws, taxonomy, doc_ids, llm, budget, strategy, seed_share, rounds, seed, dry_run, options)
            return
        try:
            if dry_run:
                print_estimate(estimate_labeling(ws, taxonomy, doc_ids, llm, **options))
                return
            with progress_bar("Labeling") as on_progress:
                result = label_documents(ws, taxonomy, doc_ids, llm, on_progress=on_progress, **options)
        except FileNotFoundError as exc:  # a prompt template missing from --prompts
            fail(str(exc))
        print_result(ws, result, "label")
