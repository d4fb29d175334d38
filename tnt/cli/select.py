"""`tnt select`: choose a training selection from labels (or quality alone), quality scores and duplicates."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Column, Table

from tnt.cli.common import (
    WorkspaceOption,
    console,
    fail,
    open_workspace,
    print_unchanged,
    progress,
)

if TYPE_CHECKING:
    from tnt.select import Selection


def parse_counts(values: list[str], option: str) -> dict[str, int]:
    """``LABEL=N`` pairs; the label may itself contain '=' (split at the last one)."""
    counts: dict[str, int] = {}
    for value in values:
        label, sep, number = value.rpartition("=")
        if not sep or not label or not number.strip().isdigit():
            fail(f"{option} {value!r}: expected LABEL=N with N a whole number ≥ 0")
        counts[label.strip()] = int(number)
    return counts


def select(
    workspace: WorkspaceOption,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the selection: .txt (ids), .jsonl or .parquet (documents)."),
    ] = None,
    taxonomy: Annotated[
        int | None, typer.Option("--taxonomy", "-t", help="Taxonomy version (default: latest).")
    ] = None,
    by_label: Annotated[
        bool | None,
        typer.Option(
            "--by-label/--no-labels",
            help="Go by a taxonomy's labels, or by quality alone (default: by label when the workspace has a taxonomy).",
        ),
    ] = None,
    quota: Annotated[
        list[str] | None, typer.Option("--quota", help="LABEL=N: exactly N documents of LABEL (repeatable).")
    ] = None,
    cap: Annotated[
        list[str] | None, typer.Option("--cap", help="LABEL=N: at most N documents of LABEL (repeatable).")
    ] = None,
    max_per_label: Annotated[
        int | None, typer.Option("--max-per-label", help="At most N documents of any label.")
    ] = None,
    size: Annotated[int | None, typer.Option("--size", "-n", help="Documents to select in all.")] = None,
    token_budget: Annotated[
        int | None, typer.Option("--token-budget", help="Tokens to select in all (never exceeded).")
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(
            "--temperature", "-T", help="Label mix p ∝ n^T: 0 uniform, 1 natural (needs --size or --token-budget)."
        ),
    ] = None,
    min_quality: Annotated[
        float | None, typer.Option("--min-quality", help="Drop documents scored below this (or not scored).")
    ] = None,
    top_quality: Annotated[
        str | None,
        typer.Option(
            "--top-quality", help="Keep the best-scored N documents, or P% of them, of those left after the floor and dedup."
        ),
    ] = None,
    quality_precedence: Annotated[
        str, typer.Option("--quality-precedence", help="Which quality-score source wins per document.")
    ] = "human,llm,model",
    quality_origin: Annotated[
        str | None,
        typer.Option("--quality-origin", help="Use quality scores whose origin starts with this (e.g. ask-llm)."),
    ] = None,
    drop_pii: Annotated[
        str | None,
        typer.Option(
            "--drop-pii", help="Leave out documents holding these entity types (comma-separated; needs tnt scan pii)."
        ),
    ] = None,
    dedup: Annotated[str, typer.Option("--dedup", help="none | exact | near (near also removes exact).")] = "near",
    near_threshold: Annotated[
        float,
        typer.Option(
            "--near-threshold", help="Jaccard similarity (MinHash estimate) at which texts are near duplicates."
        ),
    ] = 0.8,
    tokenizer: Annotated[
        str, typer.Option("--tokenizer", help="cl100k_base, o200k_base (tiktoken, offline) or whitespace.")
    ] = "cl100k_base",
    precedence: Annotated[
        str, typer.Option("--precedence", help="Which label source wins per document.")
    ] = "human,model,llm",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sampling order.")] = 0,
) -> None:
    """Select documents by label quotas/caps, temperature mix, quality floor or top share, dedup and token budget."""
    from pydantic import ValidationError

    from tnt.corpus.store import DocumentStore
    from tnt.select import SelectionSpec
    from tnt.select import select as run_select

    try:
        spec = SelectionSpec(
            by_label=by_label,
            taxonomy_version=taxonomy,
            quotas=parse_counts(quota or [], "--quota"),
            caps=parse_counts(cap or [], "--cap"),
            max_per_label=max_per_label,
            size=size,
            token_budget=token_budget,
            temperature=temperature,
            min_quality=min_quality,
            top_quality=top_quality,
            quality_precedence=_sources(quality_precedence),
            quality_origin=quality_origin,
            drop_pii=tuple(t.strip().upper() for t in (drop_pii or "").split(",") if t.strip()),
            dedup=dedup,
            near_dup_threshold=near_threshold,
            tokenizer=tokenizer,
            precedence=_sources(precedence),
            seed=seed,
        )
    except ValidationError as exc:
        fail("; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors()))
    with open_workspace(workspace) as ws, progress() as bar:
        task = bar.add_task("select", total=DocumentStore(ws).count(), cost="")
        selection = run_select(ws, spec, out, on_progress=lambda n: bar.advance(task, n))
    print_selection(selection, "the workspace has no taxonomy" if by_label is None else "--no-labels")
    print_unchanged(ws)


def _sources(names: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in names.split(","))


def print_selection(selection: "Selection", why_quality_alone: str) -> None:
    made_by = f"taxonomy version {selection.taxonomy_version}" if selection.by_label else f"by quality alone: {why_quality_alone}"
    console.print(f"[bold]Selection {selection.run_id}[/] ({made_by})")
    funnel = Table("step", Column("documents", justify="right"))
    for step, count in selection.funnel.items():
        funnel.add_row(step, f"{count:,}")
        if step in ("labelled", "scored"):
            for source, scored in selection.quality_sources.items():
                funnel.add_row(f"  score from {source}", f"{scored:,}", style="dim")
    console.print(funnel)
    if selection.quality_origins:
        console.print("Scores by origin: " + ", ".join(f"{origin} {n:,}" for origin, n in selection.quality_origins.items()))
    numbers = ("docs before", "share", "docs after", "share", "tokens before", "tokens after")
    table = Table(Column("label", overflow="fold"), *(Column(name, justify="right") for name in numbers))
    totals = {name: _total(dist) for name, dist in (("before", selection.before), ("after", selection.after))}
    for label in sorted(set(selection.before) | set(selection.after)):
        before = selection.before.get(label, {"docs": 0, "tokens": 0})
        after = selection.after.get(label, {"docs": 0, "tokens": 0})
        table.add_row(
            label,
            f"{before['docs']:,}",
            _share(before, totals["before"]),
            f"{after['docs']:,}",
            _share(after, totals["after"]),
            f"{before['tokens']:,}",
            f"{after['tokens']:,}",
        )
    before, after = totals["before"], totals["after"]
    table.add_row(
        "total",
        f"{before['docs']:,}",
        "",
        f"{after['docs']:,}",
        "",
        f"{before['tokens']:,}",
        f"{after['tokens']:,}",
        style="bold",
    )
    console.print(table)
    if selection.expected_on_label:
        print_expected_on_label(selection.expected_on_label)
    if selection.shortfall:
        console.print(f"[yellow]Note:[/] {selection.shortfall}.")
    if selection.out:
        console.print(f"Wrote {len(selection.selected):,} documents ({selection.tokens:,} tokens) to {selection.out}")


def _total(distribution: dict[str, dict[str, int]]) -> dict[str, int]:
    return {key: sum(counts[key] for counts in distribution.values()) for key in ("docs", "tokens")}


def _share(counts: dict[str, int], total: dict[str, int]) -> str:
    return f"{100 * counts['docs'] / total['docs']:.1f} %" if total["docs"] else "-"


def print_expected_on_label(expected: dict[str, dict[str, float]]) -> None:
    table = Table("label", Column("selected, expected truly on label [95% CI]", justify="right"),
                  title="From the audit (tnt audit): a tagger's label counts at its audited precision")  # fmt: skip
    for label, numbers in expected.items():
        note = f" ({numbers['unaudited_llm']:,} LLM labels counted as right)" if numbers["unaudited_llm"] else ""
        table.add_row(label, f"{numbers['expected']:,.0f} [{numbers['low']:,.0f}–{numbers['high']:,.0f}]{note}")
    console.print(table)
