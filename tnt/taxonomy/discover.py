"""``tnt taxonomy discover``: what the taxonomy misses, found in what the tagger could not place.

After ``tnt tag --corpus``, the documents the tagger put in Other or gave a confidence below a threshold
are embedded (MiniLM), reduced to a few dimensions (PCA) and clustered by density (HDBSCAN: the number of
clusters comes from the data, and documents in no dense region stay noise instead of being forced into
a cluster). Each cluster becomes a candidate label, named by the LLM from its most central members (one
call per cluster, whatever the corpus size) or by c-TF-IDF keywords offline, with its size, its share of
the corpus, example documents and the existing label it sits closest to. Accepted candidates become a
new version whose parent is the current one, which migrates like any other edit.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from tnt.distill.corpus_tags import corpus_tags
from tnt.llm.gateway import Gateway, LLMSettings
from tnt.llm.prompts import PromptLibrary
from tnt.runs import WorkspaceError
from tnt.taxonomy.cluster import ClusterNamer, Clusters, Namer, default_embedder, unit_rows
from tnt.taxonomy.file import dump_taxonomy
from tnt.taxonomy.guardrails import TaxonomyLimits
from tnt.taxonomy.keywords import KeywordNamer
from tnt.taxonomy.store import OTHER_LABEL, Taxonomy, TaxonomyLabel, TaxonomyStore

if TYPE_CHECKING:
    from tnt.workspace import Workspace

REDUCED_DIMENSIONS = 20


class DiscoverOptions(BaseModel):
    """Everything ``tnt taxonomy discover`` takes."""

    threshold: float = Field(0.5, ge=0, le=1, description="Documents tagged below this confidence count as unplaced.")
    min_cluster_size: int | None = Field(None, ge=2, description="Smallest candidate; None: 1 % of the unplaced, at least 10.")
    namer: Literal["llm", "keywords"] = "llm"
    examples: int = Field(5, ge=1)
    representatives: int = Field(10, ge=1, description="Members nearest each centre shown to the LLM namer.")
    use_case: str | None = None  # default: the taxonomy's
    taxonomy_version: int | None = None
    model_id: str | None = None
    seed: int = 0
    limits: TaxonomyLimits = Field(default_factory=TaxonomyLimits)
    retries: int = Field(5, ge=0)
    prompts_dir: str | None = None
    device: str | None = None


@dataclass
class Candidate:
    number: int  # 1-based, as `--accept` takes it
    name: str
    description: str
    size: int
    share: float  # of the tagged corpus
    examples: list[str]
    closest: str | None  # the existing label nearest the cluster's centre
    similarity: float  # cosine between the centre and that label's name and description
    doc_ids: list[str] = field(default_factory=list)


@dataclass
class Discovery:
    taxonomy: Taxonomy
    model_id: str
    corpus: int
    unplaced: int
    noise: int
    candidates: list[Candidate]
    run_id: str | None = None

    def stats(self) -> dict[str, Any]:
        return {
            "taxonomy_version": self.taxonomy.version, "model": self.model_id, "corpus": self.corpus,
            "unplaced": self.unplaced, "noise": self.noise,
            "candidates": [{k: v for k, v in asdict(c).items() if k != "doc_ids"} for c in self.candidates],
        }  # fmt: skip


@dataclass
class Unplaced:
    taxonomy: Taxonomy
    model_id: str
    corpus: int
    doc_ids: list[str]
    texts: list[str]


def unplaced_documents(workspace: Workspace, options: DiscoverOptions) -> Unplaced:
    """The tagged documents in Other or below the confidence threshold."""
    from tnt.corpus.store import DocumentStore

    tags = corpus_tags(workspace, options.taxonomy_version, options.model_id)
    taxonomy = TaxonomyStore(workspace).get(tags.taxonomy_version)
    ids = sorted(
        doc_id for doc_id, row in tags.rows.items()
        if row["label"] == OTHER_LABEL or (row["confidence"] is not None and row["confidence"] < options.threshold)
    )  # fmt: skip
    texts = {doc.id: doc.text for doc in DocumentStore(workspace).get(ids)}
    return Unplaced(taxonomy, tags.model_id, len(tags.rows), ids, [texts[i] for i in ids])


def density_clusters(vectors: np.ndarray, min_cluster_size: int, representatives: int, seed: int = 0) -> tuple[Clusters, np.ndarray]:
    """HDBSCAN over a PCA of the unit vectors: (the clusters of the clustered documents, the index of
    each clustered document among ``vectors``); the rest is noise."""
    from sklearn.cluster import HDBSCAN
    from sklearn.decomposition import PCA

    unit = unit_rows(vectors)
    dimensions = min(REDUCED_DIMENSIONS, len(unit) - 1, unit.shape[1])
    reduced = PCA(dimensions, random_state=seed).fit_transform(unit) if dimensions >= 2 else unit
    found = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min(5, min_cluster_size), copy=True).fit_predict(reduced)
    members = np.flatnonzero(found >= 0)
    assignments = found[members]
    reps = []
    for cluster in range(int(assignments.max()) + 1 if len(members) else 0):
        inside = np.flatnonzero(assignments == cluster)
        centre = unit[members[inside]].mean(axis=0)
        reps.append(inside[np.argsort(-(unit[members[inside]] @ centre))][:representatives].tolist())
    return Clusters(assignments.astype(int), reps), members


def discover_labels(workspace: Workspace, options: DiscoverOptions, settings: LLMSettings) -> Discovery:
    """Cluster the unplaced documents and turn each cluster into a candidate label (a run)."""
    unplaced = unplaced_documents(workspace, options)
    with workspace.run("taxonomy.discover", options.model_dump() | {"model": settings.model}) as run:
        discovery = asyncio.run(_discover(workspace, unplaced, options, settings, run.id))
        discovery.run_id = run.id
        run.stats = discovery.stats()
    return discovery


def estimate_discover(workspace: Workspace, options: DiscoverOptions) -> dict[str, int]:
    """Embeds and clusters for real (local, free): how many candidates, so how many LLM calls."""
    unplaced = unplaced_documents(workspace, options)
    clusters, members, _ = _cluster_unplaced(unplaced, options, default_embedder(options.device))
    calls = len(clusters.representatives) if options.namer == "llm" else 0
    return {"corpus": unplaced.corpus, "unplaced": len(unplaced.doc_ids), "clusters": len(clusters.representatives),
            "noise": len(unplaced.doc_ids) - len(members), "llm_calls": calls}  # fmt: skip


def _cluster_unplaced(unplaced: Unplaced, options: DiscoverOptions, embedder: Any) -> tuple[Clusters, np.ndarray, np.ndarray]:
    """(clusters, index of each clustered document among the unplaced, unit vectors of the unplaced)."""
    if len(unplaced.texts) < 2:
        return Clusters(np.zeros(0, dtype=int), []), np.zeros(0, dtype=int), np.zeros((len(unplaced.texts), 1))
    vectors = unit_rows(embedder.encode(unplaced.texts))
    size = min(options.min_cluster_size or max(10, len(unplaced.texts) // 100), len(unplaced.texts))
    clusters, members = density_clusters(vectors, size, options.representatives, options.seed)
    return clusters, members, vectors


async def _discover(workspace: Workspace, unplaced: Unplaced, options: DiscoverOptions, settings: LLMSettings, run_id: str) -> Discovery:
    embedder = default_embedder(options.device)
    clusters, members, vectors = _cluster_unplaced(unplaced, options, embedder)
    candidates: list[Candidate] = []
    if clusters.representatives:
        texts = [unplaced.texts[i] for i in members]
        gateway = Gateway(workspace, settings, run_id=run_id, stage="taxonomy_discover")
        named = await _namer(gateway, options, unplaced.taxonomy).name(texts, clusters)
        candidates = _candidates(unplaced, clusters, members, vectors, named.label_of_cluster, named.labels, embedder, options)
    noise = len(unplaced.texts) - len(members)
    return Discovery(unplaced.taxonomy, unplaced.model_id, unplaced.corpus, len(unplaced.texts), noise, candidates)


def _namer(gateway: Gateway, options: DiscoverOptions, taxonomy: Taxonomy) -> Namer:
    if options.namer == "keywords":
        return KeywordNamer(options.limits)
    use_case = options.use_case or taxonomy.use_case or "what the documents are about"
    return ClusterNamer(gateway, PromptLibrary(options.prompts_dir), use_case, options.limits, options.retries)


def _candidates(
    unplaced: Unplaced, clusters: Clusters, members: np.ndarray, vectors: np.ndarray, label_of_cluster: list[str],
    labels: list[TaxonomyLabel], embedder: Any, options: DiscoverOptions,
) -> list[Candidate]:  # fmt: skip
    existing = [label for label in unplaced.taxonomy.leaves if label.name != OTHER_LABEL]
    label_vectors = unit_rows(embedder.encode([f"{l.name}: {l.description}" for l in existing])) if existing else None
    by_name = {label.name: label for label in labels}
    found = []
    for name in dict.fromkeys(label_of_cluster):  # clusters that kept one name are one candidate
        cluster_ids = [c for c, n in enumerate(label_of_cluster) if n == name]
        inside = np.flatnonzero(np.isin(clusters.assignments, cluster_ids))
        rows = members[inside]
        centre = unit_rows(vectors[rows].mean(axis=0, keepdims=True))[0]
        closest, similarity = None, 0.0
        if label_vectors is not None:
            scores = label_vectors @ centre
            closest, similarity = existing[int(scores.argmax())].name, float(scores.max())
        nearest = rows[np.argsort(-(vectors[rows] @ centre))]
        found.append(
            Candidate(
                0, name, by_name[name].description, len(rows), len(rows) / unplaced.corpus,
                [unplaced.texts[i] for i in nearest[: options.examples]], closest, round(similarity, 3),
                [unplaced.doc_ids[i] for i in rows],
            )
        )  # fmt: skip
    found.sort(key=lambda c: -c.size)
    for number, candidate in enumerate(found, 1):
        candidate.number = number
    return found


def with_candidates(taxonomy: Taxonomy, candidates: list[Candidate]) -> Taxonomy:
    """The current labels plus the candidates: the version ``--accept`` saves (parent: the current one)."""
    taken = {name.casefold() for name in taxonomy.names}
    clashing = [c for c in candidates if c.name.casefold() in taken]
    if clashing:
        names = ", ".join(f"{c.number} ({c.name!r})" for c in clashing)
        raise WorkspaceError(f"candidate(s) {names} are named like existing labels; rename them in the YAML and import it")
    added = [TaxonomyLabel(name=c.name, description=c.description) for c in candidates]
    return Taxonomy(
        labels=[*taxonomy.labels, *added], parent=taxonomy.version, method="discover", use_case=taxonomy.use_case,
        note=f"discovered {', '.join(c.name for c in candidates)}",
    )  # fmt: skip


def accept_candidates(workspace: Workspace, discovery: Discovery, numbers: list[int]) -> Taxonomy:
    """Save the chosen candidates as a new version whose parent is the discovery's version."""
    known = {c.number: c for c in discovery.candidates}
    unknown = [n for n in numbers if n not in known]
    if unknown:
        raise WorkspaceError(f"no candidate {', '.join(map(str, unknown))}: choose among 1–{len(known)}")
    proposed = with_candidates(discovery.taxonomy, [known[n] for n in numbers])
    return TaxonomyStore(workspace).save(proposed.model_copy(update={"run_id": discovery.run_id}))


def candidates_file(discovery: Discovery) -> str:
    """The YAML to edit: the current labels and every candidate (delete what you do not want, rename
    what clashes), then `tnt taxonomy import` it: its parent is the discovery's version."""
    taxonomy = discovery.taxonomy.model_copy(
        update={"labels": [*discovery.taxonomy.labels,
                           *(TaxonomyLabel(name=c.name, description=c.description) for c in discovery.candidates)]}
    )  # fmt: skip
    notes = "".join(
        f"# candidate {c.number}: {c.name!r}, {c.size} documents ({c.share:.1%} of the corpus), closest to {c.closest!r}\n"
        for c in discovery.candidates
    )
    return notes + dump_taxonomy(taxonomy)
