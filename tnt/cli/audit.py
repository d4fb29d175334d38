"""``tnt audit``: check the tagged corpus blind and report per-label precision and prevalence with 95 %
intervals."""

import json
from typing import Annotated, Optional

import typer
from rich.table import Column, Table

from tnt.cli.common import WorkspaceOption, console, fail, open_workspace
from tnt.cli.ls import DEFAULT_URL, UrlOption, label_studio

app = typer.Typer(help="Audit the tagged corpus: a blind stratified sample, precision and prevalence with intervals.")

TaxonomyOption = Annotated[Optional[int], typer.Option("--taxonomy", "-t", help="Taxonomy version (default: latest).")]


@app.command()
def sample(
    workspace: WorkspaceOption,
    per_label: Annotated[int, typer.Option("--per-label", "-n", help="Documents per predicted label (a smaller label: all of it).")] = 20,
    taxonomy: TaxonomyOption = None,
    model: Annotated[Optional[str], typer.Option("--model", help="The model whose tags to audit (default: the latest that tagged).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="The same seed, the same documents.")] = 0,
) -> None:
    """Draw the audit sample: N documents of each label the tagger predicted, for people to check blind."""
    from tnt.review.audit import sample_for_audit

    if per_label < 1:
        fail("--per-label must be at least 1")
    with open_workspace(workspace) as ws:
        try:
            result = sample_for_audit(ws, per_label, taxonomy_version=taxonomy, model_id=model, seed=seed)
        except ValueError as exc:
            fail(str(exc))
    console.print(
        f"Audit sample {result.run_id}: {len(result.picks)} documents over {result.labels} predicted labels "
        f"(taxonomy v{result.taxonomy_version}, model {result.model_id})"
    )
    console.print("Push it to Label Studio, without predictions, with `tnt audit push`.")


@app.command()
def push(workspace: WorkspaceOption, taxonomy: TaxonomyOption = None, url: UrlOption = DEFAULT_URL) -> None:
    """Import the audit sample into its own Label Studio project, blind: no prediction, no backend."""
    from tnt.review.audit import push_audit

    with open_workspace(workspace) as ws, label_studio(url) as ls:
        result = push_audit(ws, ls, taxonomy)
    verb = "Created" if result.created else "Updated"
    console.print(
        f"{verb} audit project {result.project_id}: {result.imported} task(s) imported, "
        f"{result.already_there} already there, no predictions shown"
    )
    console.print(f"When people are done: `tnt ls pull -p {result.project_id}`, then `tnt audit report`.")


@app.command()
def report(
    workspace: WorkspaceOption,
    taxonomy: TaxonomyOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Per-label precision (Wilson 95 % interval) and prevalence corrected by the audit (95 % interval)."""
    from tnt.review.audit import audit_report

    with open_workspace(workspace) as ws:
        result = audit_report(ws, taxonomy)
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
        return
    table = Table(
        "label", Column("tagged", justify="right"), Column("audited", justify="right"),
        Column("precision [95% CI]", justify="right"), Column("tagged share", justify="right"),
        Column("true share [95% CI]", justify="right"),
        title=f"Audit of taxonomy v{result.taxonomy_version} tags by {result.model_id}: "
        f"{result.audited} documents checked of {result.corpus}",
    )  # fmt: skip
    for row in result.labels:
        precision = "—" if row.precision is None else _interval(row.precision.estimate, row.precision.low, row.precision.high)
        table.add_row(
            row.label, f"{row.tagged:,}", str(row.audited), precision, f"{row.prevalence_tagged:.1%}",
            _interval(row.prevalence.estimate, row.prevalence.low, row.prevalence.high),
        )  # fmt: skip
    console.print(table)


def _interval(estimate: float, low: float, high: float) -> str:
    return f"{estimate:.0%} [{low:.0%}–{high:.0%}]"
