"""The whole loop on a shipped BANKING77 sample: ingest → taxonomy → labels → train → tag → select → report.

Offline (a ``local/`` model, the default) no LLM is called: a 135M model cannot tell 77 banking
intents apart, so its taxonomy and labels would be noise. The taxonomy comes from k-means on MiniLM
embeddings with clusters named by c-TF-IDF keywords (BERTopic's recipe), and each document's cluster
is its label (stored as source ``model``, origin ``cluster:<run>``). With a provider model string the
TnT-LLM loop proposes the taxonomy and the LLM labels a sample. Either way a MiniLM tagger is
distilled from those labels, tags the corpus, a balanced selection is drawn, and the report compares
the labels with the sample's own intents (imported as a reference taxonomy with human labels).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tnt.corpus.store import DocumentStore
from tnt.distill.tag import tag_corpus
from tnt.distill.train import train
from tnt.labels.labeling import label_documents
from tnt.llm.local import LOCAL_PREFIX
from tnt.report import build_report
from tnt.review.agreement import agreement_with_reference
from tnt.select import SelectionSpec, select
from tnt.taxonomy.guardrails import TaxonomyLimits
from tnt.taxonomy.pipeline import ClusterOptions, GenerateOptions, cluster_taxonomy, generate_taxonomy
from tnt.taxonomy.proposer import ProposerSettings
from tnt.taxonomy.store import TaxonomyStore

if TYPE_CHECKING:
    from tnt.llm.gateway import LLMSettings
    from tnt.workspace import Workspace

_PACKAGE_DIR = Path(__file__).parent
SAMPLE_CANDIDATES = (
    _PACKAGE_DIR / "_demo_data" / "banking77_sample.csv",
    _PACKAGE_DIR.parent / "data" / "banking77-sample" / "banking77_sample.csv",
)
USE_CASE = "Find the customer's intent in online-banking support queries, to route them to the right team."

Step = Callable[[str], None]


@dataclass
class DemoPlan:
    # Offline: None clusters as many as the imported taxonomy has intents, so AMI compares like with like.
    clusters: int | None = None
    # With a provider: sized so one minibatch and a short table finish in minutes.
    taxonomy_sample: int = 100
    minibatch: int = 80
    max_labels: int = 6
    max_description_words: int = 12
    label_sample: int = 40
    selection_size: int = 500
    seed: int = 0


@dataclass
class DemoResult:
    workspace: Path
    artefacts: dict[str, str] = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)


def sample_path() -> Path:
    for path in SAMPLE_CANDIDATES:
        if path.is_file():
            return path
    raise FileNotFoundError("the BANKING77 demo sample is missing from this installation")


def uses_llm(settings: LLMSettings) -> bool:
    """Whether the demo calls the LLM: a provider model, not the small local one."""
    return not settings.model.startswith(LOCAL_PREFIX)


def run_demo(
    workspace: Workspace, settings: LLMSettings, plan: DemoPlan | None = None, on_step: Step = lambda message: None
) -> DemoResult:
    plan = plan or DemoPlan()
    result = DemoResult(workspace.directory.resolve())

    on_step("Ingesting the BANKING77 sample (its intents become a reference taxonomy with human labels)")
    summary = workspace.ingest([sample_path()], label_field="category")
    reference = summary.taxonomy_version
    assert reference is not None  # the sample has a category column
    result.figures["documents"] = str(DocumentStore(workspace).count())
    result.figures["reference"] = f"taxonomy version {reference}: {summary.taxonomy_labels} imported intents"

    if uses_llm(settings):
        version = _taxonomy_from_llm(workspace, settings, plan, result, on_step)
    else:
        version = _taxonomy_from_clusters(workspace, settings, plan, reference, result, on_step)

    on_step("Distilling a tagger (MiniLM embeddings + logistic regression) from those labels")
    trained = train(workspace, version, kind="embed-linear", seed=plan.seed)
    metrics = trained.metrics
    result.figures["tagger"] = f"{trained.model.id}: accuracy {metrics['accuracy']:.2f} on {metrics['reference']} ({metrics['n']} documents)"

    on_step("Tagging the whole corpus with the distilled tagger")
    tagged = tag_corpus(workspace, trained.model.id)
    result.figures["tagged"] = f"{tagged.documents} documents"
    against = agreement_with_reference(workspace, reference, version)
    result.figures["tags vs intents"] = f"AMI {against.ami:.3f} on {against.documents} documents"

    on_step(f"Selecting {plan.selection_size} documents, balanced across labels (T = 0.5)")
    selection_path = workspace.directory / "selection.jsonl"
    select(workspace, SelectionSpec(size=plan.selection_size, temperature=0.5, seed=plan.seed), out=selection_path)
    result.artefacts["selection"] = str(selection_path.resolve())

    on_step("Writing the report")
    result.artefacts["report"] = str(build_report(workspace).resolve())
    result.artefacts["model"] = str(Path(trained.model.path).resolve())
    result.artefacts["database"] = str(workspace.path.resolve())
    return result


def _taxonomy_from_clusters(
    workspace: Workspace, settings: LLMSettings, plan: DemoPlan, reference: int, result: DemoResult, on_step: Step
) -> int:
    k = plan.clusters or len(TaxonomyStore(workspace).get(reference).leaves)
    on_step(f"Clustering every document: MiniLM embeddings, k-means with k = {k}, names from c-TF-IDF keywords (no LLM)")
    options = ClusterOptions(
        use_case=USE_CASE,
        k=k,
        namer="keywords",
        summarize=False,
        seed=plan.seed,
        limits=TaxonomyLimits(max_labels=k),
        reference=reference,
    )
    outcome = cluster_taxonomy(workspace, options, settings)
    taxonomy = outcome.taxonomy
    result.figures["taxonomy"] = f"version {taxonomy.version}: {len(taxonomy.names)} clusters, e.g. " + "; ".join(taxonomy.names[:3])
    result.figures["labels"] = f"{outcome.stats['documents']} cluster assignments (source model, origin cluster:{taxonomy.run_id})"
    result.figures["clusters vs intents"] = f"AMI {outcome.stats['ami_labels']:.3f}"
    assert taxonomy.version is not None
    return taxonomy.version


def _taxonomy_from_llm(workspace: Workspace, settings: LLMSettings, plan: DemoPlan, result: DemoResult, on_step: Step) -> int:
    on_step(f"Proposing a taxonomy from {plan.taxonomy_sample} documents with {settings.model} (TnT-LLM)")
    options = GenerateOptions(
        use_case=USE_CASE,
        sample=plan.taxonomy_sample,
        limits=TaxonomyLimits(max_labels=plan.max_labels, max_description_words=plan.max_description_words),
        proposer=ProposerSettings(batch_size=plan.minibatch, epochs=1, seed=plan.seed),
        summarize=False,
    )
    taxonomy = generate_taxonomy(workspace, options, settings)
    result.figures["taxonomy"] = f"version {taxonomy.version}: " + ", ".join(taxonomy.names)
    assert taxonomy.version is not None

    on_step(f"Labeling {plan.label_sample} documents with the LLM")
    sample_ids = [doc.id for doc in DocumentStore(workspace).sample(plan.label_sample, plan.seed)]
    labeled = label_documents(workspace, taxonomy.version, sample_ids, settings)
    result.figures["labels"] = f"LLM: {labeled.labeled} new, {labeled.skipped} reused, {labeled.failed} failed"
    return taxonomy.version
