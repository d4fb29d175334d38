"""Label configs, results and annotations, without a server; ``tnt ls`` commands' own errors."""

from __future__ import annotations

import pytest
from label_studio_sdk.label_interface import LabelInterface
from typer.testing import CliRunner

from tests.ls_server import banking_workspace
from tnt.cli import app
from tnt.labels.store import LabelStore
from tnt.review.labelstudio import (
    LabelConfigMismatch,
    LabelSchema,
    ProjectLink,
    ProjectLinks,
    check_label_config,
    label_config,
    labels_from_result,
    prediction_errors,
    store_annotation,
)
from tnt.taxonomy.store import OTHER_LABEL, Taxonomy, TaxonomyLabel


def flat() -> Taxonomy:
    return Taxonomy(version=1, labels=[TaxonomyLabel(name="Card & PIN"), TaxonomyLabel(name='Say "hi"')])


def grouped() -> Taxonomy:
    return Taxonomy(
        version=2,
        labels=[
            TaxonomyLabel(name="Cards"), TaxonomyLabel(name="Money"),
            TaxonomyLabel(name="card_arrival", parent="Cards"), TaxonomyLabel(name="card_lost", parent="Cards"),
            TaxonomyLabel(name="top_up", parent="Money"),
        ],
    )  # fmt: skip


def test_a_flat_taxonomy_becomes_choices_with_other_and_escaped_names():
    for multi, mode in ((False, "single"), (True, "multiple")):
        config = label_config(flat(), multi)
        interface = LabelInterface(config)
        control = interface.get_control("label")
        assert control.tag == "Choices" and control.attr["choice"] == mode and control.to_name == ["text"]
        assert control.labels == ["Card & PIN", 'Say "hi"', OTHER_LABEL]
        assert "Card &amp; PIN" in config and interface.get_object("text").value == "$text"


def test_a_two_level_taxonomy_becomes_nested_taxonomy_choices_and_path_results():
    config = label_config(grouped())
    assert config.count("<Choice ") == 6  # two groups, three labels, Other
    assert '<Choice value="Cards">\n      <Choice value="card_arrival" />' in config
    schema = LabelSchema.of(grouped())
    assert schema.kind == "taxonomy" and schema.paths["card_lost"] == ["Cards", "card_lost"]
    assert schema.paths[OTHER_LABEL] == [OTHER_LABEL]
    interface = check_label_config(config, schema)
    result = schema.result("top_up")
    assert result[0]["value"] == {"taxonomy": [["Money", "top_up"]]} and not prediction_errors(interface, result)
    assert labels_from_result(result) == ("top_up", [])


def test_results_validate_against_tnts_config_and_read_back():
    schema = LabelSchema.of(flat(), multi=True)
    interface = check_label_config(label_config(flat(), multi=True), schema)
    result = schema.result("Card & PIN", ['Say "hi"', "Card & PIN"])
    assert result[0]["value"] == {"choices": ["Card & PIN", 'Say "hi"']}
    assert not prediction_errors(interface, result)
    assert labels_from_result(result) == ("Card & PIN", ['Say "hi"'])
    assert LabelSchema.of(flat()).result("Card & PIN", ['Say "hi"'])[0]["value"] == {"choices": ["Card & PIN"]}
    assert labels_from_result([]) is None
    assert labels_from_result([{"from_name": "comment", "type": "textarea", "value": {"text": ["x"]}}]) is None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.replace('toName="text"', 'toName="body"').replace('name="text"', 'name="body"'),
         "'to_name' 'text' not found in configuration"),
        (lambda c: c.replace('<Choice value="Card &amp; PIN" />', ""), "Invalid value for control 'label'"),
        (lambda c: c.replace("<Choices", "<Labels").replace("</Choices>", "</Labels>").replace("Choice ", "Label "),
         "does not match expected type"),
        (lambda c: c[:-10], "cannot be parsed"),
    ],
)  # fmt: skip
def test_configs_that_would_hide_predictions_are_refused_with_the_reason(edit, message):
    with pytest.raises(LabelConfigMismatch, match=message) as failure:
        check_label_config(edit(label_config(flat())), LabelSchema.of(flat()))
    assert "tnt ls config" in str(failure.value)


def test_storing_an_annotation_is_idempotent_and_follows_edits(workspace, tmp_path):
    taxonomy, gold, _ = banking_workspace(workspace, tmp_path, categories=2, per_category=2)
    link = ProjectLink(3, "http://ls", "p", taxonomy.version, False)
    ProjectLinks(workspace).save(link)
    first, second = taxonomy.names
    annotation = {"id": 11, "result": LabelSchema.of(taxonomy).result(first), "completed_by": {"id": 4, "email": "a@b.c"}}
    assert store_annotation(workspace, link, "d000", annotation) == "added"
    assert store_annotation(workspace, link, "d000", annotation) == "unchanged"
    assert store_annotation(workspace, link, "d000", annotation | {"result": LabelSchema.of(taxonomy).result(second)}) == "updated"
    row = LabelStore(workspace).current(taxonomy.version, "human")["d000"]
    assert (row["label"], row["origin"], row["model"]) == (second, "label-studio:3/11", "label-studio-user:a@b.c")
    assert store_annotation(workspace, link, "d000", annotation | {"was_cancelled": True}) == "retracted"
    assert store_annotation(workspace, link, "d000", annotation | {"result": []}) == "unchanged"
    assert LabelStore(workspace).current(taxonomy.version, "human") == {}


def test_project_links_remember_the_version_and_the_backend(workspace):
    links = ProjectLinks(workspace)
    links.save(ProjectLink(5, "http://ls", "first", 1, False))
    links.set_backend(5, "http://backend:9090")
    links.save(ProjectLink(5, "http://ls", "renamed", 2, True))
    assert links.get(5) == ProjectLink(5, "http://ls", "renamed", 2, True, "http://backend:9090")
    with pytest.raises(Exception, match="project 6 is not linked"):
        links.get(6)


def test_ls_commands(workspace, tmp_path, monkeypatch):
    banking_workspace(workspace, tmp_path, categories=3, per_category=1)
    runner = CliRunner()
    w = ["-w", str(workspace.directory)]
    shown = runner.invoke(app, ["ls", "config", *w, "--multi"])
    assert shown.exit_code == 0 and shown.output.startswith("<View>") and 'choice="multiple"' in shown.output
    out = tmp_path / "config.xml"
    assert runner.invoke(app, ["ls", "config", *w, "--out", str(out)]).exit_code == 0
    assert LabelInterface(out.read_text()).get_control("label").tag == "Choices"
    ids = tmp_path / "ids.txt"
    ids.write_text("d000\n")
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    pulled = runner.invoke(app, ["ls", "pull", *w, "--project", "1"])
    assert pulled.exit_code == 1 and "set LABEL_STUDIO_API_KEY in the environment" in pulled.output
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "not-a-real-key")
    monkeypatch.delenv("TNT_BACKEND_PASSWORD", raising=False)
    connected = runner.invoke(app, ["ls", "connect", *w, "--project", "1", "--backend-url", "http://127.0.0.1:1"])
    assert connected.exit_code == 1 and "set TNT_BACKEND_PASSWORD" in connected.output
    unlinked = runner.invoke(app, ["ls", "pull", *w, "--project", "1", "--url", "http://127.0.0.1:1"])
    assert unlinked.exit_code == 1 and "not linked" in unlinked.output
    unreachable = runner.invoke(app, ["ls", "push", *w, "--url", "http://127.0.0.1:1", "--ids", str(ids)])
    assert unreachable.exit_code == 1 and "cannot reach Label Studio at http://127.0.0.1:1" in unreachable.output
    assert "not-a-real-key" not in unlinked.output + unreachable.output
