"""The CLI as a whole: help text and README examples for every command, a fast and quiet start, LLM
options defined once, whole paths in summaries."""

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import typer.main
from typer.testing import CliRunner

from tests.conftest import REPO_ROOT, TEST_SETTINGS
from tnt.cli import app
from tnt.cli.common import LLM_OPTIONS, console, llm_options
from tnt.llm.gateway import LLMSettings
from tnt.paths import cli_log_file
from tnt.taxonomy.store import Taxonomy, TaxonomyLabel
from tnt.workspace import Workspace

LLM_COMMANDS = {
    "tnt label", "tnt score quality", "tnt taxonomy generate", "tnt taxonomy refine", "tnt taxonomy evaluate",
    "tnt ls push", "tnt serve", "tnt demo", "tnt taxonomy discover",
}  # fmt: skip
HEAVY_LIBRARIES = ("sqlite_utils", "pandas", "numpy", "pydantic", "litellm", "httpx", "torch", "onnxruntime")


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


# An example of every command in README.md or docs/*.md: tests/test_docs.py (the reference moved to docs/).


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


def test_init_takes_the_workspace_as_w_like_every_command_or_as_an_argument(tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["init", "-w", str(tmp_path / "a")]).exit_code == 0
    assert runner.invoke(app, ["init", str(tmp_path / "b")]).exit_code == 0
    assert (tmp_path / "a" / "tnt.db").exists() and (tmp_path / "b" / "tnt.db").exists()
    both = runner.invoke(app, ["init", str(tmp_path / "c"), "-w", str(tmp_path / "d")])
    assert both.exit_code == 1 and "not both" in both.output
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_paths_are_printed_whole_on_a_narrow_terminal(tmp_path):
    deep = tmp_path.joinpath(*["a-directory-with-a-long-name"] * 4)
    runner = CliRunner(env={"COLUMNS": "80"})
    created = runner.invoke(app, ["init", "-w", str(deep)])
    assert f"Workspace ready: {deep / 'tnt.db'}\n" in created.output
    with Workspace.open(deep) as ws:
        ws.taxonomies.save(Taxonomy(labels=[TaxonomyLabel(name="billing", description="Questions about bills.")]))
    for command, name in (["ls", "config"], "config.xml"), (["taxonomy", "export"], "taxonomy.yaml"):
        result = runner.invoke(app, [*command, "-w", str(deep), "-o", str(deep / name)])
        assert result.exit_code == 0, result.output
        assert str(deep / name) in result.output and (deep / name).exists()


def test_library_warnings_and_logging_go_to_the_log_not_the_console(tmp_path, monkeypatch):
    monkeypatch.setenv("TNT_CACHE_DIR", str(tmp_path / "cache"))
    # A command of our own behind the tnt app's start-up callback: a torch or onnxruntime warning
    # cannot be raised on demand.
    probe = typer.Typer(callback=app.info.callback)

    @probe.command()
    def noisy() -> None:
        warnings.warn("TracerWarning: converting a tensor to a Python boolean", UserWarning)
        logging.getLogger("onnxruntime.quantization").warning("Please consider pre-processing")
        logging.warning("advice from the root logger")
        console.print("the command's own result")

    @probe.command()
    def other() -> None:  # two commands, so that `noisy` is invoked by name as in tnt
        """Nothing."""

    result = CliRunner().invoke(probe, ["noisy"])
    assert result.exit_code == 0, result.output
    assert result.output == "the command's own result\n"
    log = cli_log_file().read_text(encoding="utf-8")
    assert cli_log_file().is_relative_to(tmp_path)
    for message in ("converting a tensor", "Please consider pre-processing", "advice from the root logger"):
        assert message in log


def test_the_help_names_the_log_file():
    result = CliRunner().invoke(app, ["--help"])
    assert "go to" in result.output and "TNT_CACHE_DIR" in result.output


def test_every_llm_command_takes_the_same_llm_options():
    options = {option.name for option in LLM_OPTIONS.values()}
    taking = {path: {p.name for p in command.params} for path, command in all_commands()}
    llm_commands = {path for path, names in taking.items() if "api_base" in names}
    assert llm_commands == LLM_COMMANDS
    assert {path: options - taking[path] for path in llm_commands} == {path: set() for path in llm_commands}


def test_llm_options_reach_the_command_as_one_settings_object():
    received: list[LLMSettings] = []
    probe = typer.Typer()

    @probe.command()
    @llm_options
    def call(limit: int = 1, *, llm: LLMSettings) -> None:
        received.append(llm)

    args = ["--api-base", "http://127.0.0.1:1/v1", "--concurrency", "3", "--rpm", "30", "--limit", "2"]
    env = {"TNT_MODEL": "openai/served", "TNT_API_KEY": "sk-from-env"}
    result = CliRunner().invoke(probe, args, env=env)
    assert result.exit_code == 0, result.output
    [llm] = received
    assert (llm.model, llm.api_base, llm.api_key.get_secret_value()) == ("openai/served", "http://127.0.0.1:1/v1", "sk-from-env")
    assert (llm.max_concurrency, llm.requests_per_minute, llm.tokens_per_minute) == (3, 30.0, None)
    rejected = CliRunner().invoke(probe, ["--concurrency", "0"])
    assert rejected.exit_code == 2 and "--concurrency" in rejected.output


def test_command_annotations_are_evaluated_when_the_modules_load():
    """Else typer evaluates each annotation string of every command at each start (see tnt/cli/__init__.py)."""

    def callbacks(typer_app: typer.Typer) -> list[Any]:
        found = [info.callback for info in typer_app.registered_commands]
        return found + [c for group in typer_app.registered_groups for c in callbacks(group.typer_instance)]

    stringly = [f"{c.__module__}.{c.__name__}" for c in callbacks(app) if any(isinstance(a, str) for a in c.__annotations__.values())]
    assert stringly == [], "drop `from __future__ import annotations` from these command modules"


def test_importing_the_cli_loads_no_heavy_library():
    """`tnt --help` stays fast: each command imports the library it calls."""
    code = f"import sys, tnt.cli; print(sorted(set({HEAVY_LIBRARIES!r}) & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert loaded.stdout.strip() == "[]"


def test_no_user_tnt_setting_or_cache_reaches_a_test():
    assert [name for name in os.environ if name.startswith("TNT_") and name not in TEST_SETTINGS] == ["TNT_CACHE_DIR"]
    assert not Path(os.environ["TNT_CACHE_DIR"]).is_relative_to(Path.home() / ".cache")
