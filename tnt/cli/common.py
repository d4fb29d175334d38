"""Options and helpers shared by every command group: the CLI parses, calls one library method, prints."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from tnt.llm.gateway import DEFAULT_MODEL, LLMSettings
from tnt.runs import WorkspaceError
from tnt.workspace import Workspace, default_workspace_dir

console = Console()
err_console = Console(stderr=True)

WorkspaceOption = Annotated[
    Path,
    typer.Option(
        "--workspace",
        "-w",
        help="Workspace directory (holds tnt.db).",
        envvar="TNT_WORKSPACE",
        default_factory=default_workspace_dir,
        show_default=".",
    ),
]
ModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="litellm model string (gpt-4o-mini, anthropic/…, openai/… with --api-base) or local/smollm2.",
        envvar="TNT_MODEL",
    ),
]
ApiBaseOption = Annotated[
    str | None,
    typer.Option("--api-base", help="Base URL of an OpenAI-compatible server.", envvar="TNT_API_BASE"),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option("--api-key", help="API key (prefer the env var).", envvar="TNT_API_KEY", show_default=False),
]
ConcurrencyOption = Annotated[int, typer.Option("--concurrency", help="Requests in flight at most.")]
RpmOption = Annotated[float | None, typer.Option("--rpm", help="Requests per minute at most.")]
TpmOption = Annotated[float | None, typer.Option("--tpm", help="Tokens per minute at most.")]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Print the estimated tokens and cost; send nothing.")
]


def llm_settings(
    model: str = DEFAULT_MODEL,
    api_base: str | None = None,
    api_key: str | None = None,
    concurrency: int = 16,
    rpm: float | None = None,
    tpm: float | None = None,
) -> LLMSettings:
    return LLMSettings(
        model=model,
        api_base=api_base,
        api_key=api_key,
        max_concurrency=concurrency,
        requests_per_minute=rpm,
        tokens_per_minute=tpm,
    )


def fail(message: str) -> NoReturn:
    err_console.print(f"[bold red]Error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@contextmanager
def open_workspace(directory: Path) -> Iterator[Workspace]:
    try:
        workspace = Workspace.open(directory)
    except WorkspaceError as exc:
        fail(str(exc))
    with workspace:
        try:
            yield workspace
        except WorkspaceError as exc:
            fail(str(exc))


class DocsPerSecondColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f} docs/s" if task.speed else "", style="cyan")


def progress() -> Progress:
    """A bar with docs/s; stages may add a ``cost`` field shown after it."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        DocsPerSecondColumn(),
        TextColumn("{task.fields[cost]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )


def print_run_issues(ws: Workspace, run_id: str | None, shown: int = 5) -> None:
    """The first few issues a run recorded; the rest stay in the workspace (`tnt runs --issues`)."""
    issues = ws.runs.issues(run_id) if run_id else []
    for issue in issues[:shown]:
        console.print(f"[yellow]{issue['place']}[/]: {issue['message']}", highlight=False)
    if len(issues) > shown:
        console.print(f"… and {len(issues) - shown} more issues, recorded with run {run_id}")
