"""``tnt review``: choose documents for people to review; measure how far the LLM agrees with them,
and how far a version agrees with a reference version's human labels."""

import json
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Column, Table

from tnt.cli.common import WorkspaceOption, console, fail, open_workspace

if TYPE_CHECKING:
    from tnt.review.agreement import ReferenceAgreement

app = typer.Typer(help="Human review: sample documents to review, agreement between LLM and people.")

TaxonomyOption = Annotated[Optional[int], typer.Option("--taxonomy", "-t", help="Taxonomy version (default: latest).")]


def parse_mix(text: str) -> dict[str, float]:
    """"disagreement=0.3,least_confident=0.5,stratified=0.2" -> shares."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, share = part.partition("=")
        try:
            mix[name.strip()] = float(share)
        except ValueError:
            raise typer.BadParameter(f"{part!r}: expected STRATEGY=SHARE, e.g. least_confident=0.5") from None
    return mix


@app.command()
def sample(
    n: Annotated[int, typer.Argument(min=1, help="How many documents to choose.")],
    workspace: WorkspaceOption,
    taxonomy: TaxonomyOption = None,
    mix: Annotated[
        Optional[str],
        typer.Option("--mix", help="Shares of the strategies, e.g. disagreement=0.3,least_confident=0.6,stratified=0.1 (the default)."),
    ] = None,
    pool: Annotated[int, typer.Option("--pool", min=1, help="Unreviewed documents scored per sample.")] = 20_000,
    seed: Annotated[int, typer.Option("--seed", help="Seed for ties and the candidate pool.")] = 0,
    blind_share: Annotated[
        float, typer.Option("--blind-share", min=0, max=1, help="Share of the tasks `tnt ls push` sends without any prediction.")
    ] = 0.0,
) -> None:
    """Choose N unreviewed documents: LLM-vs-classifier disagreements, least confident, and every label; each with its reason."""
    from tnt.review.sampling import sample_for_review

    with open_workspace(workspace) as ws:
        try:
            result = sample_for_review(ws, n, taxonomy_version=taxonomy, mix=parse_mix(mix) if mix else None, pool=pool, seed=seed,
                                       blind_share=blind_share)  # fmt: skip
        except ValueError as exc:
            fail(str(exc))
    scored_by = f"classifier {result.classifier}" if result.classifier else "no classifier yet (LLM labels only)"
    reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(result.counts.items()))
    console.print(
        f"Review sample {result.run_id}: {len(result.picks)} of {result.candidates} candidates "
        f"(taxonomy v{result.taxonomy_version}, {scored_by}): {reasons}"
    )
    blind = sum(bool(pick.detail.get("blind")) for pick in result.picks)
    said_blind = f"{blind} of them blind (pushed without a prediction). " if blind else ""
    console.print(said_blind + "Push it to Label Studio with `tnt ls push`.")


@app.command()
def agreement(
    workspace: WorkspaceOption,
    taxonomy: TaxonomyOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
    top: Annotated[int, typer.Option("--top", help="Most frequent confusions shown.")] = 10,
    reference: Annotated[
        Optional[int],
        typer.Option("--reference", help="A version with people's labels (e.g. from ingest --label-field): AMI and the label mapping against it."),
    ] = None,
) -> None:
    """LLM vs human: Cohen's kappa, accuracy, macro-F1, per-label scores and confusions; human vs human where several annotated; AMI against --reference."""
    from tnt.review.agreement import agreement as compute_agreement
    from tnt.review.agreement import agreement_with_reference

    with open_workspace(workspace) as ws:
        report = compute_agreement(ws, taxonomy)
        try:
            against = agreement_with_reference(ws, reference, taxonomy) if reference is not None else None
        except ValueError as exc:
            fail(str(exc))
    if as_json:
        print(json.dumps(report.to_dict() | ({"reference": against.to_dict()} if against else {}), indent=2))
        return
    compared = (("LLM vs human", report.llm_vs_human), ("  blind tasks", report.llm_vs_human_blind),
                ("  prediction shown", report.llm_vs_human_shown), ("human vs human", report.human_vs_human))
    pairs = [(name, pair) for name, pair in compared if pair is not None and (pair.documents or against is None)]  # fmt: skip
    if pairs:
        table = Table("comparison", "documents", "Cohen's κ", "accuracy", "macro-F1", title=f"Agreement, taxonomy v{report.taxonomy_version}")
        for name, pair in pairs:
            table.add_row(name, str(pair.documents), _num(pair.kappa), _num(pair.accuracy), _num(pair.macro_f1))
        console.print(table)
    if report.llm_vs_human.per_label:
        labels = Table("label (human)", "support", "LLM precision", "LLM recall", "F1", title="Per label, LLM against people")
        for label, scores in sorted(report.llm_vs_human.per_label.items(), key=lambda item: -item[1]["support"]):
            labels.add_row(label, str(scores["support"]), *(_num(scores[k]) for k in ("precision", "recall", "f1")))
        console.print(labels)
    if report.llm_vs_human.confusions:
        confusions = Table("human said", "LLM said", "documents", title="Most frequent disagreements")
        for human, llm, count in report.llm_vs_human.confusions[:top]:
            confusions.add_row(human, llm, str(count))
        console.print(confusions)
    if against:
        print_reference_agreement(against)


def print_reference_agreement(against: "ReferenceAgreement") -> None:
    console.print(
        f"Taxonomy v{against.taxonomy_version} against the human labels of v{against.reference_version}: "
        f"AMI {against.ami:.3f} over {against.documents:,} documents"
    )
    mapping = Table(Column("label", overflow="fold"), "documents",
                    Column(f"most frequent v{against.reference_version} label", overflow="fold"), "share",
                    title="Each label's most frequent reference label")  # fmt: skip
    for label, row in against.mapping.items():
        mapping.add_row(label, str(row["count"]), row["reference"], f"{row['share']:.2f}")
    console.print(mapping)


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"
