"""``tnt serve``: the Label Studio ML backend over a workspace."""

from __future__ import annotations

from typing import Annotated

import typer

from tnt.cli.common import (
    ApiBaseOption,
    ApiKeyOption,
    ConcurrencyOption,
    ModelOption,
    WorkspaceOption,
    err_console,
    fail,
    llm_settings,
)
from tnt.cli.ls import (
    BACKEND_PASSWORD_ENV,
    BACKEND_USERNAME_ENV,
    WEBHOOK_SECRET_ENV,
    secret_from_env,
)
from tnt.llm.gateway import DEFAULT_MODEL


def serve(
    workspace: WorkspaceOption,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 9090,
    username: Annotated[str, typer.Option("--username", envvar=BACKEND_USERNAME_ENV, help="Basic-auth user Label Studio sends.")] = "tnt",
    retrain_every: Annotated[
        int, typer.Option("--retrain-every", min=0, help="Retrain after this many new human labels (0: only on request).")
    ] = 50,
    kind: Annotated[str, typer.Option("--kind", help="Classifier kind to retrain (see `tnt train`).")] = "embed-linear",
    model: ModelOption = DEFAULT_MODEL,
    api_base: ApiBaseOption = None,
    api_key: ApiKeyOption = None,
    concurrency: ConcurrencyOption = 16,
) -> None:
    """Serve predictions to Label Studio and take its annotations (password and webhook secret from the environment)."""
    import uvicorn

    from label_studio_backend import BackendSettings, create_app
    from tnt.workspace import WorkspaceError

    settings = BackendSettings(
        workspace_dir=workspace,
        username=username,
        password=secret_from_env(BACKEND_PASSWORD_ENV),
        webhook_secret=secret_from_env(WEBHOOK_SECRET_ENV),
        llm=llm_settings(model, api_base, api_key, concurrency),
        retrain_every=retrain_every,
        train_kind=kind,
    )
    try:
        app = create_app(settings)
    except WorkspaceError as exc:
        fail(str(exc))
    err_console.print(f"tnt backend for {workspace.resolve()} on http://{host}:{port}")
    uvicorn.run(app, host=host, port=port, log_level="info")
