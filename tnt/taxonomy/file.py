"""Taxonomy files: export a version as YAML or JSON, import an edited file as a new version (every
problem reported with its line), and the diff between two versions."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tnt.taxonomy.lineage import LabelMap, LabelMapError, derive_label_map
from tnt.taxonomy.store import OTHER_LABEL, Taxonomy, TaxonomyLabel, TaxonomyStore

if TYPE_CHECKING:
    from tnt.workspace import Workspace


class LabelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str | None = None
    parent: str | None = None
    # The parent version's label(s) this one comes from: one (renamed; split when several labels
    # name it), several (merged), none (added). Absent: by name, else by description, else added.
    from_: str | list[str] | None = Field(None, alias="from")
    split: bool = False  # stated part of a split: an error unless another label names the same `from`

    @property
    def sources(self) -> list[str] | None:
        return [self.from_] if isinstance(self.from_, str) else self.from_


class TaxonomyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[LabelEntry] = Field(min_length=1)
    version: int | None = None
    use_case: str | None = None
    # Exported for information; an import records its own.
    parent: int | None = None
    method: str | None = None
    model: str | None = None


def dump_taxonomy(taxonomy: Taxonomy, fmt: str = "yaml") -> str:
    document = {
        "version": taxonomy.version,
        "parent": taxonomy.parent,
        "method": taxonomy.method,
        "model": taxonomy.model,
        "use_case": taxonomy.use_case,
        "labels": [
            {"name": l.name, "description": l.description, **({"parent": l.parent} if l.parent else {})}
            for l in taxonomy.labels
        ],
    }
    if fmt == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if fmt != "yaml":
        raise ValueError(f"unknown format {fmt!r}: use yaml or json")
    body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    return FILE_HEADER + body


@dataclass
class TaxonomyFileError(Exception):
    """A taxonomy file that cannot be imported; ``problems`` are (line, message), line 1-based."""

    path: str
    problems: list[tuple[int, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.path}:{line}: {message}" for line, message in self.problems]
        return f"{len(self.problems)} problem(s) in {self.path}:\n" + "\n".join(lines)


def load_taxonomy_file(
    path: Path | str, text: str | None = None, parent_of: Callable[[int], Taxonomy] | None = None
) -> Taxonomy:
    """Parse and validate a taxonomy file; raises ``TaxonomyFileError`` listing every problem by line.
    With ``parent_of`` (version → taxonomy), the ``from:`` fields are checked against the version the
    file names and the label map to it is derived."""
    name = str(path)
    if text is None:
        text = Path(path).read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise TaxonomyFileError(name, [(line, f"not valid YAML/JSON: {exc.problem or exc}")]) from exc
    if root is None:
        raise TaxonomyFileError(name, [(1, "the file is empty")])
    lines: dict[tuple, int] = {}
    problems: list[tuple[int, str]] = []
    document = _node_value(root, (), lines, problems)
    try:
        parsed = TaxonomyFile.model_validate(document)
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            problems.append((_line_of(error["loc"], lines), f"{where}: {error['msg']}"))
        parsed = None
    problems += _label_problems(_valid_entries(document), lines)
    if problems or parsed is None:
        raise TaxonomyFileError(name, sorted(set(problems)))
    taxonomy = Taxonomy(
        labels=[
            TaxonomyLabel(name=e.name.strip(), description=(e.description or "").strip(), parent=e.parent)
            for e in parsed.labels
        ],
        parent=parsed.version,
        method="import",
        use_case=parsed.use_case or "",
        note=f"imported from {Path(name).name}",
    )
    if parsed.version is not None and parent_of is not None:
        taxonomy.label_map = _label_map(name, parsed, lines, parent_of(parsed.version), taxonomy)
    elif parsed.version is None and (claimed := [i for i, e in enumerate(parsed.labels) if e.from_ is not None or e.split]):
        line = lines[("labels", claimed[0])]
        raise TaxonomyFileError(name, [(line, "`from:` names labels of the version the file came from: give `version:`")])
    return taxonomy


def _label_map(
    name: str, parsed: TaxonomyFile, lines: dict[tuple, int], parent: Taxonomy, taxonomy: Taxonomy
) -> LabelMap:
    """The map from the parent's leaves, from each entry's ``from:``; a wrong claim is reported on its line."""
    entries = {entry.name.strip(): (i, entry) for i, entry in enumerate(parsed.labels)}
    claims = {label: [s.strip() for s in entry.sources] for label, (_, entry) in entries.items() if entry.sources is not None}
    split_marked = [label for label, (_, entry) in entries.items() if entry.split]
    try:
        return derive_label_map(parent.leaves, taxonomy.leaves, claims, split_marked)
    except LabelMapError as exc:
        problems = []
        for label, message in exc.problems:
            i = entries[label][0] if label in entries else None
            line = lines.get(("labels", i, "from"), lines.get(("labels", i), 1)) if i is not None else lines[("labels",)]
            problems.append((line, f"labels.{i}.from: {message}" if i is not None else message))
        raise TaxonomyFileError(name, sorted(set(problems))) from exc


def import_taxonomy(workspace: Workspace, path: Path | str) -> Taxonomy:
    """Validate a taxonomy file and save it as a new version whose parent is the version it names."""
    store = TaxonomyStore(workspace)
    taxonomy = load_taxonomy_file(path, parent_of=store.get)  # the version the file came from must exist here
    with workspace.run("taxonomy.import", {"file": str(path)}) as run:
        saved = store.save(taxonomy.model_copy(update={"run_id": run.id}))
        run.stats["version"] = saved.version
    return saved


def _node_value(node: yaml.Node, path: tuple, lines: dict[tuple, int], problems: list) -> Any:
    """The node as plain data, every scalar a string (so a label named No stays "No"), lines recorded."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        value: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in value:
                problems.append((key_node.start_mark.line + 1, f"duplicate key {key!r}"))
            value[key] = _node_value(value_node, (*path, key), lines, problems)
        return value
    if isinstance(node, yaml.SequenceNode):
        return [_node_value(item, (*path, i), lines, problems) for i, item in enumerate(node.value)]
    return None if node.tag == "tag:yaml.org,2002:null" else node.value


def _line_of(loc: tuple, lines: dict[tuple, int]) -> int:
    """The line of the deepest node on ``loc`` that exists (a missing field: its mapping's line)."""
    for end in range(len(loc), -1, -1):
        if tuple(loc[:end]) in lines:
            return lines[tuple(loc[:end])]
    return 1


def _valid_entries(document: Any) -> list[tuple[int, LabelEntry]]:
    """The label entries that are well-formed on their own, so their meaning can be checked too."""
    raw = document.get("labels") if isinstance(document, dict) else None
    entries = []
    for i, item in enumerate(raw if isinstance(raw, list) else []):
        try:
            entries.append((i, LabelEntry.model_validate(item)))
        except ValidationError:
            continue  # already reported by the whole-file validation
    return entries


def _label_problems(entries: list[tuple[int, LabelEntry]], lines: dict[tuple, int]) -> list[tuple[int, str]]:
    problems = []
    first_line: dict[str, int] = {}
    names = {entry.name.strip() for _, entry in entries}
    for i, entry in entries:
        name = entry.name.strip()
        line = lines.get(("labels", i, "name"), lines[("labels", i)])
        if not name:
            problems.append((line, f"labels.{i}.name: must not be empty"))
        elif name.casefold() == OTHER_LABEL.casefold():
            problems.append((line, f"labels.{i}.name: {OTHER_LABEL!r} is reserved (added automatically)"))
        elif name.casefold() in first_line:
            problems.append((line, f"labels.{i}.name: {name!r} already defined on line {first_line[name.casefold()]}"))
        first_line.setdefault(name.casefold(), line)
        if not (entry.description or "").strip():
            problems.append((lines[("labels", i)], f"labels.{i}.description: must not be empty ({name!r})"))
        if entry.parent is not None:
            parent_line = lines.get(("labels", i, "parent"), line)
            if entry.parent not in names:
                problems.append((parent_line, f"labels.{i}.parent: {entry.parent!r} is not a label in this file"))
            elif entry.parent == name:
                problems.append((parent_line, f"labels.{i}.parent: a label cannot be its own parent"))
    parents = {entry.parent for _, entry in entries if entry.parent}
    for i, entry in entries:
        if entry.parent and entry.name.strip() in parents:
            problems.append((lines[("labels", i)], f"labels.{i}: {entry.name!r} has a parent and children; two levels at most"))
    return problems


@dataclass
class TaxonomyDiff:
    old: int | None
    new: int | None
    added: list[TaxonomyLabel] = field(default_factory=list)
    removed: list[TaxonomyLabel] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)  # same description, new name
    changed: list[tuple[str, str, str | None, str | None]] = field(default_factory=list)  # name, field, old, new

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.renamed or self.changed)


def diff_taxonomies(old: Taxonomy, new: Taxonomy) -> TaxonomyDiff:
    """Labels added, removed, renamed (as the label map ``derive_label_map`` implies: a removed and an
    added label with the same description) and edited."""
    before = {label.name: label for label in old.labels}
    after = {label.name: label for label in new.labels}
    diff = TaxonomyDiff(old.version, new.version)
    for name in before.keys() & after.keys():
        for attribute in ("description", "parent"):
            a, b = getattr(before[name], attribute), getattr(after[name], attribute)
            if a != b:
                diff.changed.append((name, attribute, a, b))
    implied = derive_label_map(old.labels, new.labels).changes
    diff.renamed = [(c.old[0], c.new[0]) for c in implied if c.kind == "renamed"]
    diff.added = [after[c.new[0]] for c in implied if c.kind == "added"]
    diff.removed = [before[c.old[0]] for c in implied if c.kind == "removed"]
    diff.changed.sort()
    return diff


FILE_HEADER = (
    "# tnt taxonomy. Edit freely (rename, merge, split, add, delete labels), then\n"
    "# `tnt taxonomy import FILE`. 'version' is the version this file came from: the import's parent.\n"
    "# Say where a label comes from so its documents keep their labels: `from: Old name` (renamed;\n"
    "# several labels with the same `from`: a split, mark each `split: true`), `from: [A, B]` (merged).\n"
)
