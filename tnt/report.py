"""Corpus reports: one self-contained HTML file that opens offline.

``build_report(workspace)`` reads the corpus (through the corpus module), the labels, quality scores,
the latest selection and the LLM call log, and writes one HTML page: plotly's JavaScript is inlined
once, every figure is a plotly figure, and document text is escaped (it is data). Examples and
n-grams obey a privacy floor: a label with fewer than ``privacy_k`` documents shows no examples and
no n-grams, and an n-gram is shown only when at least ``privacy_k`` documents of its label hold it.
"""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tnt.corpus.store import DocumentStore
from tnt.labels.store import LabelStore
from tnt.metrics import classification_metrics, confusion
from tnt.pii import pii_counts, scanned_count
from tnt.review.agreement import ReferenceAgreement, agreement_with_reference, default_reference
from tnt.runs import WorkspaceError, utc_now
from tnt.select import DEFAULT_PRECEDENCE, QUALITY_PRECEDENCE, Deduplicator, resolve_labels, resolve_quality
from tnt.selection_io import BATCH_SIZE, EligibleDocument, load_selection
from tnt.taxonomy.store import TaxonomyStore

if TYPE_CHECKING:
    from tnt.workspace import Workspace

EXAMPLE_CHARS = 600
SOURCE_COLOURS = {"llm": "#e45756", "model": "#4c78a8", "human": "#54a24b"}


@dataclass
class ReportOptions:
    taxonomy_version: int | None = None  # None: the latest
    selection_run: str | None = None  # None: the latest selection, if any
    reference_version: int | None = None  # None: the latest version imported with the corpus, if any
    privacy_k: int = 5
    examples_per_label: int = 3
    top_ngrams: int = 10
    text_sample: int = 20_000  # documents whose text feeds n-grams and examples
    seed: int = 0
    precedence: tuple[str, ...] = DEFAULT_PRECEDENCE


@dataclass
class CorpusScan:
    """What one pass over the corpus yields: lengths, duplicates, and a seeded sample of texts."""

    documents: int = 0
    words: dict[str, int] = field(default_factory=dict)
    duplicates: Counter = field(default_factory=Counter)
    sample: list[tuple[str, str]] = field(default_factory=list)  # (doc_id, text), seeded


def build_report(workspace: Workspace, out: Path | str | None = None, options: ReportOptions | None = None) -> Path:
    """Write the report and return its path (default: ``<workspace>/reports/report-<run>.html``)."""
    options = options or ReportOptions()
    with workspace.run("report", {**options.__dict__, "out": str(out) if out else None}) as run:
        path = Path(out) if out else workspace.artefact_dir("reports") / f"report-{run.id}.html"
        context = _context(workspace, options)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(render(context), encoding="utf-8")
        partial.replace(path)
        run.stats = {"out": str(path), "figures": len(context["figures"]), "documents": context["scan"].documents}
    return path


def render(context: dict[str, Any]) -> str:
    from jinja2 import Environment, StrictUndefined
    from markupsafe import Markup
    from plotly.offline import get_plotlyjs

    environment = Environment(autoescape=True, undefined=StrictUndefined)
    template = environment.from_string(
        resources.files("tnt").joinpath("report_template.html.j2").read_text(encoding="utf-8")
    )
    figures = {name: Markup(_figure_html(figure)) for name, figure in context["figures"].items()}
    return template.render(**{**context, "figures": figures}, plotly_js=Markup(get_plotlyjs()))


def _figure_html(figure: Any) -> str:
    return figure.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False, "responsive": True})


# Gathering


def _context(workspace: Workspace, options: ReportOptions) -> dict[str, Any]:
    taxonomy = TaxonomyStore(workspace).get(options.taxonomy_version)
    labels = resolve_labels(workspace, taxonomy.version, options.precedence)
    selection = _selection_for(workspace, options.selection_run, taxonomy.version)
    selected = selection[1] if selection else []
    scan = scan_corpus(workspace, options)
    label_counts = Counter(row["label"] for row in labels.values())
    figures: dict[str, Any] = {}
    figures["labels"] = label_figure(label_counts, selected)
    confidence = _confidences(workspace, taxonomy.version)
    if confidence:
        figures["confidence"] = histogram_figure(confidence, "confidence of the current label", x_range=(0, 1))
    quality = _quality_by_origin(workspace)
    if quality and any(c.quality is not None for c in selected):
        quality["selection"] = [c.quality for c in selected if c.quality is not None]
    if quality:
        floor = selection[0]["params"].get("min_quality") if selection else None
        figures["quality"] = histogram_figure(quality, "quality score", mark=floor)
    figures["lengths"] = histogram_figure(_lengths(scan, selected), "words per document")
    agreement = agreement_figures(workspace, taxonomy.version)
    if agreement["llm"]:
        figures["confusion"] = confusion_figure(agreement["llm"]["matrix"], agreement["llm"]["labels"])
    shown, hidden = _labels_over_floor(label_counts, options.privacy_k)
    return {
        "generated_at": utc_now(),
        "workspace": str(workspace.directory.resolve()),
        "taxonomy": taxonomy,
        "options": options,
        "scan": scan,
        "label_counts": label_counts,
        "labelled": len(labels),
        "sources": Counter(row["source"] for row in labels.values()),
        "selection": _selection_summary(selection),
        "figures": figures,
        "agreement": agreement,
        "reference": reference_figures(workspace, taxonomy.version, options.reference_version),
        "ngrams": top_ngrams(_sample_by_label(scan, labels, shown), options.privacy_k, options.top_ngrams),
        "examples": _examples(scan, labels, shown, options.examples_per_label),
        "hidden_labels": hidden,
        "costs": _costs(workspace),
        "pii": {"scanned": scanned_count(workspace), "counts": pii_counts(workspace)},
        "audit": _latest_audit(workspace, taxonomy.version),
    }


def _selection_for(
    workspace: Workspace, run_id: str | None, version: int
) -> tuple[dict[str, Any], list[EligibleDocument]] | None:
    """The asked-for (or latest) selection, when it was made with this taxonomy version."""
    selection = load_selection(workspace, run_id)
    if selection is None or selection[0]["stats"].get("taxonomy_version") == version:
        return selection
    if run_id is not None:
        made_with = selection[0]["stats"].get("taxonomy_version")
        raise WorkspaceError(
            f"selection {run_id} was made with taxonomy version {made_with}, not {version}: pass --taxonomy {made_with}"
        )
    return None


def scan_corpus(workspace: Workspace, options: ReportOptions) -> CorpusScan:
    """Lengths and duplicate verdicts for every document, and a seeded sample of texts."""
    documents = DocumentStore(workspace)
    scan = CorpusScan()
    dedup = Deduplicator(near=True)
    for batch in documents.iter_batches(BATCH_SIZE):
        scan.documents += len(batch)
        for doc, verdict in zip(batch, dedup.check([doc.text for doc in batch])):
            scan.words[doc.id] = len(doc.text.split())
            scan.duplicates[verdict or "unique"] += 1
    scan.sample = [(doc.id, doc.text) for doc in documents.sample(options.text_sample, options.seed)]
    return scan


def _confidences(workspace: Workspace, version: int) -> dict[str, list[float]]:
    store = LabelStore(workspace)
    values = {}
    for source in ("llm", "model"):
        confidences = [
            row["confidence"] for row in store.current(version, source).values() if row["confidence"] is not None
        ]
        if confidences:
            values[source] = confidences
    return values


def _latest_audit(workspace: Workspace, version: int) -> Any:
    from tnt.review.audit import latest_audit  # scipy: imported only for a report

    return latest_audit(workspace, version)


def _quality_by_origin(workspace: Workspace) -> dict[str, list[float]]:
    """Per origin, the documents' quality scores, chosen among sources as ``tnt select`` chooses them."""
    scores: dict[str, list[float]] = {}
    for row in resolve_quality(workspace, None, QUALITY_PRECEDENCE).values():
        scores.setdefault((row["origin"] or row["source"]).split(":")[0], []).append(row["score"])
    return scores


def _lengths(scan: CorpusScan, selected: list[EligibleDocument]) -> dict[str, list[int]]:
    lengths = {"corpus": list(scan.words.values())}
    if selected:
        lengths["selection"] = [scan.words[c.doc_id] for c in selected if c.doc_id in scan.words]
    return lengths


def _labels_over_floor(counts: Counter, k: int) -> tuple[list[str], list[str]]:
    shown = sorted(label for label, n in counts.items() if n >= k)
    hidden = sorted(label for label, n in counts.items() if n < k)
    return shown, hidden


def _sample_by_label(scan: CorpusScan, labels: dict[str, dict[str, Any]], shown: list[str]) -> dict[str, list[str]]:
    allowed = set(shown)
    texts: dict[str, list[str]] = {label: [] for label in shown}
    for doc_id, text in scan.sample:
        label = labels.get(doc_id, {}).get("label")
        if label in allowed:
            texts[label].append(text)
    return texts


def _examples(
    scan: CorpusScan, labels: dict[str, dict[str, Any]], shown: list[str], per_label: int
) -> dict[str, list[str]]:
    examples: dict[str, list[str]] = {}
    for label, texts in _sample_by_label(scan, labels, shown).items():
        examples[label] = [_clip(text) for text in texts[:per_label]]
    return examples


def _clip(text: str) -> str:
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + " …"


def top_ngrams(texts_by_label: dict[str, list[str]], min_docs: int, top: int) -> dict[str, list[tuple[str, int]]]:
    """Most frequent word 1–2-grams per label (English stop words left out), WIMBD-style raw counts.

    An n-gram counts only when at least ``min_docs`` documents of the label hold it (privacy floor).
    """
    from sklearn.feature_extraction.text import CountVectorizer

    result: dict[str, list[tuple[str, int]]] = {}
    for label, texts in texts_by_label.items():
        if len(texts) < min_docs:
            result[label] = []
            continue
        vectorizer = CountVectorizer(ngram_range=(1, 2), stop_words="english", min_df=min_docs)
        try:
            matrix = vectorizer.fit_transform(texts)
        except ValueError:  # no n-gram reaches the floor
            result[label] = []
            continue
        counts = np.asarray(matrix.sum(axis=0)).ravel()
        names = vectorizer.get_feature_names_out()
        order = sorted(range(len(names)), key=lambda i: (-counts[i], names[i]))[:top]
        result[label] = [(str(names[i]), int(counts[i])) for i in order]
    return result


def agreement_figures(workspace: Workspace, version: int) -> dict[str, dict[str, Any] | None]:
    """LLM and model labels against human labels on the documents both have: κ, accuracy, confusion."""
    store = LabelStore(workspace)
    human = store.current(version, "human")
    return {source: _agreement(store.current(version, source), human) for source in ("llm", "model")}


def _agreement(predicted: dict[str, dict[str, Any]], reference: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    shared = sorted(set(predicted) & set(reference))
    if not shared:
        return None
    y_true = [reference[d]["label"] for d in shared]
    y_pred = [predicted[d]["label"] for d in shared]
    metrics = classification_metrics(y_true, y_pred)
    labels, matrix = confusion(y_true, y_pred)
    return {key: metrics[key] for key in ("n", "accuracy", "kappa", "macro_f1")} | {"labels": labels, "matrix": matrix}


def reference_figures(workspace: Workspace, version: int, reference: int | None) -> ReferenceAgreement | None:
    """AMI and the label mapping against ``reference``; when it is None, against the latest version
    imported with the corpus if there is one and this version has labels on its documents."""
    if reference is not None:
        return agreement_with_reference(workspace, reference, version)
    found = default_reference(workspace, version)
    if found is None:
        return None
    try:
        return agreement_with_reference(workspace, found, version)
    except ValueError:  # no labels yet, or none on the reference's documents: nothing to compare
        return None


def _selection_summary(selection: tuple[dict[str, Any], list[EligibleDocument]] | None) -> dict[str, Any] | None:
    if selection is None:
        return None
    run, selected = selection
    stats = run["stats"]
    return {
        "run": run["id"],
        "started_at": run["started_at"],
        "params": {k: v for k, v in run["params"].items() if v not in (None, {}, [])},
        "funnel": stats.get("funnel", {}),
        "docs": len(selected),
        "tokens": sum(c.tokens for c in selected),
        "tokens_before": sum(v["tokens"] for v in stats.get("before", {}).values()),
    }


def _costs(workspace: Workspace) -> list[dict[str, Any]]:
    from tnt.llm.log import call_summary

    kinds = {run["id"]: run["kind"] for run in workspace.runs.list()}
    return [{**row, "kind": kinds.get(row["run_id"], "-")} for row in call_summary(workspace)]


# Figures


def _plot_text(text: str) -> str:
    """Label names are data too: plotly reads some HTML tags in text, so escape them."""
    return html.escape(text, quote=False)


def label_figure(corpus: Counter, selected: list[EligibleDocument]) -> Any:
    import plotly.graph_objects as go

    order = [label for label, _ in sorted(corpus.items(), key=lambda item: (item[1], item[0]))]
    after = Counter(c.label for c in selected)
    order += sorted(set(after) - set(corpus))
    figure = go.Figure()
    series = [("labelled corpus", corpus)] + ([("selection", after)] if selected else [])
    for name, counts in series:
        total = sum(counts.values()) or 1
        figure.add_bar(
            name=name,
            y=[_plot_text(label) for label in order],
            x=[100 * counts.get(label, 0) / total for label in order],
            customdata=[counts.get(label, 0) for label in order],
            orientation="h",
            hovertemplate="%{y}: %{customdata} documents (%{x:.1f} %)<extra>" + name + "</extra>",
        )
    figure.update_layout(
        barmode="group",
        bargap=0.25,
        height=max(300, 9 * len(order) * len(series) + 140),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        legend={"orientation": "h", "y": -0.01, "yanchor": "top"},
    )
    figure.update_xaxes(title="share of documents (%)", side="top")
    figure.update_yaxes(automargin=True, type="category", tickfont={"size": 10})
    return figure


def histogram_figure(
    series: dict[str, list[float]], x_title: str, x_range: tuple[float, float] | None = None, mark: float | None = None
) -> Any:
    """Overlaid histograms on shared bins, in % of each series; ``mark`` draws a threshold line."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for name, values in series.items():
        figure.add_histogram(
            x=values,
            name=f"{_plot_text(name)} ({len(values):,})",
            opacity=0.65,
            histnorm="percent",
            marker_color=SOURCE_COLOURS.get(name),
            bingroup=1,
            xbins={"start": x_range[0], "end": x_range[1], "size": (x_range[1] - x_range[0]) / 20} if x_range else None,
        )
    if mark is not None:
        figure.add_vline(x=mark, line_dash="dash", annotation_text=f"selection floor {mark:g}")
    figure.update_layout(
        barmode="overlay",
        xaxis_title=x_title,
        yaxis_title="% of documents",
        height=320,
        margin={"l": 10, "r": 10, "t": 30, "b": 40},
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom"},
    )
    return figure


def confusion_figure(matrix: np.ndarray, labels: list[str]) -> Any:
    import plotly.graph_objects as go

    names = [_plot_text(label) for label in labels]
    figure = go.Figure(
        go.Heatmap(
            z=matrix,
            x=names,
            y=names,
            colorscale="Blues",
            hovertemplate="human %{y}<br>LLM %{x}<br>%{z} documents<extra></extra>",
        )
    )
    side = max(360, 18 * len(labels) + 160)
    figure.update_layout(
        xaxis_title="LLM label",
        yaxis_title="human label",
        height=side,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
    )
    figure.update_xaxes(type="category", automargin=True)
    figure.update_yaxes(type="category", automargin=True, autorange="reversed")
    return figure
