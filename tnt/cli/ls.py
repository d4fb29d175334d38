"""``tnt ls``: Label Studio projects from taxonomy versions; review samples out, human labels back.

The Label Studio API key comes from the ``LABEL_STUDIO_API_KEY`` environment variable only (a
command-line value would show in process lists and shell history); it is never printed.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tnt.cli.common import WorkspaceOption, console, fail, llm_options, open_workspace

if TYPE_CHECKING:
    from label_studio_sdk import LabelStudio

    from tnt.llm.gateway import LLMSettings

app = typer.Typer(help="Label Studio: project config, push a review sample, connect the backend, pull annotations.")

TaxonomyOption = Annotated[int | None, typer.Option("--taxonomy", "-t", help="Taxonomy version (default: latest).")]
MultiOption = Annotated[bool, typer.Option("--multi", help="Let annotators choose several labels.")]
UrlOption = Annotated[
    str, typer.Option("--url", envvar="LABEL_STUDIO_URL", help="Label Studio's address.")
]
ProjectOption = Annotated[int, typer.Option("--project", "-p", help="Label Studio project id.")]
BACKEND_USERNAME_ENV = "TNT_BACKEND_USERNAME"
BACKEND_PASSWORD_ENV = "TNT_BACKEND_PASSWORD"
WEBHOOK_SECRET_ENV = "TNT_WEBHOOK_SECRET"
DEFAULT_URL = "http://localhost:8080"


def secret_from_env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        fail(f"set {name} in the environment (secrets are not taken on the command line)")
    return value


@contextmanager
def label_studio(url: str) -> Iterator["LabelStudio"]:
    """An SDK client; Label Studio's API errors become one clean line."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    from tnt.review.labelstudio import API_KEY_ENV, LabelStudioError
    from tnt.review.labelstudio_sync import client

    try:
        yield client(url, secret_from_env(API_KEY_ENV))
    except ApiError as exc:
        fail(f"Label Studio at {url} answered {exc.status_code}: {exc.body}")
    except httpx.HTTPError as exc:
        fail(f"cannot reach Label Studio at {url}: {exc}")
    except LabelStudioError as exc:
        fail(str(exc))


@app.command()
def config(
    workspace: WorkspaceOption,
    taxonomy: TaxonomyOption = None,
    multi: MultiOption = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the XML here instead of printing it.")] = None,
) -> None:
    """Print the label config (<Choices> or, for a two-level taxonomy, <Taxonomy>) for a taxonomy version."""
    from tnt.review.labelstudio import label_config
    from tnt.taxonomy.store import TaxonomyStore

    with open_workspace(workspace) as ws:
        xml = label_config(TaxonomyStore(ws).get(taxonomy), multi)
    if out:
        out.write_text(xml + "\n", encoding="utf-8")
        console.print(f"Label config written to {out}")
    else:
        print(xml)


@app.command()
@llm_options
def push(
    workspace: WorkspaceOption,
    taxonomy: TaxonomyOption = None,
    ids: Annotated[
        Path | None,
        typer.Option("--ids", exists=True, dir_okay=False, help="Document ids, one per line (default: the latest review sample)."),
    ] = None,
    title: Annotated[str | None, typer.Option("--title", help="Project title (default: 'tnt taxonomy vN').")] = None,
    project: Annotated[int | None, typer.Option("--project", "-p", help="Update this project instead of finding it by title.")] = None,
    multi: MultiOption = False,
    predictions: Annotated[
        bool, typer.Option("--predictions/--no-predictions", help="Attach tnt's predictions (else the backend serves them).")
    ] = True,
    carried: Annotated[
        bool,
        typer.Option("--carried/--no-carried", help="Also import the documents whose human label a migration carried, annotated with it."),
    ] = True,
    blind_share: Annotated[
        float | None,
        typer.Option("--blind-share", min=0, max=1, help="Send this share of the tasks without any prediction (default: as the review sample marked them)."),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    *,
    llm: "LLMSettings",
) -> None:
    """Create or update the project of a taxonomy version and import documents with tnt's predictions
    (and people's carried labels as annotations)."""
    from tnt.review.labelstudio_sync import push as push_documents
    from tnt.review.sampling import ReviewSamples, blind_doc_ids

    with open_workspace(workspace) as ws, label_studio(url) as ls:
        version = ws.taxonomies.get(taxonomy).version
        if ids:
            doc_ids = [line.strip() for line in ids.read_text(encoding="utf-8").splitlines() if line.strip()]
            reasons, blind = None, set()
        else:
            picks = ReviewSamples(ws).latest(version)
            doc_ids, reasons = [p.doc_id for p in picks], {p.doc_id: p.reason for p in picks}
            blind = {p.doc_id for p in picks if p.detail.get("blind")}
        if blind_share is not None:
            blind = blind_doc_ids(doc_ids, blind_share)
        result = push_documents(
            ws, ls, doc_ids, taxonomy_version=version, title=title, project_id=project, multi=multi,
            settings=llm, reasons=reasons, predictions=predictions, carried=carried, blind=blind,
        )
    verb = "Created" if result.created else "Updated"
    console.print(
        f"{verb} project {result.project_id}: {result.imported} task(s) imported"
        f"{f' ({result.annotated} with a carried human label)' if result.annotated else ''}, "
        f"{result.already_there} already there; predictions from {result.model_version}"
        + (f"; {len(blind)} blind (no prediction shown)" if blind else "")
    )


@app.command()
def connect(
    workspace: WorkspaceOption,
    project: ProjectOption,
    backend_url: Annotated[str, typer.Option("--backend-url", help="Where `tnt serve` listens, as Label Studio reaches it.")],
    username: Annotated[str, typer.Option("--username", envvar=BACKEND_USERNAME_ENV, help="The backend's basic-auth user.")] = "tnt",
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Attach the running `tnt serve` backend to a project (password and webhook secret from the environment)."""
    from tnt.review.labelstudio_sync import connect as connect_backend

    password = secret_from_env(BACKEND_PASSWORD_ENV)
    secret = secret_from_env(WEBHOOK_SECRET_ENV)
    with open_workspace(workspace) as ws, label_studio(url) as ls:
        result = connect_backend(ws, ls, project, backend_url, username=username, password=password, webhook_secret=secret)
    console.print(
        f"Backend {result.ml_backend_id} connected to project {project} (model version {result.model_version}); "
        f"webhook {result.webhook_id} sends annotations to it"
    )


@app.command()
def pull(workspace: WorkspaceOption, project: ProjectOption, url: UrlOption = DEFAULT_URL) -> None:
    """Store the project's annotations as human labels (again: only what changed)."""
    from tnt.review.labelstudio_sync import pull as pull_annotations

    with open_workspace(workspace) as ws, label_studio(url) as ls:
        result = pull_annotations(ws, ls, project)
    console.print(
        f"{result.tasks} annotated task(s): {result.added} label(s) added, {result.updated} updated, "
        f"{result.retracted} retracted, {result.unchanged} unchanged"
    )
    for problem in result.skipped:
        console.print(f"[yellow]skipped[/] {problem}")
