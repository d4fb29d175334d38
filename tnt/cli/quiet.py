"""A quiet console: third-party warnings, logging and progress bars go to a log file, not the terminal.

``send_noise_to_log`` runs as the CLI starts a command (the app's callback; not for ``--help``), before
the command imports torch, onnxruntime, transformers or litellm. tnt's own output (rich tables,
progress bars, errors) is printed as before.
"""

from __future__ import annotations

import os
import warnings
from typing import TextIO

from tnt.paths import cli_log_file

HANDLER_NAME = "tnt-cli-log"
LOG_MAX_BYTES = 5_000_000
# Read by those libraries when they are imported (inside commands): no progress bars, no advice.
# TOKENIZERS_PARALLELISM is left alone: "false" silences a fork warning the CLI never triggers, at the
# price of single-threaded tokenisation.
QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",
    "LITELLM_LOG": "ERROR",
}


def send_noise_to_log() -> None:
    """Route warnings and library logging to the log file.

    Safe to call again (every CliRunner invocation does): the previous handler is replaced, so the log
    follows ``TNT_CACHE_DIR`` as it is now.
    """
    import logging
    from logging.handlers import RotatingFileHandler

    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)  # a user's own setting wins
    path = cli_log_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # e.g. a read-only home: better the libraries' noise on the console than no tnt
        return
    close_log()
    handler = RotatingFileHandler(path, maxBytes=LOG_MAX_BYTES, backupCount=1, encoding="utf-8", delay=True)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # A root handler also keeps logging.warning() (onnxruntime's quantisation advice) from adding a
    # stderr handler of its own.
    logging.getLogger().addHandler(handler)
    # Assigned, not logging.captureWarnings(), which installs itself only once per process: pytest
    # restores showwarning after each test, and every CLI start must take it back.
    warnings.showwarning = log_warning


def close_log() -> None:
    """Detach and close the log handler ``send_noise_to_log`` installed, if any."""
    import logging

    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(handler)
        handler.close()


def log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    import logging

    text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
    logging.getLogger("py.warnings").warning("%s", text)
