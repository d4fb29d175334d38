"""Offline end to end: the local GGUF model (SmolLM2-135M) builds and stores a taxonomy.

Quality is not judged with a 135M model; what must hold is that the whole loop runs offline,
every answer passes the guardrails (or the run says why not), and the version is stored.
"""

import csv

import pytest

from tests.conftest import BANKING77
from tnt.corpus import ingest
from tnt.llm import LLMSettings
from tnt.taxonomy import TaxonomyLimits, TaxonomyStore, guardrail_problems
from tnt.taxonomy_generate import ProposerSettings
from tnt.taxonomy_pipeline import GenerateOptions, generate_taxonomy


@pytest.mark.slow
def test_local_model_generates_and_stores_a_taxonomy_for_50_banking77_texts(workspace, tmp_path):
    with (BANKING77 / "train.csv").open() as f:
        rows = list(csv.DictReader(f))[::200][:50]  # spread over the intents
    path = tmp_path / "b50.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["text", "category"])
        writer.writeheader()
        writer.writerows(rows)
    ingest(workspace, [path])
    limits = TaxonomyLimits(max_labels=3, max_name_words=3, max_description_words=6)  # short: CPU time
    options = GenerateOptions(
        use_case="the customer's intent",
        sample=None,
        limits=limits,
        # one minibatch: generate and review. SmolLM2-135M cannot do the update step (its updated tables
        # repeat one name until the unique-names guardrail gives up), so this run leaves it out.
        proposer=ProposerSettings(batch_size=50, epochs=1, validation_share=0.0),
    )

    taxonomy = generate_taxonomy(workspace, options, LLMSettings())

    assert taxonomy.model == "local/smollm2" and TaxonomyStore(workspace).get().version == taxonomy.version
    assert guardrail_problems(taxonomy.labels, limits) == []
    run = workspace.get_run(taxonomy.run_id)
    assert run["status"] == "completed" and run["stats"]["documents"] == 50
