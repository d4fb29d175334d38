"""The ``tnt`` command line: one module per command group, each a thin layer over the library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from tnt.cli.common import WorkspaceOption, console, open_workspace
from tnt.workspace import Workspace

app = typer.Typer(
    name="tnt",
    help="Turn a raw text corpus into a labeled, selectable corpus.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.command()
def init(
    directory: Annotated[Optional[Path], typer.Argument(help="Workspace directory.")] = None,
) -> None:
    """Create a workspace (a directory holding tnt.db)."""
    with Workspace.create(directory) as workspace:
        console.print(f"Workspace ready: {workspace.path}")


@app.command()
def runs(workspace: WorkspaceOption) -> None:
    """List the runs recorded in the workspace."""
    with open_workspace(workspace) as ws:
        table = Table("run", "kind", "status", "started", "stats")
        for run in ws.runs():
            table.add_row(run["id"], run["kind"], run["status"], run["started_at"], run["stats"])
        console.print(table)


@app.command()
def cost(
    workspace: WorkspaceOption,
    run: Annotated[Optional[str], typer.Option("--run", help="Only this run.")] = None,
) -> None:
    """Summarise LLM calls: requests, cache hits, failures, tokens and dollars per run."""
    from tnt.llm import call_summary

    with open_workspace(workspace) as ws:
        run_id = ws.get_run(run)["id"] if run else None
        table = Table("run", "model", "calls", "sent", "cached", "failed", "prompt tok", "completion tok", "cost $")
        for row in call_summary(ws, run_id):
            cost_text = "unknown" if row["cost"] is None else f"{row['cost']:.4f}"
            table.add_row(
                row["run_id"] or "-", row["model"],
                *(str(row[k] or 0) for k in ("calls", "sent", "cached", "failed", "prompt_tokens", "completion_tokens")),
                cost_text,
            )
        console.print(table)


def main() -> None:
    app()
