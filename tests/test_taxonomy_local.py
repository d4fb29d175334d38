"""Offline end to end: the local GGUF model (SmolLM2-135M) builds and stores a taxonomy from 200
BANKING77 texts through the whole TnT-LLM loop (generate, three updates, rate, review), by the CLI.

Quality is not judged with a 135M model; what must hold is that the loop runs offline, the stored
table passes the guardrails, and every update either improved the table or is recorded as rejected.
"""

import csv

import pytest
from typer.testing import CliRunner

from tests.conftest import BANKING77
from tnt.cli import app
from tnt.taxonomy.guardrails import TaxonomyLimits, guardrail_problems
from tnt.taxonomy.store import TaxonomyStore


@pytest.mark.slow
def test_local_model_generates_and_stores_a_taxonomy_for_200_banking77_texts(workspace, tmp_path):
    with (BANKING77 / "train.csv").open() as f:
        rows = list(csv.DictReader(f))[::50][:200]  # every intent, the file being sorted by intent
    path = tmp_path / "b200.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["text", "category"])
        writer.writeheader()
        writer.writerows(rows)
    ws = ["-w", str(workspace.directory)]
    assert CliRunner().invoke(app, ["ingest", str(path), *ws]).exit_code == 0

    result = CliRunner().invoke(app, [
        "taxonomy", "generate", *ws, "--use-case", "the customer's intent", "--sample", "200",
        "--batch-size", "50", "--epochs", "1", "--max-labels", "8", "--max-description-words", "15",
    ])  # fmt: skip

    assert result.exit_code == 0, result.output
    taxonomy = TaxonomyStore(workspace).get()
    assert taxonomy.model == "local/smollm2" and taxonomy.method == "tnt-llm"
    assert guardrail_problems(taxonomy.labels, TaxonomyLimits(max_labels=8, max_description_words=15)) == []
    run = workspace.runs.get(taxonomy.run_id)
    assert run["status"] == "completed" and run["stats"]["documents"] == 200
    updates = len(run["stats"]["update_ratings"]) + run["stats"]["rejected_steps"].count("taxonomy_update")
    assert updates == 3  # 160 training texts (40 held out to rate): generate on the first 50, update on the rest
    assert run["stats"]["candidates"][0]["score"] is not None
