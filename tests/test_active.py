"""Budgeted active labeling (``tnt label --budget``) over the scripted LLM server: it spends exactly
the budget, and a run killed mid-way (SIGKILL) and started again pays no answered request twice and
ends with the documents an uninterrupted run chooses."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from typer.testing import CliRunner

from tests.test_label import Oracle, settings_for, setup_corpus
from tests.test_label_resume import Gate, tnt_label_process, wait_for
from tnt.active import label_on_budget, load_pool, plan_budget
from tnt.cli import app
from tnt.corpus.store import select_documents
from tnt.distill.store import latest_model
from tnt.labels.store import LabelStore
from tnt.workspace import Workspace

DOCUMENTS, LABELS, BUDGET, ROUNDS = 150, 12, 40, 3  # rounds of 4 (seed), 12, 12, 12
CONCURRENCY = 4


def test_the_plan_spends_the_budget_a_seed_first_then_even_rounds():
    plan = plan_budget(100, 1000, "uncertain", seed_share=0.1, rounds=4)
    assert plan.sizes == (10, 23, 23, 22, 22) and plan.seed == 10
    assert plan_budget(100, 1000, "random").sizes == (100,)
    assert plan_budget(5000, 300, "uncertain", 0.1, 10).budget == 300  # never more than the pool
    assert sum(plan_budget(7, 300, "uncertain", 0.5, 10).sizes) == 7
    with pytest.raises(ValueError):
        plan_budget(10, 100, "greedy")


def labeled_texts(workspace: Workspace, version: int) -> set[str]:
    ids = list(LabelStore(workspace).current(version, "llm"))
    return {row[0] for row in workspace.db.execute(f"select text from documents where id in ({','.join('?' * len(ids))})", ids)}


@pytest.mark.slow
def test_the_budget_is_spent_exactly_and_a_rerun_pays_nothing(workspace, tmp_path, llm_server):
    taxonomy, truth = setup_corpus(workspace, tmp_path, DOCUMENTS, n_labels=LABELS)
    server = llm_server(Oracle(truth))
    pool = select_documents(workspace)
    result = label_on_budget(workspace, taxonomy.version, pool, BUDGET, settings_for(server), rounds=ROUNDS)

    assert server.count == BUDGET and LabelStore(workspace).count(taxonomy.version, "llm") == BUDGET
    assert [r.labeled for r in result.rounds if r is not None] == list(result.plan.sizes)
    assert result.report is not None and latest_model(workspace, taxonomy.version).id == result.report.model.id
    chosen = labeled_texts(workspace, taxonomy.version)
    assert len({truth[text] for text in chosen}) > 3  # the seed spreads over the corpus

    again = label_on_budget(workspace, taxonomy.version, pool, BUDGET, settings_for(server), rounds=ROUNDS)
    assert server.count == BUDGET and again.rounds == [None] * len(result.plan.sizes)
    assert labeled_texts(workspace, taxonomy.version) == chosen


@pytest.mark.slow
def test_sigkill_mid_budget_then_rerun_pays_nothing_twice(tmp_path, llm_server):
    with Workspace.create(tmp_path / "killed") as killed, Workspace.create(tmp_path / "whole") as whole:
        taxonomy, truth = setup_corpus(killed, tmp_path, DOCUMENTS, n_labels=LABELS)
        setup_corpus(whole, tmp_path, DOCUMENTS, n_labels=LABELS)
        load_pool(killed, select_documents(killed))  # the encoder's export and the embeddings, cached once
        gate = Gate(Oracle(truth), open_for=20)  # the seed (4), round 1 (12) and 4 of round 2
        server = llm_server(gate, latency_s=0.02)
        args = [
            "label", "--workspace", str(killed.directory), "--budget", str(BUDGET), "--rounds", str(ROUNDS),
            "--model", "openai/scripted", "--api-base", server.url, "--api-key", "sk-test", "--concurrency", str(CONCURRENCY),
        ]  # fmt: skip
        first = tnt_label_process(args, tmp_path / "first.log")
        try:
            # every slot held: each answer delivered before has been stored
            wait_for(lambda: gate.held >= CONCURRENCY or first.poll() is not None, 600, "requests to be held")
        finally:
            first.kill()
        first.wait()
        gate.release()
        assert first.returncode == -9, (tmp_path / "first.log").read_text()
        assert 0 < LabelStore(killed).count(taxonomy.version, "llm") < BUDGET

        second = CliRunner().invoke(app, args)
        assert second.exit_code == 0, second.output
        assert "labeled by an earlier run" in second.output and "registered" in second.output

        bodies = Counter(json.dumps(body, sort_keys=True) for body in server.requests)
        assert bodies.most_common(1)[0][1] == 1, "a request the server answered was sent again"
        assert server.count == BUDGET and LabelStore(killed).count(taxonomy.version, "llm") == BUDGET
        assert latest_model(killed, taxonomy.version) is not None

        baseline = llm_server(Oracle(truth))
        label_on_budget(whole, taxonomy.version, select_documents(whole), BUDGET, settings_for(baseline), rounds=ROUNDS)
        assert labeled_texts(killed, taxonomy.version) == labeled_texts(whole, taxonomy.version)
