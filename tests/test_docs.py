"""The docs keep up with the CLI: every command has help text and an example in README.md or docs/,
and every relative link in them points at a file that exists."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from typer.main import get_command

from tnt.cli import app

REPO_ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```+|~~~+)[^\n]*\n(.*?)^\1[ \t]*$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)


def commands(command=None, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """Every leaf command of the typer app as (("taxonomy", "generate"), click command)."""
    command = command or get_command(app)
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        return [(path, command)]
    found = []
    for name, sub in sorted(subcommands.items()):
        if getattr(sub, "hidden", False):
            continue
        found.extend(commands(sub, (*path, name)))
    return found


def example_lines() -> list[str]:
    """Lines of fenced blocks that invoke tnt: `tnt …`, `$ tnt …`, also after `VAR=… ` or `… && `."""
    lines = []
    for doc in DOC_FILES:
        for _, block in FENCE.findall(doc.read_text(encoding="utf-8")):
            for line in block.splitlines():
                line = line.strip().removeprefix("$ ")
                for part in re.split(r"&&|\|\||;|\|", line):
                    words = part.split()
                    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", words[0]):
                        words = words[1:]  # environment assignments before the command
                    if words and words[0] in ("tnt", ".venv/bin/tnt"):
                        lines.append(" ".join(["tnt", *words[1:]]))
    return lines


COMMANDS = commands()
EXAMPLES = example_lines()


def test_the_app_has_commands_and_the_docs_have_examples():
    assert len(COMMANDS) > 20, [" ".join(path) for path, _ in COMMANDS]
    assert EXAMPLES


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(path) for path, _ in COMMANDS])
def test_every_command_has_help_text(path, command):
    assert (command.help or "").strip(), f"`tnt {' '.join(path)}` has no help text (give its function a docstring)"


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(path) for path, _ in COMMANDS])
def test_every_command_has_an_example_in_the_docs(path, command):
    invocation = " ".join(["tnt", *path])
    used = [line for line in EXAMPLES if line == invocation or line.startswith(invocation + " ")]
    assert used, (
        f"no example of `{invocation}` in README.md or docs/*.md: add a fenced block with a line "
        f"starting `{invocation}` (or `$ {invocation}`) to the page of its stage"
    )


def relative_links(doc: Path) -> list[str]:
    text = FENCE.sub("", doc.read_text(encoding="utf-8"))  # code is not a link
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = LINK.findall(text) + REFERENCE_LINK.findall(text)
    return [t for t in targets if not urlparse(t).scheme and not t.startswith(("#", "mailto:", "//"))]


@pytest.mark.parametrize("doc", DOC_FILES, ids=[str(d.relative_to(REPO_ROOT)) for d in DOC_FILES])
def test_relative_links_point_at_files_that_exist(doc):
    missing = []
    for target in relative_links(doc):
        path = unquote(target.split("#", 1)[0])
        if path and not (doc.parent / path).exists():
            missing.append(target)
    assert not missing, f"{doc.relative_to(REPO_ROOT)} links to missing files: {missing}"


def test_the_link_check_sees_links():
    readme_links = relative_links(REPO_ROOT / "README.md")
    assert any(link.startswith("docs/") for link in readme_links), readme_links
