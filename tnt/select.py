"""Data selection: from labels and quality scores to a training selection.

``select(workspace, SelectionSpec(...), out=path)`` runs these steps in order; each step's survivors
feed the next, and the funnel is reported:

1. **label** — each document's label for one taxonomy version, taken from the first source in the
   precedence that has one (default human > model > llm: a person's correction beats a tagger, and
   the distilled tagger, which labels the whole corpus one way, beats the sampled LLM labels).
   Documents without a label are not eligible. A selection **by quality alone** (``by_label=False``,
   the default when the workspace has no taxonomy) skips this step: every document with a quality
   score is a candidate, under the one pseudo-label ``(all)``.
2. **quality** — with ``min_quality``, documents scored below it are dropped; with ``min_quality``,
   ``top_quality`` or by quality alone, so are documents without a score. Scores are numeric labels
   without a taxonomy version (Ask-LLM's P(yes), or a distilled quality model tagged over the
   corpus), optionally narrowed by origin prefix, each document's taken from the first source in the
   quality precedence that has one (default human > llm > model: the LLM's own score beats the model
   distilled from such scores). With ``drop_pii``, documents that `tnt scan pii` found holding any of
   those entity types are dropped too.
3. **dedup** — exact duplicates (same text after lower-casing and collapsing whitespace), then near
   duplicates (MinHash LSH over character 5-grams, estimated Jaccard ≥ threshold). The first copy in
   corpus order is kept.
4. **top quality** — with ``top_quality`` (N documents, or "P%" of them: ⌈n·P/100⌉), the best-scored
   of the documents that survived steps 1-3, ties broken by the seeded rank of step 5.
5. **sample** — per label, documents are ranked by a hash of (seed, document id), so a selection is
   deterministic for a seed and independent of storage order. Caps truncate a label's ranked list;
   quotas take exactly that many documents; the other labels share ``size`` documents (or
   ``token_budget`` tokens) in proportion to n_label^T (T = 0 uniform, T = 1 natural), a label that
   runs short handing its share to the others. The token budget is never exceeded.

The selection is recorded in the ``selections`` table, so reports can compare it with the corpus,
and written as an id manifest (.txt), JSONL or Parquet (``tnt.selection_io``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

from tnt.corpus.store import DocumentStore
from tnt.labels.store import SOURCES, LabelStore
from tnt.pii import documents_with
from tnt.runs import fingerprint
from tnt.selection_io import BATCH_SIZE, EligibleDocument, SelectionError, output_format, record_selection, write_selection
from tnt.taxonomy.store import OTHER_LABEL, Taxonomy, TaxonomyStore

if TYPE_CHECKING:
    from tnt.workspace import Workspace

DEFAULT_PRECEDENCE = ("human", "model", "llm")
QUALITY_PRECEDENCE = ("human", "llm", "model")
ALL_LABEL = "(all)"  # the one pseudo-label of a selection by quality alone
LABEL_RULES = {"quotas": "--quota", "caps": "--cap", "max_per_label": "--max-per-label", "temperature": "--temperature"}


class SelectionSpec(BaseModel):
    """The rules of one selection. Counts are documents; ``token_budget`` is tokens."""

    by_label: bool | None = None  # None: by label when the workspace has a taxonomy, else by quality alone
    taxonomy_version: int | None = None  # None: the latest
    precedence: tuple[str, ...] = DEFAULT_PRECEDENCE
    quotas: dict[str, int] = Field(default_factory=dict)
    caps: dict[str, int] = Field(default_factory=dict)
    max_per_label: int | None = Field(default=None, ge=0)
    size: int | None = Field(default=None, ge=0)
    token_budget: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0)  # None: natural (1.0)
    min_quality: float | None = None
    top_quality: int | str | None = None  # the best N documents by score, or "P%": the best P percent
    quality_precedence: tuple[str, ...] = QUALITY_PRECEDENCE
    drop_pii: tuple[str, ...] = ()  # entity types (tnt scan pii): documents holding any are left out
    quality_origin: str | None = None  # origin prefix, e.g. "ask-llm"
    dedup: Literal["none", "exact", "near"] = "near"
    near_dup_threshold: float = Field(default=0.8, gt=0, le=1)
    num_perm: int = Field(default=128, ge=16)
    shingle_chars: int = Field(default=5, ge=1)
    tokenizer: str = "cl100k_base"  # a tiktoken encoding, or "whitespace"
    seed: int = 0

    @field_validator("precedence", "quality_precedence")
    @classmethod
    def _known_sources(cls, precedence: tuple[str, ...]) -> tuple[str, ...]:
        if not precedence or any(s not in SOURCES for s in precedence):
            raise ValueError(f"must list sources from {SOURCES}, got {list(precedence)}")
        return precedence

    @field_validator("top_quality")
    @classmethod
    def _documents_or_percent(cls, value: int | str | None) -> int | str | None:
        """A whole number of documents ≥ 1 (``100`` or ``"100"``), or a percentage in (0, 100] (``"10%"``)."""
        text = str(value).strip() if value is not None else None
        if text is None or (text.isdigit() and int(text) >= 1):
            return int(text) if text else None
        percent = text.removesuffix("%").strip()
        if text.endswith("%") and percent.replace(".", "", 1).isdigit() and 0 < float(percent) <= 100:
            return f"{float(percent):g}%"
        raise ValueError(f"expected a number of documents ≥ 1 (100) or a percentage in (0, 100] (10%), got {value!r}")

    @model_validator(mode="after")
    def _consistent(self) -> SelectionSpec:
        if self.size is not None and self.token_budget is not None:
            raise ValueError("give either size (documents) or token_budget (tokens), not both")
        if self.temperature is not None and self.size is None and self.token_budget is None:
            raise ValueError("temperature needs a total to share out: give size or token_budget")
        for label, count in [*self.quotas.items(), *self.caps.items()]:
            if count < 0:
                raise ValueError(f"label {label!r}: quotas and caps must be ≥ 0, got {count}")
        for label, quota in self.quotas.items():
            cap = self.cap_for(label)
            if cap is not None and quota > cap:
                raise ValueError(f"label {label!r}: quota {quota} is above its cap {cap}")
        if self.size is not None and sum(self.quotas.values()) > self.size:
            raise ValueError(f"quotas add up to {sum(self.quotas.values())} documents, more than size {self.size}")
        return self

    def cap_for(self, label: str) -> int | None:
        caps = [c for c in (self.caps.get(label), self.max_per_label) if c is not None]
        return min(caps) if caps else None

    def top_quality_count(self, candidates: int) -> int | None:
        """How many of ``candidates`` documents ``top_quality`` keeps: N, or ⌈candidates·P/100⌉."""
        if isinstance(self.top_quality, str):
            return math.ceil(candidates * float(self.top_quality[:-1]) / 100 - 1e-9)
        return None if self.top_quality is None else min(self.top_quality, candidates)

    def label_rules(self) -> list[str]:
        """The rules given that share documents across labels (their CLI options)."""
        return [option for name, option in LABEL_RULES.items() if getattr(self, name) not in (None, {})]


@dataclass
class Selection:
    run_id: str
    taxonomy_version: int | None  # None: a selection by quality alone
    selected: list[EligibleDocument]
    funnel: dict[str, int]
    before: dict[str, dict[str, int]]  # label -> {"docs", "tokens"}: every document entering the funnel
    after: dict[str, dict[str, int]]  # label -> {"docs", "tokens"}: the selection
    out: Path | None = None
    # Of the documents entering the funnel, how many each source / origin gave their quality score
    quality_sources: dict[str, int] = field(default_factory=dict)
    quality_origins: dict[str, int] = field(default_factory=dict)
    shortfall: str | None = None  # why the selection is smaller than asked, when it is
    # label -> selected documents expected truly in it, with a 95 % interval, when the tags were audited
    expected_on_label: dict[str, dict[str, float]] | None = None

    @property
    def by_label(self) -> bool:
        return self.taxonomy_version is not None

    @property
    def tokens(self) -> int:
        return sum(c.tokens for c in self.selected)

    def stats(self) -> dict[str, Any]:
        return {
            "selection": self.run_id,  # the run whose documents these are: an earlier one for an unchanged rerun
            "taxonomy_version": self.taxonomy_version,
            "by_label": self.by_label,
            "funnel": self.funnel,
            "selected_docs": len(self.selected),
            "selected_tokens": self.tokens,
            "before": self.before,
            "after": self.after,
            "quality_sources": self.quality_sources,
            "quality_origins": self.quality_origins,
            "shortfall": self.shortfall,
            "expected_on_label": self.expected_on_label,
            "out": str(self.out) if self.out else None,
        }


# Labels and scores


def resolve_labels(
    workspace: Workspace, taxonomy_version: int, precedence: Iterable[str] = DEFAULT_PRECEDENCE
) -> dict[str, dict[str, Any]]:
    """Each document's current label row, from the first source in ``precedence`` that has one."""
    store = LabelStore(workspace)
    resolved: dict[str, dict[str, Any]] = {}
    for source in precedence:
        for doc_id, row in store.current(taxonomy_version, source).items():
            if row["label"] is not None:
                resolved.setdefault(doc_id, row)
    return resolved


def resolve_quality(
    workspace: Workspace, origin_prefix: str | None = None, precedence: Iterable[str] = QUALITY_PRECEDENCE
) -> dict[str, dict[str, Any]]:
    """Each document's current quality-score row (numeric label, no taxonomy version)."""
    store = LabelStore(workspace)
    like = f"{origin_prefix}%" if origin_prefix else None
    resolved: dict[str, dict[str, Any]] = {}
    for source in precedence:
        for doc_id, row in store.current(None, source, origins_like=like).items():
            if row["score"] is not None:
                resolved.setdefault(doc_id, row)
    return resolved


# Tokens


def token_counter(name: str) -> Callable[[list[str]], list[int]]:
    """A batch token counter: a tiktoken encoding (offline, from litellm's bundled files) or words."""
    if name == "whitespace":
        return lambda texts: [len(text.split()) for text in texts]
    encoding = _tiktoken_encoding(name)
    return lambda texts: [len(ids) for ids in encoding.encode_ordinary_batch(texts, num_threads=2)]


def _tiktoken_encoding(name: str) -> Any:
    import tiktoken

    # litellm (a dependency) ships cl100k_base and o200k_base in tiktoken's cache layout and points
    # TIKTOKEN_CACHE_DIR there when imported; do the same without paying litellm's import.
    litellm = importlib.util.find_spec("litellm")
    if litellm and litellm.submodule_search_locations:
        bundled = Path(next(iter(litellm.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(bundled))
    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:  # tiktoken raises ValueError, or a network error when not cached
        raise SelectionError(
            f"tokenizer {name!r} is not available offline ({type(exc).__name__}); "
            "use cl100k_base, o200k_base or whitespace"
        ) from exc


# Deduplication


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


class Deduplicator:
    """Tells, document by document, whether a text copies one seen before: "exact", "near" or None.

    Near duplicates: MinHash over character n-grams of the normalised text, LSH for candidates, then
    the estimated Jaccard similarity checked against the threshold. With 128 permutations and
    threshold 0.8, a pair at Jaccard 0.85 is missed 2.5 % of the time, at 0.9 0.1 %. Memory: about
    5 KB per kept document (signature, LSH band keys, exact-text digest), measured on BANKING77.
    """

    def __init__(self, near: bool = True, threshold: float = 0.8, num_perm: int = 128, shingle_chars: int = 5):
        self.threshold = threshold
        self.num_perm = num_perm
        self.shingle_chars = shingle_chars
        self._exact: set[bytes] = set()
        self._signatures: dict[int, np.ndarray] = {}
        self._lsh = None
        if near:
            from datasketch import MinHashLSH

            # Bands tuned for recall (few missed pairs near the threshold); the Jaccard check below
            # removes the extra false candidates this lets in.
            self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.1, 0.9))

    def check(self, texts: list[str]) -> list[str | None]:
        normalised = [normalise(text) for text in texts]
        minhashes = self._minhashes(normalised) if self._lsh is not None else [None] * len(texts)
        return [self._check_one(text, minhash) for text, minhash in zip(normalised, minhashes)]

    def _check_one(self, text: str, minhash: Any) -> str | None:
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        if digest in self._exact:
            return "exact"
        self._exact.add(digest)
        if minhash is None:
            return None
        signature = minhash.hashvalues.astype(np.uint32)
        for key in self._lsh.query(minhash):
            if np.count_nonzero(self._signatures[key] == signature) / self.num_perm >= self.threshold:
                return "near"
        key = len(self._signatures)
        self._signatures[key] = signature
        self._lsh.insert(key, minhash)
        return None

    def _minhashes(self, texts: list[str]) -> list[Any]:
        from datasketch import MinHash

        n = self.shingle_chars
        shingles = [[text[i : i + n].encode() for i in range(max(len(text) - n + 1, 1))] for text in texts]
        return MinHash.bulk(shingles, num_perm=self.num_perm)


# Sampling


def rank_key(seed: int, doc_id: str) -> bytes:
    """A document's place in the seeded random order: depends on nothing but the seed and its id."""
    return hashlib.blake2b(f"{seed}\0{doc_id}".encode(), digest_size=8).digest()


def allocate(total: float, weights: dict[str, float], supply: dict[str, float]) -> dict[str, float]:
    """Share ``total`` across labels in proportion to ``weights``, none above its ``supply``.

    What a label cannot take is shared among the others (water-filling), so the mix follows the
    weights wherever supply allows.
    """
    shares = dict.fromkeys(weights, 0.0)
    open_labels = {label for label in weights if supply[label] > 0 and weights[label] > 0}
    remaining = float(total)
    while open_labels and remaining > 0:
        weight_sum = sum(weights[label] for label in open_labels)
        full = {label for label in open_labels if remaining * weights[label] / weight_sum >= supply[label]}
        if not full:
            for label in open_labels:
                shares[label] = remaining * weights[label] / weight_sum
            break
        for label in full:
            shares[label] = supply[label]
            remaining -= supply[label]
        open_labels -= full
    return shares


def round_shares(shares: dict[str, float], supply: dict[str, int]) -> dict[str, int]:
    """Whole documents per label adding up to round(sum(shares)): largest remainders get the rest."""
    counts = {label: min(math.floor(share + 1e-9), supply[label]) for label, share in shares.items()}
    missing = round(sum(shares.values())) - sum(counts.values())
    by_remainder = sorted(shares, key=lambda label: (counts[label] - shares[label], label))
    for label in by_remainder:
        if missing <= 0:
            break
        if counts[label] < supply[label]:
            counts[label] += 1
            missing -= 1
    return counts


def sample(candidates: list[EligibleDocument], spec: SelectionSpec) -> list[EligibleDocument]:
    """Apply caps, quotas and the temperature mix; return the selection in seeded random order."""
    by_label: dict[str, list[EligibleDocument]] = defaultdict(list)
    for candidate in sorted(candidates, key=lambda c: rank_key(spec.seed, c.doc_id)):
        by_label[candidate.label].append(candidate)
    natural = {label: len(docs) for label, docs in by_label.items()}
    for label, docs in by_label.items():
        cap = spec.cap_for(label)
        if cap is not None:
            del docs[cap:]

    chosen: list[EligibleDocument] = []
    for label, quota in spec.quotas.items():
        docs = by_label.pop(label, [])
        if len(docs) < quota:
            raise SelectionError(
                f"quota for label {label!r} is {quota} documents, but only {len(docs)} are eligible "
                "after the label, quality and duplicate filters (and caps)"
            )
        chosen.extend(docs[:quota])

    chosen.extend(_share_out(by_label, natural, spec, chosen))
    return sorted(chosen, key=lambda c: rank_key(spec.seed, c.doc_id))


def _share_out(
    by_label: dict[str, list[EligibleDocument]], natural: dict[str, int], spec: SelectionSpec, quota_docs: list[EligibleDocument]
) -> list[EligibleDocument]:
    """The labels without a quota: all of them, or their temperature share of what is left."""
    if spec.size is None and spec.token_budget is None:
        return [c for docs in by_label.values() for c in docs]
    temperature = 1.0 if spec.temperature is None else spec.temperature
    if spec.size is not None:
        weights = {label: natural[label] ** temperature for label in by_label}
        supply = {label: len(docs) for label, docs in by_label.items()}
        counts = round_shares(allocate(spec.size - len(quota_docs), weights, supply), supply)
        return [c for label, docs in by_label.items() for c in docs[: counts[label]]]

    quota_tokens = sum(c.tokens for c in quota_docs)
    if quota_tokens > spec.token_budget:
        raise SelectionError(
            f"the quota documents alone hold {quota_tokens} tokens, over the budget {spec.token_budget}"
        )
    label_tokens = {label: sum(c.tokens for c in docs) for label, docs in by_label.items()}
    weights = {label: label_tokens[label] ** temperature for label in by_label}
    shares = allocate(spec.token_budget - quota_tokens, weights, label_tokens)
    return [c for label, docs in by_label.items() for c in _fill(docs, shares[label])]


def _fill(docs: list[EligibleDocument], budget: float) -> list[EligibleDocument]:
    """Documents in rank order up to the first that would overflow the budget (no hunting for short ones)."""
    taken, used = [], 0
    for candidate in docs:
        if used + candidate.tokens > budget + 1e-9:
            break
        taken.append(candidate)
        used += candidate.tokens
    return taken


# The whole selection


def select(
    workspace: Workspace,
    spec: SelectionSpec,
    out: Path | str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Selection:
    """Run the selection, record it in the workspace and, with ``out``, write it to a file."""
    out_path = Path(out) if out is not None else None
    out_format = output_format(out_path) if out_path else None
    taxonomy = _taxonomy_to_select_by(workspace, spec)
    with workspace.run("select", {**spec.model_dump(), "out": str(out_path) if out_path else None}) as run:
        quality = _quality_scores(workspace, spec, by_label=taxonomy is not None)
        labels = _labels(workspace, spec, taxonomy) if taxonomy else _one_label(quality)
        holding_pii = documents_with(workspace, spec.drop_pii) if spec.drop_pii else set()
        unique, funnel, before = _eligible(workspace, spec, labels, quality, holding_pii, taxonomy is not None, on_progress)
        candidates = best_scored(unique, spec)
        if spec.top_quality is not None:
            funnel["top_quality"] = len(candidates)
        selected = sample(candidates, spec)
        inputs = fingerprint(spec.model_dump(), candidates, selected)
        held = workspace.runs.find_result("select", inputs)  # the same spec over the same eligible documents
        scored = [quality[doc_id] for doc_id in labels if doc_id in quality]
        selection = Selection(
            run_id=held["id"] if held else run.id,
            taxonomy_version=taxonomy.version if taxonomy else None,
            selected=selected,
            funnel={**funnel, "selected": len(selected)},
            before=before,
            after=_distribution(selected),
            expected_on_label=_expected_on_label(workspace, taxonomy.version, selected) if taxonomy else None,
            out=out_path,
            quality_sources={s: n for s in spec.quality_precedence if (n := sum(r["source"] == s for r in scored))},
            quality_origins=dict(Counter(row["origin"] for row in scored).most_common()),
            shortfall=_shortfall(spec, selected, candidates),
        )
        if selection.shortfall:
            run.record_issue("select", selection.shortfall, "size" if spec.size is not None else "token_budget")
        if held is None:  # else that run recorded this very selection
            record_selection(workspace, selection.run_id, selected)
        if out_path is not None:
            write_selection(workspace, selected, out_path, out_format)
        run.stats = selection.stats() | {"inputs": inputs} | ({"unchanged": f"selection {held['id']}"} if held else {})
    return selection


def _taxonomy_to_select_by(workspace: Workspace, spec: SelectionSpec) -> Taxonomy | None:
    """The taxonomy whose labels the selection goes by; None for a selection by quality alone, which
    ``by_label=None`` means when the workspace has no taxonomy."""
    store = TaxonomyStore(workspace)
    by_label = spec.by_label if spec.by_label is not None else spec.taxonomy_version is not None or bool(store.all())
    if by_label:
        return store.get(spec.taxonomy_version)
    if spec.taxonomy_version is not None:
        raise SelectionError(f"taxonomy version {spec.taxonomy_version} given for a selection by quality alone (by_label=False)")
    if spec.label_rules():
        why = "the workspace has no taxonomy" if spec.by_label is None else "it was asked for by quality alone"
        raise SelectionError(
            f"{', '.join(spec.label_rules())} share documents across labels, but this selection goes by quality alone "
            f"({why}): use --min-quality, --top-quality, --size or --token-budget"
        )
    return None


def _labels(workspace: Workspace, spec: SelectionSpec, taxonomy: Taxonomy) -> dict[str, dict[str, Any]]:
    labels = resolve_labels(workspace, taxonomy.version, spec.precedence)
    if not labels:
        raise SelectionError(
            f"no document has a label for taxonomy version {taxonomy.version} from sources {list(spec.precedence)}; "
            "label documents first, or select by quality alone (--no-labels)"
        )
    _check_label_names(spec, set(taxonomy.names) | {OTHER_LABEL} | {row["label"] for row in labels.values()})
    return labels


def _one_label(quality: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Selection by quality alone: every scored document under the pseudo-label ``(all)``, its source
    that of its score."""
    return {doc_id: {"label": ALL_LABEL, "source": row["source"]} for doc_id, row in quality.items()}


def _quality_scores(workspace: Workspace, spec: SelectionSpec, by_label: bool) -> dict[str, dict[str, Any]]:
    """Each document's quality score row, when a rule needs scores (else none are read)."""
    needs = [reason for reason, given in (("min_quality is set", spec.min_quality is not None),
             ("top_quality is set", spec.top_quality is not None), ("the selection goes by quality alone", not by_label)) if given]  # fmt: skip
    if not needs:
        return {}
    quality = resolve_quality(workspace, spec.quality_origin, spec.quality_precedence)
    if not quality:
        raise SelectionError(
            f"{' and '.join(needs)} but no document has a quality score"
            + (f" with origin {spec.quality_origin!r}*" if spec.quality_origin else "")
            + f" from sources {', '.join(spec.quality_precedence)}; score documents first (tnt score quality), "
            "or tag them with a distilled quality model (tnt train --target quality, then tnt tag --corpus)"
        )
    return quality


def best_scored(candidates: list[EligibleDocument], spec: SelectionSpec) -> list[EligibleDocument]:
    """The ``top_quality`` best-scored candidates (all of them without it), ties by seeded rank."""
    keep = spec.top_quality_count(len(candidates))
    if keep is None:
        return candidates
    return sorted(candidates, key=lambda c: (-c.quality, rank_key(spec.seed, c.doc_id)))[:keep]


def _shortfall(spec: SelectionSpec, selected: list[EligibleDocument], candidates: list[EligibleDocument]) -> str | None:
    if spec.size is not None and len(selected) < spec.size:
        return f"asked for {spec.size:,} documents; only {len(selected):,} are eligible under these rules"
    tokens = sum(c.tokens for c in selected)
    if spec.token_budget is not None and tokens < spec.token_budget and len(selected) == len(candidates):
        return f"asked for {spec.token_budget:,} tokens; every eligible document together holds {tokens:,}"
    return None


def _check_label_names(spec: SelectionSpec, known: set[str]) -> None:
    unknown = sorted((set(spec.quotas) | set(spec.caps)) - known)
    if unknown:
        raise SelectionError(f"quota/cap for labels not in the taxonomy: {', '.join(map(repr, unknown))}")


def _eligible(
    workspace: Workspace,
    spec: SelectionSpec,
    labels: dict[str, dict[str, Any]],
    quality: dict[str, dict[str, Any]],
    holding_pii: set[str],
    by_label: bool,
    on_progress: Callable[[int], None] | None,
) -> tuple[list[EligibleDocument], dict[str, int], dict[str, dict[str, int]]]:
    """One pass over the corpus: label, quality floor, PII, token count and duplicate check per document.
    With ``quality`` (read when a rule needs scores), documents without a score are left out."""
    count_tokens = token_counter(spec.tokenizer)
    dedup = Deduplicator(spec.dedup == "near", spec.near_dup_threshold, spec.num_perm, spec.shingle_chars)
    funnel = Counter()
    entered = "labelled" if by_label else "scored"  # the funnel's step after "documents"
    candidates: list[EligibleDocument] = []
    before: list[EligibleDocument] = []
    for batch in DocumentStore(workspace).iter_batches(BATCH_SIZE):
        funnel["documents"] += len(batch)
        labelled = [(doc.id, doc.text) for doc in batch if doc.id in labels]
        tokens = count_tokens([text for _, text in labelled])
        passing = []
        for (doc_id, text), n_tokens in zip(labelled, tokens):
            row = labels[doc_id]
            score = quality[doc_id]["score"] if doc_id in quality else None
            candidate = EligibleDocument(doc_id, row["label"], row["source"], n_tokens, score)
            before.append(candidate)
            if not quality or (score is not None and (spec.min_quality is None or score >= spec.min_quality)):
                passing.append((candidate, text))
        funnel[entered] += len(labelled)
        funnel["quality_ok"] += len(passing)
        passing = [(candidate, text) for candidate, text in passing if candidate.doc_id not in holding_pii]
        funnel["without_pii"] += len(passing)
        verdicts = dedup.check([text for _, text in passing]) if spec.dedup != "none" else [None] * len(passing)
        for (candidate, _), verdict in zip(passing, verdicts):
            if verdict is None:
                candidates.append(candidate)
            else:
                funnel[f"{verdict}_duplicates"] += 1
        if on_progress:
            on_progress(len(batch))
    funnel["unique"] = len(candidates)
    order = ["documents", entered, "quality_ok", *(["without_pii"] if spec.drop_pii else []), "exact_duplicates"]
    order += ["near_duplicates", "unique"]
    return candidates, {key: funnel[key] for key in order}, _distribution(before)


def _expected_on_label(workspace: Workspace, version: int, selected: list[EligibleDocument]) -> dict[str, dict[str, float]] | None:
    from tnt.review.audit import expected_on_label

    return expected_on_label(workspace, version, [(c.label, c.source) for c in selected])


def _distribution(candidates: Iterable[EligibleDocument]) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = defaultdict(lambda: {"docs": 0, "tokens": 0})
    for candidate in candidates:
        totals[candidate.label]["docs"] += 1
        totals[candidate.label]["tokens"] += candidate.tokens
    return dict(sorted(totals.items()))
