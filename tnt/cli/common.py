"""Options and helpers shared by every command group: the CLI parses, calls one library method, prints.

Nothing heavy is imported here (no pydantic, sqlite-utils, litellm): ``tnt --help`` loads this module.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from tnt.llm import DEFAULT_MODEL
from tnt.runs import WorkspaceError

if TYPE_CHECKING:
    from rich.progress import Progress

    from tnt.workspace import Workspace

# soft_wrap: rich never folds or crops a printed line, so paths stay whole (and copyable) on a narrow
# terminal; the terminal wraps long lines itself.
console = Console(soft_wrap=True)
err_console = Console(stderr=True)

WorkspaceOption = Annotated[
    Path,
    typer.Option(
        "--workspace",
        "-w",
        help="Workspace directory (holds tnt.db).",
        envvar="TNT_WORKSPACE",
        default_factory=lambda: Path("."),
        show_default=".",
    ),
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Print the estimated tokens and cost; send nothing.")
]


class PiiMode(str, Enum):
    mask = "mask"
    off = "off"


def _llm_option(name: str, kind: Any, default: Any, *flags: str, **option: Any) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, typer.Option(*flags, **option)]
    )


# The LLM options of every command that calls an LLM, keyed by the LLMSettings field each one sets:
# a new option is one line here.
LLM_OPTIONS: dict[str, inspect.Parameter] = {
    "model": _llm_option(
        "model", str, DEFAULT_MODEL, "--model", "-m", envvar="TNT_MODEL",
        help="litellm model string (gpt-4o-mini, anthropic/…, openai/… with --api-base) or local/smollm2.",
    ),
    "api_base": _llm_option(
        "api_base", str | None, None, "--api-base", envvar="TNT_API_BASE", help="Base URL of an OpenAI-compatible server."
    ),
    "api_key": _llm_option(
        "api_key", str | None, None, "--api-key", envvar="TNT_API_KEY", show_default=False,
        help="API key (prefer the env var).",
    ),
    "max_concurrency": _llm_option("concurrency", int, 16, "--concurrency", min=1, help="Requests in flight at most."),
    "requests_per_minute": _llm_option("rpm", float | None, None, "--rpm", help="Requests per minute at most."),
    "tokens_per_minute": _llm_option("tpm", float | None, None, "--tpm", help="Tokens per minute at most."),
    "pii": _llm_option(
        "pii", PiiMode | None, None, "--pii", envvar="TNT_PII",
        show_default="mask; off for local/…",
        help="Personal data in document text (e-mails, phones, cards, IBANs, …): mask it before it is sent, or off.",
    ),
}  # fmt: skip


def llm_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command the LLM options; it receives them as one keyword argument, ``llm: LLMSettings``.

    The options replace ``llm`` in the signature typer reads, after the command's own options.
    """
    signature = inspect.signature(command)
    if "llm" not in signature.parameters:
        raise TypeError(f"{command.__name__} has no `llm` parameter to receive the LLM settings")
    own = [p for p in signature.parameters.values() if p.name != "llm"]
    if any(isinstance(p.annotation, str) for p in own):  # typer needs the Annotated objects themselves
        raise TypeError(f"{command.__name__}: CLI modules do not use `from __future__ import annotations`")
    parameters = own + list(LLM_OPTIONS.values())

    @functools.wraps(command)
    def with_settings(*args: Any, **kwargs: Any) -> None:
        from tnt.llm.gateway import LLMSettings

        values = {field: kwargs.pop(option.name) for field, option in LLM_OPTIONS.items()}
        return command(*args, llm=LLMSettings(**values), **kwargs)

    with_settings.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    with_settings.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_settings


def fail(message: str) -> NoReturn:
    err_console.print(f"[bold red]Error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@contextmanager
def open_workspace(directory: Path, create: bool = False) -> Iterator[Workspace]:
    """The workspace in ``directory`` (made first when ``create``); a WorkspaceError is a clean error."""
    from tnt.workspace import Workspace

    try:
        workspace = Workspace.create(directory) if create else Workspace.open(directory)
    except WorkspaceError as exc:
        fail(str(exc))
    workspace.on_resume = announce_resumption
    with workspace:
        try:
            yield workspace
        except WorkspaceError as exc:
            fail(str(exc))


def announce_resumption(interrupted: dict[str, Any]) -> None:
    err_console.print(
        f"resuming interrupted run {interrupted['id']} (started {interrupted['started_at']})", highlight=False
    )


def print_unchanged(ws: Workspace) -> bool:
    """Say so when the command's run found its result already stored (a rerun with the same inputs)."""
    held = ws.last_run.stats.get("unchanged") if ws.last_run else None
    if held:
        console.print(f"unchanged: {held} already holds this result; nothing new was stored", highlight=False)
    return bool(held)


def progress() -> Progress:
    """A bar with docs/s; stages may add a ``cost`` field shown after it."""
    from rich.progress import (  # here, not at the top: `tnt --help` draws no bars
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

    class DocsPerSecondColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(f"{task.speed:,.0f} docs/s" if task.speed else "", style="cyan")

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
