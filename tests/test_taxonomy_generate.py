"""TnT-LLM generation, refinement and evaluation over the scripted OpenAI-compatible server.

The responders read each request the way a model would: the response schema's name says which step
is asking, and the table and documents are read back from the prompt.
"""

import csv
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.llm_server import Reply
from tnt.cli import app
from tnt.corpus.store import DocumentStore
from tnt.labels.store import LabelRecord, LabelStore
from tnt.llm.gateway import LLMSettings
from tnt.taxonomy.evaluate import evaluate_taxonomy
from tnt.taxonomy.guardrails import TaxonomyLimits
from tnt.taxonomy.pipeline import GenerateOptions, generate_taxonomy, refine_taxonomy
from tnt.taxonomy.proposer import GuardrailFailure, ProposerSettings
from tnt.taxonomy.store import Taxonomy, TaxonomyLabel, TaxonomyStore
from tnt.taxonomy.summarize import SummaryStore

runner = CliRunner()
USE_CASE = "the customer's intent"


# How the scripted model reads a request


def step(body: dict) -> str:
    name = body["response_format"]["json_schema"]["name"]
    if name == "TableAnswer" and "reviewing" in body["messages"][0]["content"]:
        return "review"
    return name


def prompt_text(body: dict) -> str:
    return "\n".join(message["content"] for message in body["messages"])


def table_in(body: dict) -> list[tuple[str, str]]:
    """The label table a prompt shows (numbered lines before any document)."""
    before_documents = body["messages"][-1]["content"].split("<document>")[0]
    return re.findall(r"^\d+\. (.+?): (.*)$", before_documents, re.MULTILINE)


def documents_in(body: dict) -> list[str]:
    fenced = re.findall(r"<document>\n(.*?)\n</document>", prompt_text(body), re.DOTALL)
    return [line for block in fenced for line in re.findall(r"^\d+\. (.*)$", block, re.MULTILINE)]


def table(*names: str) -> list[dict]:
    return [{"id": i, "name": n, "description": f"Customers asking about {n.lower()}."} for i, n in enumerate(names, 1)]


def as_labels(rows: list[tuple[str, str]]) -> list[dict]:
    return [{"id": i, "name": n, "description": d} for i, (n, d) in enumerate(rows, 1)]


def settings(server) -> LLMSettings:
    return LLMSettings(model="openai/scripted", api_base=server.url, api_key="test", backoff_base_s=0.01)


def add_documents(workspace, tmp_path: Path, texts: list[str], labels: list[str] | None = None) -> None:
    path = tmp_path / "docs.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "category"])
        for i, text in enumerate(texts):
            writer.writerow([text, labels[i] if labels else ""])
    workspace.ingest([path], label_field="category" if labels else None)


def steps_of(server) -> list[str]:
    return [step(body) for body in server.requests]


# The loop


def test_generate_update_review_loop_keeps_the_best_candidate_on_held_out_documents(workspace, tmp_path, llm_server):
    add_documents(workspace, tmp_path, [f"doc-{i:02d} my card has not arrived" for i in range(25)])
    updates = 0

    def responder(body):
        nonlocal updates
        kind = step(body)
        if kind == "TableAnswer":
            return json.dumps({"labels": table("Cards", "Fees")})
        if kind == "UpdateAnswer":
            updates += 1
            names = ("Cards", "Fees", "Transfers") if updates <= 3 else ("Cards", "Fees", "Transfers", "Refunds")
            return json.dumps({"rating": 60, "explanation": "ok", "suggested_edits": ["add one"], "labels": table(*names)})
        if kind == "RatingAnswer":  # the 3-label table of epoch 1 fits the validation documents best
            return json.dumps({"explanation": "fits", "rating": 90 if len(table_in(body)) == 3 else 50})
        if kind == "review":
            return json.dumps({"labels": [{**label, "description": "Reviewed: " + label["description"]} for label in as_labels(table_in(body))]})
        raise AssertionError(kind)

    server = llm_server(responder)
    options = GenerateOptions(use_case=USE_CASE, sample=None, proposer=ProposerSettings(batch_size=5, epochs=2, validation_share=0.2))
    taxonomy = generate_taxonomy(workspace, options, settings(server))

    assert steps_of(server) == (
        ["TableAnswer"] + ["UpdateAnswer"] * 3 + ["RatingAnswer"]  # epoch 1: 20 training docs in batches of 5
        + ["UpdateAnswer"] * 4 + ["RatingAnswer"]  # epoch 2
        + ["review", "RatingAnswer"]  # review the best candidate, score the result
    )
    temperatures = [body["temperature"] for body in server.requests]
    assert temperatures[:2] == [0.5, 0.2] and temperatures[-2] == 0.0
    # each update sees the table the previous step returned
    assert [name for name, _ in table_in(server.requests[2])] == ["Cards", "Fees", "Transfers"]
    # validation documents are held out of every generate/update prompt
    validation = set(documents_in(server.requests[4]))
    assert len(validation) == 5
    for body in server.requests:
        if step(body) in ("TableAnswer", "UpdateAnswer"):
            assert validation.isdisjoint(documents_in(body))
    # the best candidate (epoch 1, 3 labels) was reviewed and kept, not the last one
    assert taxonomy.names == ["Cards", "Fees", "Transfers"]
    assert all(label.description.startswith("Reviewed: ") for label in taxonomy.labels)
    assert taxonomy.score == 90 and taxonomy.method == "tnt-llm" and taxonomy.model == "openai/scripted"
    assert set(taxonomy.prompt_hashes) == {"taxonomy_generate", "taxonomy_update", "taxonomy_rate", "taxonomy_review", "summarize"}
    assert taxonomy.params["proposer"]["batch_size"] == 5
    run = workspace.runs.get(taxonomy.run_id)
    assert run["status"] == "completed"
    assert run["stats"]["candidates"] == [{"epoch": 1, "score": 90, "labels": 3}, {"epoch": 2, "score": 50, "labels": 4}]


def test_summaries_are_stored_reused_and_skipped_for_short_texts(workspace, tmp_path, llm_server):
    long_texts = [f"Long complaint {i}: " + "my card payment was declined at the shop again " * 12 for i in range(4)]
    add_documents(workspace, tmp_path, long_texts + ["short one", "short two"])

    def responder(body):
        kind = step(body)
        if kind == "SummaryAnswer":
            number = re.search(r"Long complaint (\d)", prompt_text(body)).group(1)
            return json.dumps({"summary": f"declined card payment number {number}", "explanation": "intent is clear"})
        if kind == "RatingAnswer":
            return json.dumps({"explanation": "fine", "rating": 70})
        return json.dumps({"labels": table("Card payments", "Other questions")})

    server = llm_server(responder)
    options = GenerateOptions(use_case=USE_CASE, proposer=ProposerSettings(epochs=1, validation_share=0.0))
    first = generate_taxonomy(workspace, options, settings(server))

    assert steps_of(server).count("SummaryAnswer") == 4  # the short texts are used as they are
    assert SummaryStore(workspace).count() == 4
    generate_prompt = next(b for b in server.requests if step(b) == "TableAnswer")
    assert set(documents_in(generate_prompt)) == {f"declined card payment number {i}" for i in range(4)} | {"short one", "short two"}
    assert workspace.runs.get(first.run_id)["stats"]["summaries"] == {"llm": 4, "text": 2}

    before = server.count
    again = generate_taxonomy(workspace, options, settings(server))
    assert server.count == before  # summaries and table calls all reused: nothing paid twice
    assert again.labels == first.labels


def test_guardrails_retry_hotter_with_the_problems_then_fail_with_the_reason(workspace, tmp_path, llm_server):
    add_documents(workspace, tmp_path, [f"text {i}" for i in range(10)])
    server = llm_server(lambda body: json.dumps({"labels": table(*[f"Label {i}" for i in range(12)])}))
    options = GenerateOptions(use_case=USE_CASE, proposer=ProposerSettings(epochs=1, validation_share=0.0), retries=3)

    with pytest.raises(GuardrailFailure) as caught:
        generate_taxonomy(workspace, options, settings(server))

    assert [body["temperature"] for body in server.requests] == pytest.approx([0.5, 0.6, 0.7, 0.8])
    assert "taxonomy_generate: no acceptable table after 4 attempts" in str(caught.value)
    assert "12 labels, but there must be 2 to 10" in str(caught.value)
    assert "Your previous answer was rejected" not in prompt_text(server.requests[0])
    assert "- 12 labels, but there must be 2 to 10" in prompt_text(server.requests[1])
    assert workspace.runs.list("taxonomy.generate")[-1]["status"] == "failed"
    assert TaxonomyStore(workspace).all() == []

    result = runner.invoke(app, ["taxonomy", "generate", "-w", str(workspace.directory), "--use-case", USE_CASE,
                                 "--epochs", "1", "--retries", "1", "--model", "openai/scripted", "--api-base", server.url])  # fmt: skip
    assert result.exit_code == 1
    assert "12 labels, but there must be 2 to 10" in " ".join(result.output.split())


def test_an_update_that_keeps_breaking_the_guardrails_leaves_the_table_it_was_given(workspace, tmp_path, llm_server):
    add_documents(workspace, tmp_path, [f"text {i}" for i in range(8)])

    def responder(body):
        if step(body) == "UpdateAnswer":  # one name repeated in every row, as a tiny model does
            labels = [{"id": i, "name": "Card", "description": "Card things."} for i in (1, 2)]
            return json.dumps({"rating": 40, "explanation": "-", "suggested_edits": [], "labels": labels})
        if step(body) == "review":
            return json.dumps({"labels": as_labels(table_in(body))})
        return json.dumps({"labels": table("Cards", "Transfers")})

    server = llm_server(responder)
    proposer = ProposerSettings(batch_size=4, epochs=1, validation_share=0.0)
    options = GenerateOptions(use_case=USE_CASE, proposer=proposer, retries=1, summarize=False)
    taxonomy = generate_taxonomy(workspace, options, settings(server))

    assert steps_of(server) == ["TableAnswer", "UpdateAnswer", "UpdateAnswer", "review"]
    assert taxonomy.names == ["Cards", "Transfers"]
    run = workspace.runs.get(taxonomy.run_id)
    assert run["stats"]["rejected_steps"] == ["taxonomy_update"] and run["stats"]["update_ratings"] == []
    [issue] = workspace.runs.issues(taxonomy.run_id)
    assert issue["place"] == "taxonomy_update" and "label name 'Card' appears 2 times" in issue["message"]


def test_a_failing_update_fails_the_run_when_there_is_no_valid_table_to_keep(workspace, tmp_path, llm_server):
    add_documents(workspace, tmp_path, [f"text {i}" for i in range(8)])
    seed = TaxonomyStore(workspace).save(
        Taxonomy(labels=[TaxonomyLabel(name=f"Label {i}", description="Too many.") for i in range(12)], method="import")
    )
    provider_down = {"on": False}

    def responder(body):
        if step(body) == "UpdateAnswer" and provider_down["on"]:
            return Reply("the provider rejects this request", status=400)
        if step(body) == "UpdateAnswer":  # answers, but keeps all 12 labels of the seed
            labels = [{"id": i, "name": f"Label {i}", "description": "Still too many."} for i in range(12)]
            return json.dumps({"rating": 40, "explanation": "-", "suggested_edits": [], "labels": labels})
        return json.dumps({"labels": table("Cards", "Transfers")})

    server = llm_server(responder)
    proposer = ProposerSettings(batch_size=4, epochs=1, validation_share=0.0)
    seeded = GenerateOptions(use_case=USE_CASE, proposer=proposer, retries=1, summarize=False, seed_version=seed.version)
    with pytest.raises(GuardrailFailure, match="12 labels, but there must be 2 to 10"):
        generate_taxonomy(workspace, seeded, settings(server))  # the seed itself breaks the guardrails

    provider_down["on"] = True
    fresh = GenerateOptions(use_case=USE_CASE, proposer=proposer, retries=1, summarize=False)
    with pytest.raises(GuardrailFailure, match="the provider rejects this request"):
        generate_taxonomy(workspace, fresh, settings(server))  # no answer at all: nothing to judge the table by
    assert [run["status"] for run in workspace.runs.list("taxonomy.generate")] == ["failed", "failed"]
    assert [t.version for t in TaxonomyStore(workspace).all()] == [seed.version]


def test_a_table_whose_names_keep_repeating_is_merged_after_the_retries_and_the_merge_recorded(workspace, tmp_path, llm_server):
    add_documents(workspace, tmp_path, [f"text {i}" for i in range(4)])
    answers = iter([table("Cards", "cards", "Cards"), table("Cards", "Transfers", "transfers")])

    def responder(body):
        if step(body) == "review":
            return json.dumps({"labels": as_labels(table_in(body))})
        return json.dumps({"labels": next(answers)})

    server = llm_server(responder)
    options = GenerateOptions(use_case=USE_CASE, proposer=ProposerSettings(epochs=1, validation_share=0.0), retries=1, summarize=False)
    taxonomy = generate_taxonomy(workspace, options, settings(server))

    assert steps_of(server) == ["TableAnswer", "TableAnswer", "review"]
    assert taxonomy.names == ["Cards", "Transfers"]  # the latest attempt, first row of each name kept
    [issue] = workspace.runs.issues(taxonomy.run_id)
    assert issue["place"] == "taxonomy_generate"
    assert "rows sharing a name were merged ('Transfers')" in issue["message"]
    assert "attempt 1: label name 'Cards' appears 3 times" in issue["message"]


def test_the_table_schema_bounds_words_for_grammar_constrained_models(workspace, tmp_path, llm_server):
    add_documents(workspace, tmp_path, [f"text {i}" for i in range(4)])
    server = llm_server(lambda body: json.dumps({"labels": table("Cards", "Transfers")}))
    limits = TaxonomyLimits(max_name_words=2, max_description_words=6)
    generate_taxonomy(workspace, GenerateOptions(use_case=USE_CASE, limits=limits, summarize=False), settings(server))

    schema = server.requests[0]["response_format"]["json_schema"]["schema"]
    row = schema["$defs"]["LabelDraft"]["properties"]
    assert re.fullmatch(row["name"]["pattern"].strip("^$"), "Card payments")
    assert not re.fullmatch(row["name"]["pattern"].strip("^$"), "Card payments abroad")
    assert re.fullmatch(row["description"]["pattern"].strip("^$"), "A card payment that was declined.")
    assert not re.fullmatch(row["description"]["pattern"].strip("^$"), "A card payment that was declined twice.")


def test_guardrails_accept_a_later_valid_answer(workspace, tmp_path, llm_server):
    add_documents(workspace, tmp_path, [f"text {i}" for i in range(10)])
    attempts = iter([table("Cards", "cards"), table("Cards", "Other"), table("Cards", "Fees")])

    def responder(body):
        if step(body) == "review":
            return json.dumps({"labels": as_labels(table_in(body))})
        return json.dumps({"labels": next(attempts)})

    server = llm_server(responder)
    options = GenerateOptions(use_case=USE_CASE, proposer=ProposerSettings(epochs=1, validation_share=0.0))
    taxonomy = generate_taxonomy(workspace, options, settings(server))

    assert steps_of(server) == ["TableAnswer"] * 3 + ["review"]
    assert "- label name 'Cards' appears 2 times" in prompt_text(server.requests[1])
    assert "- 'Other' is reserved" in prompt_text(server.requests[2])
    assert taxonomy.names == ["Cards", "Fees"]


# Versions: generate → edit by hand → refine, with lineage


def simple_responder(body):
    kind = step(body)
    if kind == "RatingAnswer":
        return json.dumps({"explanation": "fine", "rating": 75})
    if kind == "UpdateAnswer":
        return json.dumps({"rating": 80, "explanation": "fits", "suggested_edits": [], "labels": as_labels(table_in(body))})
    if kind in ("review", "RefineAnswer"):
        rows = table_in(body)
        if kind == "RefineAnswer":  # follow the feedback: merge Fees into Charges
            rows = [(n, d) for n, d in rows if n != "Fees"]
            return json.dumps({"changes": ["merged Fees into Charges"], "labels": as_labels(rows)})
        return json.dumps({"labels": as_labels(rows)})
    if kind == "GroupAnswer":
        return json.dumps({"groups": [
            {"name": "Money", "description": "Money moving in or out.", "members": [2, 3]},
            {"name": "Card services", "description": "The card itself.", "members": [1]},
        ]})  # fmt: skip
    return json.dumps({"labels": table("Cards", "Fees", "Transfers")})


def test_version_lineage_through_generate_edit_and_refine(workspace, tmp_path, llm_server, monkeypatch):
    add_documents(workspace, tmp_path, [f"text {i}" for i in range(12)])
    server = llm_server(simple_responder)
    ws = ["-w", str(workspace.directory)]
    llm = ["--model", "openai/scripted", "--api-base", server.url, "--api-key", "test"]

    generated = runner.invoke(app, ["taxonomy", "generate", *ws, *llm, "--use-case", USE_CASE, "--epochs", "1", "--batch-size", "5"])
    assert generated.exit_code == 0, generated.output
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["taxonomy", "export", *ws, "-o", "t.yaml"]).exit_code == 0
    edited = Path("t.yaml").read_text().replace("name: Transfers", "name: Charges").replace("name: Cards", "name: Card issues")
    Path("t.yaml").write_text(edited)
    imported = runner.invoke(app, ["taxonomy", "import", *ws, "t.yaml"])
    assert imported.exit_code == 0, imported.output
    refined = runner.invoke(app, ["taxonomy", "refine", *ws, *llm, "--feedback", "Fees and Charges are the same thing; merge them."])
    assert refined.exit_code == 0, refined.output

    v1, v2, v3 = TaxonomyStore(workspace).all()
    assert (v1.method, v1.parent) == ("tnt-llm", None)
    assert (v2.method, v2.parent, v2.names) == ("import", v1.version, ["Card issues", "Fees", "Charges"])
    assert (v3.method, v3.parent, v3.names) == ("refine", v2.version, ["Card issues", "Charges"])
    assert v3.note == "merged Fees into Charges" and v3.params["feedback"].startswith("Fees and Charges")
    assert set(v3.prompt_hashes) == {"taxonomy_refine"} and v3.model == "openai/scripted"
    refine_request = server.requests[-1]
    assert "Fees and Charges are the same thing" in prompt_text(refine_request)
    diff = runner.invoke(app, ["taxonomy", "diff", *ws, str(v2.version), str(v3.version)])
    assert "- Fees" in diff.output


def test_refine_uses_people_s_label_corrections(workspace, tmp_path, llm_server):
    add_documents(workspace, tmp_path, ["where is my card", "why was I charged", "fee on transfer", "send money abroad"])
    base = TaxonomyStore(workspace).save(Taxonomy(labels=[TaxonomyLabel(name=n, description=f"{n} questions") for n in ("Cards", "Fees", "Transfers")], use_case=USE_CASE))
    ids = DocumentStore(workspace).ids()
    llm_said = ["Cards", "Fees", "Fees", "Transfers"]
    people_said = ["Cards", "Other", "Other", "Fees"]
    labels = LabelStore(workspace)
    labels.add(LabelRecord(d, "llm", label, base.version) for d, label in zip(ids, llm_said))
    labels.add(LabelRecord(d, "human", label, base.version) for d, label in zip(ids, people_said))
    server = llm_server(simple_responder)

    refined = refine_taxonomy(workspace, "", settings(server), version=base.version)

    prompt = prompt_text(server.requests[0])
    assert "- Fees → Other (2×)" in prompt and "- Transfers → Fees (1×): send money abroad" in prompt
    assert "Cards → Cards" not in prompt
    assert refined.parent == base.version and refined.names == ["Cards", "Transfers"]
    assert workspace.runs.get(refined.run_id)["stats"]["corrections"][0]["count"] == 2
    with pytest.raises(ValueError, match="nothing to refine with"):
        refine_taxonomy(workspace, "  ", settings(server), version=base.version, use_corrections=False)


def test_two_levels_group_labels_under_parents_and_retry_a_bad_grouping(workspace, tmp_path, llm_server):
    add_documents(workspace, tmp_path, [f"text {i}" for i in range(8)])
    groupings = iter([
        {"groups": [{"name": "Money", "description": "Money moving.", "members": [2]},
                    {"name": "Cards", "description": "Same name as a label.", "members": [1]}]},
        {"groups": [{"name": "Money", "description": "Money moving.", "members": [2, 3]},
                    {"name": "Card services", "description": "The card itself.", "members": [1]}]},
    ])  # fmt: skip

    def responder(body):
        return json.dumps(next(groupings)) if step(body) == "GroupAnswer" else simple_responder(body)

    server = llm_server(responder)
    options = GenerateOptions(use_case=USE_CASE, levels=2, proposer=ProposerSettings(epochs=1, validation_share=0.0))
    taxonomy = generate_taxonomy(workspace, options, settings(server))

    retry = prompt_text([b for b in server.requests if step(b) == "GroupAnswer"][1])
    assert "labels [3] are in no group" in retry and "group 'Cards' has the name of a label" in retry
    assert taxonomy.names == ["Money", "Fees", "Transfers", "Card services", "Cards"]
    assert taxonomy.leaf_names == ["Fees", "Transfers", "Cards"]
    tree = taxonomy.tree()
    assert [label.name for label in tree[None]] == ["Money", "Card services"]
    assert [label.name for label in tree["Money"]] == ["Fees", "Transfers"]


def test_dry_run_estimates_without_sending_anything(workspace, tmp_path, llm_server):
    add_documents(workspace, tmp_path, ["long text " * 60 + str(i) for i in range(6)] + ["short"])
    server = llm_server(simple_responder)
    result = runner.invoke(app, ["taxonomy", "generate", "-w", str(workspace.directory), "--use-case", USE_CASE,
                                 "--model", "gpt-4o-mini", "--batch-size", "3", "--epochs", "2", "--dry-run"])  # fmt: skip
    assert result.exit_code == 0, result.output
    # 7 documents: 1 held out, 6 in 2 batches. 6 summaries (not "short") + epoch 1: generate, update
    # + epoch 2: 2 updates + review + 3 ratings of the 1 validation batch (2 epochs and the final table)
    assert re.search(r"│\s+14\s+│\s+0\s+│", result.output), result.output
    assert server.count == 0 and TaxonomyStore(workspace).all() == []


# Evaluation


def test_evaluate_coverage_accuracy_relevance_and_agreement_with_reference(workspace, tmp_path, llm_server):
    texts = ["card never came", "card is lost", "a fee was charged", "another fee", "send a transfer", "nice weather"]
    gold = ["card", "card", "fee", "fee", "transfer", "chitchat"]
    add_documents(workspace, tmp_path, texts, gold)
    reference = TaxonomyStore(workspace).get().version
    taxonomy = TaxonomyStore(workspace).save(Taxonomy(labels=[
        TaxonomyLabel(name="Cards", description="card problems"),
        TaxonomyLabel(name="Fees", description="fees charged"),
        TaxonomyLabel(name="Transfers", description="money transfers"),
    ], use_case=USE_CASE))  # fmt: skip
    keyword = {"card": "Cards", "fee": "Fees", "transfer": "Transfers"}

    def responder(body):
        text = re.search(r"<document>\n(.*?)\n</document>", prompt_text(body), re.DOTALL).group(1)
        match = next((label for word, label in keyword.items() if word in text), "Other")
        kind = step(body)
        if kind == "AssignAnswer":
            return json.dumps({"label": match})
        if kind == "PairwiseAnswer":  # right for cards and fees, wrong for transfers
            a = re.search(r"^A: (.+?):", body["messages"][0]["content"], re.MULTILINE).group(1)
            right = "A" if a == match else "B"
            return json.dumps({"choice": right if match != "Transfers" else {"A": "B", "B": "A"}[right]})
        if kind == "RelevanceAnswer":
            return json.dumps({"relevant": match != "Fees"})
        raise AssertionError(kind)

    server = llm_server(responder)
    evaluation = evaluate_taxonomy(workspace, settings(server), version=taxonomy.version, reference=reference)

    assert evaluation.documents == 6 and evaluation.failures == 0
    assert evaluation.coverage == pytest.approx(5 / 6)
    assert evaluation.accuracy == pytest.approx(4 / 5)
    assert evaluation.relevance == pytest.approx(3 / 5)
    assert evaluation.ami == pytest.approx(1.0)
    assert evaluation.mapping["Fees"] == {"reference": "fee", "share": 1.0, "count": 2}
    assert evaluation.label_counts == {"Cards": 2, "Fees": 2, "Transfers": 1, "Other": 1}
    assert steps_of(server).count("AssignAnswer") == 6 and steps_of(server).count("PairwiseAnswer") == 5
    report = Path(workspace.runs.get(workspace.runs.last("taxonomy.evaluate")["id"])["stats"]["report"])
    assert json.loads(report.read_text())["coverage"] == pytest.approx(5 / 6)
    assert "Other" not in TaxonomyStore(workspace).get(taxonomy.version).names  # offered only while evaluating
    before = server.count
    ws = ["-w", str(workspace.directory), "--model", "openai/scripted", "--api-base", server.url, "--api-key", "test"]
    cli = runner.invoke(app, ["taxonomy", "evaluate", *ws, "--version", str(taxonomy.version), "--reference", str(reference)])
    assert cli.exit_code == 0, cli.output
    assert re.search(r"│\s+6\s+│\s+0\.833\s+│\s+0\.800\s+│\s+0\.600\s+│\s+1\.000\s+│\s+0\s+│", cli.output), cli.output
    assert server.count == before  # the same judgements again: all from the cache
