"""The ``models`` table: every trained model with its metrics and directory, and how a model is found
again by id, by path or as the latest for a taxonomy version."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tnt.distill.model import CONFIG_FILE, TextModel, _json_default
from tnt.runs import WorkspaceError, utc_now

if TYPE_CHECKING:
    from tnt.workspace import Workspace


@dataclass
class ModelInfo:
    id: str
    taxonomy_version: int | None
    kind: str
    target: str
    path: Path
    labels: list[str]
    encoder: dict[str, Any]
    metrics: dict[str, Any]
    run_id: str | None
    created_at: str


class ModelStore:
    """Trained models of one workspace: rows in ``models``, files under ``<workspace>/models/<id>/``."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.db = workspace.db

    def add(self, model: TextModel, taxonomy_version: int | None, target: str, metrics: dict[str, Any], run_id: str | None) -> ModelInfo:
        prefix = f"v{taxonomy_version}" if taxonomy_version is not None else target
        model_id = f"{prefix}-{model.kind}-{uuid.uuid4().hex[:6]}"
        models_dir = self.workspace.artefact_dir("models")
        staging = models_dir / f".{model_id}.tmp"
        model.save(staging, id=model_id, taxonomy_version=taxonomy_version, target=target, metrics=metrics, run_id=run_id)
        staging.rename(models_dir / model_id)
        row = {
            "id": model_id, "taxonomy_version": taxonomy_version, "kind": model.kind, "target": target,
            "path": str((models_dir / model_id).relative_to(self.workspace.directory)),
            "labels": json.dumps(model.labels), "encoder": json.dumps(model.encoder.config()),
            "metrics": json.dumps(metrics, default=_json_default), "run_id": run_id, "created_at": utc_now(),
        }  # fmt: skip
        self.db["models"].insert(row)
        return self.get(model_id)

    def get(self, model_id: str) -> ModelInfo:
        rows = list(self.db["models"].rows_where("id = ? or id like ?", [model_id, f"{model_id}%"]))
        if len(rows) != 1:
            raise WorkspaceError(f"no single model matches {model_id!r} ({len(rows)} found); see `tnt models`")
        return self._info(rows[0])

    def latest(self, taxonomy_version: int | None = None, target: str = "label") -> ModelInfo | None:
        rows = list(
            self.db["models"].rows_where(
                "taxonomy_version is ? and target = ?", [taxonomy_version, target], order_by="created_at desc", limit=1
            )
        )
        return self._info(rows[0]) if rows else None

    def all(self) -> list[ModelInfo]:
        return [self._info(row) for row in self.db["models"].rows_where(order_by="created_at")]

    def _info(self, row: dict[str, Any]) -> ModelInfo:
        return ModelInfo(
            id=row["id"], taxonomy_version=row["taxonomy_version"], kind=row["kind"], target=row["target"],
            path=self.workspace.directory / row["path"], labels=json.loads(row["labels"]),
            encoder=json.loads(row["encoder"]), metrics=json.loads(row["metrics"]), run_id=row["run_id"],
            created_at=row["created_at"],
        )  # fmt: skip


def latest_model(workspace: Workspace, taxonomy_version: int | None, target: str = "label") -> ModelInfo | None:
    return ModelStore(workspace).latest(taxonomy_version, target)


def load_model(workspace: Workspace, model_id: str, device: str | None = None) -> TextModel:
    return TextModel.load(ModelStore(workspace).get(model_id).path, device)


def model_directory(reference: str) -> Path | None:
    """``reference`` when it is a model directory (one holding ``model.json``), else None: then it is
    a model id (or unique id prefix) for ``ModelStore.get``."""
    path = Path(reference)
    return path if (path / CONFIG_FILE).exists() else None
