"""Cluster names without an LLM: class-based TF-IDF keywords, as BERTopic represents its topics.

All the texts of a cluster are joined into one document; a term's weight in a cluster is its
frequency there (normalised by the cluster's length) times ``log(1 + A / f)``, where ``f`` is the
term's frequency over all clusters and ``A`` the average number of words per cluster. Terms frequent
in one cluster and rare elsewhere come first. A name is the top few keywords that share no word
(``card, arrive, delivery``); the description lists the top keywords.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import csr_matrix

from tnt.taxonomy.cluster import ClusterName, Clusters, NamedClusters, merge_same_names
from tnt.taxonomy.guardrails import TaxonomyLimits

SEPARATOR = ", "
# scikit-learn's English stop words hold content words (its documentation warns of known issues):
# "top" and "up" would turn every top-up query into "card"; they and a few nouns like them are kept.
# The stubs its tokenizer leaves of contractions ("didn't" → "didn") are dropped as well.
KEPT_WORDS = frozenset({"amount", "bill", "call", "detail", "interest", "name", "system", "top", "up"})
CONTRACTION_STUBS = frozenset(
    {"aren", "couldn", "didn", "doesn", "don", "hadn", "hasn", "haven", "isn", "ll", "shouldn", "ve", "wasn", "weren", "wouldn"}
)


def stop_words() -> list[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return sorted((ENGLISH_STOP_WORDS - KEPT_WORDS) | CONTRACTION_STUBS)


def class_tfidf(documents: Sequence[str], ngram_range: tuple[int, int] = (1, 2)) -> tuple[csr_matrix, list[str]]:
    """c-TF-IDF weights (one row per document, here one per cluster) and the terms of the columns:
    word uni- and bigrams without English stop words (scikit-learn's CountVectorizer)."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.preprocessing import normalize

    vectorizer = CountVectorizer(stop_words=stop_words(), ngram_range=ngram_range)
    try:
        counts = vectorizer.fit_transform(documents)
    except ValueError:  # nothing but stop words and punctuation
        return csr_matrix((len(documents), 0)), []
    frequency = np.asarray(counts.sum(axis=0)).ravel()
    average_words = counts.sum() / counts.shape[0]
    idf = np.log(1 + average_words / frequency)
    weights = csr_matrix(normalize(counts, norm="l1").multiply(idf))
    return weights, vectorizer.get_feature_names_out().tolist()


def top_terms(weights: csr_matrix, terms: list[str], top: int) -> list[list[str]]:
    """Per row, the ``top`` terms of highest weight (ties by term), leaving out terms it lacks."""
    ranked = []
    for i in range(weights.shape[0]):
        row = weights.getrow(i)
        order = sorted(zip(row.data, row.indices), key=lambda pair: (-pair[0], terms[pair[1]]))
        ranked.append([terms[j] for _, j in order[:top]])
    return ranked


def words(keywords: Sequence[str]) -> int:
    return sum(len(keyword.split()) for keyword in keywords)


def distinct(keywords: Sequence[str]) -> list[str]:
    """Keywords in order, without those sharing a word with an earlier one ("new card" after "card"),
    except that a phrase right after the word it extends replaces it ("top" then "top up": "top up")."""
    kept: list[str] = []
    seen: set[str] = set()
    for keyword in keywords:
        words = set(keyword.split())
        if seen.isdisjoint(words):
            kept.append(keyword)
        elif kept and set(kept[-1].split()) < words and seen.isdisjoint(words - set(kept[-1].split())):
            kept[-1] = keyword
        else:
            continue
        seen |= words
    return kept


@dataclass
class KeywordNamer:
    """Names each cluster by its top c-TF-IDF keywords; no LLM. A name taken by a bigger cluster is
    tried again with its last keyword swapped for the next ones; clusters that cannot be told apart
    that way keep one name and are merged."""

    limits: TaxonomyLimits = field(default_factory=TaxonomyLimits)
    name_keywords: int = 3
    description_keywords: int = 10
    ngram_range: tuple[int, int] = (1, 2)

    @property
    def prompt_hashes(self) -> dict[str, str]:
        return {}

    def prepared(self, texts: Sequence[str], clusters: Clusters) -> list[tuple[list[dict[str, str]], dict]]:
        return []

    def keywords(self, texts: Sequence[str], clusters: Clusters) -> list[list[str]]:
        """Each cluster's keywords, best first (every term it holds, so a clash has alternatives)."""
        documents = [" ".join(texts[i] for i in np.flatnonzero(clusters.assignments == c)) for c in range(len(clusters.sizes))]
        weights, terms = class_tfidf(documents, self.ngram_range)
        return top_terms(weights, terms, len(terms))

    async def name(self, texts: Sequence[str], clusters: Clusters) -> NamedClusters:
        keywords = self.keywords(texts, clusters)
        names: list[str] = [""] * len(keywords)
        taken: set[str] = set()
        for c in sorted(range(len(keywords)), key=lambda c: -clusters.sizes[c]):
            candidates = self.candidates(keywords[c]) or [f"cluster-{c}"]
            names[c] = next((n for n in candidates if n.casefold() not in taken), candidates[0])
            taken.add(names[c].casefold())
        labels = [ClusterName(name=n, description=self.description(k)) for n, k in zip(names, keywords)]
        return merge_same_names(labels, clusters.sizes)

    def candidates(self, keywords: Sequence[str]) -> list[str]:
        """Names to try in turn: the first ``name_keywords`` distinct keywords that fit the word limit,
        then the same with the last one swapped for each later distinct keyword."""
        budget = self.limits.max_name_words
        fitting = [k for k in distinct(keywords) if words([k]) <= budget]
        head: list[str] = []
        for keyword in fitting:
            if len(head) == self.name_keywords - 1:
                break
            if words(head) + words([keyword]) <= budget:
                head.append(keyword)
        tails = [k for k in fitting if k not in head and words(head) + words([k]) <= budget]
        return [SEPARATOR.join(head + [tail]) for tail in tails] or ([SEPARATOR.join(head)] if head else [])

    def description(self, keywords: Sequence[str]) -> str:
        """"Top keywords: …", as many as ``description_keywords`` and the description word limit allow."""
        shown: list[str] = []
        for keyword in keywords[: self.description_keywords]:
            if 2 + words(shown) + words([keyword]) > self.limits.max_description_words:
                break
            shown.append(keyword)
        return "Top keywords: " + SEPARATOR.join(shown) if shown else "No distinctive keywords."
