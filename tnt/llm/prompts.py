"""Prompt templates: every prompt is a pair of Jinja files, ``<name>/system.j2`` and ``<name>/user.j2``.

The shipped templates live in the project's ``prompts/`` directory; a user directory (``--prompts``
or ``TNT_PROMPTS``) overrides any of them file by file. Document text enters a prompt only through
the ``document`` filter, which fences it as data.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import jinja2

PROMPTS_ENV = "TNT_PROMPTS"
_PACKAGE_DIR = Path(__file__).parents[1]
SHIPPED_DIRS = (_PACKAGE_DIR / "_prompts", _PACKAGE_DIR.parent / "prompts")

DOCUMENT_OPEN = "<document>"
DOCUMENT_CLOSE = "</document>"


def fence_document(text: str) -> str:
    """Wrap document text as data; a closing tag inside the text cannot end the fence early."""
    neutralised = text.replace(DOCUMENT_CLOSE, "</ document>").replace(DOCUMENT_OPEN, "< document>")
    return f"{DOCUMENT_OPEN}\n{neutralised}\n{DOCUMENT_CLOSE}"


@dataclass(frozen=True)
class Prompt:
    name: str
    system: jinja2.Template
    user: jinja2.Template
    hash: str

    def render(self, **variables: object) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": self.system.render(**variables).strip()},
            {"role": "user", "content": self.user.render(**variables).strip()},
        ]


class PromptLibrary:
    """Loads templates by name, user directory first, then the shipped ones."""

    def __init__(self, user_dir: Path | str | None = None):
        user_dir = user_dir or os.environ.get(PROMPTS_ENV)
        search = [Path(user_dir)] if user_dir else []
        search += [d for d in SHIPPED_DIRS if d.is_dir()]
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(d) for d in search]),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            autoescape=False,
        )
        self.env.filters["document"] = fence_document
        self._cache: dict[str, Prompt] = {}

    def get(self, name: str) -> Prompt:
        if name not in self._cache:
            self._cache[name] = self._load(name)
        return self._cache[name]

    def _load(self, name: str) -> Prompt:
        sources = []
        templates = []
        for part in ("system", "user"):
            path = f"{name}/{part}.j2"
            try:
                source, _, _ = self.env.loader.get_source(self.env, path)  # type: ignore[union-attr]
            except jinja2.TemplateNotFound as exc:
                raise FileNotFoundError(f"prompt template {path} not found") from exc
            sources.append(source)
            templates.append(self.env.get_template(path))
        digest = hashlib.sha256("\0".join(sources).encode()).hexdigest()[:16]
        return Prompt(name, templates[0], templates[1], digest)
