"""tnt: taxonomy, labels and data selection for training corpora."""

from tnt.workspace import Workspace

__all__ = ["Workspace"]
