"""Retraining in the background: Label Studio waits about a second for a webhook, training takes longer.

One training runs per taxonomy version at a time; a request that arrives meanwhile is remembered and
runs once the current one ends, so the newest human labels are always learned.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tnt.workspace import Workspace

log = logging.getLogger("label_studio_backend.training")


@dataclass
class _VersionState:
    new_labels: int = 0
    running: bool = False
    pending: bool = False
    trained: int = 0
    last_error: str | None = None
    thread: threading.Thread | None = None


@dataclass
class Retrainer:
    workspace_dir: Path
    every: int  # new human labels between trainings; 0 turns counting off
    kind: str = "embed-linear"  # the distilled classifier kind (see ``tnt train``)
    _states: dict[int, _VersionState] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def labels_added(self, taxonomy_version: int, count: int) -> bool:
        """Count new human labels; start a training when ``every`` of them have arrived."""
        if not self.every or count <= 0:
            return False
        with self._lock:
            state = self._states.setdefault(taxonomy_version, _VersionState())
            state.new_labels += count
            if state.new_labels < self.every:
                return False
            state.new_labels = 0
        return self.request(taxonomy_version)

    def request(self, taxonomy_version: int) -> bool:
        """Start a training now, or queue one after the running one. True if it started now."""
        with self._lock:
            state = self._states.setdefault(taxonomy_version, _VersionState())
            if state.running:
                state.pending = True
                return False
            state.running = True
            state.thread = threading.Thread(
                target=self._run, args=(taxonomy_version, state), name=f"retrain-v{taxonomy_version}", daemon=True
            )
            state.thread.start()
            return True

    def _run(self, taxonomy_version: int, state: _VersionState) -> None:
        while True:
            try:
                with Workspace.open(self.workspace_dir) as workspace:
                    report = self.train(workspace, taxonomy_version)
                state.trained += 1
                state.last_error = None
                log.info("retrained for taxonomy v%s: model %s", taxonomy_version, report.model.id)
            except Exception as exc:  # a failed training must not stop the backend; it is logged and shown
                state.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("retraining for taxonomy v%s failed", taxonomy_version)
            with self._lock:
                if not state.pending:
                    state.running = False
                    return
                state.pending = False

    def train(self, workspace: Workspace, taxonomy_version: int) -> Any:
        """``tnt train`` for one taxonomy version: LLM labels with human labels overriding them."""
        from tnt.distill.train import train as train_model

        return train_model(workspace, taxonomy_version=taxonomy_version, kind=self.kind)

    def wait(self, timeout: float | None = None) -> None:
        """Block until every training started so far has ended (for tests and shutdown)."""
        for state in list(self._states.values()):
            if state.thread is not None:
                state.thread.join(timeout)

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                str(version): {
                    "running": state.running, "queued": state.pending, "trained": state.trained,
                    "new_labels": state.new_labels, "last_error": state.last_error,
                }
                for version, state in self._states.items()
            }
