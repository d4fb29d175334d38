"""The whole loop on a shipped BANKING77 sample: ingest → taxonomy → label → train → tag → select → report.

Offline by default (the local GGUF model proposes and labels, MiniLM embeddings distil the tagger);
``settings`` with a provider model string runs the same steps for real. Every step is resumable, so
running the demo again reuses the LLM cache and finishes in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tnt.corpus.ingest import DocumentStore
from tnt.distill.tag import tag_corpus
from tnt.distill.train import train
from tnt.labels.labeling import label_documents
from tnt.llm.gateway import LLMSettings
from tnt.report import build_report
from tnt.select import SelectionSpec, select
from tnt.taxonomy.guardrails import TaxonomyLimits
from tnt.taxonomy.pipeline import GenerateOptions, generate_taxonomy
from tnt.taxonomy.proposer import ProposerSettings
from tnt.workspace import Workspace

_PACKAGE_DIR = Path(__file__).parent
SAMPLE_CANDIDATES = (
    _PACKAGE_DIR / "_demo_data" / "banking77_sample.csv",
    _PACKAGE_DIR.parent / "data" / "banking77-sample" / "banking77_sample.csv",
)
USE_CASE = "Find the customer's intent in online-banking support queries, to route them to the right team."


@dataclass
class DemoPlan:
    # Sized so a 135M model on 2 CPU cores finishes in minutes: one minibatch, short descriptions.
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


def run_demo(
    workspace: Workspace,
    settings: LLMSettings,
    plan: DemoPlan | None = None,
    on_step: Callable[[str], None] = lambda message: None,
) -> DemoResult:
    plan = plan or DemoPlan()
    result = DemoResult(workspace.directory.resolve())

    on_step("Ingesting the BANKING77 sample (its intents are kept as the human gold set)")
    summary = workspace.ingest([sample_path()], label_field="category")
    result.figures["documents"] = str(DocumentStore(workspace).count())
    result.figures["gold taxonomy"] = f"version {summary.taxonomy_version}"

    on_step(f"Proposing a taxonomy from {plan.taxonomy_sample} documents with {settings.model}")
    options = GenerateOptions(
        use_case=USE_CASE,
        sample=plan.taxonomy_sample,
        limits=TaxonomyLimits(max_labels=plan.max_labels, max_description_words=plan.max_description_words),
        proposer=ProposerSettings(batch_size=plan.minibatch, epochs=1, seed=plan.seed),
        summarize=False,
    )
    taxonomy = generate_taxonomy(workspace, options, settings)
    result.figures["taxonomy"] = f"version {taxonomy.version}: " + ", ".join(taxonomy.names)

    on_step(f"Labeling {plan.label_sample} documents with the LLM")
    sample_ids = [doc.id for doc in DocumentStore(workspace).sample(plan.label_sample, plan.seed)]
    labeled = label_documents(workspace, taxonomy.version, sample_ids, settings)
    result.figures["LLM labels"] = f"{labeled.labeled} new, {labeled.skipped} reused, {labeled.failed} failed"

    on_step("Distilling a tagger (MiniLM embeddings + logistic regression) from the LLM labels")
    trained = train(workspace, taxonomy.version, kind="embed-linear", seed=plan.seed)
    result.figures["tagger"] = f"{trained.model.id} (accuracy {trained.metrics.get('accuracy', float('nan')):.2f} vs LLM labels)"

    on_step("Tagging the whole corpus with the distilled tagger")
    tagged = tag_corpus(workspace, trained.model.id)
    result.figures["tagged"] = f"{tagged.documents} documents"

    on_step(f"Selecting {plan.selection_size} documents, balanced across labels (T = 0.5)")
    selection_path = workspace.directory / "selection.jsonl"
    select(workspace, SelectionSpec(size=plan.selection_size, temperature=0.5, seed=plan.seed), out=selection_path)
    result.artefacts["selection"] = str(selection_path.resolve())

    on_step("Writing the report")
    result.artefacts["report"] = str(build_report(workspace).resolve())
    result.artefacts["model"] = str(trained.model.path)
    result.artefacts["database"] = str(workspace.path.resolve())
    return result
