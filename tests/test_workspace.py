"""The workspace: creating and opening one, migrating an old one, and the record of runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlite_utils import Database

from tnt.runs import WorkspaceError
from tnt.schema import migrations
from tnt.workspace import DB_NAME, Workspace


def schema_of(db: Database) -> dict[str, set[tuple[str, str]]]:
    """Every table with its (column, type) pairs, plus the indexes: what a migration must reproduce."""
    tables = {name: {(c.name, c.type) for c in db[name].columns} for name in db.table_names()}
    indexes = {f"index {i.name}": {(col, "") for col in i.columns} for t in db.tables for i in t.indexes}
    return {**tables, **indexes}


def test_opening_a_directory_without_a_workspace_says_how_to_create_one(tmp_path):
    with pytest.raises(WorkspaceError, match=r"no tnt workspace in .*nowhere.*tnt init"):
        Workspace.open(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


def test_a_created_workspace_reopens_with_its_data_in_wal_mode(tmp_path):
    with Workspace.create(tmp_path / "ws") as ws:
        run_id = ws.runs.start("test").id
    with Workspace.open(tmp_path / "ws") as ws:
        assert ws.runs.get(run_id)["kind"] == "test"
        assert ws.db.journal_mode == "wal"
        assert migrations.pending(ws.db) == []


def test_a_workspace_at_the_first_schema_is_migrated_to_the_current_one(tmp_path):
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    old = Database(old_dir / DB_NAME)
    later = [m.name for m in migrations.pending(old)][1:]
    migrations.apply(old, stop_before=later)
    assert [m.name for m in migrations.applied(old)] == ["m001_spine"]
    old["runs"].insert({"id": "r1", "kind": "ingest", "params": "{}", "status": "completed", "stats": "{}"})
    old["documents"].insert({"id": "d1", "text": "kept across migrations", "run_id": "r1"})
    old.close()

    with Workspace.open(old_dir) as migrated, Workspace.create(tmp_path / "fresh") as fresh:
        assert [m.name for m in migrations.applied(migrated.db)] == [m.name for m in migrations.applied(fresh.db)]
        assert schema_of(migrated.db) == schema_of(fresh.db)
        assert migrated.db["documents"].get("d1")["text"] == "kept across migrations"
        assert migrated.runs.get("r1")["status"] == "completed"


def test_runs_record_their_outcome_stats_and_issues(workspace):
    with workspace.run("done", {"x": 1}) as run:
        run.stats = {"rows": 3}
        run.record_issue("a.jsonl line 2", "field 'text' is empty", "text")
    with pytest.raises(ValueError), workspace.run("broken") as failed:
        failed.stats = {"rows": 1}
        raise ValueError("stop")
    with pytest.raises(KeyboardInterrupt), workspace.run("stopped") as stopped:
        raise KeyboardInterrupt

    done = workspace.runs.get(run.id)
    assert (done["status"], done["params"], done["stats"]) == ("completed", {"x": 1}, {"rows": 3})
    assert done["finished_at"] >= done["started_at"]
    assert [(i["place"], i["field"], i["message"]) for i in run.issues()] == [
        ("a.jsonl line 2", "text", "field 'text' is empty")
    ]
    assert (workspace.runs.get(failed.id)["status"], workspace.runs.get(failed.id)["stats"]) == ("failed", {"rows": 1})
    assert workspace.runs.get(stopped.id)["status"] == "interrupted"
    assert [r["kind"] for r in workspace.runs.list()] == ["done", "broken", "stopped"]
    assert workspace.runs.last("done")["id"] == run.id and workspace.runs.last("nothing") is None


def test_runs_are_found_by_a_unique_id_prefix(workspace):
    run_id = workspace.runs.start("x").id
    assert workspace.runs.get(run_id[:6])["id"] == run_id
    with pytest.raises(WorkspaceError, match="no single run matches 'zz'"):
        workspace.runs.get("zz")


def test_readers_are_not_blocked_by_a_long_write_transaction(tmp_path: Path):
    # ingest --on-error fail holds one transaction for a whole run; WAL lets other commands read meanwhile
    with Workspace.create(tmp_path / "ws") as writer, Workspace.open(tmp_path / "ws") as reader:
        committed = writer.runs.start("x").id
        writer.db.conn.execute("insert into documents (id, text) values ('d', 'uncommitted')")
        assert writer.db.conn.in_transaction
        assert reader.runs.get(committed)["status"] == "running"
        assert reader.db["documents"].count == 0
        writer.db.conn.commit()
        assert reader.db["documents"].count == 1


@pytest.mark.parametrize("content", [bytes(range(256)) * 20, b"name,intent\nhello,greeting\n"], ids=["bytes", "csv"])
@pytest.mark.parametrize("command", [["runs"], ["init"], ["ingest", "docs.jsonl"]])
def test_a_tnt_db_that_is_not_a_database_is_one_clear_error_naming_it(tmp_path: Path, content, command):
    from typer.testing import CliRunner

    from tnt.cli import app

    (tmp_path / DB_NAME).write_bytes(content)
    (tmp_path / "docs.jsonl").write_text('{"text": "a document"}\n')
    result = CliRunner().invoke(app, [*command, "-w", str(tmp_path)])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit), result.exception
    assert f"{tmp_path / DB_NAME} is not a usable tnt workspace database (file is not a database)" in result.output
    assert "Traceback" not in result.output
    assert (tmp_path / DB_NAME).read_bytes() == content


def test_a_write_transaction_that_reads_first_is_not_failed_by_another_writer(tmp_path: Path):
    """A deferred transaction (sqlite-utils' own) that reads, then sees another process commit, fails its
    write at once; ``ws.write()`` holds the lock from its start, so the other writer waits instead."""
    import sqlite3
    import threading

    def insert_from_another_connection(doc_id: str, done: threading.Event) -> None:
        with Workspace.open(tmp_path / "ws") as other:
            other.db["documents"].insert({"id": doc_id, "text": "from the other writer"})
        done.set()

    with Workspace.create(tmp_path / "ws") as ws:
        with pytest.raises(sqlite3.OperationalError, match="locked"), ws.db.atomic():
            ws.db.execute("select count(*) from documents").fetchall()
            insert_from_another_connection("other-1", threading.Event())
            ws.db["documents"].insert({"id": "mine-1", "text": "lost"})

        done = threading.Event()
        with ws.write() as db:
            db.execute("select count(*) from documents").fetchall()
            threading.Thread(target=insert_from_another_connection, args=("other-2", done)).start()
            assert not done.wait(0.5)  # it waits for this transaction
            db["documents"].insert({"id": "mine-2", "text": "kept"})
        assert done.wait(30)
        assert {row["id"] for row in ws.db["documents"].rows} == {"other-1", "mine-2", "other-2"}
