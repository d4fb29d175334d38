"""``tnt demo``: the whole loop on the shipped BANKING77 sample, offline by default."""

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Column, Table

from tnt.cli.common import console, llm_options, open_workspace

if TYPE_CHECKING:
    from tnt.llm.gateway import LLMSettings


@llm_options
def demo(
    workspace: Annotated[Path, typer.Option("--workspace", "-w", help="Where the demo workspace goes.")] = Path(
        "demo-workspace"
    ),
    *,
    llm: "LLMSettings",
) -> None:
    """Run ingest → taxonomy → labels → train → tag → select → report on a BANKING77 sample (offline: k-means clusters named by keywords; with a provider --model: TnT-LLM)."""
    from tnt.demo import run_demo, uses_llm

    started = time.perf_counter()
    with open_workspace(workspace, create=True) as ws:
        result = run_demo(ws, llm, on_step=lambda message: console.print(f"[bold cyan]•[/] {message}"))
    table = Table("what", Column("result", overflow="fold"), show_header=False)
    for name, value in result.figures.items():
        table.add_row(name, value)
    console.print(table)
    for name, path in result.artefacts.items():  # one line each, never cut, so a path can be copied
        console.print(f"{name}: {path}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"Done in {time.perf_counter() - started:.0f} s. Workspace: {result.workspace}", soft_wrap=True)
    if not uses_llm(llm):
        console.print(
            "No LLM was called: the taxonomy is k-means clusters named by their keywords, and each document's "
            "cluster is its label. For the TnT-LLM loop (LLM taxonomy and labels), rerun with a provider, e.g. "
            "[bold]OPENAI_API_KEY=… tnt demo --model gpt-4o-mini -w demo-gpt[/] (or --model "
            "anthropic/claude-3-5-haiku-latest, or --model openai/<name> --api-base http://host:8000/v1)."
        )
