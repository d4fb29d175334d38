"""`tnt report`: a self-contained HTML page whose plots render in headless Chromium, offline."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import random
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import BANKING77
from tnt.cli import app
from tnt.corpus.store import DocumentStore
from tnt.labels.store import LabelRecord, LabelStore
from tnt.llm.gateway import Gateway, LLMSettings
from tnt.report import ReportOptions, build_report
from tnt.runs import WorkspaceError
from tnt.select import SelectionSpec, select
from tnt.taxonomy.store import Taxonomy, TaxonomyLabel, TaxonomyStore
from tnt.workspace import Workspace

CHROMIUM = os.environ.get("TNT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
MALICIOUS = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def noisy(label: str, names: list[str], rng: random.Random, error_rate: float) -> str:
    return rng.choice(names) if rng.random() < error_rate else label


def ingest_banking77(workspace: Workspace, tmp_path: Path, rows: int) -> dict[str, str]:
    """The first ``rows`` BANKING77 test texts, and their gold intents by document id."""
    with (BANKING77 / "test.csv").open(newline="", encoding="utf-8") as handle:
        records = [{"id": f"b77-{i:04d}", **row} for i, row in zip(range(rows), csv.DictReader(handle))]
    path = tmp_path / "banking77.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    workspace.ingest([path], id_field="id", on_error="fail")
    return {r["id"]: r["category"] for r in records}


def pay_for_some_llm_calls(workspace: Workspace, llm_server, calls: int) -> None:
    """Real calls through the gateway (so the cost table has a priced run)."""
    server = llm_server(lambda body: "yes")
    settings = LLMSettings(model="openai/gpt-4o-mini", api_base=server.url, api_key="test")

    async def ask() -> None:
        with workspace.run("score-quality") as run:
            gateway = Gateway(workspace, settings, run_id=run.id, stage="quality")
            for i in range(calls):
                await gateway.complete([{"role": "user", "content": f"Is document {i} informative?"}], max_tokens=1)

    asyncio.run(ask())


@pytest.fixture
def labelled_banking77(workspace: Workspace, tmp_path: Path, llm_server) -> Workspace:
    """A reviewed project: gold human labels on some documents, noisy LLM labels on a sample, model
    tags and quality scores on all, LLM calls in the log, and one selection."""
    gold = ingest_banking77(workspace, tmp_path, rows=800)
    names = sorted(set(gold.values()))
    version = (
        TaxonomyStore(workspace).save(Taxonomy(labels=[TaxonomyLabel(name=n) for n in names], method="import")).version
    )
    rng = random.Random(0)
    ids = sorted(gold)
    llm_sample = rng.sample(ids, 400)
    records = [LabelRecord(doc_id=d, source="human", label=gold[d], taxonomy_version=version) for d in llm_sample[:200]]
    records += [
        LabelRecord(doc_id=d, source="llm", label=noisy(gold[d], names, rng, 0.3), taxonomy_version=version,
                    confidence=rng.betavariate(5, 2), origin="llm-label:test")
        for d in llm_sample
    ]  # fmt: skip
    records += [
        LabelRecord(doc_id=d, source="model", label=noisy(gold[d], names, rng, 0.1), taxonomy_version=version,
                    confidence=rng.betavariate(8, 2), origin="model:test")
        for d in ids
    ]  # fmt: skip
    records += [LabelRecord(doc_id=d, source="llm", score=rng.betavariate(2, 2), origin="ask-llm:test") for d in ids]
    LabelStore(workspace).add(records)
    pay_for_some_llm_calls(workspace, llm_server, calls=5)
    select(workspace, SelectionSpec(size=300, temperature=0.3, min_quality=0.3))
    return workspace


def open_in_chromium(html: Path, screenshot: Path) -> dict:
    """Load the page with every non-file request refused; return what rendered."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 1600})
        errors: list[str] = []
        remote: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.route(
            "**/*",
            lambda route: (
                route.continue_()
                if route.request.url.startswith("file:")
                else (remote.append(route.request.url), route.abort())
            ),
        )
        page.goto(html.resolve().as_uri())
        page.wait_for_selector(".js-plotly-plot .main-svg")
        page.screenshot(path=str(screenshot), full_page=True)
        result = {
            "errors": errors,
            "remote": remote,
            "plots": page.locator(".js-plotly-plot").count(),
            "plots_with_svg": page.evaluate(
                "[...document.querySelectorAll('.js-plotly-plot')].filter(p => p.querySelector('.main-svg')).length"
            ),
            "bars": page.locator(".js-plotly-plot .barlayer .point").count(),
            "heatmaps": page.locator(".js-plotly-plot .hm image").count(),
            "pwned": page.evaluate("window.__pwned === undefined ? null : window.__pwned"),
            "text": page.inner_text("body"),
            "examples": page.eval_on_selector_all(".example", "nodes => nodes.map(n => n.textContent)"),
            "ticks": page.eval_on_selector_all(
                ".js-plotly-plot .xtick text, .js-plotly-plot .ytick text", "nodes => nodes.map(n => n.textContent)"
            ),
        }
        browser.close()
    return result


@pytest.mark.slow
def test_report_plots_render_offline_in_headless_chromium(labelled_banking77: Workspace, tmp_path: Path) -> None:
    html = build_report(labelled_banking77, tmp_path / "report.html")
    source = html.read_text(encoding="utf-8")
    assert 'src="http' not in source and "<script src" not in source  # plotly.js is inline

    shot = tmp_path / "report.png"
    page = open_in_chromium(html, shot)
    assert page["errors"] == [] and page["remote"] == []
    # label mix, confidence, quality, lengths, LLM-vs-human confusion: each drawn as SVG
    assert page["plots"] == page["plots_with_svg"] == 5
    assert page["bars"] > 77 and page["heatmaps"] == 1
    assert shot.stat().st_size > 50_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = page["text"]
    assert "llm vs human" in text and "model vs human" in text and "openai/gpt-4o-mini" in text
    assert "300\nselected documents" in text and "selection floor 0.3" in text


def test_report_agreement_figures_match_the_labels(labelled_banking77: Workspace) -> None:
    from tnt.report import agreement_figures

    version = TaxonomyStore(labelled_banking77).get().version
    figures = agreement_figures(labelled_banking77, version)
    store = LabelStore(labelled_banking77)
    human, llm = store.current(version, "human"), store.current(version, "llm")
    agree = sum(llm[d]["label"] == human[d]["label"] for d in human)
    assert figures["llm"]["n"] == 200 and figures["llm"]["accuracy"] == pytest.approx(agree / 200)
    assert figures["llm"]["matrix"].sum() == 200 and figures["llm"]["matrix"].trace() == agree
    assert 0.5 < figures["model"]["kappa"] <= 1 and figures["model"]["accuracy"] > figures["llm"]["accuracy"]


def tiny_corpus(workspace: Workspace, tmp_path: Path) -> None:
    """Label 'common' has 6 documents (one hostile), 'rare' has 2: under the privacy floor of 5."""
    rows = [
        {"id": f"c{i}", "text": f"common question number {i} about fees and card limits", "label": "common"}
        for i in range(5)
    ]
    rows.append({"id": "c-hostile", "text": f"fees {MALICIOUS} card", "label": "common"})
    rows += [{"id": f"r{i}", "text": f"rare secret {i} Jane Doe 555-0100", "label": "rare"} for i in range(2)]
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    workspace.ingest([path], id_field="id", label_field="label", on_error="fail")


def test_privacy_floor_hides_examples_and_ngrams_of_small_labels(workspace: Workspace, tmp_path: Path) -> None:
    tiny_corpus(workspace, tmp_path)
    html = build_report(workspace, tmp_path / "report.html", ReportOptions(examples_per_label=10)).read_text()
    assert "common question number" in html and "Jane Doe" not in html and "secret" not in html
    assert "fees (6)" in html and "card (6)" in html  # n-grams held by ≥ 5 documents
    assert "1 such labels: rare" in html
    lowered = build_report(workspace, tmp_path / "all.html", ReportOptions(privacy_k=1)).read_text()
    assert "Jane Doe" in lowered


@pytest.mark.slow
def test_document_text_is_escaped_not_executed(workspace: Workspace, tmp_path: Path) -> None:
    tiny_corpus(workspace, tmp_path)
    version = TaxonomyStore(workspace).get().version
    hostile_label = "<b>bold</b><script>window.__pwned = 3</script>"
    LabelStore(workspace).add([LabelRecord(doc_id="c0", source="llm", label=hostile_label, taxonomy_version=version)])
    html = build_report(workspace, tmp_path / "report.html", ReportOptions(examples_per_label=10))
    assert MALICIOUS not in html.read_text() and "&lt;script&gt;window.__pwned = 1" in html.read_text()
    page = open_in_chromium(html, tmp_path / "report.png")
    assert page["pwned"] is None and page["errors"] == []
    assert f"fees {MALICIOUS} card" in page["examples"]  # shown as text, exactly as stored
    assert hostile_label in page["ticks"]  # the label name on the confusion matrix's axis, as text


def test_report_without_selection_scores_or_reviews(workspace: Workspace, tmp_path: Path) -> None:
    tiny_corpus(workspace, tmp_path)
    html = build_report(workspace).read_text()
    assert "No selection yet" in html and "No quality scores yet" in html
    assert "No document has both a human label" in html and "No LLM calls recorded" in html
    assert len(list((workspace.directory / "reports").glob("report-*.html"))) == 1
    assert DocumentStore(workspace).count() == 8


def test_cli_report_writes_the_file(workspace: Workspace, tmp_path: Path) -> None:
    tiny_corpus(workspace, tmp_path)
    out = tmp_path / "out" / "report.html"
    result = CliRunner().invoke(app, ["report", "-w", str(workspace.directory), "--out", str(out), "--privacy-k", "3"])
    assert result.exit_code == 0, result.output
    assert out.exists() and "opens offline" in result.output
    bad = CliRunner().invoke(app, ["report", "-w", str(workspace.directory), "--selection", "nope"])
    assert bad.exit_code == 1 and "no single run matches 'nope'" in bad.output


def test_report_uses_only_a_selection_of_its_taxonomy_version(workspace: Workspace, tmp_path: Path) -> None:
    tiny_corpus(workspace, tmp_path)
    second = TaxonomyStore(workspace).save(Taxonomy(labels=[TaxonomyLabel(name="any")], method="manual")).version
    LabelStore(workspace).add(
        LabelRecord(doc_id=doc_id, source="model", label="any", taxonomy_version=second)
        for doc_id in DocumentStore(workspace).ids()
    )
    selection = select(workspace, SelectionSpec(size=4))
    assert "No selection yet" not in build_report(workspace).read_text()  # latest taxonomy: the selection's
    assert "No selection yet" in build_report(workspace, options=ReportOptions(taxonomy_version=1)).read_text()
    with pytest.raises(WorkspaceError, match=f"made with taxonomy version {second}, not 1"):
        build_report(workspace, options=ReportOptions(taxonomy_version=1, selection_run=selection.run_id))


def test_report_shows_ami_and_label_mapping_against_the_imported_reference(workspace: Workspace, tmp_path: Path) -> None:
    tiny_corpus(workspace, tmp_path)  # its "label" column is imported as the reference version
    store = TaxonomyStore(workspace)
    reference = store.get()
    gold = {doc_id: row["label"] for doc_id, row in LabelStore(workspace).current(reference.version, "human").items()}
    version = store.save(Taxonomy(labels=[TaxonomyLabel(name="fees"), TaxonomyLabel(name="secrets")], method="cluster")).version
    assigned = {doc_id: "secrets" if doc_id in ("r0", "r1", "c0") else "fees" for doc_id in gold}
    LabelStore(workspace).add(LabelRecord(d, "model", label, version, origin="cluster:test") for d, label in assigned.items())
    from sklearn.metrics import adjusted_mutual_info_score

    expected = adjusted_mutual_info_score([gold[d] for d in sorted(gold)], [assigned[d] for d in sorted(gold)])
    html = build_report(workspace, tmp_path / "report.html").read_text()
    assert f"against the human labels of version {reference.version}, on 8 documents: <b>AMI {expected:.3f}</b>" in html
    row = '<tr><td>secrets</td><td class="num">3</td><td>rare</td><td class="num">0.67</td></tr>'
    assert row in html and '<tr><td>fees</td><td class="num">5</td><td>common</td><td class="num">1.00</td></tr>' in html
    # the reference itself has nothing to be compared with
    own = build_report(workspace, tmp_path / "own.html", ReportOptions(taxonomy_version=reference.version)).read_text()
    assert "No reference to compare with" in own and "<b>AMI" not in own
