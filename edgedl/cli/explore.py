"""``edgedl explore``: kept beside ``commands`` so that the Model Explorer extra stays in one place."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from .group import cli


@cli.command()
@click.argument("target", metavar="ARTIFACT|RUN")
@click.option("--export", "export_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Only write the overlay JSON files (Model Explorer's node-data format) into DIR; needs no "
                   "Model Explorer.")
@click.option("--host", default="localhost", show_default=True, help="Where Model Explorer serves its page.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--no-browser", is_flag=True, help="Serve without opening a browser tab.")
def explore(target, export_dir, host, port, no_browser):
    """Open ARTIFACT (or RUN's int8 TFLite model) in Model Explorer with edgedl's findings as overlays.

    \b
    Overlays (one JSON file each, keyed by the artifact's tensor names):
      precision    what each op computes in: int8, int16, float32 (after any rescue)
      drift_steps  RMSE against the float model, in quantization steps (TFLite)
      drift_sqnr   SQNR against the float model in dB, lower is worse
    Drift comes from `edgedl validate RUN --layers` (the pipeline runs it).
    Model Explorer is an optional extra: pip install 'edgedl[explore]'.
    """
    from ..core.outputs import claim
    from ..pipeline.explore import export, launch, model_explorer, resolve

    artifact = resolve(target)
    if export_dir is not None:
        folder = claim(export_dir, "overlays")
        files = export(artifact, folder)
        for path in files:
            click.echo(f"wrote {path}")
        click.echo(f"{len(files)} overlay file(s) for {artifact.name}; load them in Model Explorer with "
                   "'Add per-node data'")
        return
    model_explorer()  # the missing extra is reported before anything is written
    folder = Path(tempfile.mkdtemp(prefix="edgedl-explore-"))
    files = export(artifact, folder)
    click.echo(f"{artifact}: {len(files)} overlay(s) ({', '.join(p.name for p in files)})", err=True)
    launch(artifact, files, host, port, not no_browser)
