"""``tnt status``: the workspace on one screen, and the command to run next."""

import json
from typing import TYPE_CHECKING, Annotated

import typer

from tnt.cli.common import WorkspaceOption, console, open_workspace

if TYPE_CHECKING:
    from tnt.status import Spend, WorkspaceStatus

SOURCE_NAMES = {"llm": "LLM", "human": "human", "model": "model"}


def status(
    workspace: WorkspaceOption,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Where the workspace stands: taxonomy version and lineage, labels per source, what is stale, spend, next command."""
    from tnt.status import workspace_status

    with open_workspace(workspace) as ws:
        found = workspace_status(ws)
    if as_json:
        print(json.dumps(found.to_dict(), indent=2, ensure_ascii=False))
    else:
        print_status(found)


def print_status(status: "WorkspaceStatus") -> None:
    console.print(f"Workspace {status.workspace}: {status.documents:,} document(s)", highlight=False)
    if status.taxonomy_version is not None:
        lineage = " ← ".join(f"v{step.version} ({step.method})" for step in status.lineage)
        console.print(f"Taxonomy {lineage}", highlight=False)
        labeled = ", ".join(f"{SOURCE_NAMES[source]} {count:,}" for source, count in status.labeled.items())
        console.print(f"Labeled with v{status.taxonomy_version}: {labeled}", highlight=False)
        if status.pending:
            waiting = "; ".join(
                f"{SOURCE_NAMES[source]} {sum(counts.values()):,} ({', '.join(f'{reason} {n}' for reason, n in sorted(counts.items()))})"
                for source, counts in status.pending.items()
            )
            console.print(f"Need a label after the migration: {waiting}", highlight=False)
        console.print(f"Model: {status.model or 'none yet'}", highlight=False)
    for item in status.stale:
        console.print(f"[yellow]stale[/] {item.message}", highlight=False)
    console.print(f"LLM spend: {spend_text(status.spend)}", highlight=False)
    for run in status.unfinished_runs:
        console.print(f"[yellow]{run['status']}[/] run {run['id']} ({run['kind']}, started {run['started_at']})", highlight=False)
    if status.next is None:
        console.print("Nothing to do: everything is up to date.")
    else:
        console.print(f"Next: [bold]{status.next.command}[/]  ({status.next.why})", highlight=False)


def spend_text(spend: "Spend") -> str:
    calls = f"{spend.calls:,} call(s)"
    if not spend.unknown_price_calls:
        return f"${spend.cost:,.4f} over {calls}"
    if not spend.cost:
        return f"unknown (no price known for the model) over {calls}"
    return f"${spend.cost:,.4f} over {calls}, plus calls whose price is not known"
