"""``tnt score``: numeric labels for documents, such as Ask-LLM quality scores."""

from typing import TYPE_CHECKING, Annotated

import typer

from tnt.cli.common import (
    DryRunOption,
    WorkspaceOption,
    fail,
    llm_options,
    open_workspace,
)
from tnt.cli.label import (
    AllOption,
    IdsOption,
    MaxAttemptsOption,
    PromptsOption,
    RefreshOption,
    SampleOption,
    SeedOption,
    print_estimate,
    print_result,
    progress_bar,
    selected_ids,
)

if TYPE_CHECKING:
    from tnt.llm.gateway import LLMSettings

app = typer.Typer(
    help="Score documents (numeric labels for selection and distillation).", no_args_is_help=True
)


@app.command()
@llm_options
def quality(
    workspace: WorkspaceOption,
    sample: SampleOption = None,
    ids: IdsOption = None,
    all_documents: AllOption = False,
    seed: SeedOption = 0,
    prompt: Annotated[
        str, typer.Option("--prompt", help="Scoring prompt: a template directory with a scoring.yaml.")
    ] = "ask_llm",
    prompts: PromptsOption = None,
    max_attempts: MaxAttemptsOption = 3,
    refresh: RefreshOption = False,
    dry_run: DryRunOption = False,
    *,
    llm: "LLMSettings",
) -> None:
    """Ask-LLM quality scores: P(yes) that a document is informative pre-training data.

    Uses the answer's token log-probabilities where the backend returns them, else asks for the
    probability outright; each score records which.
    """
    from tnt.labels.quality import ScoringError, estimate_quality, score_quality
    from tnt.llm.prompts import PromptLibrary

    options = {"prompt": prompt, "prompts": PromptLibrary(prompts), "max_attempts": max_attempts, "refresh": refresh}
    with open_workspace(workspace) as ws:
        doc_ids = selected_ids(ws, sample, ids, all_documents, seed)
        try:
            if dry_run:
                print_estimate(estimate_quality(ws, doc_ids, llm, **options))
                return
            with progress_bar("Scoring") as on_progress:
                result = score_quality(ws, doc_ids, llm, on_progress=on_progress, **options)
        except (ScoringError, FileNotFoundError) as exc:
            fail(str(exc))
        print_result(ws, result, "method")
