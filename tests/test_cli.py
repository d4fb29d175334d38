"""Every command has help text and a README example."""

from typing import Any

import typer.main
from typer.testing import CliRunner

from tests.conftest import REPO_ROOT
from tnt.cli import app


def command_paths(command: Any, prefix: str = "tnt") -> list[tuple[str, Any]]:
    if hasattr(command, "commands"):  # a group (typer ships its own click-compatible classes)
        found = []
        for name, sub in command.commands.items():
            found += command_paths(sub, f"{prefix} {name}")
        return found
    return [(prefix, command)]


def all_commands() -> list[tuple[str, Any]]:
    return command_paths(typer.main.get_command(app))


def test_every_command_has_help_text():
    missing = [path for path, command in all_commands() if not (command.help or "").strip()]
    assert missing == []


def test_every_command_appears_in_the_readme():
    readme = (REPO_ROOT / "README.md").read_text()
    missing = [path for path, _ in all_commands() if path not in readme]
    assert missing == []


def test_init_creates_a_workspace_that_cost_can_read(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["init", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ws" / "tnt.db").exists()
    result = runner.invoke(app, ["cost", "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output


def test_opening_a_missing_workspace_names_the_directory(tmp_path):
    result = CliRunner().invoke(app, ["runs", "--workspace", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert "nowhere" in result.output and "tnt init" in result.output
