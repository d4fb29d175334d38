"""``tnt serve``: the Label Studio ML backend over a workspace."""

from typing import TYPE_CHECKING, Annotated

import typer

from tnt.cli.common import WorkspaceOption, err_console, fail, llm_options
from tnt.cli.ls import (
    BACKEND_PASSWORD_ENV,
    BACKEND_USERNAME_ENV,
    WEBHOOK_SECRET_ENV,
    secret_from_env,
)

if TYPE_CHECKING:
    from tnt.llm.gateway import LLMSettings


@llm_options
def serve(
    workspace: WorkspaceOption,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 9090,
    username: Annotated[str, typer.Option("--username", envvar=BACKEND_USERNAME_ENV, help="Basic-auth user Label Studio sends.")] = "tnt",
    retrain_every: Annotated[
        int, typer.Option("--retrain-every", min=0, help="Retrain after this many new human labels (0: only on request).")
    ] = 50,
    kind: Annotated[str, typer.Option("--kind", help="Classifier kind to retrain (see `tnt train`).")] = "embed-linear",
    *,
    llm: "LLMSettings",
) -> None:
    """Serve predictions to Label Studio and take its annotations (password and webhook secret from the environment)."""
    import uvicorn

    from label_studio_backend import BackendSettings, create_app
    from tnt.runs import WorkspaceError

    settings = BackendSettings(
        workspace_dir=workspace,
        username=username,
        password=secret_from_env(BACKEND_PASSWORD_ENV),
        webhook_secret=secret_from_env(WEBHOOK_SECRET_ENV),
        llm=llm,
        retrain_every=retrain_every,
        train_kind=kind,
    )
    try:
        app = create_app(settings)
    except WorkspaceError as exc:
        fail(str(exc))
    err_console.print(f"tnt backend for {workspace.resolve()} on http://{host}:{port}", soft_wrap=True)
    uvicorn.run(app, host=host, port=port, log_level="info")
