"""The ``tnt`` command line: one module per command group, each a thin layer over the library.

Importing it stays light (``tnt --help``): each command imports the library it calls. The command
modules do not use ``from __future__ import annotations``: typer would then evaluate every annotation
string of every command at each start, a good part of the time ``tnt --help`` takes.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Column, Table

from tnt.cli import (
    audit,
    demo,
    discover,
    export,
    ingest,
    label,
    logs,
    ls,
    report,
    review,
    scan,
    score,
    select,
    serve,
    status,
    tag,
    taxonomy,
    train,
)
from tnt.cli.common import WorkspaceOption, console, fail, open_workspace
from tnt.cli.quiet import send_noise_to_log
from tnt.paths import cli_log_file

if TYPE_CHECKING:
    from tnt.workspace import Workspace

app = typer.Typer(
    name="tnt",
    help="Turn a raw text corpus into a labeled, selectable corpus.",
    epilog=f"Warnings and logs of the libraries tnt uses go to {cli_log_file()} (TNT_CACHE_DIR moves it).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    callback=send_noise_to_log,
)


@app.command()
def init(
    ctx: typer.Context,
    workspace: WorkspaceOption,
    directory: Annotated[
        Optional[Path], typer.Argument(help="Workspace directory, as with -w.", show_default=False)
    ] = None,
) -> None:
    """Create a workspace (a directory holding tnt.db)."""
    if directory is not None and ctx.get_parameter_source("workspace").name == "COMMANDLINE":
        fail(f"give the workspace directory once: {directory} or -w {workspace}, not both")
    with open_workspace(directory or workspace, create=True) as created:
        console.print(f"Workspace ready: {created.path}")


@app.command()
def runs(
    workspace: WorkspaceOption,
    issues: Annotated[Optional[str], typer.Option("--issues", help="List this run's problems (skipped rows, failed documents).")] = None,
) -> None:
    """List the runs recorded in the workspace, or one run's problems."""
    with open_workspace(workspace) as ws:
        if issues:
            run_issues(ws, issues)
            return
        table = Table("run", "kind", "status", "started", "resumes", "stats")
        for run in ws.runs.list():
            table.add_row(run["id"], run["kind"], run["status"], run["started_at"], run["resumes"] or "", run["stats"])
        console.print(table)


def run_issues(ws: "Workspace", run: str) -> None:
    run_id = ws.runs.get(run)["id"]
    table = Table("place", "field", "problem")
    for issue in ws.runs.issues(run_id):
        table.add_row(issue["place"], issue["field"] or "", issue["message"])
    console.print(table)


@app.command()
def cost(
    workspace: WorkspaceOption,
    run: Annotated[Optional[str], typer.Option("--run", help="Only this run.")] = None,
) -> None:
    """Summarise LLM calls: requests, cache hits, failures, tokens and dollars per run."""
    from tnt.llm.log import call_summary

    with open_workspace(workspace) as ws:
        run_id = ws.runs.get(run)["id"] if run else None
        table = Table("model", "calls", "sent", "cached", "failed", "prompt tok", "completion tok", "cost $")
        table.columns.insert(0, Column("run", no_wrap=True))
        for row in call_summary(ws, run_id):
            cost_text = "unknown" if row["cost"] is None else f"{row['cost']:.4f}"
            table.add_row(
                row["run_id"] or "-",
                row["model"],
                *(str(row[k] or 0) for k in ("calls", "sent", "cached", "failed", "prompt_tokens", "completion_tokens")),
                cost_text,
            )
        console.print(table)


app.command("status")(status.status)
app.command("logs")(logs.logs)  # with init, runs and cost: the workspace's own commands come first
# The stages, registered in pipeline order, which is the order `tnt --help` lists them.
app.command("ingest")(ingest.ingest)
app.add_typer(scan.app, name="scan")
taxonomy.app.command("discover")(discover.discover)
app.add_typer(taxonomy.app, name="taxonomy")
app.command("label")(label.label)
app.add_typer(score.app, name="score")
app.add_typer(ls.app, name="ls")
app.command("serve")(serve.serve)
app.add_typer(review.app, name="review")
app.add_typer(audit.app, name="audit")
app.command("train")(train.train)
app.command("models")(train.models)
app.command("tag")(tag.tag)
app.command("select")(select.select)
app.add_typer(export.app, name="export")
app.command("report")(report.report)
app.command("demo")(demo.demo)


def main() -> None:
    app()
