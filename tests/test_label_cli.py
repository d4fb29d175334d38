"""`tnt label` and `tnt score quality` through typer's CliRunner, against the scripted server."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tests.llm_server import Reply
from tests.test_label import Oracle, documents_in, setup_corpus
from tnt.cli import app


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def row(output: str, title: str) -> str:
    """The value beside ``title`` in a printed two-column table."""
    line = next(line for line in output.splitlines() if f" {title} " in line)
    return line.split("│")[-2].strip()


def llm_options(server) -> list[str]:
    return ["--model", "openai/scripted", "--api-base", server.url, "--api-key", "sk-test"]


def test_label_needs_an_explicit_choice_of_documents(workspace, tmp_path):
    setup_corpus(workspace, tmp_path, 5)
    result = invoke("label", "-w", str(workspace.directory))
    assert result.exit_code == 1
    assert "--sample N, --ids FILE or --all" in result.output


def test_dry_run_estimates_and_sends_nothing_then_the_run_labels(workspace, tmp_path, llm_server):
    _, truth = setup_corpus(workspace, tmp_path, 20)
    server = llm_server(Oracle(truth))
    common = [
        "label",
        "-w",
        str(workspace.directory),
        "--sample",
        "12",
        "--batch-size",
        "4",
        *llm_options(server),
    ]

    estimate = invoke(*common, "--dry-run")
    assert estimate.exit_code == 0, estimate.output
    assert "nothing was sent" in estimate.output and server.count == 0
    assert (
        row(estimate.output, "documents selected") == "12" and row(estimate.output, "requests to send") == "3"
    )

    labeled = invoke(*common)
    assert labeled.exit_code == 0, labeled.output
    assert "12 done, 0 failed, 0 already done, 3 requests sent" in labeled.output

    again = invoke(*common, "--dry-run")
    assert (row(again.output, "already done (skipped)"), row(again.output, "requests to send")) == ("12", "0")


def test_unknown_prompt_or_taxonomy_is_a_clean_error(workspace, tmp_path, llm_server):
    setup_corpus(workspace, tmp_path, 5)
    ws = str(workspace.directory)
    result = invoke("label", "-w", ws, "--all", "--taxonomy", "9", "--model", "openai/x", "--dry-run")
    assert result.exit_code == 1 and "no taxonomy version 9" in result.output
    result = invoke("score", "quality", "-w", ws, "--all", "--prompt", "nope", "--dry-run")
    assert result.exit_code == 1 and "nope/system.j2 not found" in result.output


def test_score_quality_prints_the_method_of_each_score(workspace, tmp_path, llm_server):
    setup_corpus(workspace, tmp_path, 6)
    server = llm_server(
        lambda body: Reply(
            "no", top_logprobs=[{"token": "no", "logprob": -0.1}, {"token": "yes", "logprob": -2.4}]
        )
    )

    result = invoke("score", "quality", "-w", str(workspace.directory), "--all", *llm_options(server))

    assert result.exit_code == 0, result.output
    assert "6 done, 0 failed" in result.output and "logprobs" in result.output
    assert all(len(documents_in(body)) == 1 for body in server.requests)
    assert json.loads(workspace.runs.last("score-quality")["stats"])["counts"] == {"logprobs": 6}
