"""`tnt report`: one self-contained HTML report on the corpus, its labels and the latest selection."""

from pathlib import Path
from typing import Annotated

import typer

from tnt.cli.common import WorkspaceOption, console, open_workspace


def report(
    workspace: WorkspaceOption,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="HTML file (default: <workspace>/reports/report-<run>.html).")
    ] = None,
    taxonomy: Annotated[
        int | None, typer.Option("--taxonomy", "-t", help="Taxonomy version (default: latest).")
    ] = None,
    selection: Annotated[
        str | None, typer.Option("--selection", help="Selection run id (default: the latest).")
    ] = None,
    privacy_k: Annotated[
        int, typer.Option("--privacy-k", min=1, help="Labels with fewer documents show no examples or n-grams.")
    ] = 5,
    examples: Annotated[int, typer.Option("--examples", min=0, help="Example documents per label.")] = 3,
    text_sample: Annotated[
        int, typer.Option("--text-sample", min=1, help="Documents sampled for n-grams and examples.")
    ] = 20_000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the example sample.")] = 0,
) -> None:
    """Write a self-contained HTML report on the corpus, its labels and the latest selection.

    Label mix before/after selection, confidence and quality scores, lengths, duplicates, top n-grams
    and examples per label (privacy floor), agreement with human labels, LLM cost per run.
    """
    from tnt.report import ReportOptions, build_report

    options = ReportOptions(
        taxonomy_version=taxonomy,
        selection_run=selection,
        privacy_k=privacy_k,
        examples_per_label=examples,
        text_sample=text_sample,
        seed=seed,
    )
    with open_workspace(workspace) as ws:
        path = build_report(ws, out, options)
    console.print(f"Report: {path} ({path.stat().st_size / 1e6:.1f} MB, opens offline)")
