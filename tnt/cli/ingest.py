"""``tnt ingest``: import documents (and labels) from files into the workspace."""

from typing import Annotated

import typer
from rich.table import Column, Table

from tnt.cli.common import WorkspaceOption, console, fail, open_workspace, progress
from tnt.corpus.ingest import DEFAULT_MAX_CHARS, IngestError, IngestSummary, OnError

ISSUES_SHOWN = 5


def ingest(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="JSONL/CSV/TSV (optionally .gz), Parquet or Arrow files, quoted globs, or "
            "Hugging Face datasets directories (save_to_disk output).",
            show_default=False,
        ),
    ],
    workspace: WorkspaceOption,
    text_field: Annotated[str, typer.Option("--text-field", help="Field holding the document text.")] = "text",
    id_field: Annotated[
        str | None, typer.Option("--id-field", help="Field holding document ids; default: a hash of the text.")
    ] = None,
    label_field: Annotated[
        str | None, typer.Option("--label-field", help="Field holding existing labels, imported as human labels.")
    ] = None,
    on_error: Annotated[
        OnError,
        typer.Option(
            "--on-error",
            help="skip: record bad rows in the run and import the rest; fail: stop at the first one and write nothing.",
        ),
    ] = OnError.skip,
    max_chars: Annotated[
        int, typer.Option("--max-chars", min=1, help="Longest document accepted, in characters.")
    ] = DEFAULT_MAX_CHARS,
) -> None:
    """Import documents from files; re-importing the same data adds nothing twice."""
    with open_workspace(workspace) as ws:
        try:
            with progress() as bar:
                task = bar.add_task("ingest", total=None, cost="")
                summary = ws.ingest(
                    paths, text_field=text_field, id_field=id_field, label_field=label_field,
                    on_error=on_error, max_chars=max_chars, on_progress=lambda rows: bar.advance(task, rows),
                )  # fmt: skip
        except IngestError as exc:
            written = f"\nNothing from run {exc.run_id} was written." if exc.run_id else ""
            fail(f"{exc}{written}")
    _print_summary(summary)


def _print_summary(summary: IngestSummary) -> None:
    labels = any(file.labeled for file in summary.files) or summary.taxonomy_version is not None
    columns = [Column("file", overflow="fold"), "rows read", "added", "already present", "skipped"]
    columns += ["labeled"] if labels else []
    table = Table(*columns, title=f"Ingest run {summary.run_id}")
    for file in summary.files:
        counts = [file.rows_read, file.added, file.already_present, file.skipped] + ([file.labeled] if labels else [])
        name = f"{file.name} [red](stopped)[/]" if file.stopped else file.name
        table.add_row(name, *(f"{count:,}" for count in counts))
    if len(summary.files) > 1:
        totals = [summary.total(name) for name in ("rows_read", "added", "already_present", "skipped")]
        totals += [summary.total("labeled")] if labels else []
        table.add_row("[bold]total", *(f"[bold]{count:,}" for count in totals))
    console.print(table)
    if summary.issue_count:
        console.print(
            f"[yellow]{summary.issue_count:,} problem(s), recorded in run {summary.run_id}"
            f"{f'; the first {ISSUES_SHOWN}' if summary.issue_count > ISSUES_SHOWN else ''}:[/]"
        )
        for problem in summary.issues[:ISSUES_SHOWN]:
            console.print(f"  {problem}", highlight=False, soft_wrap=True)
    if summary.taxonomy_version is not None:
        console.print(
            f"Labels: {summary.labels_added:,} human labels added, {summary.labels_already_present:,} already "
            f"present; taxonomy version {summary.taxonomy_version} ({summary.taxonomy_labels} labels)"
        )
