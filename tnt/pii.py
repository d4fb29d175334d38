"""Personal data: found with Microsoft Presidio, masked before text leaves the machine, counted over the corpus.

- ``mask(text)``: every e-mail address, phone number, card number, IBAN, IP address, URL, … replaced by
  a placeholder such as ``<EMAIL_ADDRESS_1>``; the same value gets the same placeholder within one
  text, numbered per type. The mapping is never kept, stored or logged. The LLM gateway masks every
  user message with it (``LLMSettings.pii``).
- ``scan_pii(workspace)``: which entity types each document holds, stored per document, so that
  ``pii_counts`` (documents with each type, occurrences; the report's privacy section) and
  ``documents_with`` (``tnt select --drop-pii``) read them.

Offline by construction: Presidio's pattern and checksum recognisers need no model; person names and
places need a spaCy English pipeline, used when one is installed (``en_core_web_lg``/``md``/``sm``).
None installs from the package index (they come from GitHub releases), so by default names and places
pass through: ``name_detection()`` says which, and a warning is logged once per process.
"""

from __future__ import annotations

import _imp  # the interpreter's import lock (CPython's own module)
import functools
import json
import logging
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from typing import TYPE_CHECKING, Any, ClassVar

from tnt.corpus.store import DocumentStore
from tnt.runs import WorkspaceError, utc_now

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine, RecognizerResult
    from presidio_anonymizer import AnonymizerEngine, EngineResult

    from tnt.workspace import Workspace

logger = logging.getLogger(__name__)

# What is masked and counted, when a recogniser for it is loaded. Left out on purpose: DATE_TIME (a
# date alone names no one, and dates carry meaning for labels) and the low-score national-number
# patterns (US_BANK_NUMBER, US_DRIVER_LICENSE), which fire on any run of digits.
ENTITY_TYPES = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "URL",
    "CRYPTO",
    "US_SSN",
    "PERSON",
    "LOCATION",
)
# Presidio scores: checksum-validated matches 1.0, phone numbers (libphonenumber) 0.4, URLs 0.5; weaker
# pattern guesses fall below.
SCORE_THRESHOLD = 0.4
SPACY_MODELS = ("en_core_web_lg", "en_core_web_md", "en_core_web_sm")
BATCH_SIZE = 500
HIDDEN_WHILE_LOADING = ("torch", "transformers")
RULES = 1  # bump when the recognisers' set-up below changes: scans made before are redone


def spacy_model() -> str | None:
    """The installed spaCy English pipeline used for names and places, if any (never downloaded)."""
    with _torch_hidden():
        import spacy.util

    return next((name for name in SPACY_MODELS if spacy.util.is_package(name)), None)


def name_detection() -> bool:
    """Whether person names and places are masked (a spaCy English pipeline is installed)."""
    return "PERSON" in entity_types()


def detector() -> str:
    """What finds personal data here; a scan made by another detector is redone."""
    model = spacy_model()
    engine = f"presidio-analyzer {version('presidio-analyzer')}" + (f" + {model}" if model else " patterns")
    return f"{engine}, tnt rules {RULES}"


@functools.cache
def analyzer() -> AnalyzerEngine:
    """Built once per process (seconds, mostly importing spaCy and Presidio): the recognisers, and the
    spaCy pipeline if installed.

    The NLP engine is chosen here, not by Presidio's default, which would download en_core_web_lg.
    """
    with _torch_hidden():
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NoOpNlpEngine, SpacyNlpEngine

    model = spacy_model()
    if model:
        nlp_engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": model}])
    else:
        nlp_engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
        logger.warning(
            "no spaCy English pipeline is installed (%s): person names and places are not masked",
            ", ".join(SPACY_MODELS),
        )
    nlp_engine.load()
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp_engine)
    for replaced in ("EmailRecognizer", "UrlRecognizer"):
        registry.remove_recognizer(replaced)
    for recognizer in _offline_recognizers():
        registry.add_recognizer(recognizer)
    return AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"])


@contextmanager
def _torch_hidden() -> Iterator[None]:
    """Presidio imports transformers, and spaCy's thinc imports torch, when installed, for NLP engines
    and models tnt does not use here: seconds, tens of seconds on a busy machine. Both imports are
    guarded, so hide the two while Presidio loads (unless something has loaded them already).

    The interpreter's import lock is held meanwhile, so another thread that imports anything (torch
    for a tagger in `tnt serve`, say) waits for the few seconds instead of seeing torch hidden."""
    _imp.acquire_lock()
    hidden = [name for name in HIDDEN_WHILE_LOADING if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` fail
    try:
        yield
    finally:
        for name in hidden:
            del sys.modules[name]
        _imp.release_lock()


def _offline_recognizers() -> list[Any]:
    """Presidio's e-mail and URL recognisers, with the domain checked against the public suffix list
    snapshot that tldextract ships (Presidio's e-mail check fetches the list over the network).

    URLs without a scheme must also be lower-case and end a word: Presidio's pattern ignores case
    and checks no suffix, so it takes ``hour.Please``, ``transfer...is`` or ``error.can`` in running
    text for URLs (12 of BANKING77's 10,003 training messages).
    """
    import tldextract
    from presidio_analyzer import Pattern
    from presidio_analyzer.predefined_recognizers import EmailRecognizer, UrlRecognizer

    suffixes = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    def has_domain(text: str) -> bool:
        parts = suffixes(text.strip("\"'"))
        return bool(parts.domain and parts.suffix)

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return has_domain(pattern_text)

    class CheckedUrlRecognizer(UrlRecognizer):
        PATTERNS: ClassVar[list[Pattern]] = [  # schema-less: lower-case, ending a word ("error.ca|n")
            Pattern(p.name, p.regex if "https?" in p.regex else p.regex.removeprefix("(?i)") + r"(?!\w)", p.score)
            for p in UrlRecognizer.PATTERNS
        ]

        def validate_result(self, pattern_text: str) -> bool:
            return has_domain(pattern_text)

    urls = CheckedUrlRecognizer()
    urls.global_regex_flags = re.DOTALL | re.MULTILINE  # Presidio adds IGNORECASE to every pattern
    return [OfflineEmailRecognizer(), urls]


@functools.cache
def entity_types() -> tuple[str, ...]:
    """The types of ``ENTITY_TYPES`` that a loaded recogniser finds."""
    supported = set(analyzer().get_supported_entities(language="en"))
    return tuple(entity for entity in ENTITY_TYPES if entity in supported)


@functools.cache
def _anonymizer() -> AnonymizerEngine:
    from presidio_anonymizer import AnonymizerEngine

    return AnonymizerEngine()


def find(text: str) -> list[RecognizerResult]:
    """The personal data in ``text`` (overlapping findings included; ``mask`` resolves them)."""
    if not text.strip():
        return []
    return analyzer().analyze(text, language="en", entities=list(entity_types()), score_threshold=SCORE_THRESHOLD)


def mask(text: str) -> str:
    """``text`` with each piece of personal data replaced by ``<TYPE_n>``; the same value, the same n."""
    masked = _anonymized(text)
    return text if masked is None else masked.text


def _anonymized(text: str) -> EngineResult | None:
    """The masked text and what was replaced (overlapping findings resolved by Presidio); None: nothing found."""
    from presidio_anonymizer.entities import OperatorConfig

    findings = find(text)
    if not findings:
        return None
    placeholders: dict[tuple[str, str], str] = {}
    per_type: Counter[str] = Counter()

    def placeholder_for(entity_type: str) -> Callable[[str], str]:
        def placeholder(value: str) -> str:
            if (entity_type, value) not in placeholders:
                per_type[entity_type] += 1
                placeholders[entity_type, value] = f"<{entity_type}_{per_type[entity_type]}>"
            return placeholders[entity_type, value]

        return placeholder

    operators = {
        entity_type: OperatorConfig("custom", {"lambda": placeholder_for(entity_type)})
        for entity_type in {finding.entity_type for finding in findings}
    }
    return _anonymizer().anonymize(text, findings, operators)


def mask_user_messages(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Document text reaches a model only in user messages; system messages are tnt's own instructions."""
    return [{**m, "content": mask(m["content"])} if m["role"] == "user" else m for m in messages]


# Scanning the corpus


@dataclass
class PiiScan:
    run_id: str
    detector: str
    scanned: int  # documents scanned by this run (the others were scanned before, by the same detector)
    documents: int  # documents in the corpus
    counts: dict[str, dict[str, int]]  # entity type -> {"documents", "occurrences"}, over the corpus


def count_entities(text: str) -> dict[str, int]:
    """Occurrences per entity type, counted as ``mask`` replaces them."""
    masked = _anonymized(text)
    return dict(Counter(item.entity_type for item in masked.items)) if masked else {}


def scan_pii(workspace: Workspace, on_progress: Callable[[int], None] | None = None) -> PiiScan:
    """Record which entity types each document holds. A rerun scans only documents not yet scanned
    by this detector, so an interrupted scan resumes and a finished one changes nothing."""
    current = detector()
    with workspace.run("scan-pii", {"detector": current, "entity_types": list(entity_types())}) as run:
        done = _scanned_ids(workspace, current)
        scanned = 0
        for batch in DocumentStore(workspace).iter_batches(BATCH_SIZE):
            rows = [
                {"doc_id": doc.id, "entities": json.dumps(count_entities(doc.text), sort_keys=True),
                 "detector": current, "run_id": run.id, "scanned_at": utc_now()}
                for doc in batch if doc.id not in done
            ]  # fmt: skip
            with workspace.db.conn:
                workspace.db["pii_scans"].upsert_all(rows, pk="doc_id")
            scanned += len(rows)
            if on_progress:
                on_progress(len(batch))
        result = PiiScan(run.id, current, scanned, DocumentStore(workspace).count(), pii_counts(workspace))
        run.stats = {"scanned": scanned, "documents": result.documents, "counts": result.counts}
    return result


def _scanned_ids(workspace: Workspace, by_detector: str) -> set[str]:
    rows = workspace.db.execute("select doc_id from pii_scans where detector = ?", [by_detector])
    return {row[0] for row in rows}


def pii_counts(workspace: Workspace) -> dict[str, dict[str, int]]:
    """Per entity type, the documents holding it and its occurrences, over the scanned documents."""
    rows = workspace.db.execute(
        "select e.key, count(*), sum(e.value) from pii_scans, json_each(pii_scans.entities) as e "
        "group by e.key order by count(*) desc, e.key"
    )
    return {entity: {"documents": docs, "occurrences": occurrences} for entity, docs, occurrences in rows}


def scanned_count(workspace: Workspace) -> int:
    return workspace.db["pii_scans"].count


def documents_with(workspace: Workspace, types: Iterable[str]) -> set[str]:
    """The documents holding any of these entity types. Every document must have been scanned, for
    every one of these types: an unscanned document could hold anything."""
    wanted = sorted(set(types))
    corpus = DocumentStore(workspace).count()
    scanned = scanned_count(workspace)
    if scanned == 0:
        raise WorkspaceError("no PII scan yet: run `tnt scan pii` first")
    if scanned < corpus:
        raise WorkspaceError(
            f"{corpus - scanned:,} of {corpus:,} documents are not scanned for PII: run `tnt scan pii` again"
        )
    looked_for = _scanned_types(workspace)
    unknown = [t for t in wanted if t not in looked_for]
    if unknown:
        raise WorkspaceError(
            f"the PII scan does not look for {', '.join(unknown)}; it finds {', '.join(looked_for)}"
            " (PERSON and LOCATION need a spaCy English pipeline)"
        )
    marks = ",".join("?" * len(wanted))
    rows = workspace.db.execute(
        f"select distinct doc_id from pii_scans, json_each(pii_scans.entities) as e where e.key in ({marks})", wanted
    )
    return {row[0] for row in rows}


def _scanned_types(workspace: Workspace) -> list[str]:
    """The entity types the latest completed scan looked for."""
    completed = [run for run in workspace.runs.list("scan-pii") if run["status"] == "completed"]
    return workspace.runs.get(completed[-1]["id"])["params"]["entity_types"] if completed else []
