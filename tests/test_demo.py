"""``tnt demo`` offline, end to end in-process: no LLM is called, the taxonomy is keyword-named k-means
clusters, and what it reports against the sample's own intents is true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sklearn.metrics import adjusted_mutual_info_score
from typer.testing import CliRunner

from tnt.cli import app
from tnt.distill.store import ModelStore
from tnt.labels.store import LabelStore
from tnt.llm.gateway import LLMSettings
from tnt.taxonomy.store import TaxonomyStore
from tnt.workspace import Workspace

# A local model whose file does not exist: any LLM call would fail, so the demo proves it needs none.
NO_LLM = "local/no-such-model.gguf"


def ami(labels: dict[str, str], gold: dict[str, str]) -> float:
    shared = sorted(labels.keys() & gold.keys())
    return adjusted_mutual_info_score([gold[d] for d in shared], [labels[d] for d in shared])


def test_only_a_provider_model_makes_the_demo_call_an_llm():
    from tnt.demo import uses_llm

    assert not uses_llm(LLMSettings()) and not uses_llm(LLMSettings(model=NO_LLM))
    assert uses_llm(LLMSettings(model="gpt-4o-mini")) and uses_llm(LLMSettings(model="openai/qwen", api_base="http://x/v1"))


@pytest.mark.slow
def test_offline_demo_clusters_names_labels_trains_tags_selects_and_reports(tmp_path: Path):
    directory = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "-w", str(directory), "--model", NO_LLM])
    assert result.exit_code == 0, result.output
    paths = dict(re.findall(r"^(selection|report|model|database): (/\S+)$", result.output, re.MULTILINE))
    assert set(paths) == {"selection", "report", "model", "database"}  # each printed whole, on its own line
    assert all(Path(path).exists() for path in paths.values()) and paths["report"].endswith(".html")

    with Workspace.open(directory) as ws:
        assert ws.db["llm_calls"].count == 0
        reference, clustered = TaxonomyStore(ws).all()
        assert reference.method == "import" and clustered.method == "cluster" and clustered.model is None
        assert len(clustered.names) == len(reference.names) == 77  # k: as many clusters as imported intents
        labels = LabelStore(ws)
        gold = {d: row["label"] for d, row in labels.current(reference.version, "human").items()}
        clusters = labels.current(clustered.version, "model", origins_like="cluster:%")
        assert len(clusters) == len(gold) == 1925 and {r["origin"] for r in clusters.values()} == {f"cluster:{clustered.run_id}"}
        cluster_ami = ami({d: row["label"] for d, row in clusters.items()}, gold)
        tags = {d: row["label"] for d, row in labels.current(clustered.version, "model").items()}
        assert {row["origin"] for row in labels.current(clustered.version, "model").values()} == {f"model:{ModelStore(ws).latest(clustered.version).id}"}
        tags_ami = ami(tags, gold)
        assert ModelStore(ws).latest(clustered.version).metrics["reference"] == "cluster-holdout"

    assert cluster_ami > 0.6 and tags_ami > 0.6  # keyword-named k-means recovers the intents well above chance
    assert f"AMI {cluster_ami:.3f}" in result.output and f"AMI {tags_ami:.3f} on 1925 documents" in result.output
    report = Path(paths["report"]).read_text(encoding="utf-8")
    assert f"<b>AMI {tags_ami:.3f}</b>" in report and "Each label's most frequent reference label" in report
    assert len(Path(paths["selection"]).read_text().splitlines()) == 500
    assert "No LLM was called" in result.output
