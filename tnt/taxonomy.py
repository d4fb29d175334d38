"""Taxonomies: label sets, versioned in the workspace.

Every generated, edited, refined or imported taxonomy is a new immutable version with its parent,
so lineage and diffs are always available. This module owns the ``taxonomies`` table; it also holds
what every taxonomy must satisfy (``guardrail_problems``), the YAML/JSON file format people edit
(``dump_taxonomy`` / ``load_taxonomy_file``, errors reported by line) and ``diff_taxonomies``.
Generation lives in ``taxonomy_generate``, evaluation in ``taxonomy_evaluate``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tnt.workspace import Workspace, WorkspaceError, utc_now

OTHER_LABEL = "Other"


class TaxonomyLabel(BaseModel):
    name: str = Field(min_length=1)
    description: str = ""
    parent: str | None = None


class Taxonomy(BaseModel):
    """A label set plus where it came from. ``version`` is None until it is saved."""

    labels: list[TaxonomyLabel]
    version: int | None = None
    parent: int | None = None
    method: str = "manual"
    use_case: str = ""
    model: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    prompt_hashes: dict[str, str] = Field(default_factory=dict)
    score: float | None = None
    run_id: str | None = None
    note: str = ""
    created_at: str | None = None

    @property
    def names(self) -> list[str]:
        """Every label, group labels of a two-level taxonomy included."""
        return [label.name for label in self.labels]

    @property
    def leaves(self) -> list[TaxonomyLabel]:
        """The labels documents get: all of them, less the groups of a two-level taxonomy."""
        groups = {label.parent for label in self.labels if label.parent}
        return [label for label in self.labels if label.name not in groups]

    @property
    def leaf_names(self) -> list[str]:
        return [label.name for label in self.leaves]

    def tree(self) -> dict[str | None, list[TaxonomyLabel]]:
        """Children by parent name (None: top level), in table order; nests as Label Studio's <Taxonomy>."""
        children: dict[str | None, list[TaxonomyLabel]] = {}
        for label in self.labels:
            children.setdefault(label.parent, []).append(label)
        return children

    def content_hash(self) -> str:
        payload = json.dumps([label.model_dump() for label in self.labels], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


class TaxonomyStore:
    """Saved taxonomy versions of one workspace."""

    def __init__(self, workspace: Workspace):
        self.db = workspace.db

    def save(self, taxonomy: Taxonomy) -> Taxonomy:
        row = {
            "parent": taxonomy.parent,
            "method": taxonomy.method,
            "use_case": taxonomy.use_case,
            "labels": json.dumps([label.model_dump() for label in taxonomy.labels]),
            "content_hash": taxonomy.content_hash(),
            "model": taxonomy.model,
            "params": json.dumps(taxonomy.params),
            "prompt_hashes": json.dumps(taxonomy.prompt_hashes),
            "score": taxonomy.score,
            "run_id": taxonomy.run_id,
            "note": taxonomy.note,
            "created_at": utc_now(),
        }
        version = self.db["taxonomies"].insert(row).last_pk
        return self.get(version)

    def get(self, version: int | None = None) -> Taxonomy:
        """A version, or the latest one when ``version`` is None."""
        if version is None:
            row = self.db.execute("select max(version) from taxonomies").fetchone()
            if row[0] is None:
                raise WorkspaceError("the workspace has no taxonomy yet")
            version = row[0]
        rows = list(self.db["taxonomies"].rows_where("version = ?", [version]))
        if not rows:
            raise WorkspaceError(f"no taxonomy version {version}")
        return _from_row(rows[0])

    def find_by_content(self, method: str, content_hash: str) -> Taxonomy | None:
        rows = list(
            self.db["taxonomies"].rows_where(
                "method = ? and content_hash = ?", [method, content_hash], order_by="version desc", limit=1
            )
        )
        return _from_row(rows[0]) if rows else None

    def all(self) -> list[Taxonomy]:
        return [_from_row(row) for row in self.db["taxonomies"].rows_where(order_by="version")]


def _from_row(row: dict[str, Any]) -> Taxonomy:
    return Taxonomy(
        version=row["version"],
        parent=row["parent"],
        method=row["method"],
        use_case=row["use_case"] or "",
        labels=[TaxonomyLabel(**label) for label in json.loads(row["labels"])],
        model=row["model"],
        params=json.loads(row["params"] or "{}"),
        prompt_hashes=json.loads(row["prompt_hashes"] or "{}"),
        score=row["score"],
        run_id=row["run_id"],
        note=row["note"] or "",
        created_at=row["created_at"],
    )


# Guardrails: what every generated or refined table must satisfy


class TaxonomyLimits(BaseModel):
    """Bounds on a label table (TnT-LLM's guardrails); the prompts state them to the model."""

    model_config = ConfigDict(frozen=True)

    min_labels: int = Field(2, ge=1)
    max_labels: int = Field(10, ge=1)
    max_name_words: int = Field(5, ge=1)
    max_description_words: int = Field(30, ge=1)


def guardrail_problems(labels: list[TaxonomyLabel], limits: TaxonomyLimits) -> list[str]:
    """Everything wrong with a flat table, as sentences; an empty list means it passes."""
    problems = []
    if not limits.min_labels <= len(labels) <= limits.max_labels:
        problems.append(
            f"{len(labels)} labels, but there must be {limits.min_labels} to {limits.max_labels}"
        )
    uses = Counter(label.name.strip().casefold() for label in labels)
    seen: set[str] = set()
    for label in labels:
        name = label.name.strip()
        key = name.casefold()
        if not name:
            problems.append("a label has an empty name")
        elif key == OTHER_LABEL.casefold():
            problems.append(f"{OTHER_LABEL!r} is reserved: it is added to every taxonomy automatically")
        elif key not in seen:  # a repeated name is reported once, with its count
            if uses[key] > 1:
                problems.append(f"label name {name!r} appears {uses[key]} times")
            if len(name.split()) > limits.max_name_words:
                problems.append(f"label name {name!r} has more than {limits.max_name_words} words")
        seen.add(key)
        if not label.description.strip():
            problems.append(f"label {name!r} has an empty description")
        elif len(label.description.split()) > limits.max_description_words:
            problems.append(f"description of {name!r} has more than {limits.max_description_words} words")
    return problems


# The file people edit: YAML (or JSON, which YAML reads too), every error reported with its line

FILE_HEADER = (
    "# tnt taxonomy. Edit freely (rename, merge, split, add, delete labels), then\n"
    "# `tnt taxonomy import FILE`. 'version' is the version this file came from: the import's parent.\n"
)


class LabelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str | None = None
    parent: str | None = None


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


def load_taxonomy_file(path: Path | str, text: str | None = None) -> Taxonomy:
    """Parse and validate a taxonomy file; raises ``TaxonomyFileError`` listing every problem by line."""
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
    return Taxonomy(
        labels=[
            TaxonomyLabel(name=e.name.strip(), description=(e.description or "").strip(), parent=e.parent)
            for e in parsed.labels
        ],
        parent=parsed.version,
        method="import",
        use_case=parsed.use_case or "",
        note=f"imported from {Path(name).name}",
    )


def import_taxonomy(workspace: Workspace, path: Path | str) -> Taxonomy:
    """Validate a taxonomy file and save it as a new version whose parent is the version it names."""
    taxonomy = load_taxonomy_file(path)
    store = TaxonomyStore(workspace)
    if taxonomy.parent is not None:
        store.get(taxonomy.parent)  # the version the file came from must exist here
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


# Diff


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
    """Labels added, removed, renamed (a removed and an added label with the same description) and edited."""
    before = {label.name: label for label in old.labels}
    after = {label.name: label for label in new.labels}
    diff = TaxonomyDiff(old.version, new.version)
    for name in before.keys() & after.keys():
        for attribute in ("description", "parent"):
            a, b = getattr(before[name], attribute), getattr(after[name], attribute)
            if a != b:
                diff.changed.append((name, attribute, a, b))
    removed = [before[n] for n in before if n not in after]
    added = [after[n] for n in after if n not in before]
    by_description = {label.description: label for label in added if label.description}
    for label in removed:
        twin = by_description.pop(label.description, None) if label.description else None
        if twin is None:
            diff.removed.append(label)
        else:
            diff.renamed.append((label.name, twin.name))
    renamed_to = {new_name for _, new_name in diff.renamed}
    diff.added = [label for label in added if label.name not in renamed_to]
    diff.changed.sort()
    return diff
