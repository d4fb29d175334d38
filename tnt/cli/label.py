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

if TYPE_CHECKING:
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
SeedOption = Annotated[
    int, typer.Option("--seed", help="Seed of --sample: the same seed, the same documents.")
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
    console.print("Estimate only (first attempts, no repairs); nothing was sent.")


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
    if result.failed:
        console.print(
            f"The {result.failed:,} failures are kept with run {result.run_id}. Running the same command again"
            " retries them (answers already received are replayed from the cache, so only a different model or"
            " prompt changes an invalid answer)."
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
    dry_run: DryRunOption = False,
    *,
    llm: "LLMSettings",
) -> None:
    """Label documents with a taxonomy version: a label, a one-sentence explanation and a confidence.

    Running the same command again continues an interrupted run; answered requests are never paid twice.
    """
    from tnt.labels.labeling import estimate_labeling, label_documents
    from tnt.llm.prompts import PromptLibrary

    options = {
        "multi": multi,
        "batch_size": batch_size,
        "batch_max_chars": batch_max_chars,
        "prompts": PromptLibrary(prompts),
    }
    with open_workspace(workspace) as ws:
        doc_ids = selected_ids(ws, sample, ids, all_documents, seed)
        try:
            if dry_run:
                print_estimate(estimate_labeling(ws, taxonomy, doc_ids, llm, **options))
                return
            with progress_bar("Labeling") as on_progress:
                result = label_documents(ws, taxonomy, doc_ids, llm, on_progress=on_progress, **options)
        except FileNotFoundError as exc:  # a prompt template missing from --prompts
            fail(str(exc))
        print_result(ws, result, "label")
