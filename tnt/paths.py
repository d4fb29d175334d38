"""Where tnt keeps files outside a workspace: one cache directory (ONNX exports, the CLI's log)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "TNT_CACHE_DIR"


def cache_dir() -> Path:
    """``$TNT_CACHE_DIR``, else ``~/.cache/tnt``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "tnt"))


def cli_log_file() -> Path:
    """Where the CLI keeps the warnings and logging of the libraries it runs (``tnt.cli.quiet``)."""
    return cache_dir() / "logs" / "tnt.log"
