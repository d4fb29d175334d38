"""tnt: taxonomy, labels and data selection for training corpora."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tnt.workspace import Workspace

__all__ = ["Workspace"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: `import tnt.cli` must not pull in sqlite-utils (and pandas with it), so that
    # `tnt --help` stays instant.
    if name == "Workspace":
        from tnt.workspace import Workspace

        return Workspace
    raise AttributeError(f"module 'tnt' has no attribute {name!r}")
