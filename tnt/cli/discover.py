"""``tnt taxonomy discover``: candidate labels from the documents the tagger could not place."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Column, Table

from tnt.cli.common import DryRunOption, WorkspaceOption, console, fail, llm_options, open_workspace
from tnt.cli.taxonomy import NoMigrateOption, carry_labels

if TYPE_CHECKING:
    from tnt.llm.gateway import LLMSettings
    from tnt.taxonomy.discover import Discovery


def parse_numbers(text: str) -> list[int]:
    """"1,3" -> [1, 3]."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected candidate numbers, e.g. 1,3") from None


@llm_options
def discover(
    workspace: WorkspaceOption,
    threshold: Annotated[float, typer.Option("--threshold", help="Tags below this confidence count as unplaced (0–1).")] = 0.5,
    min_cluster_size: Annotated[Optional[int], typer.Option("--min-cluster-size", min=2, help="Smallest candidate (default: 1 % of the unplaced, at least 10).")] = None,
    namer: Annotated[str, typer.Option("--namer", help="llm: one LLM call per candidate; keywords: c-TF-IDF, no LLM.")] = "llm",
    accept: Annotated[Optional[str], typer.Option("--accept", help="Save these candidates (e.g. 1,3) as a new version.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Where to write the YAML to edit (default: discover-vN.yaml in the workspace).")] = None,
    taxonomy: Annotated[Optional[int], typer.Option("--taxonomy", "-t", help="Taxonomy version (default: latest).")] = None,
    model_id: Annotated[Optional[str], typer.Option("--model-id", help="The tagging model (default: the latest that tagged the corpus).")] = None,
    no_migrate: NoMigrateOption = False,
    dry_run: DryRunOption = False,
    *,
    llm: "LLMSettings",
) -> None:
    """Cluster what the tagger left in Other or below --threshold; each cluster a candidate label (after `tnt tag --corpus`)."""
    from tnt.taxonomy.discover import DiscoverOptions, accept_candidates, candidates_file, discover_labels, estimate_discover

    if not 0 <= threshold <= 1:
        fail(f"--threshold must be between 0 and 1, not {threshold}")
    if namer not in ("llm", "keywords"):
        fail(f"--namer must be llm or keywords, not {namer!r}")
    options = DiscoverOptions(threshold=threshold, min_cluster_size=min_cluster_size, namer=namer,
                              taxonomy_version=taxonomy, model_id=model_id)  # fmt: skip
    with open_workspace(workspace) as ws:
        if dry_run:
            plan = estimate_discover(ws, options)
            console.print(
                f"{plan['unplaced']:,} of {plan['corpus']:,} tagged documents unplaced → {plan['clusters']} candidate(s), "
                f"{plan['noise']:,} left as noise; {plan['llm_calls']} LLM call(s) to name them"
            )
            return
        discovery = discover_labels(ws, options, llm)
        print_candidates(discovery)
        if not discovery.candidates:
            return
        path = out or ws.directory / f"discover-v{discovery.taxonomy.version}.yaml"
        path.write_text(candidates_file(discovery), encoding="utf-8")
        if accept:
            saved = accept_candidates(ws, discovery, parse_numbers(accept))
            console.print(f"Saved version {saved.version} (parent {saved.parent}) with {len(parse_numbers(accept))} new label(s)")
            if not no_migrate:
                carry_labels(ws, saved.version)
        else:
            console.print(f"Accept with `--accept 1,3`, or edit {path} and `tnt taxonomy import {path}`.")


def print_candidates(discovery: "Discovery") -> None:
    console.print(
        f"{discovery.unplaced:,} of {discovery.corpus:,} documents tagged Other or below the threshold by "
        f"{discovery.model_id}; {discovery.noise:,} in no cluster"
    )
    table = Table(
        Column("#", justify="right"), "candidate", Column("documents", justify="right"), Column("share", justify="right"),
        "closest label", "example", title=f"Candidate labels for taxonomy v{discovery.taxonomy.version}",
    )  # fmt: skip
    for c in discovery.candidates:
        example = c.examples[0] if c.examples else ""
        table.add_row(str(c.number), f"{c.name}\n[dim]{c.description}[/]", f"{c.size:,}", f"{c.share:.1%}",
                      f"{c.closest} ({c.similarity:.2f})", example[:60])  # fmt: skip
    console.print(table)
