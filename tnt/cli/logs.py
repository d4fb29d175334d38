"""``tnt logs``: the LLM calls a workspace made, in full (what ``llm logs`` is to simonw/llm)."""

import json
from typing import Annotated, Optional

import typer
from rich.table import Column, Table

from tnt.cli.common import WorkspaceOption, console, open_workspace
from tnt.llm.log import CallLog, CallRecord


def logs(
    workspace: WorkspaceOption,
    count: Annotated[int, typer.Option("--count", "-n", help="How many of the latest calls; 0 for all.")] = 10,
    run: Annotated[Optional[str], typer.Option("--run", help="Only this run (id or unique prefix).")] = None,
    stage: Annotated[Optional[str], typer.Option("--stage", help="Only this stage (label, summarize…).")] = None,
    query: Annotated[
        Optional[str],
        typer.Option("--query", "-q", help="Only calls whose user message or response holds this text (any case)."),
    ] = None,
    call_id: Annotated[
        Optional[int], typer.Option("--id", help="Show this one call in full: messages, parameters, response.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full records as JSON.")] = False,
) -> None:
    """Show the latest LLM calls (what was sent, what came back, tokens, cost), or one call in full."""
    with open_workspace(workspace) as ws:
        log = CallLog(ws)
        records = [log.get(call_id)] if call_id is not None else log.recent(count, run=run, stage=stage, query=query)
    if as_json:
        shown = records[0].to_dict() if call_id is not None else [record.to_dict() for record in records]
        typer.echo(json.dumps(shown, indent=2, ensure_ascii=False))
    elif call_id is not None:
        print_call(records[0])
    elif records:
        console.print(calls_table(records))
    else:
        console.print("No LLM calls match.")


def calls_table(records: list[CallRecord]) -> Table:
    table = Table(
        Column("time (UTC)", no_wrap=True),
        Column("id", justify="right"),
        Column("run", no_wrap=True),
        "stage",
        "model",
        "outcome",
        Column("tokens", justify="right"),
        Column("$", justify="right"),
        Column("ms", justify="right"),
        # the previews take what width is left, so the columns before them are never cut
        Column("prompt", no_wrap=True, overflow="ellipsis", ratio=1),
        Column("response", no_wrap=True, overflow="ellipsis", ratio=1),
        expand=True,
    )
    for record in records:
        table.add_row(
            _time(record),
            str(record.id),
            record.run_id or "-",
            record.stage or "-",
            record.model,
            record.outcome,
            _tokens(record),
            _cost(record),
            f"{record.latency_ms:.0f}",
            record.prompt_preview,
            record.response_preview,
            style="red" if record.outcome in ("error", "invalid") else None,
        )
    return table


def print_call(record: CallRecord) -> None:
    """A header, then each message, the parameters and the response under Markdown headings."""
    prompt = f"{record.prompt_name} ({record.prompt_hash})" if record.prompt_name else "-"
    header = [
        f"call {record.id} · {_time(record)} UTC · {record.outcome}",
        f"run: {record.run_id or '-'} · stage: {record.stage or '-'} · model: {record.model} · prompt: {prompt}",
        f"attempts: {record.attempts} · tokens in/out: {_tokens(record)} · cost $: {_cost(record)}"
        f" · latency: {record.latency_ms:.0f} ms",
    ]
    if record.error:
        header.append(f"error: {record.error}")
    sections = [("\n".join(header), None)]
    if record.messages is None:
        sections.append(("(messages, parameters and response not recorded: logged before tnt kept full calls)", None))
    else:
        sections += [(message["content"], message["role"]) for message in record.messages]
        sections.append((json.dumps(record.params, indent=2, ensure_ascii=False), "parameters"))
        sections.append((record.response if record.response is not None else "(none)", "response"))
    for text, heading in sections:
        if heading:
            _print(f"\n## {heading}\n")
        _print(text)


def _print(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _time(record: CallRecord) -> str:
    return record.created_at[:19].replace("T", " ")


def _tokens(record: CallRecord) -> str:
    if record.prompt_tokens is None and record.completion_tokens is None:
        return "-"
    return f"{record.prompt_tokens or 0}/{record.completion_tokens or 0}"


def _cost(record: CallRecord) -> str:
    if record.cost is not None:
        return f"{record.cost:.4f}"
    return "unknown" if record.outcome == "ok" else "-"
