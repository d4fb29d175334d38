"""Label Studio itself, through label-studio-sdk 2.x: ``push`` a taxonomy version's project and its
tasks, ``connect`` the tnt backend, ``pull`` annotations back as human labels.

A push for a version that a migration made (``tnt taxonomy migrate``) carries people's work over:
documents whose human label was carried arrive annotated with it, so nobody labels them again, and
the documents whose label was split come first in the review sample, so they are re-reviewed first.
The tnt side of all this (label configs, predictions, annotations as labels) is
``tnt.review.labelstudio``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tnt.labels.store import LabelStore
from tnt.review.labelstudio import (
    API_KEY_ENV,
    BLIND_FIELD,
    DOC_ID_FIELD,
    IMPORT_BATCH,
    ORIGIN_PREFIX,
    REASON_FIELD,
    TEXT_FIELD,
    VERSION_FIELD,
    WEBHOOK_SECRET_HEADER,
    LabelConfigMismatch,
    LabelSchema,
    LabelStudioError,
    ProjectLink,
    ProjectLinks,
    TaskText,
    annotation_origin,
    check_label_config,
    label_config,
    predict_results,
    prediction_errors,
    predictor_for,
    store_annotation,
    task_doc_id,
)
from tnt.taxonomy.store import TaxonomyStore

if TYPE_CHECKING:
    from label_studio_sdk import LabelStudio
    from label_studio_sdk.label_interface import LabelInterface

    from tnt.llm.gateway import LLMSettings
    from tnt.workspace import Workspace

CARRIED_REASON = "carried"  # the review reason of a task that arrives annotated with a carried human label


def client(url: str, api_key: str) -> LabelStudio:
    from label_studio_sdk import LabelStudio

    if not api_key:
        raise LabelStudioError(f"no Label Studio API key: set {API_KEY_ENV}")
    return LabelStudio(base_url=url, api_key=api_key)


@dataclass
class PushResult:
    project_id: int
    created: bool
    imported: int
    already_there: int
    model_version: str
    annotated: int = 0  # of the imported tasks, those that arrived with a carried human label


def push(
    workspace: Workspace,
    ls: LabelStudio,
    doc_ids: Sequence[str],
    *,
    taxonomy_version: int | None = None,
    title: str | None = None,
    project_id: int | None = None,
    multi: bool = False,
    settings: LLMSettings | None = None,
    reasons: dict[str, str] | None = None,
    predictions: bool = True,
    carried: bool = True,
    blind: Collection[str] = (),
) -> PushResult:
    """Create or update the project for a taxonomy version and import the documents not yet in it, in
    order, each with tnt's prediction attached (unless ``predictions`` is off: the backend serves them).

    With ``carried``, the documents whose human label a migration carried to the version follow,
    each with that label as an annotation (and no prediction: nothing is paid for a known label).
    Documents in ``blind`` go without a prediction, marked so that the backend serves none either.
    """
    taxonomy = TaxonomyStore(workspace).get(taxonomy_version)
    assert taxonomy.version is not None
    config = label_config(taxonomy, multi)
    project, created = _ensure_project(ls, project_id, title or f"tnt taxonomy v{taxonomy.version}", config)
    ProjectLinks(workspace).save(ProjectLink(project.id, _base_url(ls), project.title, taxonomy.version, multi))
    known = carried_human_labels(workspace, taxonomy.version) if carried else {}
    wanted = list(dict.fromkeys([*doc_ids, *known]))
    present = _doc_ids_in_project(ls, project.id)
    new_ids = [doc_id for doc_id in wanted if doc_id not in present]
    predictor = predictor_for(workspace, taxonomy.version, settings, multi)
    schema = LabelSchema.of(taxonomy, multi)
    interface = check_label_config(config, schema)
    reasons = {**{doc_id: CARRIED_REASON for doc_id in known}, **(reasons or {})}
    for start in range(0, len(new_ids), IMPORT_BATCH):  # a push cut short resumes: present tasks are skipped
        documents = workspace.documents.get(new_ids[start : start + IMPORT_BATCH])
        to_predict = [TaskText(None, doc.id, doc.text) for doc in documents if doc.id not in known and doc.id not in blind] if predictions else []
        results = predict_results(workspace, predictor, schema, to_predict, interface) if to_predict else []
        predicted = dict(zip([task.doc_id for task in to_predict], results))
        payload = [
            _task(doc.id, doc.text, taxonomy.version, reasons.get(doc.id, ""), predicted.get(doc.id),
                  carried_annotation(known[doc.id], schema, interface) if doc.id in known else None, doc.id in blind)
            for doc in documents
        ]  # fmt: skip
        ls.projects.import_tasks(id=project.id, request=payload, return_task_ids=True)
    annotated = sum(doc_id in known for doc_id in new_ids)
    return PushResult(project.id, created, len(new_ids), len(wanted) - len(new_ids), predictor.model_version, annotated)


def carried_human_labels(workspace: Workspace, version: int) -> dict[str, dict[str, Any]]:
    """People's labels a migration carried to the version (``tnt taxonomy migrate``), per document."""
    current = LabelStore(workspace).current(version, "human")
    return {doc_id: row for doc_id, row in current.items() if row.get("migrated_from") is not None}


def carried_annotation(row: dict[str, Any], schema: LabelSchema, interface: LabelInterface) -> dict[str, Any]:
    result = schema.result(row["label"], row["extra_labels"])
    if errors := prediction_errors(interface, result):
        raise LabelConfigMismatch(f"the carried label of document {row['doc_id']} is rejected by the label config: {errors}")
    return {"result": result}


def _task(
    doc_id: str, text: str, version: int, reason: str, prediction: dict[str, Any] | None,
    annotation: dict[str, Any] | None, blind: bool = False,
) -> dict[str, Any]:
    data = {TEXT_FIELD: text, DOC_ID_FIELD: doc_id, VERSION_FIELD: version, REASON_FIELD: reason}
    if blind:
        data[BLIND_FIELD] = True
    task: dict[str, Any] = {"data": data, "predictions": [prediction] if prediction and prediction["result"] else []}
    if annotation is not None:
        task["annotations"] = [annotation]
    return task


def _ensure_project(ls: LabelStudio, project_id: int | None, title: str, config: str) -> tuple[Any, bool]:
    if project_id is None:
        same_title = [p for p in ls.projects.list(title=title) if p.title == title]
        project_id = same_title[0].id if same_title else None
    if project_id is None:
        return ls.projects.create(title=title, label_config=config), True
    project = ls.projects.get(id=project_id)
    if project.label_config != config:
        project = ls.projects.update(id=project_id, label_config=config)
    return project, False


def _base_url(ls: LabelStudio) -> str:
    return ls._client_wrapper.get_base_url()  # the SDK keeps it only on its private wrapper


def _doc_ids_in_project(ls: LabelStudio, project_id: int) -> set[str]:
    return {
        doc_id for task in ls.tasks.list(project=project_id, fields="task_only")
        if (doc_id := (task.data or {}).get(DOC_ID_FIELD)) is not None
    }


@dataclass
class ConnectResult:
    ml_backend_id: int
    state: str
    webhook_id: int
    model_version: str | None


def connect(
    workspace: Workspace,
    ls: LabelStudio,
    project_id: int,
    backend_url: str,
    *,
    username: str,
    password: str,
    webhook_secret: str,
) -> ConnectResult:
    """Attach the tnt backend to a project (basic auth for Label Studio's calls) and put the secret
    header on the webhook Label Studio creates for it."""
    ProjectLinks(workspace).get(project_id)
    backend_url = backend_url.rstrip("/")
    auth = {"auth_method": "BASIC_AUTH", "basic_auth_user": username, "basic_auth_pass": password}
    existing = [b for b in ls.ml.list(project=project_id) if (b.url or "").rstrip("/") == backend_url]
    if existing:
        backend = ls.ml.update(id=existing[0].id, url=backend_url, project=project_id, **auth)
    else:
        backend = ls.ml.create(url=backend_url, project=project_id, title="tnt", is_interactive=False, **auth)
    if backend.state != "CO":
        raise LabelStudioError(
            f"Label Studio could not connect to the backend at {backend_url} (state {backend.state}): "
            f"{backend.error_message or 'no reason given; see the backend log'}"
        )
    webhook_id = _secure_webhook(ls, project_id, f"{backend_url}/webhook", webhook_secret)
    ProjectLinks(workspace).set_backend(project_id, backend_url)
    return ConnectResult(backend.id, backend.state, webhook_id, backend.model_version)


def _secure_webhook(ls: LabelStudio, project_id: int, url: str, secret: str) -> int:
    headers = {WEBHOOK_SECRET_HEADER: secret}
    hooks = [hook for hook in ls.webhooks.list(project=str(project_id)) if hook.url == url]
    if hooks:
        return ls.webhooks.update(id=hooks[0].id, url=url, headers=headers).id
    hook = ls.webhooks.create(
        project=project_id, url=url, send_payload=True, send_for_all_actions=True, headers=headers
    )
    return hook.id


@dataclass
class PullResult:
    tasks: int = 0
    added: int = 0
    updated: int = 0
    retracted: int = 0
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)  # annotations of tasks not pushed by tnt, with why

    @property
    def changed(self) -> int:
        return self.added + self.updated + self.retracted


def pull(workspace: Workspace, ls: LabelStudio, project_id: int) -> PullResult:
    """Bring the workspace's human labels for a project in line with its annotations (idempotent):
    new and edited annotations are stored, deleted or skipped ones retracted."""
    link = ProjectLinks(workspace).get(project_id)
    tasks = export_tasks(ls, project_id)
    result = PullResult(tasks=len(tasks))
    seen: set[str] = set()
    with workspace.run("ls-pull", {"project": project_id}) as run:
        for task in tasks:
            doc_id = task_doc_id(task)
            for annotation in task.get("annotations") or []:
                if doc_id is None:
                    result.skipped.append(f"annotation {annotation['id']} of task {task['id']}: no data.{DOC_ID_FIELD}")
                    run.record_issue(f"task {task['id']}", "no tnt document id", DOC_ID_FIELD)
                    continue
                seen.add(annotation_origin(project_id, annotation["id"]))
                outcome = store_annotation(workspace, link, doc_id, annotation, run.id)
                setattr(result, outcome, getattr(result, outcome) + 1)
        stored = LabelStore(workspace).current_by_origin(None, "human", f"{ORIGIN_PREFIX}:{project_id}/%")
        for origin in stored.keys() - seen:
            if LabelStore(workspace).retract(origin):
                result.retracted += 1
        run.stats = {key: value for key, value in result.__dict__.items() if key != "skipped"}
    return result


def export_tasks(ls: LabelStudio, project_id: int) -> list[dict[str, Any]]:
    chunks = ls.projects.exports.download_sync(id=project_id, export_type="JSON", download_all_tasks=False)
    return json.loads(b"".join(chunks))
