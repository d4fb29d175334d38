"""Taxonomy files, versions and diffs: no LLM involved."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tnt.cli import app
from tnt.taxonomy.file import (
    TaxonomyFileError,
    diff_taxonomies,
    dump_taxonomy,
    import_taxonomy,
    load_taxonomy_file,
)
from tnt.taxonomy.guardrails import TaxonomyLimits, guardrail_problems
from tnt.taxonomy.store import Taxonomy, TaxonomyLabel, TaxonomyStore

runner = CliRunner()


def two_level() -> Taxonomy:
    return Taxonomy(
        labels=[
            TaxonomyLabel(name="Cards", description="Anything about payment cards."),
            TaxonomyLabel(name="Card arrival", description="Where is my new card.", parent="Cards"),
            TaxonomyLabel(name="Card payments", description="A card payment failed or is pending.", parent="Cards"),
            TaxonomyLabel(name="No", description="Refusals: 'no', 'yes' and 'on' must stay strings."),
        ],
        use_case="the customer's intent",
        method="tnt-llm",
    )


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_export_import_round_trip_keeps_labels_hierarchy_and_lineage(workspace, tmp_path: Path, fmt):
    saved = TaxonomyStore(workspace).save(two_level())
    path = tmp_path / f"taxonomy.{fmt}"
    path.write_text(dump_taxonomy(saved, fmt))

    imported = import_taxonomy(workspace, path)

    assert imported.labels == saved.labels
    assert imported.parent == saved.version and imported.method == "import"
    assert imported.use_case == saved.use_case
    assert [label.name for label in imported.leaves] == ["Card arrival", "Card payments", "No"]
    assert [label.name for label in imported.tree()["Cards"]] == ["Card arrival", "Card payments"]


def test_bad_file_reports_every_problem_with_its_line(tmp_path: Path):
    text = """\
version: 1
labels:
  - name: Cards
    description: card things
  - name: Fees
    description:
    parent: Charges
  - name: cards
    description: duplicate, differing only in case
  - name: Other
    description: reserved
  - name: Transfers
    descripton: a typo in a key
  - name: [not, a, string]
    description: x
"""
    path = tmp_path / "edited.yaml"
    path.write_text(text)
    with pytest.raises(TaxonomyFileError) as caught:
        load_taxonomy_file(path)
    lines = {line: message for line, message in caught.value.problems}
    assert "description: must not be empty" in lines[5]
    assert "'Charges' is not a label" in lines[7]
    assert "already defined on line 3" in lines[8]
    assert "reserved" in lines[10]
    assert "descripton" in lines[13] and "Extra inputs" in lines[13]
    assert "labels.5.name" in lines[14]
    assert str(caught.value).splitlines()[1] == f"{path}:5: labels.1.description: must not be empty ('Fees')"


def test_yaml_syntax_error_names_the_line(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("labels:\n  - name: Cards\n    description: fine\n  - name: Fees\n   description: bad indent\n")
    with pytest.raises(TaxonomyFileError) as caught:
        load_taxonomy_file(path)
    [(line, message)] = caught.value.problems
    assert line == 5 and "not valid YAML" in message


def test_cli_import_of_a_bad_file_fails_with_lines_and_saves_nothing(workspace, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("bad.yaml").write_text("labels:\n  - name: Cards\n  - name: Cards\n    description: again\n")
    result = runner.invoke(app, ["taxonomy", "import", "bad.yaml", "-w", str(workspace.directory)])
    assert result.exit_code == 1
    output = " ".join(result.output.split())  # the terminal may wrap long lines
    assert "bad.yaml:2: labels.0.description: must not be empty" in output
    assert "bad.yaml:3: labels.1.name: 'Cards' already defined on line 2" in output
    assert TaxonomyStore(workspace).all() == []


def test_diff_finds_added_removed_renamed_and_edited_labels():
    old = Taxonomy(version=1, labels=[
        TaxonomyLabel(name="Cards", description="card things"),
        TaxonomyLabel(name="Fees", description="charges and fees"),
        TaxonomyLabel(name="Spam", description="not banking"),
    ])  # fmt: skip
    new = Taxonomy(version=2, labels=[
        TaxonomyLabel(name="Cards", description="payment cards: arrival, activation, payments"),
        TaxonomyLabel(name="Charges", description="charges and fees"),
        TaxonomyLabel(name="Transfers", description="money sent or received"),
    ])  # fmt: skip
    diff = diff_taxonomies(old, new)
    assert [label.name for label in diff.added] == ["Transfers"]
    assert [label.name for label in diff.removed] == ["Spam"]
    assert diff.renamed == [("Fees", "Charges")]
    assert diff.changed == [("Cards", "description", "card things", "payment cards: arrival, activation, payments")]
    assert diff_taxonomies(old, old).empty


def test_cli_show_list_diff_export(workspace, tmp_path: Path):
    store = TaxonomyStore(workspace)
    first = store.save(two_level())
    edited = dump_taxonomy(first).replace("name: Card payments", "name: Card payment problems")
    (tmp_path / "t.yaml").write_text(edited)
    second = import_taxonomy(workspace, tmp_path / "t.yaml")
    ws = ["-w", str(workspace.directory)]

    shown = runner.invoke(app, ["taxonomy", "show", *ws])
    assert shown.exit_code == 0, shown.output
    assert f"Taxonomy version {second.version}" in shown.output and "Card payment problems" in shown.output
    listed = runner.invoke(app, ["taxonomy", "list", *ws])
    assert listed.exit_code == 0 and "import" in listed.output
    diffed = runner.invoke(app, ["taxonomy", "diff", str(first.version), str(second.version), *ws])
    assert diffed.exit_code == 0
    assert "Card payments → Card payment problems" in diffed.output
    exported = runner.invoke(app, ["taxonomy", "export", str(first.version), "--format", "json", *ws])
    assert exported.exit_code == 0 and '"name": "Card payments"' in exported.output


def test_guardrails_name_each_problem():
    labels = [
        TaxonomyLabel(name="Cards", description="card things"),
        TaxonomyLabel(name="cards", description="again"),
        TaxonomyLabel(name="Other", description="catch-all"),
        TaxonomyLabel(name="A very long label name indeed", description=""),
    ]
    problems = guardrail_problems(labels, TaxonomyLimits(max_labels=3, max_name_words=5))
    assert problems == [
        "4 labels, but there must be 2 to 3",
        "label name 'Cards' appears 2 times",
        "'Other' is reserved: it is added to every taxonomy automatically",
        "label name 'A very long label name indeed' has more than 5 words",
        "label 'A very long label name indeed' has an empty description",
    ]


def test_a_workspace_from_before_summaries_gains_the_table_on_open(tmp_path: Path):
    from tnt.taxonomy.summarize import Summary, SummaryStore
    from tnt.workspace import Workspace

    with Workspace.create(tmp_path / "old") as ws:
        TaxonomyStore(ws).save(two_level())
        ws.db["summaries"].drop()  # as it was before the migration shipped
        ws.db.execute("delete from _sqlite_migrations where name = 'summarize_001_summaries'")
        ws.db.conn.commit()
        assert "summaries" not in ws.db.table_names()

    with Workspace.open(tmp_path / "old") as ws:
        assert TaxonomyStore(ws).get().names == two_level().names
        store = SummaryStore(ws)
        store.save([Summary("d1", "a summary")], key="k", use_case="u", model="m", prompt_hash="p", run_id=None)
        store.save([Summary("d1", "again")], key="k", use_case="u", model="m", prompt_hash="p", run_id=None)
        assert store.get(["d1"], "k")["d1"].summary == "a summary"  # one summary per document and key
