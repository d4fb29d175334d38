"""Taxonomy commands as library functions: ``generate_taxonomy``, ``refine_taxonomy`` and their
``--dry-run`` estimates, and ``cluster_taxonomy``. They sample documents through the corpus API, run
the stages of ``tnt.taxonomy.proposer`` / ``refine`` / ``cluster`` inside a recorded run, and save
the result as a new taxonomy version.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from tnt.corpus.store import DocumentStore
from tnt.distill.encoders import DEFAULT_ENCODER
from tnt.labels.store import LabelRecord, LabelStore
from tnt.llm.gateway import Gateway, LLMSettings
from tnt.llm.prompts import PromptLibrary
from tnt.runs import Run, fingerprint
from tnt.taxonomy.cluster import (
    ClusterNamer,
    ClusterProposal,
    ClusterProposer,
    KMeansClusterer,
    Namer,
    default_embedder,
)
from tnt.taxonomy.guardrails import TaxonomyLimits, limited, typical_table_tokens
from tnt.taxonomy.keywords import KeywordNamer
from tnt.taxonomy.proposer import (
    RATING_TOKENS,
    ProposerSettings,
    TableAnswer,
    TableCaller,
    TaxonomyProposer,
    UpdateAnswer,
)
from tnt.taxonomy.refine import Correction, TaxonomyGrouper, TaxonomyRefiner
from tnt.taxonomy.store import Taxonomy, TaxonomyStore
from tnt.taxonomy.summarize import (
    MAX_OUTPUT_TOKENS as SUMMARY_TOKENS,
)
from tnt.taxonomy.summarize import (
    Summarizer,
    SummaryStore,
    TextItem,
    clip,
    sample_documents,
    summarize_with_store,
)

if TYPE_CHECKING:
    from tnt.workspace import Workspace

# A progress reporter: start(description, total) returns advance(n).
Reporter = Callable[[str, int], Callable[[int], None]]


class GenerateOptions(BaseModel):
    """Everything ``tnt taxonomy generate`` takes, one field per option."""

    use_case: str = Field(min_length=1)
    sample: int | None = Field(1000, ge=1, description="Documents drawn from the corpus; None: all.")
    limits: TaxonomyLimits = Field(default_factory=TaxonomyLimits)
    proposer: ProposerSettings = Field(default_factory=ProposerSettings)
    levels: int = Field(1, ge=1, le=2)
    max_groups: int | None = Field(None, ge=2)
    summarize: bool = True
    min_summary_chars: int = Field(500, ge=0, description="Shorter texts are used as they are.")
    retries: int = Field(5, ge=0)
    seed_version: int | None = Field(None, description="Start the update loop from this version.")
    prompts_dir: str | None = None


def generate_taxonomy(
    workspace: Workspace, options: GenerateOptions, settings: LLMSettings, progress: Reporter | None = None
) -> Taxonomy:
    """Summarise a sample, run generate → update → review, keep the best candidate, save a version."""
    with workspace.run("taxonomy.generate", options.model_dump()) as run:
        return asyncio.run(_generate(workspace, run, options, settings, progress))


async def _generate(
    workspace: Workspace, run: Run, options: GenerateOptions, settings: LLMSettings, progress: Reporter | None
) -> Taxonomy:
    gateway = Gateway(workspace, settings, run_id=run.id, stage="taxonomy")
    prompts = PromptLibrary(options.prompts_dir)
    store = TaxonomyStore(workspace)
    seed = store.get(options.seed_version) if options.seed_version is not None else None
    documents = sample_documents(workspace, options.sample, options.proposer.seed)
    items = await _summaries(workspace, run, gateway, prompts, options, documents, progress)
    caller = TableCaller(gateway, prompts, options.use_case, options.limits, options.retries)
    proposer = TaxonomyProposer(caller, options.proposer)
    advance = progress("taxonomy steps", _table_steps(proposer, len(items))) if progress else None
    on_step = (lambda _: advance(1)) if advance else None
    proposal = await proposer.propose(items, seed.leaves if seed else None, on_step)
    for failure in proposal.rejected_steps:
        run.record_issue(failure.stage, f"kept the table it was given: {failure.detail}")
    record_merges(run, caller)
    labels = proposal.labels
    if options.levels == 2:
        labels = await TaxonomyGrouper(caller, options.max_groups).group(labels)
    run.stats |= {
        "documents": len(documents),
        "candidates": [{"epoch": c.epoch, "score": c.score, "labels": len(c.labels)} for c in proposal.candidates],
        "update_ratings": proposal.update_ratings,
        "rejected_steps": [failure.stage for failure in proposal.rejected_steps],
        "score": proposal.score,
    }
    taxonomy = save_unless_held(
        store,
        run,
        Taxonomy(
            labels=labels,
            parent=seed.version if seed else None,
            method="tnt-llm",
            use_case=options.use_case,
            model=settings.model,
            params=_params(options, settings) | {"inputs": inputs_fingerprint(documents)},
            prompt_hashes=caller.used_prompts | ({"summarize": prompts.get("summarize").hash} if options.summarize else {}),
            score=proposal.score,
            run_id=run.id,
            note=f"{len(documents)} documents, best candidate from epoch {proposal.best.epoch} of {len(proposal.candidates)}",
        ),
    )
    run.stats["version"] = taxonomy.version
    return taxonomy


def save_unless_held(store: TaxonomyStore, run: Run, candidate: Taxonomy) -> Taxonomy:
    """A new version for ``candidate``, unless a version holds exactly this result already: the same
    labels from the same parent, method, model, parameters, inputs and prompts (a rerun whose answers
    all came from the cache). That version is returned and the run notes it as ``unchanged``."""
    held = store.find_by_content(candidate.method, candidate.content_hash())
    if held is None or _as_stored(held) != _as_stored(candidate):
        return store.save(candidate)
    run.stats["unchanged"] = f"version {held.version}"
    return held


def _as_stored(taxonomy: Taxonomy) -> str:
    """What makes a version's result, as JSON (a tuple in the params compares equal to its stored list)."""
    origin = taxonomy.model_dump(include={"parent", "use_case", "model", "params", "prompt_hashes"})
    return json.dumps(origin, sort_keys=True, default=str)


def inputs_fingerprint(documents: list[TextItem]) -> str:
    """Which documents a version was made from (their ids, in order)."""
    return fingerprint([doc.id for doc in documents])


async def _summaries(
    workspace: Workspace,
    run: Run,
    gateway: Gateway,
    prompts: PromptLibrary,
    options: GenerateOptions | ClusterOptions,
    documents: list[TextItem],
    progress: Reporter | None,
) -> list[str]:
    if not options.summarize:
        return [doc.text for doc in documents]
    summarizer = Summarizer(gateway, prompts, options.use_case, min_chars=options.min_summary_chars)
    advance = progress("summaries", len(documents)) if progress else None
    summaries = await summarize_with_store(SummaryStore(workspace), summarizer, documents, run.id, advance)
    for summary in summaries:
        if summary.origin == "fallback":
            run.record_issue(f"document {summary.doc_id}", f"summary failed, text used instead: {summary.error}")
    run.stats["summaries"] = dict(Counter(s.origin for s in summaries))
    return [s.summary for s in summaries]


def _table_steps(proposer: TaxonomyProposer, n_items: int) -> int:
    train, _ = proposer.split(["x"] * n_items)
    batches = -(-len(train) // proposer.settings.batch_size)
    return batches * proposer.settings.epochs + 1


def _params(options: GenerateOptions, settings: LLMSettings) -> dict[str, Any]:
    return options.model_dump(exclude={"use_case"}) | {"api_base": settings.api_base}


# --dry-run


def estimate_generate(workspace: Workspace, options: GenerateOptions, settings: LLMSettings) -> dict[str, Any]:
    """Requests, tokens and dollars a ``generate`` would spend (uncached requests only)."""
    gateway = Gateway(workspace, settings)
    prompts = PromptLibrary(options.prompts_dir)
    documents = sample_documents(workspace, options.sample, options.proposer.seed)
    summary_requests = []
    if options.summarize:
        summarizer = Summarizer(gateway, prompts, options.use_case, min_chars=options.min_summary_chars)
        stored = SummaryStore(workspace).get([d.id for d in documents], summarizer.key)
        summary_requests = summarizer.prepared([d for d in documents if d.id not in stored])
    caller = TableCaller(gateway, prompts, options.use_case, options.limits, options.retries)
    proposer = TaxonomyProposer(caller, options.proposer)
    # Items stand in for their summaries at summary length; tables at the size limit.
    items = [clip(d.text, 150 if options.summarize else options.proposer.item_max_chars) for d in documents]
    train, validation = proposer.split(items)
    table = [{"name": "label " * options.limits.max_name_words, "description": "word " * options.limits.max_description_words}] * options.limits.max_labels
    table_requests = []
    for epoch in range(options.proposer.epochs):
        for i, batch in enumerate(proposer.minibatches(train, epoch)):
            if epoch == 0 and i == 0 and options.seed_version is None:
                table_requests.append(caller.prepare("taxonomy_generate", limited(TableAnswer, options.limits), items=batch))
            else:
                table_requests.append(caller.prepare("taxonomy_update", limited(UpdateAnswer, options.limits), labels=table, items=batch))
    table_requests.append(caller.prepare("taxonomy_review", limited(TableAnswer, options.limits), labels=table))
    rate_batches = proposer.minibatches(validation, 0) * (options.proposer.epochs + 1)
    rate_requests = [caller.prepare("taxonomy_rate", TableAnswer, labels=table, items=b) for b in rate_batches]
    parts = [
        gateway.estimate(summary_requests, SUMMARY_TOKENS) if summary_requests else None,
        gateway.estimate(table_requests, typical_table_tokens(options.limits)),
        gateway.estimate(rate_requests, RATING_TOKENS) if rate_requests else None,
    ]
    total = add_estimates([p for p in parts if p])
    total["note"] = "tables at their size limit; guardrail retries and a --levels 2 grouping call come on top"
    return total


def add_estimates(parts: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {key: sum(p[key] for p in parts) for key in ("requests", "cached", "prompt_tokens", "completion_tokens")}
    costs = [p["cost"] for p in parts]
    total["cost"] = None if any(c is None for c in costs) else sum(costs)
    return total


# Refine


def refine_taxonomy(
    workspace: Workspace,
    feedback: str,
    settings: LLMSettings,
    *,
    version: int | None = None,
    limits: TaxonomyLimits | None = None,
    use_corrections: bool = True,
    retries: int = 5,
    prompts_dir: str | None = None,
) -> Taxonomy:
    """An LLM revision of ``version`` (latest by default) guided by feedback and human corrections."""
    store = TaxonomyStore(workspace)
    base = store.get(version)
    corrections = human_corrections(workspace, base.version) if use_corrections else []
    if not feedback.strip() and not corrections:
        raise ValueError("nothing to refine with: give --feedback, or correct some labels first")
    limits = limits or limits_for(base)
    params = {"feedback": feedback, "version": base.version, "limits": limits.model_dump(), "corrections": len(corrections)}
    with workspace.run("taxonomy.refine", params) as run:
        return asyncio.run(_refine(workspace, run, store, base, feedback, corrections, settings, limits, retries, prompts_dir))


async def _refine(
    workspace: Workspace,
    run: Run,
    store: TaxonomyStore,
    base: Taxonomy,
    feedback: str,
    corrections: list[Correction],
    settings: LLMSettings,
    limits: TaxonomyLimits,
    retries: int,
    prompts_dir: str | None,
) -> Taxonomy:
    gateway = Gateway(workspace, settings, run_id=run.id, stage="taxonomy_refine")
    caller = TableCaller(gateway, PromptLibrary(prompts_dir), base.use_case, limits, retries)
    refinement = await TaxonomyRefiner(caller).refine(base.leaves, feedback, corrections)
    changes, labels = refinement.changes, refinement.labels
    record_merges(run, caller)
    if len(base.leaves) != len(base.labels):  # two levels: group the revised leaves again
        labels = await TaxonomyGrouper(caller).group(labels)
    run.stats |= {"changes": changes, "corrections": [c.__dict__ for c in corrections],
                  "label_map": refinement.label_map.counts()}  # fmt: skip
    taxonomy = store.save(
        Taxonomy(
            labels=labels,
            parent=base.version,
            method="refine",
            use_case=base.use_case,
            model=settings.model,
            params={"feedback": feedback, "limits": limits.model_dump(), "corrections": len(corrections)},
            prompt_hashes=caller.used_prompts,
            run_id=run.id,
            note="; ".join(changes)[:1000],
            label_map=refinement.label_map,
        )
    )
    run.stats["version"] = taxonomy.version
    return taxonomy


def record_merges(run: Run, caller: TableCaller) -> None:
    for prompt, message in caller.merges:
        run.record_issue(prompt, message)


def limits_for(base: Taxonomy) -> TaxonomyLimits:
    """The limits the base was made under, widened so a hand-edited table is not rejected for its size."""
    limits = TaxonomyLimits(**base.params["limits"]) if "limits" in base.params else TaxonomyLimits()
    return limits.model_copy(update={"max_labels": max(limits.max_labels, len(base.leaves) + 2)})


def human_corrections(workspace: Workspace, version: int | None, max_pairs: int = 30) -> list[Correction]:
    """Where people's current label differs from the LLM's for the same document, counted per pair."""
    labels = LabelStore(workspace)
    llm = labels.current(version, "llm")
    human = labels.current(version, "human")
    pairs: Counter[tuple[str, str]] = Counter()
    example_doc: dict[tuple[str, str], str] = {}
    for doc_id, row in human.items():
        model_label = llm.get(doc_id, {}).get("label")
        if model_label and row["label"] and row["label"] != model_label:
            pair = (model_label, row["label"])
            pairs[pair] += 1
            example_doc.setdefault(pair, doc_id)
    top = pairs.most_common(max_pairs)
    texts = {doc.id: doc.text for doc in DocumentStore(workspace).get([example_doc[p] for p, _ in top])}
    return [Correction(p[0], p[1], n, clip(texts.get(example_doc[p], ""), 200)) for p, n in top]


# --method cluster


class ClusterOptions(BaseModel):
    """Everything ``tnt taxonomy generate --method cluster`` takes."""

    use_case: str = Field(min_length=1)
    k: int = Field(20, ge=2, description="Number of k-means clusters.")
    sample: int | None = Field(None, ge=1, description="Documents drawn from the corpus; None: all.")
    representatives: int = Field(10, ge=1, description="Members nearest each centre shown to the LLM namer.")
    namer: Literal["llm", "keywords"] = Field("llm", description="llm: the LLM names each cluster; keywords: c-TF-IDF, no LLM.")
    seed: int = 0
    limits: TaxonomyLimits = Field(default_factory=TaxonomyLimits)
    levels: int = Field(1, ge=1, le=2)
    max_groups: int | None = Field(None, ge=2)
    summarize: bool = True
    min_summary_chars: int = Field(500, ge=0)
    retries: int = Field(5, ge=0)
    reference: int | None = Field(None, description="A taxonomy version with people's labels: report AMI against it.")
    prompts_dir: str | None = None
    device: str | None = None

    @property
    def uses_llm(self) -> bool:
        """Whether an LLM may be called: to name, to summarise long texts, or to group the labels."""
        return self.namer == "llm" or self.summarize or self.levels == 2


@dataclass
class ClusterOutcome:
    taxonomy: Taxonomy
    stats: dict[str, Any]


def cluster_taxonomy(
    workspace: Workspace, options: ClusterOptions, settings: LLMSettings, progress: Reporter | None = None
) -> ClusterOutcome:
    """Embed, k-means, name the clusters (by the LLM or by keywords); save the version and each
    document's cluster label (source ``model``, origin ``cluster:<run>``: from clustering, not from an
    LLM or a person)."""
    with workspace.run("taxonomy.cluster", options.model_dump()) as run:
        taxonomy = asyncio.run(_cluster(workspace, run, options, settings, progress))
        return ClusterOutcome(taxonomy, run.stats)


async def _cluster(
    workspace: Workspace, run: Run, options: ClusterOptions, settings: LLMSettings, progress: Reporter | None
) -> Taxonomy:
    gateway = Gateway(workspace, settings, run_id=run.id, stage="taxonomy_cluster")
    prompts = PromptLibrary(options.prompts_dir)
    documents = sample_documents(workspace, options.sample, options.seed)
    texts = await _summaries(workspace, run, gateway, prompts, options, documents, progress)
    proposer = _cluster_proposer(gateway, prompts, options)
    started = time.perf_counter()
    clusters = proposer.cluster(texts)
    run.stats["embed_and_kmeans_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    proposal = await proposer.propose(texts, clusters=clusters)
    run.stats["naming_s"] = round(time.perf_counter() - started, 2)
    labels = proposal.labels
    if options.levels == 2:
        limits = options.limits.model_copy(update={"max_labels": max(options.limits.max_labels, len(labels))})
        caller = TableCaller(gateway, prompts, options.use_case, limits, options.retries)
        labels = await TaxonomyGrouper(caller, options.max_groups).group(labels)
    for name, merged in proposal.named.merged.items():
        run.record_issue("cluster naming", f"clusters {merged} kept the same name and were merged into {name!r}")
    embedder = f"{DEFAULT_ENCODER}:{proposer.embedder.runtime}"
    run.stats |= {"documents": len(documents), "clusters": options.k, "labels": len(proposal.labels)}
    if options.reference is not None:
        run.stats |= _agreement(workspace, options.reference, documents, proposal)
    taxonomy = save_unless_held(
        TaxonomyStore(workspace),
        run,
        Taxonomy(
            labels=labels,
            method="cluster",
            use_case=options.use_case,
            model=settings.model if options.uses_llm else None,
            params=options.model_dump(exclude={"use_case"})
            | {"embedder": embedder, "api_base": settings.api_base, "inputs": inputs_fingerprint(documents)},
            prompt_hashes=proposer.namer.prompt_hashes | ({"summarize": prompts.get("summarize").hash} if options.summarize else {}),
            run_id=run.id,
            note=f"k-means k={options.k} on {len(documents)} documents, names from {_NAMED_BY[options.namer]}",
        ),
    )
    run.stats["version"] = taxonomy.version
    if "unchanged" in run.stats:  # the version's run stored its documents' cluster labels
        return taxonomy
    LabelStore(workspace).add(
        LabelRecord(doc.id, "model", label, taxonomy.version, origin=f"cluster:{run.id}", run_id=run.id,
                    model=f"kmeans/{embedder}")
        for doc, label in zip(documents, proposal.assignments)
    )  # fmt: skip
    return taxonomy


_NAMED_BY = {"llm": "the LLM", "keywords": "c-TF-IDF keywords"}


def _cluster_proposer(gateway: Gateway, prompts: PromptLibrary, options: ClusterOptions) -> ClusterProposer:
    namer: Namer = (
        KeywordNamer(options.limits)
        if options.namer == "keywords"
        else ClusterNamer(gateway, prompts, options.use_case, options.limits, options.retries)
    )
    return ClusterProposer(default_embedder(options.device), KMeansClusterer(options.k, options.representatives, options.seed), namer)


def _agreement(workspace: Workspace, reference: int, documents: list[TextItem], proposal: ClusterProposal) -> dict[str, Any]:
    from tnt.labels.store import reference_labels
    from tnt.metrics import reference_agreement

    gold = reference_labels(workspace, reference)
    ids = [doc.id for doc in documents]
    cluster_ami, _ = reference_agreement(dict(zip(ids, map(str, proposal.clusters.assignments))), gold)
    label_ami, mapping = reference_agreement(dict(zip(ids, proposal.assignments)), gold)
    return {"ami_clusters": round(cluster_ami, 4), "ami_labels": round(label_ami, 4), "mapping": mapping}


def estimate_cluster(workspace: Workspace, options: ClusterOptions, settings: LLMSettings) -> dict[str, Any]:
    """Embeds and clusters for real (local, free), then prices the naming calls and summaries."""
    gateway = Gateway(workspace, settings)
    prompts = PromptLibrary(options.prompts_dir)
    documents = sample_documents(workspace, options.sample, options.seed)
    parts = []
    if options.summarize:
        summarizer = Summarizer(gateway, prompts, options.use_case, min_chars=options.min_summary_chars)
        stored = SummaryStore(workspace).get([d.id for d in documents], summarizer.key)
        if requests := summarizer.prepared([d for d in documents if d.id not in stored]):
            parts.append(gateway.estimate(requests, SUMMARY_TOKENS))
    texts = [d.text for d in documents]
    proposer = _cluster_proposer(gateway, prompts, options)
    clusters = proposer.cluster(texts)
    if naming := proposer.namer.prepared(texts, clusters):
        parts.append(gateway.estimate(naming, typical_table_tokens(options.limits, rows=1)))
    total = add_estimates(parts)
    total["note"] = "clusters computed on the texts; with summaries the naming prompts are shorter"
    return total
