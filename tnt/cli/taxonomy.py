"""``tnt taxonomy``: generate (TnT-LLM or clusters), show, diff, export, import, refine, evaluate."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.tree import Tree

from tnt.cli.common import (
    DryRunOption,
    WorkspaceOption,
    console,
    fail,
    llm_options,
    open_workspace,
    print_run_issues,
    print_unchanged,
    progress,
)

if TYPE_CHECKING:
    from tnt.labels.migrate import MigrationResult
    from tnt.llm.gateway import LLMSettings
    from tnt.taxonomy.store import Taxonomy
    from tnt.workspace import Workspace

app = typer.Typer(help="Generate, inspect, edit, refine and evaluate taxonomies.", no_args_is_help=True)


class Method(str, Enum):
    tnt = "tnt"
    cluster = "cluster"


class ClusterNaming(str, Enum):
    llm = "llm"
    keywords = "keywords"


class Format(str, Enum):
    yaml = "yaml"
    json = "json"


PromptsOption = Annotated[
    Path | None,
    typer.Option("--prompts", envvar="TNT_PROMPTS", file_okay=False, help="Directory of prompt templates overriding the shipped ones."),
]
VersionOption = Annotated[int | None, typer.Option("--version", "-v", help="Taxonomy version (default: the latest).")]
MaxLabelsOption = Annotated[int, typer.Option("--max-labels", min=1, help="Most labels in the table.")]
MinLabelsOption = Annotated[int, typer.Option("--min-labels", min=1, help="Fewest labels in the table.")]
NameWordsOption = Annotated[int, typer.Option("--max-name-words", min=1, help="Longest label name, in words.")]
DescriptionWordsOption = Annotated[int, typer.Option("--max-description-words", min=1, help="Longest description, in words.")]
RetriesOption = Annotated[int, typer.Option("--retries", min=0, help="Guardrail retries, each 0.1 hotter.")]
NoMigrateOption = Annotated[bool, typer.Option("--no-migrate", help="Do not carry the parent's labels to the new version now (`tnt taxonomy migrate` does it later).")]


@contextmanager
def reporter() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """Progress bars for the library's reporter protocol: start(description, total) -> advance(n)."""
    with progress() as bar:

        def start(description: str, total: int) -> Callable[[int], None]:
            task = bar.add_task(description, total=total, cost="")
            return lambda n: bar.advance(task, n)

        yield start


def print_estimate(estimate: dict[str, Any]) -> None:
    table = Table("requests", "cached", "prompt tokens", "completion tokens", "cost $")
    cost = estimate["cost"]
    table.add_row(
        *(f"{estimate[k]:,}" for k in ("requests", "cached", "prompt_tokens", "completion_tokens")),
        "unknown" if cost is None else f"{cost:,.4f}",
    )
    console.print(table)
    if note := estimate.get("note"):
        console.print(f"[dim]{note}[/]")


def print_taxonomy(taxonomy: "Taxonomy") -> None:
    score = "" if taxonomy.score is None else f", score {taxonomy.score:.1f}"
    parent = "" if taxonomy.parent is None else f", parent {taxonomy.parent}"
    console.print(
        f"[bold]Taxonomy version {taxonomy.version}[/] ({taxonomy.method}{parent}{score}, "
        f"model {taxonomy.model or '-'}, {taxonomy.created_at})"
    )
    if taxonomy.use_case:
        console.print(f"Use case: {taxonomy.use_case}")
    tree = Tree(f"{len(taxonomy.leaves)} labels", guide_style="dim")
    children = taxonomy.tree()
    for label in children.get(None, []):
        branch = tree.add(f"[bold]{label.name}[/]: {label.description}")
        for child in children.get(label.name, []):
            branch.add(f"[bold]{child.name}[/]: {child.description}")
    console.print(tree)
    if taxonomy.note:
        console.print(f"[dim]{taxonomy.note}[/]")


@app.command()
@llm_options
def generate(
    workspace: WorkspaceOption,
    use_case: Annotated[str, typer.Option("--use-case", help="What the taxonomy is for, e.g. 'the customer's intent'.")],
    method: Annotated[Method, typer.Option("--method", help="tnt: TnT-LLM loop; cluster: k-means + named clusters.")] = Method.tnt,
    sample: Annotated[int | None, typer.Option("--sample", min=1, help="Documents to use (default: 1000 for tnt, all for cluster).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Minibatch size (tnt).")] = 200,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Passes over the sample (tnt).")] = 3,
    validation_share: Annotated[float, typer.Option("--validation-share", min=0.0, max=0.9, help="Held out to score candidates (tnt).")] = 0.2,
    patience: Annotated[int | None, typer.Option("--patience", min=1, help="Stop after N epochs without a better score (tnt).")] = None,
    seed_version: Annotated[int | None, typer.Option("--seed-version", help="Start the tnt loop from this version (e.g. a cluster one).")] = None,
    k: Annotated[int, typer.Option("--k", min=2, help="Clusters (cluster).")] = 20,
    representatives: Annotated[int, typer.Option("--representatives", min=1, help="Members shown per cluster (cluster).")] = 10,
    namer: Annotated[ClusterNaming, typer.Option("--namer", help="Who names the clusters: llm, or keywords (c-TF-IDF, no LLM) (cluster).")] = ClusterNaming.llm,
    reference: Annotated[int | None, typer.Option("--reference", help="Version with people's labels: report AMI (cluster).")] = None,
    levels: Annotated[int, typer.Option("--levels", min=1, max=2, help="2: group the labels under parents.")] = 1,
    max_groups: Annotated[int | None, typer.Option("--max-groups", min=2, help="Most parents with --levels 2.")] = None,
    summarize: Annotated[bool | None, typer.Option("--summarize/--no-summarize", show_default=False,
                         help="Summarise long documents first (by the LLM; default: yes, but not with --namer keywords, which calls no LLM).")] = None,  # fmt: skip
    min_summary_chars: Annotated[int, typer.Option("--min-summary-chars", min=0, help="Shorter texts are used as they are.")] = 500,
    max_labels: MaxLabelsOption = 10,
    min_labels: MinLabelsOption = 2,
    max_name_words: NameWordsOption = 5,
    max_description_words: DescriptionWordsOption = 30,
    retries: RetriesOption = 5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sample, splits and k-means.")] = 0,
    prompts: PromptsOption = None,
    dry_run: DryRunOption = False,
    *,
    llm: "LLMSettings",
) -> None:
    """Propose a taxonomy for a use case (TnT-LLM, or k-means clusters named by the LLM or by keywords) and save it as a version."""
    from tnt.taxonomy.guardrails import TaxonomyLimits
    from tnt.taxonomy.pipeline import (
        ClusterOptions,
        GenerateOptions,
        cluster_taxonomy,
        estimate_cluster,
        estimate_generate,
        generate_taxonomy,
    )
    from tnt.taxonomy.proposer import GuardrailFailure, ProposerSettings

    limits = TaxonomyLimits(min_labels=min_labels, max_labels=max_labels, max_name_words=max_name_words,
                            max_description_words=max_description_words)  # fmt: skip
    if summarize is None:
        summarize = not (method is Method.cluster and namer is ClusterNaming.keywords)
    common = {"use_case": use_case, "limits": limits, "levels": levels, "max_groups": max_groups, "summarize": summarize,
              "min_summary_chars": min_summary_chars, "retries": retries, "prompts_dir": str(prompts) if prompts else None}  # fmt: skip
    with open_workspace(workspace) as ws:
        try:
            if method is Method.cluster:
                options = ClusterOptions(**common, k=k, sample=sample, representatives=representatives, namer=namer.value,
                                         seed=seed, reference=reference)  # fmt: skip
                if dry_run:
                    return print_estimate(estimate_cluster(ws, options, llm))
                with reporter() as report:
                    outcome = cluster_taxonomy(ws, options, llm, report)
                print_taxonomy(outcome.taxonomy)
                print_unchanged(ws)
                print_run_issues(ws, outcome.taxonomy.run_id)
                for key in ("documents", "embed_and_kmeans_s", "naming_s", "ami_clusters", "ami_labels"):
                    if key in outcome.stats:
                        console.print(f"{key}: {outcome.stats[key]}")
                return
            proposer = ProposerSettings(batch_size=batch_size, epochs=epochs, validation_share=validation_share,
                                        patience=patience, seed=seed)  # fmt: skip
            options = GenerateOptions(**common, sample=sample or 1000, proposer=proposer, seed_version=seed_version)
            if dry_run:
                return print_estimate(estimate_generate(ws, options, llm))
            with reporter() as report:
                taxonomy = generate_taxonomy(ws, options, llm, report)
        except (GuardrailFailure, ValueError) as exc:
            fail(str(exc))
        print_taxonomy(taxonomy)
        print_unchanged(ws)
        print_run_issues(ws, taxonomy.run_id)


@app.command("list")
def list_versions(workspace: WorkspaceOption) -> None:
    """List every taxonomy version with its parent, method and score."""
    with open_workspace(workspace) as ws:
        table = Table("version", "parent", "method", "labels", "score", "model", "created", "note")
        for t in ws.taxonomies.all():
            table.add_row(str(t.version), str(t.parent or "-"), t.method, str(len(t.leaves)),
                          "-" if t.score is None else f"{t.score:.1f}", t.model or "-", t.created_at or "", t.note[:60])  # fmt: skip
        console.print(table)


@app.command()
def show(
    workspace: WorkspaceOption,
    version: Annotated[int | None, typer.Argument(help="Version (default: the latest).")] = None,
) -> None:
    """Show a taxonomy version: labels (as a tree with --levels 2), lineage, model and score."""
    with open_workspace(workspace) as ws:
        print_taxonomy(ws.taxonomies.get(version))


@app.command()
def diff(
    workspace: WorkspaceOption,
    old: Annotated[int, typer.Argument(help="The older version.")],
    new: Annotated[int, typer.Argument(help="The newer version.")],
) -> None:
    """What changed between two versions: the label map (added, removed, renamed, merged, split) and edited descriptions."""
    from tnt.taxonomy.file import diff_taxonomies
    from tnt.taxonomy.lineage import map_between

    with open_workspace(workspace) as ws:
        before_table, after_table = ws.taxonomies.get(old), ws.taxonomies.get(new)
    changes, label_map = diff_taxonomies(before_table, after_table), map_between(before_table, after_table)
    if changes.empty:
        console.print(f"versions {old} and {new} have the same labels")
    descriptions = {label.name: label.description for label in [*before_table.labels, *after_table.labels]}
    for change in label_map.changes:
        if change.kind == "added":
            console.print(f"[green]+ {change.new[0]}[/]: {descriptions[change.new[0]]}", highlight=False)
        elif change.kind == "removed":
            console.print(f"[red]- {change.old[0]}[/]: {descriptions[change.old[0]]}", highlight=False)
        elif change.kind in ("renamed", "merged", "split"):
            console.print(f"[yellow]~ {', '.join(change.old)} → {', '.join(change.new)}[/] ({change.kind})", highlight=False)
    for name, attribute, before, after in changes.changed:
        console.print(f"[yellow]~ {name}[/] {attribute}: {before!r} → {after!r}", highlight=False)


@app.command()
def export(
    workspace: WorkspaceOption,
    version: Annotated[int | None, typer.Argument(help="Version (default: the latest).")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="yaml (to edit) or json.")] = Format.yaml,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: standard output).")] = None,
) -> None:
    """Write a version as YAML or JSON, for people to edit and `tnt taxonomy import`."""
    from tnt.taxonomy.file import dump_taxonomy

    with open_workspace(workspace) as ws:
        text = dump_taxonomy(ws.taxonomies.get(version), fmt.value)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        console.print(f"Wrote {output}")


@app.command("import")
def import_(
    workspace: WorkspaceOption,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A YAML or JSON taxonomy file.")],
    no_migrate: NoMigrateOption = False,
) -> None:
    """Validate an edited taxonomy file and save it as a new version (its parent: the version it came from), then carry the parent's labels."""
    from tnt.taxonomy.file import TaxonomyFileError, import_taxonomy

    with open_workspace(workspace) as ws:
        try:
            saved = import_taxonomy(ws, file)
        except TaxonomyFileError as exc:
            fail(str(exc))
        print_taxonomy(saved)
        if saved.parent is not None and not no_migrate:
            carry_labels(ws, saved.version)


@app.command()
def migrate(
    workspace: WorkspaceOption,
    version: Annotated[int | None, typer.Argument(help="Version to carry labels to (default: the latest).")] = None,
) -> None:
    """Carry the parent version's labels whose meaning survives (unchanged, reworded, renamed, merged) to a version; record the rest as pending for `tnt label --pending`."""
    with open_workspace(workspace) as ws:
        carry_labels(ws, ws.taxonomies.get(version).version)


def carry_labels(ws: "Workspace", version: int) -> None:
    from tnt.labels.migrate import migrate_labels

    try:
        result = migrate_labels(ws, version)
    except ValueError as exc:
        fail(str(exc))
    print_migration(result)


def print_migration(result: "MigrationResult") -> None:
    arrow = f"v{result.parent} → v{result.version}"
    if result.changed_nothing:
        console.print(f"Labels {arrow}: nothing new to carry ({result.already_carried:,} carried before).")
        return
    table = Table("change", "llm", "human", "model", title=f"Labels carried {arrow} (no LLM calls)")
    for kind, by_source in result.carried.items():
        table.add_row(kind, *(f"{by_source.get(source, 0):,}" for source in ("llm", "human", "model")))
    console.print(table)
    if result.pending:
        pending = ", ".join(f"{count:,} {reason}" for reason, count in result.pending.items())
        console.print(f"Pending documents (asked by `tnt label --pending`): {pending}")


@app.command()
@llm_options
def refine(
    workspace: WorkspaceOption,
    feedback: Annotated[str, typer.Option("--feedback", help="What people want changed, in words.")] = "",
    version: VersionOption = None,
    corrections: Annotated[bool, typer.Option("--corrections/--no-corrections", help="Use people's label corrections.")] = True,
    max_labels: Annotated[int | None, typer.Option("--max-labels", min=1, help="Most labels (default: as the version was made, or its size + 2).")] = None,
    retries: RetriesOption = 5,
    prompts: PromptsOption = None,
    no_migrate: NoMigrateOption = False,
    *,
    llm: "LLMSettings",
) -> None:
    """An LLM revision of a version, guided by feedback and by labels people corrected (moved to Other or swapped); the labels whose meaning survives are carried."""
    from tnt.taxonomy.pipeline import limits_for, refine_taxonomy
    from tnt.taxonomy.proposer import GuardrailFailure

    with open_workspace(workspace) as ws:
        limits = None
        if max_labels is not None:
            limits = limits_for(ws.taxonomies.get(version)).model_copy(update={"max_labels": max_labels})
        try:
            taxonomy = refine_taxonomy(ws, feedback, llm, version=version, limits=limits,
                                       use_corrections=corrections, retries=retries,
                                       prompts_dir=str(prompts) if prompts else None)  # fmt: skip
        except (GuardrailFailure, ValueError) as exc:
            fail(str(exc))
        print_taxonomy(taxonomy)
        print_run_issues(ws, taxonomy.run_id)
        if not no_migrate:
            carry_labels(ws, taxonomy.version)


@app.command()
@llm_options
def evaluate(
    workspace: WorkspaceOption,
    version: VersionOption = None,
    sample: Annotated[int, typer.Option("--sample", min=1, help="Documents to judge.")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sample and the forced choices.")] = 0,
    reference: Annotated[int | None, typer.Option("--reference", help="Version holding reference labels (e.g. from ingest --label-field): adds AMI.")] = None,
    prompts: PromptsOption = None,
    dry_run: DryRunOption = False,
    *,
    llm: "LLMSettings",
) -> None:
    """Coverage (share not put in Other), label accuracy (pairwise forced choice), use-case relevance; AMI with --reference."""
    from tnt.taxonomy.evaluate import estimate_evaluate, evaluate_taxonomy

    options = {"version": version, "sample": sample, "seed": seed, "reference": reference,
               "prompts_dir": str(prompts) if prompts else None}  # fmt: skip
    with open_workspace(workspace) as ws:
        try:
            if dry_run:
                return print_estimate(estimate_evaluate(ws, llm, **options))
            with reporter() as report:
                evaluation = evaluate_taxonomy(ws, llm, **options, progress=report)
        except ValueError as exc:
            fail(str(exc))
    table = Table("version", "documents", "coverage", "accuracy", "relevance", "AMI", "failed")
    cells = [evaluation.coverage, evaluation.accuracy, evaluation.relevance, evaluation.ami]
    table.add_row(str(evaluation.version), str(evaluation.documents),
                  *("-" if v is None else f"{v:.3f}" for v in cells), str(evaluation.failures))  # fmt: skip
    console.print(table)
    if evaluation.mapping:
        mapping = Table("label", "documents", "most common reference", "share")
        for label, row in evaluation.mapping.items():
            mapping.add_row(label, str(row["count"]), row["reference"], f"{row['share']:.2f}")
        console.print(mapping)
