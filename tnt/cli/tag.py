"""``tnt tag``: run a distilled model over files (Parquet out) or over the workspace's documents."""

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from tnt.cli.common import WorkspaceOption, console, fail, open_workspace, progress

if TYPE_CHECKING:
    from tnt.distill.tag import TaggedCallback, TagSummary


class Engine(str, Enum):
    local = "local"
    ray = "ray"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def tag(
    workspace: WorkspaceOption,
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model id (or prefix) in the workspace, or a model directory.", show_default=False)
    ],
    inputs: Annotated[
        Optional[list[str]],
        typer.Argument(help="JSONL/CSV/Parquet/Arrow files, quoted globs or datasets directories.", show_default=False),
    ] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output directory: one Parquet file per input.")] = None,
    corpus: Annotated[
        bool, typer.Option("--corpus", help="Tag the workspace's documents and store the results as labels (source model).")
    ] = False,
    engine: Annotated[Engine, typer.Option("--engine", help="local: this machine; ray: Ray Data (a cluster).")] = Engine.local,
    ray_address: Annotated[
        Optional[str], typer.Option("--ray-address", help="Ray cluster address (default: start a local Ray).")
    ] = None,
    text_field: Annotated[str, typer.Option("--text-field", help="Field holding the document text.")] = "text",
    id_field: Annotated[
        Optional[str], typer.Option("--id-field", help="Field holding document ids; default: a hash of the text (as ingest).")
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Most likely labels kept per document.")] = 3,
    device: Annotated[Device, typer.Option("--device", help="auto: CUDA when present, else CPU.")] = Device.auto,
) -> None:
    """Tag documents with a trained model: files to Parquet (resumable per file), or the corpus to labels."""
    from tnt.corpus.readers import IngestError
    from tnt.distill.heads import DistillError
    from tnt.distill.tag import TagError
    from tnt.workspace import WorkspaceError

    if corpus == bool(inputs):
        fail("give input files and --out, or --corpus to tag the workspace's documents")
    try:
        with progress() as bar:
            task = bar.add_task("tag", total=None, cost="")
            advance = lambda n: bar.advance(task, n)  # noqa: E731
            summary = (
                _tag_corpus(workspace, model, device, advance) if corpus else _tag_files(
                    inputs or [], model, out, engine, ray_address, text_field, id_field, top_k, device, workspace, advance
                )
            )  # fmt: skip
    except (TagError, DistillError, IngestError, WorkspaceError) as exc:
        fail(str(exc))
    rate = f"Tagged {summary.documents:,} documents in {summary.seconds:.1f} s ({summary.docs_per_s:,.0f} docs/s)"
    if summary.routes and summary.routes["encoder_share"] is not None:
        rate += f", {summary.routes['encoder_share']:.1%} through the encoder tier"
    if summary.out_dir is None:
        console.print(f"{rate} → labels with source 'model'{''.join(f'; {note}' for note in summary.shards_skipped)}")
    else:
        skipped = f", {len(summary.shards_skipped)} already done" if summary.shards_skipped else ""
        console.print(f"{rate}; {len(summary.shards_done)} shard(s) written{skipped} → {summary.out_dir}")


def _tag_files(
    inputs: list[str], model: str, out: Path | None, engine: Engine, ray_address: str | None, text_field: str,
    id_field: str | None, top_k: int, device: Device, workspace: Path, advance: "TaggedCallback",
) -> "TagSummary":  # fmt: skip
    from tnt.distill.model import TextModel
    from tnt.distill.store import model_directory
    from tnt.distill.tag import tag_files, tag_files_ray

    if out is None:
        fail("give --out DIR for the Parquet output")
    directory = model_directory(model)
    if directory is None:
        with open_workspace(workspace) as ws:
            directory = ws.models.get(model).path
    if engine is Engine.ray:
        return tag_files_ray(
            directory, inputs, out, text_field=text_field, id_field=id_field, top_k=top_k, address=ray_address
        )
    loaded = TextModel.load(directory, None if device is Device.auto else device.value)
    return tag_files(loaded, inputs, out, text_field=text_field, id_field=id_field, top_k=top_k, on_progress=advance)


def _tag_corpus(workspace: Path, model: str, device: Device, advance: "TaggedCallback") -> "TagSummary":
    from tnt.distill.tag import tag_corpus

    with open_workspace(workspace) as ws:
        return tag_corpus(ws, model, device=None if device is Device.auto else device.value, on_progress=advance)
