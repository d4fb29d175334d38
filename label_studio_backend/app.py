"""The ML-backend HTTP server Label Studio talks to (Starlette, served by uvicorn).

Routes: ``GET /health``, ``POST /setup`` (project connect; also before every batch of predictions),
``POST /predict`` (one result per task), ``POST /webhook`` (annotations in, training requests).
Every route needs credentials: HTTP basic auth (what Label Studio sends on its ML calls), or on
``/webhook`` the secret header ``tnt ls connect`` puts on the project's webhook. Bad bodies get 400
with the reason; an unexpected error is logged here and answered with a short message, never a trace.

Workspace access runs in worker threads (SQLite connections are per thread), so slow work never
blocks the event loop and concurrent requests proceed.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from anyio import to_thread
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from label_studio_backend.training import Retrainer
from tnt.llm.gateway import LLMSettings
from tnt.review.labelstudio import (
    WEBHOOK_SECRET_HEADER,
    LabelConfigMismatch,
    LabelSchema,
    ProjectLink,
    ProjectLinks,
    check_label_config,
    predict_results,
    predictor_for,
    project_schema,
    retract_annotation,
    store_annotation,
    task_doc_id,
    task_text,
)
from tnt.runs import WorkspaceError
from tnt.workspace import Workspace

log = logging.getLogger("label_studio_backend")

MAX_BODY_BYTES = 64 * 1024 * 1024
ANNOTATION_ACTIONS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED"}
DELETE_ACTIONS = {"ANNOTATIONS_DELETED", "ANNOTATION_DELETED"}  # Label Studio 1.23 sends the plural


@dataclass
class BackendSettings:
    workspace_dir: Path
    username: str
    password: str
    webhook_secret: str
    llm: LLMSettings = field(default_factory=LLMSettings)
    retrain_every: int = 50  # new human labels between background trainings; 0: only on START_TRAINING
    max_tasks: int = 100  # per /predict request
    train_kind: str = "embed-linear"  # classifier kind of background retraining

    def __post_init__(self) -> None:
        for name in ("username", "password", "webhook_secret"):
            if not getattr(self, name):
                raise ValueError(f"the backend needs a {name.replace('_', ' ')}")


class BadRequest(Exception):
    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.reason = reason
        self.status = status


# Request bodies


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class TaskBody(_Body):
    id: int | None = None
    data: dict[str, Any]


ProjectName = Annotated[str, BeforeValidator(lambda value: str(value) if isinstance(value, int) else value)]


class PredictBody(_Body):
    tasks: list[TaskBody]
    project: ProjectName
    label_config: str


class SetupBody(_Body):
    project: ProjectName
    label_config: str = Field(alias="schema")


class ProjectRef(_Body):
    id: int


class WebhookBody(_Body):
    action: str
    project: ProjectRef | None = None


def project_id(project: str) -> int:
    """Label Studio names projects "<id>.<created timestamp>"."""
    head = project.split(".", 1)[0]
    if not head.isdigit():
        raise BadRequest(f"project must look like '<id>.<timestamp>', got {project!r}")
    return int(head)


# The backend


class Backend:
    def __init__(self, settings: BackendSettings):
        self.settings = settings
        self.retrainer = Retrainer(settings.workspace_dir, settings.retrain_every, settings.train_kind)
        self._local = threading.local()
        self._interfaces: dict[tuple[str, int, bool], Any] = {}
        self._interfaces_lock = threading.Lock()
        Workspace.open(settings.workspace_dir).close()  # fail at start, not at the first request

    def workspace(self) -> Workspace:
        """This thread's connection to the workspace."""
        workspace = getattr(self._local, "workspace", None)
        if workspace is None:
            workspace = self._local.workspace = Workspace.open(self.settings.workspace_dir)
        return workspace

    def link(self, project: int) -> ProjectLink:
        try:
            return ProjectLinks(self.workspace()).get(project)
        except WorkspaceError as exc:
            raise BadRequest(str(exc), 422) from exc

    def checked_config(self, link: ProjectLink, config: str) -> tuple[LabelSchema, Any]:
        """The project's schema and parsed config, checked once per config text."""
        schema = project_schema(self.workspace(), link)
        key = (config, link.taxonomy_version, link.multi)
        with self._interfaces_lock:
            interface = self._interfaces.get(key)
        if interface is None:
            try:
                interface = check_label_config(config, schema)
            except LabelConfigMismatch as exc:
                raise BadRequest(f"project {link.project_id}: {exc}", 422) from exc
            with self._interfaces_lock:
                self._interfaces[key] = interface
        return schema, interface

    def setup(self, body: SetupBody) -> dict[str, Any]:
        link = self.link(project_id(body.project))
        self.checked_config(link, body.label_config)
        predictor = predictor_for(self.workspace(), link.taxonomy_version, self.settings.llm, link.multi)
        return {"model_version": predictor.model_version}

    def predict(self, body: PredictBody) -> dict[str, Any]:
        if len(body.tasks) > self.settings.max_tasks:
            raise BadRequest(f"at most {self.settings.max_tasks} tasks per request, got {len(body.tasks)}", 413)
        link = self.link(project_id(body.project))
        schema, interface = self.checked_config(link, body.label_config)
        workspace = self.workspace()
        predictor = predictor_for(workspace, link.taxonomy_version, self.settings.llm, link.multi)
        tasks = [task_text(task.model_dump()) for task in body.tasks]
        try:
            results = predict_results(workspace, predictor, schema, tasks, interface)
        except LabelConfigMismatch as exc:
            raise BadRequest(f"project {link.project_id}: {exc}", 422) from exc
        return {"results": results, "model_version": predictor.model_version}

    def webhook(self, payload: dict[str, Any]) -> dict[str, Any]:
        body = _parse(WebhookBody, payload)
        if body.action == "START_TRAINING":
            link = self.link(_require_project(body))
            started = self.retrainer.request(link.taxonomy_version)
            return {"status": "training started" if started else "training queued"}
        if body.action in DELETE_ACTIONS:
            project = _require_project(body)
            deleted = payload.get("annotations", payload.get("annotation"))
            ids = [_annotation_id(item) for item in _as_list(deleted, "annotations")]
            workspace = self.workspace()
            with workspace.write():
                retracted = sum(retract_annotation(workspace, project, annotation_id) for annotation_id in ids)
            return {"status": "ok", "retracted": retracted}
        if body.action in ANNOTATION_ACTIONS:
            return self._store_annotations(self.link(_require_project(body)), payload)
        return {"status": "ignored", "action": body.action}

    def _store_annotations(self, link: ProjectLink, payload: dict[str, Any]) -> dict[str, Any]:
        tasks = {task.get("id"): task for task in _as_list(payload.get("task"), "task")}
        found = [(annotation, _doc_of(annotation, tasks)) for annotation in _as_list(payload.get("annotation"), "annotation")]
        workspace = self.workspace()
        with workspace.write():  # each compares with the stored label, then writes: no other writer between
            outcomes = Counter(store_annotation(workspace, link, doc_id, annotation) for annotation, doc_id in found)
        training = self.retrainer.labels_added(link.taxonomy_version, outcomes["added"] + outcomes["updated"])
        return {"status": "ok", **outcomes, "training_started": training}


def _doc_of(annotation: dict[str, Any], tasks: dict[Any, dict[str, Any]]) -> str:
    """The tnt document an annotation is about (checked for every annotation before any is stored)."""
    annotation_id = _annotation_id(annotation)
    task = tasks.get(annotation.get("task")) or (next(iter(tasks.values())) if len(tasks) == 1 else None)
    doc_id = task_doc_id(task) if task else None
    if doc_id is None:
        raise BadRequest(f"annotation {annotation_id}: its task carries no tnt document id (data.tnt_doc_id)")
    return doc_id


def _require_project(body: WebhookBody) -> int:
    if body.project is None:
        raise BadRequest(f"{body.action}: the payload names no project")
    return body.project.id


def _as_list(value: Any, name: str) -> list[dict[str, Any]]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, dict) for item in items):
        raise BadRequest(f"'{name}' must be an object or a list of objects")
    return items


def _annotation_id(annotation: dict[str, Any]) -> int:
    annotation_id = annotation.get("id")
    if not isinstance(annotation_id, int):
        raise BadRequest(f"annotation id must be an integer, got {annotation_id!r}")
    return annotation_id


def _parse(model: type[BaseModel], payload: Any) -> Any:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}" for error in exc.errors()[:5]
        )
        raise BadRequest(f"invalid request body: {problems}") from exc


# HTTP


def _authorized(request: Request, settings: BackendSettings, allow_webhook_secret: bool) -> bool:
    if allow_webhook_secret:
        secret = request.headers.get(WEBHOOK_SECRET_HEADER)
        if secret is not None and secrets.compare_digest(secret.encode(), settings.webhook_secret.encode()):
            return True
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        username, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return secrets.compare_digest(username.encode(), settings.username.encode()) & secrets.compare_digest(
        password.encode(), settings.password.encode()
    )


def _unauthorized() -> JSONResponse:
    return JSONResponse(
        {"error": "missing or wrong credentials"}, 401, headers={"WWW-Authenticate": 'Basic realm="tnt"'}
    )


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from exc


Handler = Callable[[Request], Awaitable[JSONResponse]]


def _endpoint(backend: Backend, work: Callable[[Any], dict[str, Any]], body: type[BaseModel] | None,
              allow_webhook_secret: bool = False) -> Handler:
    """Authenticate, parse the body, run ``work`` in a worker thread, answer JSON."""

    async def handle(request: Request) -> JSONResponse:
        if not _authorized(request, backend.settings, allow_webhook_secret):
            return _unauthorized()
        try:
            payload = await _json_body(request) if request.method == "POST" else None
            argument = _parse(body, payload) if body is not None else payload
            return JSONResponse(await to_thread.run_sync(partial(work, argument)))
        except BadRequest as exc:
            log.warning("%s %s: %s", request.method, request.url.path, exc.reason)
            return JSONResponse({"error": exc.reason}, exc.status)

    return handle


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the tnt backend's log"}, 500)


def create_app(settings: BackendSettings) -> Starlette:
    backend = Backend(settings)

    def health(_: Any) -> dict[str, Any]:
        return {"status": "UP", "model_class": "tnt", "training": backend.retrainer.status()}

    routes = [
        Route("/health", _endpoint(backend, health, None), methods=["GET"]),
        Route("/setup", _endpoint(backend, backend.setup, SetupBody), methods=["POST"]),
        Route("/predict", _endpoint(backend, backend.predict, PredictBody), methods=["POST"]),
        Route("/webhook", _endpoint(backend, backend.webhook, None, allow_webhook_secret=True), methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={Exception: _internal_error}, max_body_size=MAX_BODY_BYTES)
    app.state.backend = backend
    return app
