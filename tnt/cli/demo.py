"""``tnt demo``: the whole loop offline on the shipped BANKING77 sample."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tnt.cli.common import (
    ApiBaseOption,
    ApiKeyOption,
    ModelOption,
    console,
    llm_settings,
)
from tnt.llm.gateway import DEFAULT_MODEL
from tnt.workspace import Workspace


def demo(
    workspace: Annotated[Path, typer.Option("--workspace", "-w", help="Where the demo workspace goes.")] = Path(
        "demo-workspace"
    ),
    model: ModelOption = DEFAULT_MODEL,
    api_base: ApiBaseOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Run ingest → taxonomy → label → train → tag → select → report on a BANKING77 sample."""
    from tnt.demo import run_demo

    started = time.perf_counter()
    settings = llm_settings(model, api_base, api_key)
    with Workspace.create(workspace) as ws:
        result = run_demo(ws, settings, on_step=lambda message: console.print(f"[bold cyan]•[/] {message}"))
    table = Table("what", "where / result", show_header=False)
    for name, value in {**result.figures, **result.artefacts}.items():
        table.add_row(name, value)
    console.print(table)
    console.print(f"Done in {time.perf_counter() - started:.0f} s. Workspace: {result.workspace}")
    console.print(
        "The local 135M model makes the loop run offline, not good labels. For real quality, rerun with a "
        "provider, e.g. [bold]OPENAI_API_KEY=… tnt demo --model gpt-4o-mini -w demo-gpt[/] "
        "(or --model anthropic/claude-3-5-haiku-latest, or --model openai/<name> --api-base http://host:8000/v1)."
    )
