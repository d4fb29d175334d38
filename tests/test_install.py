"""The pinned installs: constraints.txt covers every dependency pyproject.toml names and agrees with
its bounds, and every install line (CI scripts, README) installs from the pins."""

import re

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO_ROOT

PIN = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+)$")
PIP_LINE = re.compile(r"\bpip (install|wheel)\b")
INLINE_PIN = re.compile(r"(?<![\w-])([A-Za-z0-9._-]+)==([0-9][^\s\"']*)")


def read_pins(name: str) -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for number, line in enumerate((REPO_ROOT / name).read_text().splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"{name}:{number}: {line!r} is not NAME==VERSION"
        key = canonicalize_name(match["name"])
        assert key not in pins, f"{name}:{number}: {match['name']} is pinned twice"
        pins[key] = Version(match["version"])
    return pins


def project_requirements() -> list[tuple[str, Requirement]]:
    """(where, requirement) for the dependencies and every extra that apply on this platform; an extra
    naming tnt's own extras (dev pulls tnt[export]) is checked through those."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    found = []
    for group, requirements in {"dependencies": project["dependencies"], **extras}.items():
        for text in requirements:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == canonicalize_name(project["name"]):
                assert requirement.extras <= set(extras), f"{group}: {text} names an extra tnt does not have"
            elif requirement.marker is None or requirement.marker.evaluate({"extra": group}):
                found.append((group, requirement))
    return found


def pip_lines(name: str) -> list[tuple[int, str]]:
    lines = (REPO_ROOT / name).read_text().splitlines()
    return [(number, line) for number, line in enumerate(lines, 1) if PIP_LINE.search(line)]


def test_every_dependency_is_pinned_within_its_bounds():
    pins = read_pins("constraints.txt")
    problems = []
    for group, requirement in project_requirements():
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is None:
            problems.append(f"{requirement} ({group}) is not in constraints.txt")
        elif not requirement.specifier.contains(pinned, prereleases=True):
            problems.append(f"{requirement} ({group}): constraints.txt pins {pinned}")
    assert not problems, "rerun .ci/freeze-constraints after installing:\n" + "\n".join(problems)


def test_tnt_itself_is_not_pinned():
    assert "tnt" not in read_pins("constraints.txt")


def test_label_studio_pins_the_version_the_script_installs():
    script = (REPO_ROOT / ".ci" / "label-studio.sh").read_text()
    version = re.search(r'^version="([^"]+)"', script, re.MULTILINE)[1]
    assert read_pins("constraints-label-studio.txt")[canonicalize_name("label-studio")] == Version(version)


@pytest.mark.parametrize(
    ("file", "constraints"),
    [
        (".ci/setup.sh", "constraints.txt"),
        (".ci/label-studio.sh", "constraints-label-studio.txt"),
        ("README.md", "constraints.txt"),
    ],
)
def test_install_lines_use_the_constraints(file, constraints):
    lines = pip_lines(file)
    assert lines, f"{file} has no pip install line"
    pins = read_pins(constraints)
    for number, line in lines:
        assert f"-c {constraints}" in line, f"{file}:{number} installs without -c {constraints}: {line.strip()}"
        for name, version in INLINE_PIN.findall(line):
            pinned = pins.get(canonicalize_name(name))
            assert pinned == Version(version), f"{file}:{number} asks for {name}=={version}, {constraints} pins {pinned}"
