"""Label Studio, the tnt side: label configs from a taxonomy, predictions, and project sync.

- ``label_config`` writes the labeling interface for a taxonomy version: ``<Choices>`` for a flat
  label set, ``<Taxonomy>`` (nested paths) for a two-level one. Its control is always named
  ``label`` and reads the object ``text``; ``LabelSchema`` builds prediction results for it and
  ``check_label_config`` proves a project's config accepts them (Label Studio stores a mismatching
  prediction and silently never shows it).
- Predictors say what tnt thinks of a task: the distilled model of the taxonomy version when one
  exists, else the LLM labels (cached first, the labeling stage for the rest). Both the ML backend
  and ``push`` use them, so a pushed prediction and a served one carry the same ``model_version``.
- Annotations become human labels (``store_annotation``): each task's data holds the tnt document
  id, so annotations map back to documents; every human label is stored with origin
  ``label-studio:<project>/<annotation>``, which makes the webhook and ``pull`` idempotent with each
  other.

Talking to Label Studio itself (``push``, ``connect``, ``pull``) is ``tnt.review.labelstudio_sync``.
This module owns the ``ls_projects`` table (which taxonomy version each pushed project uses).
"""

from __future__ import annotations

import logging
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from tnt.labels.labeling import label_choices, label_documents
from tnt.labels.store import LabelRecord, LabelStore
from tnt.llm.gateway import LLMSettings
from tnt.runs import WorkspaceError, utc_now
from tnt.taxonomy.store import OTHER_LABEL, Taxonomy, TaxonomyStore

if TYPE_CHECKING:
    from label_studio_sdk.label_interface import LabelInterface

    from tnt.workspace import Workspace

log = logging.getLogger("tnt.review.labelstudio")

CONTROL_NAME = "label"
OBJECT_NAME = "text"
TEXT_FIELD = "text"
DOC_ID_FIELD = "tnt_doc_id"
VERSION_FIELD = "tnt_taxonomy_version"
REASON_FIELD = "tnt_review_reason"
BLIND_FIELD = "tnt_blind"  # a task people label without seeing any prediction
API_KEY_ENV = "LABEL_STUDIO_API_KEY"
WEBHOOK_SECRET_HEADER = "X-Tnt-Webhook-Secret"
ORIGIN_PREFIX = "label-studio"
IMPORT_BATCH = 500  # tasks per import request
CONFIG_HINT = "Regenerate it with `tnt ls config` or push the project again with `tnt ls push`."


class LabelStudioError(Exception):
    """Something in Label Studio or its project that tnt cannot work with; the message says what."""


class LabelConfigMismatch(LabelStudioError):
    """A project's label config that would not show tnt's predictions."""


# Label configs and results


def label_config(taxonomy: Taxonomy, multi: bool = False) -> str:
    """The labeling interface for a taxonomy version: the text, and one control named ``label``."""
    view = ET.Element("View")
    ET.SubElement(view, "Text", name=OBJECT_NAME, value=f"${TEXT_FIELD}")
    if is_hierarchical(taxonomy):
        control = ET.SubElement(view, "Taxonomy", name=CONTROL_NAME, toName=OBJECT_NAME, leafsOnly="true")
        _add_choice_tree(control, taxonomy.tree(), None)
        if OTHER_LABEL not in taxonomy.names:
            ET.SubElement(control, "Choice", value=OTHER_LABEL)
    else:
        control = ET.SubElement(
            view, "Choices", name=CONTROL_NAME, toName=OBJECT_NAME, choice="multiple" if multi else "single"
        )
        for name in label_choices(taxonomy):
            ET.SubElement(control, "Choice", value=name)
    ET.indent(view)
    return ET.tostring(view, encoding="unicode")


def _add_choice_tree(parent: ET.Element, tree: dict[str | None, list[Any]], group: str | None) -> None:
    for label in tree.get(group, []):
        choice = ET.SubElement(parent, "Choice", value=label.name)
        _add_choice_tree(choice, tree, label.name)


def is_hierarchical(taxonomy: Taxonomy) -> bool:
    return any(label.parent for label in taxonomy.labels)


@dataclass(frozen=True)
class LabelSchema:
    """How labels of one taxonomy version look as Label Studio results, and back."""

    kind: str  # choices | taxonomy
    multi: bool
    paths: dict[str, list[str]]  # label -> path from the top group down to it

    @classmethod
    def of(cls, taxonomy: Taxonomy, multi: bool = False) -> LabelSchema:
        parents = {label.name: label.parent for label in taxonomy.labels}
        paths = {name: _path(name, parents) for name in label_choices(taxonomy)}
        return cls("taxonomy" if is_hierarchical(taxonomy) else "choices", multi, paths)

    def result(self, label: str, extra_labels: Sequence[str] = ()) -> list[dict[str, Any]]:
        names = [label, *(name for name in extra_labels if name != label)] if self.multi else [label]
        if self.kind == "taxonomy":
            value: dict[str, Any] = {"taxonomy": [self.paths.get(name, [name]) for name in names]}
        else:
            value = {"choices": names}
        return [{"from_name": CONTROL_NAME, "to_name": OBJECT_NAME, "type": self.kind, "value": value}]


def _path(name: str, parents: dict[str, str | None]) -> list[str]:
    path = [name]
    while (parent := parents.get(path[0])) and parent not in path:
        path.insert(0, parent)
    return path


def labels_from_result(result: Iterable[dict[str, Any]]) -> tuple[str, list[str]] | None:
    """The primary label and the further ones an annotation chose, or None if it chose nothing."""
    names: list[str] = []
    for region in result:
        if region.get("from_name") != CONTROL_NAME:
            continue
        value = region.get("value") or {}
        names += value.get("choices") or []
        names += [path[-1] for path in value.get("taxonomy") or [] if path]
    names = list(dict.fromkeys(names))
    return (names[0], names[1:]) if names else None


def check_label_config(config: str, schema: LabelSchema) -> LabelInterface:
    """The parsed config, after proving it accepts a result for every label tnt may predict."""
    from label_studio_sdk.label_interface import LabelInterface

    try:
        interface = LabelInterface(config)
    except Exception as exc:  # the SDK raises bare exceptions (lxml, KeyError) for broken XML
        raise LabelConfigMismatch(f"the project's label config cannot be parsed: {exc}. {CONFIG_HINT}") from exc
    errors: list[str] = []
    for label in schema.paths:
        errors += prediction_errors(interface, schema.result(label))
        if len(errors) >= 5:
            break
    if errors:
        raise LabelConfigMismatch(
            "the project's label config does not accept tnt's predictions (control "
            f"{CONTROL_NAME!r} on {OBJECT_NAME!r} with the taxonomy's labels): {'; '.join(errors[:5])}. {CONFIG_HINT}"
        )
    return interface


def prediction_errors(interface: LabelInterface, result: list[dict[str, Any]]) -> list[str]:
    return list(interface.validate_prediction({"result": result}, return_errors=True) or [])


# Predictors: what tnt thinks of a task


@dataclass(frozen=True)
class TaskText:
    """The part of a Label Studio task a predictor needs."""

    task_id: int | None
    doc_id: str | None
    text: str
    blind: bool = False  # pushed to be labeled without a prediction: none is ever served for it


@dataclass(frozen=True)
class Guess:
    label: str
    extra_labels: list[str] = field(default_factory=list)
    score: float | None = None


@dataclass(frozen=True)
class NoGuess:
    reason: str


class Predictor(Protocol):
    """Labels for tasks of one taxonomy version, one answer per task, in order."""

    model_version: str

    def predict(self, workspace: Workspace, tasks: Sequence[TaskText]) -> list[Guess | NoGuess]: ...


class DistilledPredictor:
    """A classifier trained by ``tnt train`` for the taxonomy version: fast, works from the text alone.
    It is loaded at the first prediction and kept for the life of the process."""

    def __init__(self, taxonomy_version: int, model_id: str):
        self.model_id = model_id
        self.model_version = f"tnt-v{taxonomy_version}/{model_id}"

    def predict(self, workspace: Workspace, tasks: Sequence[TaskText]) -> list[Guess | NoGuess]:
        model, lock = _loaded_model(workspace, self.model_id)
        with lock:  # one inference at a time: the encoder already uses every core
            predictions = model.tag([task.text for task in tasks])
        return [Guess(p.label, list(p.extra_labels), p.confidence) for p in predictions]


_loaded_models: dict[str, tuple[Any, threading.Lock]] = {}
_loaded_models_lock = threading.Lock()


def _loaded_model(workspace: Workspace, model_id: str) -> tuple[Any, threading.Lock]:
    from tnt.distill.store import load_model

    with _loaded_models_lock:
        if model_id not in _loaded_models:
            _loaded_models[model_id] = (load_model(workspace, model_id), threading.Lock())
        return _loaded_models[model_id]


_labeling_lock = threading.Lock()


class LLMPredictor:
    """The LLM's labels: cached ones first; documents without one go through the labeling stage."""

    def __init__(self, taxonomy_version: int, settings: LLMSettings, multi: bool = False):
        self.taxonomy_version = taxonomy_version
        self.settings = settings
        self.multi = multi
        self.model_version = f"tnt-v{taxonomy_version}/llm/{settings.model}"

    def predict(self, workspace: Workspace, tasks: Sequence[TaskText]) -> list[Guess | NoGuess]:
        doc_ids = list(dict.fromkeys(task.doc_id for task in tasks if task.doc_id))
        store = LabelStore(workspace)
        labels = store.current(self.taxonomy_version, "llm", doc_ids=doc_ids)
        missing = [doc_id for doc_id in doc_ids if doc_id not in labels]
        failure = None
        if missing:
            with _labeling_lock:  # concurrent requests for the same documents must not pay twice
                labeled_meanwhile = store.current(self.taxonomy_version, "llm", doc_ids=missing)
                missing = [doc_id for doc_id in missing if doc_id not in labeled_meanwhile]
                try:
                    if missing:
                        label_documents(workspace, self.taxonomy_version, missing, self.settings, multi=self.multi)
                except WorkspaceError as exc:  # e.g. a task pushed from another workspace
                    failure = str(exc)
            labels |= store.current(self.taxonomy_version, "llm", doc_ids=doc_ids)
        return [self._guess(task, labels, failure) for task in tasks]

    def _guess(self, task: TaskText, labels: dict[str, dict[str, Any]], failure: str | None) -> Guess | NoGuess:
        if not task.doc_id:
            return NoGuess(f"task {task.task_id} has no data.{DOC_ID_FIELD}; push tasks with `tnt ls push`")
        row = labels.get(task.doc_id)
        if row is None:
            return NoGuess(failure or f"the LLM gave no valid label for document {task.doc_id} (see `tnt runs`)")
        return Guess(row["label"], row["extra_labels"], row["confidence"])


def predictor_for(
    workspace: Workspace, taxonomy_version: int, settings: LLMSettings | None = None, multi: bool = False
) -> Predictor:
    """The newest distilled model of the taxonomy version when one exists, else the LLM labels."""
    from tnt.distill.store import latest_model

    info = latest_model(workspace, taxonomy_version)
    if info is None:
        return LLMPredictor(taxonomy_version, settings or LLMSettings(), multi)
    return DistilledPredictor(taxonomy_version, info.id)


def predict_results(
    workspace: Workspace, predictor: Predictor, schema: LabelSchema, tasks: Sequence[TaskText],
    interface: LabelInterface | None = None,
) -> list[dict[str, Any]]:
    """One Label Studio prediction per task, each validated against the project's config when given.

    A task tnt cannot label gets an empty result under a ``…/unavailable`` model version, so Label
    Studio asks again next time instead of treating it as done; the reason is logged. A blind task
    gets an empty result too (``…/blind``), and no predictor sees it.
    """
    shown = [task for task in tasks if not task.blind]
    guesses = iter(predictor.predict(workspace, shown) if shown else [])
    results = []
    for task in tasks:
        if task.blind:
            results.append({"result": [], "score": None, "model_version": f"{predictor.model_version}/blind"})
            continue
        guess = next(guesses)
        if isinstance(guess, NoGuess):
            log.warning("no prediction for task %s: %s", task.task_id, guess.reason)
            results.append({"result": [], "score": None, "model_version": f"{predictor.model_version}/unavailable"})
            continue
        result = schema.result(guess.label, guess.extra_labels)
        if interface is not None and (errors := prediction_errors(interface, result)):
            raise LabelConfigMismatch(f"prediction for task {task.task_id} rejected by the label config: {errors}")
        results.append({"result": result, "score": guess.score, "model_version": predictor.model_version})
    return results


# Projects tnt pushed


@dataclass(frozen=True)
class ProjectLink:
    project_id: int
    url: str
    title: str
    taxonomy_version: int
    multi: bool
    backend_url: str | None = None
    updated_at: str | None = field(default=None, compare=False)  # the last push or connect, as recorded


class ProjectLinks:
    """Which taxonomy version each Label Studio project of this workspace uses."""

    def __init__(self, workspace: Workspace):
        self.db = workspace.db

    def save(self, link: ProjectLink) -> None:
        now = utc_now()
        existing = self.find(link.project_id)
        row = {
            "project_id": link.project_id, "url": link.url, "title": link.title,
            "taxonomy_version": link.taxonomy_version, "multi": int(link.multi),
            "backend_url": link.backend_url or (existing.backend_url if existing else None),
            "updated_at": now, "created_at": now,
        }
        if existing:
            row.pop("created_at")
            self.db["ls_projects"].update(link.project_id, row)
        else:
            self.db["ls_projects"].insert(row)

    def set_backend(self, project_id: int, backend_url: str) -> None:
        self.db["ls_projects"].update(project_id, {"backend_url": backend_url, "updated_at": utc_now()})

    def find(self, project_id: int) -> ProjectLink | None:
        rows = list(self.db["ls_projects"].rows_where("project_id = ?", [project_id]))
        return _link(rows[0]) if rows else None

    def all(self) -> list[ProjectLink]:
        return [_link(row) for row in self.db["ls_projects"].rows_where(order_by="project_id")]

    def get(self, project_id: int) -> ProjectLink:
        link = self.find(project_id)
        if link is None:
            raise WorkspaceError(
                f"Label Studio project {project_id} is not linked to this workspace; create it with `tnt ls push`"
            )
        return link


def _link(row: dict[str, Any]) -> ProjectLink:
    return ProjectLink(
        row["project_id"], row["url"], row["title"], row["taxonomy_version"], bool(row["multi"]),
        row["backend_url"], row["updated_at"],
    )


def project_schema(workspace: Workspace, link: ProjectLink) -> LabelSchema:
    return LabelSchema.of(TaxonomyStore(workspace).get(link.taxonomy_version), link.multi)


# Human labels from annotations


def annotation_origin(project_id: int, annotation_id: int) -> str:
    return f"{ORIGIN_PREFIX}:{project_id}/{annotation_id}"


def store_annotation(
    workspace: Workspace, link: ProjectLink, doc_id: str, annotation: dict[str, Any], run_id: str | None = None
) -> str:
    """Make the workspace hold what one annotation says now: "added", "updated", "retracted" or "unchanged".

    A skipped (cancelled) or emptied annotation withdraws its earlier label.
    """
    origin = annotation_origin(link.project_id, annotation["id"])
    store = LabelStore(workspace)
    stored = store.current(link.taxonomy_version, "human", origins_like=origin, doc_ids=[doc_id]).get(doc_id)
    chosen = None if annotation.get("was_cancelled") else labels_from_result(annotation.get("result") or [])
    if chosen is None:
        return "retracted" if store.retract(origin) else "unchanged"
    label, extra = chosen
    if stored and stored["label"] == label and stored["extra_labels"] == extra:
        return "unchanged"
    record = LabelRecord(
        doc_id=doc_id, source="human", label=label, extra_labels=extra, taxonomy_version=link.taxonomy_version,
        origin=origin, run_id=run_id, model=_annotator(annotation),
    )
    store.add([record])
    return "updated" if stored else "added"


def _annotator(annotation: dict[str, Any]) -> str | None:
    """Who annotated, kept in the label's ``model`` field: for human labels the producer is a person."""
    user = annotation.get("completed_by")
    if isinstance(user, dict):
        user = user.get("email") or user.get("id")
    return f"label-studio-user:{user}" if user is not None else None


def retract_annotation(workspace: Workspace, project_id: int, annotation_id: int) -> int:
    return LabelStore(workspace).retract(annotation_origin(project_id, annotation_id))


def task_doc_id(task: dict[str, Any]) -> str | None:
    doc_id = (task.get("data") or {}).get(DOC_ID_FIELD)
    return str(doc_id) if doc_id is not None else None


def task_text(task: dict[str, Any]) -> TaskText:
    data = task.get("data") or {}
    return TaskText(task.get("id"), task_doc_id(task), str(data.get(TEXT_FIELD) or ""), bool(data.get(BLIND_FIELD)))
