"""`tnt logs` and the call log: every LLM call in full, over real HTTP against the scripted server."""

from __future__ import annotations

import asyncio
import json

from sqlite_utils import Database
from typer.testing import CliRunner

from tests.test_label import Oracle, settings_for, setup_corpus
from tests.test_llm_gateway import Intent, ask, fast_settings, intent_for
from tnt.cli import app
from tnt.corpus.store import select_documents
from tnt.labels.labeling import label_documents
from tnt.llm.gateway import Gateway
from tnt.llm.log import CallLog
from tnt.llm.prompts import PromptLibrary
from tnt.schema import migrations
from tnt.workspace import DB_NAME, Workspace

FULL_CALL_COLUMNS = {"messages", "params", "response", "prompt_name", "prompt_hash"}


def invoke(*args: str):
    return CliRunner(env={"COLUMNS": "250"}).invoke(app, ["logs", *args])  # wide: rich keeps cells whole


def table_rows(output: str) -> list[list[str]]:
    """The cells of each data row of a printed rich table."""
    lines = [line for line in output.splitlines() if line.startswith("│")]  # the header has ┃
    return [[cell.strip() for cell in line.strip("│").split("│")] for line in lines]


def call_texts(workspace: Workspace, server, texts: list[str], run_id: str | None = None) -> None:
    gateway = Gateway(workspace, fast_settings(server), run_id=run_id, stage="test")

    async def run():
        for text in texts:
            await gateway.complete(ask(text), Intent)

    asyncio.run(run())


def test_a_labeling_call_shows_the_document_sent_and_the_answer_received(workspace, tmp_path, llm_server):
    taxonomy, truth = setup_corpus(workspace, tmp_path, 6)
    text = next(t for t in truth if '"' not in t and "\\" not in t)  # JSON escapes neither in the log
    wrong = next(name for name in taxonomy.names if name != truth[text])
    server = llm_server(Oracle(truth | {text: wrong}))
    result = label_documents(workspace, taxonomy.version, select_documents(workspace), settings_for(server))

    shown = invoke("-w", str(workspace.directory), "--run", result.run_id[:6], "--stage", "label", "-q", text, "--json")

    assert shown.exit_code == 0, shown.output
    [record] = json.loads(shown.output)
    [sent] = [body for body in server.requests if text in body["messages"][-1]["content"]]
    assert record["messages"] == sent["messages"]  # exactly what went over HTTP, the document included
    assert record["params"]["schema"] == sent["response_format"]["json_schema"]["schema"]
    assert json.loads(record["response"])["label"] == wrong
    assert (record["prompt_name"], record["prompt_hash"]) == ("label", PromptLibrary().get("label").hash)
    assert (record["run_id"], record["stage"], record["outcome"]) == (result.run_id, "label", "ok")
    sql = "select label from labels join documents on documents.id = labels.doc_id where text = ? and labels.run_id = ?"
    assert [row["label"] for row in workspace.db.query(sql, [text, result.run_id])] == [wrong]  # the label it explains


def test_the_list_shows_the_latest_calls_newest_first(workspace, llm_server):
    server = llm_server(intent_for)
    with workspace.run("label") as run:
        call_texts(workspace, server, ["first message", "second message", "first message"], run.id)

    shown = invoke("-w", str(workspace.directory), "-n", "2")

    assert shown.exit_code == 0, shown.output
    rows = table_rows(shown.output)
    assert [row[1] for row in rows] == ["3", "2"]
    columns = ["time", "id", "run", "stage", "model", "outcome", "tokens", "cost", "ms", "prompt", "response"]
    newest = dict(zip(columns, rows[0]))
    assert [newest[c] for c in ("run", "stage", "model", "outcome")] == [run.id, "test", "openai/scripted", "cached"]
    assert newest["prompt"] == "first message"
    assert newest["response"] == intent_for({"messages": ask("first message")})
    sent = CallLog(workspace).get(2)
    assert sent.prompt_tokens > 0 and sent.completion_tokens > 0
    assert rows[1][5:8] == ["ok", f"{sent.prompt_tokens}/{sent.completion_tokens}", "unknown"]  # no price for the model
    assert len(table_rows(invoke("-w", str(workspace.directory), "-n", "0").output)) == 3


def test_filters_by_run_prefix_and_stage_and_text(workspace, llm_server):
    server = llm_server(intent_for)
    with workspace.run("label") as first:
        call_texts(workspace, server, ["card declined", "transfer pending"], first.id)
    with workspace.run("label") as second:
        call_texts(workspace, server, ["card stolen"], second.id)
    directory = str(workspace.directory)

    def ids(*options: str) -> list[str]:
        shown = invoke("-w", directory, *options)
        assert shown.exit_code == 0, shown.output
        return [row[1] for row in table_rows(shown.output)]

    assert ids("--run", first.id[:8]) == ["2", "1"]
    assert ids("--run", second.id) == ["3"]
    assert ids("-q", "card") == ["3", "1"]
    assert ids("--stage", "test", "-q", "pending") == ["2"]
    assert ids("-q", "STOLEN") == ["3"]  # any case
    assert ids("-q", "Classify") == []  # the system prompt every call shares is not searched
    assert "No LLM calls match." in invoke("-w", directory, "--stage", "quality").output


def test_one_call_in_full_shows_each_message_the_parameters_and_the_response(workspace, llm_server):
    server = llm_server(intent_for)
    call_texts(workspace, server, ["[bold]my card[/bold] was declined"])  # rich markup must print as text

    shown = invoke("-w", str(workspace.directory), "--id", "1")

    assert shown.exit_code == 0, shown.output
    sections = shown.output.split("\n## ")
    assert sections[0].startswith("call 1 · ") and "· ok" in sections[0] and "model: openai/scripted" in sections[0]
    body = dict(section.split("\n\n", 1) for section in sections[1:])
    assert body["system"].strip() == "Classify the message."
    assert body["user"].strip() == "[bold]my card[/bold] was declined"
    assert json.loads(body["parameters"])["schema"] == Intent.model_json_schema()
    assert body["response"].strip() == intent_for(server.requests[0])

    as_json = json.loads(invoke("-w", str(workspace.directory), "--id", "1", "--json").output)
    assert as_json["messages"] == server.requests[0]["messages"] and as_json["id"] == 1


def test_unknown_call_or_run_is_a_clear_error(workspace):
    directory = str(workspace.directory)

    missing_call = invoke("-w", directory, "--id", "42")
    missing_run = invoke("-w", directory, "--run", "nope")

    assert missing_call.exit_code == 1 and "no LLM call with id 42" in missing_call.output
    assert missing_run.exit_code == 1 and "no single run matches 'nope'" in missing_run.output


def test_an_old_workspace_gains_the_full_call_columns_and_keeps_its_calls(tmp_path):
    directory = tmp_path / "old"
    directory.mkdir()
    old = Database(directory / DB_NAME)
    migrations.apply(old, stop_before="llm_001_full_calls")  # the schema as it was before the full log
    old["llm_calls"].insert(
        {"run_id": "r0", "key": "k0", "model": "gpt-4o-mini", "stage": "label", "outcome": "ok", "attempts": 1,
         "prompt_tokens": 100, "completion_tokens": 7, "cost": 0.0001, "latency_ms": 812.5,
         "created_at": "2025-01-02T03:04:05.000+00:00"}  # fmt: skip
    )
    assert not FULL_CALL_COLUMNS & set(old["llm_calls"].columns_dict)
    old.close()

    with Workspace.open(directory) as workspace:
        assert FULL_CALL_COLUMNS <= set(workspace.db["llm_calls"].columns_dict)
        [record] = CallLog(workspace).recent()
    shown = invoke("-w", str(directory), "--id", "1")

    assert (record.key, record.model, record.prompt_tokens, record.latency_ms) == ("k0", "gpt-4o-mini", 100, 812.5)
    assert record.messages is None and record.response is None
    assert shown.exit_code == 0 and "not recorded: logged before tnt kept full calls" in shown.output
    assert "2025-01-02 03:04:05" in shown.output and "tokens in/out: 100/7" in shown.output
