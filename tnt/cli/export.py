"""`tnt export labels | dataset`: the workspace's labels and selections in open formats."""

import sys
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from tnt.cli.common import WorkspaceOption, console, err_console, open_workspace

app = typer.Typer(help="Write labels (JSONL, Parquet) or a selection (a Hugging Face dataset) out of tnt.db.")


@app.command("labels")
def labels(
    workspace: WorkspaceOption,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="File to write (.jsonl or .parquet); default: JSONL to stdout.")
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", "-f", help="jsonl | parquet (default: from the file name).")
    ] = None,
    kind: Annotated[
        str, typer.Option("--kind", help="labels (taxonomy labels) | quality (scores) | all.")
    ] = "all",
    taxonomy: Annotated[
        int | None, typer.Option("--taxonomy", "-t", help="Only this taxonomy version's labels (default: every version).")
    ] = None,
) -> None:
    """Export the current label per document and source, with provenance, as JSONL or Parquet."""
    from tnt.export import export_labels

    with open_workspace(workspace) as ws:
        result = export_labels(ws, out if out is not None else sys.stdout, fmt, kind, taxonomy)
    # The totals go to stderr: stdout may be the export itself.
    err_console.print(
        f"Wrote {result.rows:,} rows ({describe_counts(result.counts)}) as {result.format} to {result.out or 'stdout'}",
        highlight=False,
        soft_wrap=True,
    )


def describe_counts(counts: Counter[tuple[str, str]]) -> str:
    """E.g. "labels: 600 llm, 1,925 human; quality scores: 600 llm"."""
    from tnt.labels.store import SOURCES

    parts = []
    for kind, title in (("labels", "labels"), ("quality", "quality scores")):
        by_source = [f"{n:,} {source}" for source in SOURCES if (n := counts[kind, source])]
        if by_source:
            parts.append(f"{title}: {', '.join(by_source)}")
    return "; ".join(parts) or "no labels"


@app.command("dataset")
def dataset(
    workspace: WorkspaceOption,
    directory: Annotated[Path, typer.Argument(help="Directory to write the dataset to (empty or new).")],
    selection: Annotated[
        str | None, typer.Option("--selection", "-s", help="Selection run id (default: the latest selection).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier dataset export in DIRECTORY.")] = False,
) -> None:
    """Export a selection as a Hugging Face `datasets` directory (datasets.load_from_disk reads it)."""
    from tnt.export import export_dataset

    with open_workspace(workspace) as ws:
        result = export_dataset(ws, directory, selection, force)
    console.print(
        f"Wrote {result.rows:,} documents of selection {result.run_id} (taxonomy version {result.taxonomy_version}) "
        f"to {result.path}; read it with datasets.load_from_disk({str(result.path)!r})",
        highlight=False,
    )
