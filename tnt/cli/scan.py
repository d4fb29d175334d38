"""``tnt scan``: what the corpus holds that should not leave it, such as personal data."""

from typing import TYPE_CHECKING

import typer
from rich.table import Column, Table

from tnt.cli.common import WorkspaceOption, console, open_workspace, progress

if TYPE_CHECKING:
    from tnt.pii import PiiScan

app = typer.Typer(help="Scan the corpus (personal data per entity type).", no_args_is_help=True)


@app.command()
def pii(workspace: WorkspaceOption) -> None:
    """Count personal data per entity type (documents holding it, occurrences), for the report and
    `tnt select --drop-pii`. A rerun scans only documents not scanned yet."""
    from tnt.corpus.store import DocumentStore
    from tnt.pii import SPACY_MODELS, name_detection, scan_pii

    with open_workspace(workspace) as ws, progress() as bar:
        task = bar.add_task("scan pii", total=DocumentStore(ws).count(), cost="")
        result = scan_pii(ws, on_progress=lambda n: bar.advance(task, n))
    print_scan(result)
    if not name_detection():
        console.print(
            f"[yellow]Note:[/] no spaCy English pipeline is installed ({', '.join(SPACY_MODELS)}): "
            "person names and places are neither counted nor masked.",
            highlight=False,
        )


def print_scan(result: "PiiScan") -> None:
    console.print(
        f"[bold]PII scan {result.run_id}[/]: {result.scanned:,} documents scanned now, "
        f"{result.documents:,} in the corpus ({result.detector})",
        highlight=False,
    )
    table = Table("entity type", *(Column(name, justify="right") for name in ("documents", "share", "occurrences")))
    for entity, counts in result.counts.items():
        share = 100 * counts["documents"] / result.documents if result.documents else 0.0
        table.add_row(entity, f"{counts['documents']:,}", f"{share:.1f} %", f"{counts['occurrences']:,}")
    if not result.counts:
        table.add_row("none found", "0", "0.0 %", "0")
    console.print(table)
