"""Selection by quality alone (no taxonomy): Ask-LLM scores over real HTTP from a scripted judge whose
P(yes) varies by document, `--top-quality`, and scores from the LLM where it has one, else from a
distilled quality model tagged over the corpus, with the funnel counting each source."""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import pytest

from tests.llm_server import Reply
from tests.test_label import documents_in, setup_corpus
from tests.test_label_cli import invoke, llm_options, row
from tests.test_quality import yes_no_alternatives
from tnt.corpus.store import DocumentStore
from tnt.distill.tag import tag_corpus
from tnt.distill.train import train
from tnt.labels.quality import origin_prefix, score_quality
from tnt.labels.store import LabelRecord, LabelStore
from tnt.llm.gateway import LLMSettings
from tnt.metrics import regression_metrics
from tnt.select import ALL_LABEL, SelectionError, SelectionSpec, select
from tnt.workspace import Workspace


def ingest(workspace: Workspace, tmp_path: Path, rows: list[tuple[str, str]]) -> dict[str, str]:
    """The texts (no labels, so no taxonomy) into the corpus; returns each document's intent by id."""
    intents = dict(rows)
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in intents), encoding="utf-8")
    workspace.ingest([path])
    documents = [doc for batch in DocumentStore(workspace).iter_batches() for doc in batch]
    assert len(documents) == len(intents)
    return {doc.id: intents[doc.text] for doc in documents}


def judge_p_yes(text: str, intent: str) -> float:
    """Mostly the intent (which a model can learn from the words), partly the document itself."""
    intent_part = int(hashlib.sha1(intent.encode()).hexdigest(), 16) % 1000 / 1000
    document_part = int(hashlib.sha1(text.encode()).hexdigest(), 16) % 10**6 / 10**6
    return 0.02 + 0.96 * (0.8 * intent_part + 0.2 * document_part)


class Judge:
    """The scripted Ask-LLM judge: answers "yes" with the document's P(yes) in the top log-probabilities."""

    def __init__(self, workspace: Workspace, intents: dict[str, str]):
        self.p_yes = {doc.id: judge_p_yes(doc.text, intents[doc.id]) for doc in DocumentStore(workspace).get(list(intents))}
        self.by_text = {doc.text: self.p_yes[doc.id] for doc in DocumentStore(workspace).get(list(intents))}

    def __call__(self, body: dict) -> Reply:
        return Reply("yes", top_logprobs=yes_no_alternatives(self.by_text[documents_in(body)[0]]))


def settings_for(server) -> LLMSettings:
    return LLMSettings(model="openai/scripted", api_base=server.url, api_key="test", max_concurrency=8)


def llm_scores(workspace: Workspace) -> dict[str, float]:
    rows = LabelStore(workspace).current(None, "llm", origins_like=f"{origin_prefix()}:%")
    return {doc_id: row["score"] for doc_id, row in rows.items()}


def read_ids(path: Path) -> list[str]:
    return path.read_text().split()


@pytest.mark.slow
def test_top_quality_without_a_taxonomy_keeps_exactly_the_best_share_by_score(workspace, tmp_path, llm_server, banking77):
    intents = ingest(workspace, tmp_path, list(dict(banking77["train"][::8]).items())[:1000])
    server = llm_server(Judge(workspace, intents))
    ws = str(workspace.directory)
    scored = invoke("score", "quality", "-w", ws, "--all", *llm_options(server))
    assert scored.exit_code == 0, scored.output
    scores = llm_scores(workspace)
    assert len(scores) == 1000 and len(set(scores.values())) > 900  # P(yes) varies by document

    result = invoke("select", "-w", ws, "--top-quality", "10%", "--dedup", "none", "--out", str(tmp_path / "top.txt"))
    assert result.exit_code == 0, result.output
    ranked = sorted(scores.values(), reverse=True)
    assert ranked[99] > ranked[100]  # no tie at the boundary: the best 100 are one set
    best = {doc_id for doc_id, score in scores.items() if score >= ranked[99]}
    assert set(read_ids(tmp_path / "top.txt")) == best
    assert "by quality alone: the workspace has no taxonomy" in result.output
    assert [row(result.output, step) for step in ("scored", "score from llm", "quality_ok", "top_quality", "selected")] == [
        "1,000", "1,000", "1,000", "100", "100",
    ]  # fmt: skip
    assert ALL_LABEL in result.output

    again = invoke("select", "-w", ws, "--top-quality", "10%", "--dedup", "none")
    assert "unchanged: selection" in again.output  # a rerun stores nothing new

    # The floor applies first, then dedup, then the top share of what is left; --size samples from it.
    floor = ranked[700]
    selection = select(workspace, SelectionSpec(min_quality=floor, top_quality="10%", size=30, seed=3))
    assert selection.funnel["quality_ok"] == sum(score >= floor for score in scores.values())
    assert selection.funnel["top_quality"] == math.ceil(selection.funnel["unique"] / 10)
    assert len(selection.selected) == 30 and all(c.quality >= ranked[99] - 1e-12 for c in selection.selected)
    assert {c.label for c in selection.selected} == {ALL_LABEL} and {c.source for c in selection.selected} == {"llm"}

    by_label = invoke("select", "-w", ws, "--by-label", "--size", "10")
    assert by_label.exit_code == 1 and "the workspace has no taxonomy yet" in by_label.output
    refused = invoke("select", "-w", ws, "--quota", "card_arrival=5", "--size", "10")
    assert refused.exit_code == 1
    assert "--quota share documents across labels" in refused.output and "no taxonomy" in refused.output
    with pytest.raises(SelectionError, match="the selection goes by quality alone but no document has a quality score with origin 'edu"):
        select(workspace, SelectionSpec(quality_origin="edu"))


@pytest.mark.slow
def test_llm_scores_where_there_are_any_else_the_distilled_quality_model(workspace, tmp_path, llm_server, banking77):
    intents = ingest(workspace, tmp_path, list(dict(banking77["train"][1::3]).items())[:3000])
    server = llm_server(Judge(workspace, intents))
    ids = sorted(intents)
    trained_on, held_out = ids[:1000], ids[1000:1300]
    assert score_quality(workspace, trained_on, settings_for(server)).labeled == 1000
    started = time.perf_counter()
    report = train(workspace, target="quality", kind="hashing-linear")
    tag_corpus(workspace, report.model.id)
    distil_s = time.perf_counter() - started
    model_scores = {d: r["score"] for d, r in LabelStore(workspace).current(None, "model", origins_like=f"model:{report.model.id}").items()}
    assert len(model_scores) == 3000
    assert score_quality(workspace, held_out, settings_for(server)).labeled == 300  # scored after training: unseen by it

    truth = llm_scores(workspace)
    held = regression_metrics([truth[d] for d in held_out], [model_scores[d] for d in held_out])
    print(
        f"\ndistilled quality model {report.model.id} (hashing-linear, 1,000 LLM scores, {distil_s:.1f} s to train and tag 3,000): "
        f"Spearman {held['spearman']:.3f} on 300 held-out LLM-scored documents, MAE {held['mae']:.3f}; "
        f"train's own held-out: Spearman {report.metrics['spearman']:.3f} (n={report.metrics['n']})"
    )
    assert held["spearman"] > 0.5

    selection = select(workspace, SelectionSpec(top_quality="10%", dedup="none"))
    model_origin = f"model:{report.model.id}"
    assert selection.quality_sources == {"llm": 1300, "model": 1700}
    llm_origin = next(iter(LabelStore(workspace).current(None, "llm").values()))["origin"]
    assert selection.quality_origins == {model_origin: 1700, llm_origin: 1300}
    expected = {d: truth.get(d, model_scores[d]) for d in ids}  # the LLM's score wins over the model's
    ranked = sorted(expected.values(), reverse=True)
    assert {c.doc_id for c in selection.selected} == {d for d, s in expected.items() if s >= ranked[299]}
    assert all(c.quality == expected[c.doc_id] for c in selection.selected)
    assert {c.source for c in selection.selected} <= {"llm", "model"}

    result = invoke("select", "-w", str(workspace.directory), "--top-quality", "300", "--dedup", "none")
    assert result.exit_code == 0, result.output
    assert (row(result.output, "score from llm"), row(result.output, "score from model")) == ("1,300", "1,700")
    assert f"{llm_origin} 1,300" in result.output and f"{model_origin} 1,700" in result.output
    model_first = select(workspace, SelectionSpec(quality_precedence=("model", "llm"), dedup="none"))
    assert model_first.quality_sources == {"model": 3000}


def test_top_quality_among_labelled_documents_or_all_scored_ones_by_choice(workspace, tmp_path):
    taxonomy, truth = setup_corpus(workspace, tmp_path, 60, n_labels=5)
    documents = [doc for batch in DocumentStore(workspace).iter_batches() for doc in batch]
    scores = {doc.id: round(0.01 + i / 61, 6) for i, doc in enumerate(reversed(documents))}
    labelled = {doc.id: truth[doc.text] for doc in documents[:40]}
    store = LabelStore(workspace)
    store.add(LabelRecord(d, "llm", label, taxonomy.version) for d, label in labelled.items())
    store.add(LabelRecord(d, "llm", score=s, origin="ask-llm:abc") for d, s in scores.items())
    store.add([LabelRecord(documents[0].id, "human", score=0.0, origin="human:review")])  # a person's score wins

    def best(ids: list[str], n: int) -> set[str]:
        return set(sorted(ids, key=lambda d: -(0.0 if d == documents[0].id else scores[d]))[:n])

    by_label = select(workspace, SelectionSpec(top_quality=10, dedup="none"))
    assert by_label.taxonomy_version == taxonomy.version and by_label.funnel["labelled"] == 40
    assert {c.doc_id for c in by_label.selected} == best(list(labelled), 10)
    assert by_label.quality_sources == {"human": 1, "llm": 39}
    alone = select(workspace, SelectionSpec(by_label=False, top_quality="25%", dedup="none"))
    assert alone.taxonomy_version is None and alone.funnel["scored"] == 60
    assert {c.doc_id for c in alone.selected} == best(list(scores), 15)
    with pytest.raises(SelectionError, match="taxonomy version 1 given for a selection by quality alone"):
        select(workspace, SelectionSpec(by_label=False, taxonomy_version=1))
    with pytest.raises(ValueError, match="a percentage in \\(0, 100\\]"):
        SelectionSpec(top_quality="120%")
    result = invoke("select", "-w", str(workspace.directory), "--no-labels", "--top-quality", "25%", "--dedup", "none")
    assert result.exit_code == 0, result.output
    assert "by quality alone: --no-labels" in result.output and row(result.output, "selected") == "15"
