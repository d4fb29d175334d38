"""``tnt status``: where a workspace stands, on one screen, like ``git status``.

The current (latest) taxonomy version and its lineage; for it, the documents each source labeled and
those waiting for a label after a migration; what is stale (labels not yet migrated, a model older
than its labels, a Label Studio project on an older version, a review sample not pushed); the LLM
spend; runs still running or interrupted; and the one command to run next. Reading only: nothing
here changes the workspace.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tnt.distill.store import ModelInfo, latest_model
from tnt.labels.pending import PendingLabels
from tnt.labels.store import SOURCES, CurrentSummary, LabelStore
from tnt.llm.log import call_summary
from tnt.review.labelstudio import ProjectLinks
from tnt.taxonomy.store import Taxonomy, TaxonomyStore

if TYPE_CHECKING:
    from tnt.workspace import Workspace

MIGRATE_RUN = "taxonomy.migrate"
UNFINISHED = ("running", "interrupted")


@dataclass
class Step:
    """One version of the lineage: the current one first, then its parent, and so on."""

    version: int
    method: str
    parent: int | None
    created_at: str | None


@dataclass
class Stale:
    kind: str  # migration | model | label-studio | review-sample
    message: str


@dataclass
class NextCommand:
    command: str
    why: str


@dataclass
class Spend:
    cost: float  # dollars of every call with a known price
    calls: int
    unknown_price_calls: bool  # some sent call had no price: the true spend is higher


@dataclass
class WorkspaceStatus:
    workspace: str
    documents: int
    taxonomy_version: int | None
    lineage: list[Step] = field(default_factory=list)
    labeled: dict[str, int] = field(default_factory=dict)  # source -> documents with a current label
    pending: dict[str, dict[str, int]] = field(default_factory=dict)  # source -> reason -> open documents
    model: str | None = None  # the version's newest distilled model
    stale: list[Stale] = field(default_factory=list)
    spend: Spend = field(default_factory=lambda: Spend(0.0, 0, False))
    unfinished_runs: list[dict[str, Any]] = field(default_factory=list)  # id, kind, status, started_at
    next: NextCommand | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def workspace_status(workspace: Workspace) -> WorkspaceStatus:
    status = WorkspaceStatus(str(workspace.directory), workspace.documents.count(), None)
    status.spend = _spend(workspace)
    status.unfinished_runs = [
        {key: run[key] for key in ("id", "kind", "status", "started_at")}
        for run in workspace.runs.list() if run["status"] in UNFINISHED
    ]  # fmt: skip
    versions = TaxonomyStore(workspace).all()
    if versions:
        _describe_version(workspace, status, versions)
    status.next = next_command(workspace, status)
    return status


def _describe_version(workspace: Workspace, status: WorkspaceStatus, versions: list[Taxonomy]) -> None:
    by_version = {t.version: t for t in versions}
    current = versions[-1]
    assert current.version is not None
    status.taxonomy_version = current.version
    status.lineage = _lineage(current, by_version)
    labels = {source: summary for source, summary in LabelStore(workspace).current_summary(current.version).items() if source in SOURCES}
    status.labeled = {source: labels[source].documents if source in labels else 0 for source in SOURCES}
    status.pending = pending_counts(workspace, current.version)
    model = latest_model(workspace, current.version)
    status.model = model.id if model else None
    status.stale = stale_items(workspace, current, labels, model)


def _lineage(current: Taxonomy, by_version: dict[int | None, Taxonomy]) -> list[Step]:
    steps: list[Step] = []
    taxonomy: Taxonomy | None = current
    while taxonomy is not None and taxonomy.version is not None and all(s.version != taxonomy.version for s in steps):
        steps.append(Step(taxonomy.version, taxonomy.method, taxonomy.parent, taxonomy.created_at))
        taxonomy = by_version.get(taxonomy.parent)
    return steps


def pending_counts(workspace: Workspace, version: int) -> dict[str, dict[str, int]]:
    """Open pending documents per reason: for the LLM every one (``tnt label --pending`` asks about
    them all), for people those whose human label did not carry (the rest never had one)."""
    pending = PendingLabels(workspace)
    counts = {"llm": pending.counts(version, "llm"), "human": {}}
    for item in pending.open(version, "human"):
        if "human" in item.sources:
            counts["human"][item.reason] = counts["human"].get(item.reason, 0) + 1
    return {source: by_reason for source, by_reason in counts.items() if by_reason}


def _spend(workspace: Workspace) -> Spend:
    rows = call_summary(workspace)
    return Spend(
        cost=sum(row["cost"] or 0.0 for row in rows),
        calls=sum(row["calls"] for row in rows),
        unknown_price_calls=any(row["cost"] is None and row["sent"] for row in rows),
    )


# What is stale


def stale_items(workspace: Workspace, current: Taxonomy, labels: dict[str, CurrentSummary], model: ModelInfo | None) -> list[Stale]:
    assert current.version is not None
    found: list[Stale] = []
    if needs_migration(workspace, current, labels):
        found.append(Stale(
            "migration",
            f"v{current.parent} has labels that were not carried to v{current.version}: "
            f"run `tnt taxonomy migrate {current.version}`",
        ))  # fmt: skip
    if model is not None and (newest := newest_label(labels)) and newest > model.created_at:
        found.append(Stale("model", f"model {model.id} is older than the labels of v{current.version} (newest {newest})"))
    links = ProjectLinks(workspace).all()
    if links and not any(link.taxonomy_version == current.version for link in links):
        older = ", ".join(f"{link.project_id} (v{link.taxonomy_version})" for link in links)
        found.append(Stale("label-studio", f"Label Studio project(s) {older} use an older version than v{current.version}"))
    sample = latest_sample_run(workspace, current.version)
    if sample is not None and not sample_pushed(workspace, current.version, sample):
        found.append(Stale("review-sample", f"review sample {sample['id']} of v{current.version} is not in Label Studio yet"))
    return found


def needs_migration(workspace: Workspace, taxonomy: Taxonomy, labels: dict[str, CurrentSummary]) -> bool:
    """The version's parent has labels, and no migration ran for the version or carried any of them."""
    if taxonomy.parent is None or not workspace.labels.count(taxonomy.parent):
        return False
    migrated = any(
        run["status"] == "completed" and workspace.runs.get(run["id"])["params"].get("version") == taxonomy.version
        for run in workspace.runs.list(MIGRATE_RUN)
    )
    carried = any(summary.carried for summary in labels.values())
    return not (migrated or carried or PendingLabels(workspace).all(taxonomy.version))


def newest_label(labels: dict[str, CurrentSummary]) -> str | None:
    """When the newest current LLM or human label of the version was given: what a model learns."""
    return max((labels[source].newest for source in ("llm", "human") if source in labels and labels[source].newest), default=None)


def latest_sample_run(workspace: Workspace, version: int) -> dict[str, Any] | None:
    samples = [
        run for run in workspace.runs.list("review-sample")
        if run["status"] == "completed" and workspace.runs.get(run["id"])["params"].get("taxonomy_version") == version
    ]  # fmt: skip
    return samples[-1] if samples else None


def sample_pushed(workspace: Workspace, version: int, sample: dict[str, Any]) -> bool:
    """A push for the version's project after the sample was drawn (``tnt ls push`` updates the link)."""
    return any(
        link.taxonomy_version == version and link.updated_at >= sample["finished_at"]
        for link in ProjectLinks(workspace).all()
    )


# The next command


def next_command(workspace: Workspace, status: WorkspaceStatus) -> NextCommand | None:
    """The first step of the pipeline that applies; None when everything is up to date."""
    version = status.taxonomy_version
    if not status.documents:
        return NextCommand("tnt ingest FILE --id-field id", "the workspace has no documents")
    if version is None:
        return NextCommand('tnt taxonomy generate --use-case "..."', "there is no taxonomy yet")
    stale = {item.kind for item in status.stale}
    if "migration" in stale:
        return NextCommand(f"tnt taxonomy migrate {version}", f"the labels of v{status.lineage[0].parent} wait to be carried to v{version}")
    if waiting := sum(status.pending.get("llm", {}).values()):
        return NextCommand(f"tnt label -t {version} --pending", f"{waiting} document(s) need an LLM label after the migration")
    if not status.labeled["llm"]:
        return NextCommand(f"tnt label -t {version} --sample {min(status.documents, 1000)}", f"nothing is labeled with v{version} yet")
    if review_due(workspace, status):
        return NextCommand(f"tnt review sample 100 -t {version}", f"people have not reviewed v{version} yet")
    if "review-sample" in stale:
        return NextCommand(f"tnt ls push -t {version}", "the latest review sample is not in Label Studio yet")
    if status.model is None:
        return NextCommand(f"tnt train --taxonomy {version}", f"no model has learned the labels of v{version} yet")
    if "model" in stale:
        return NextCommand(f"tnt train --taxonomy {version}", "the labels changed since the model was trained")
    if _tagged(workspace, version, status.model) < status.documents:
        return NextCommand(f"tnt tag --corpus --model {status.model}", "the corpus is not tagged by the newest model")
    if not _selected_since_tagging(workspace):
        return NextCommand("tnt select --size N --out selection.jsonl", "the newest tags are not in a selection yet")
    return None


def review_due(workspace: Workspace, status: WorkspaceStatus) -> bool:
    """Documents whose human label was split wait outside any sample, or nobody reviewed the version."""
    from tnt.review.sampling import ReviewSamples, open_migration_reviews

    version = status.taxonomy_version
    assert version is not None
    sampled = ReviewSamples(workspace).doc_ids(version)
    if any(item.doc_id not in sampled for item in open_migration_reviews(workspace, version)):
        return True
    return not status.labeled["human"] and not sampled


def _tagged(workspace: Workspace, version: int, model_id: str) -> int:
    """Documents ``tnt tag --corpus`` labeled with the model."""
    summary = LabelStore(workspace).current_summary(version, origins_like=f"model:{model_id}").get("model")
    return summary.documents if summary else 0


def _selected_since_tagging(workspace: Workspace) -> bool:
    tagged = workspace.runs.last("tag")
    selected = [run for run in workspace.runs.list("select") if run["status"] == "completed"]
    return bool(selected) and (tagged is None or selected[-1]["started_at"] > tagged["started_at"])
