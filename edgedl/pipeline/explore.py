"""``edgedl explore ARTIFACT|RUN``: the artifact's graph in Model Explorer, edgedl's findings as overlays.

Model Explorer is optional (``pip install 'edgedl[explore]'``): ``--export DIR`` only writes the
overlay files and needs nothing beyond edgedl.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import RuntimeMissing, UsageError
from . import overlays

INSTALL_HINT = "pip install 'edgedl[explore]'  (ai-edge-model-explorer==0.1.34)"


def resolve(target: str | Path) -> Path:
    """The artifact to show: the file itself, or for a run (or its exports folder) its int8 TFLite model."""
    path = Path(target)
    if path.is_file():
        if path.suffix not in (".tflite", ".onnx"):
            raise UsageError(f"{path} is not a .tflite or .onnx artifact",
                             hint="give an exported artifact or a training run folder")
        return path
    if not path.is_dir():
        raise UsageError(f"{path} does not exist", hint="give an exported artifact or a training run folder")
    exports = path / "exports" if (path / "exports").is_dir() else path
    found = sorted(exports.glob("*_int8.tflite")) or sorted(exports.glob("*.tflite")) or sorted(exports.glob("*.onnx"))
    if not found:
        raise UsageError(f"{path} holds no exported .tflite or .onnx artifact",
                         hint=f"edgedl export {path} --format tflite --quantize int8")
    return found[0]


def export(artifact: Path, folder: Path) -> list[Path]:
    """Write the artifact's overlay files into ``folder``."""
    return overlays.write(artifact, overlays.drift_of(artifact), folder)


def model_explorer():
    try:
        import model_explorer
    except ImportError as exc:
        raise RuntimeMissing("Model Explorer is not installed; it is an optional extra of edgedl",
                             hint=f"{INSTALL_HINT}, or use --export DIR to write the overlay files only") from exc
    return model_explorer


def launch(artifact: Path, files: list[Path], host: str, port: int, open_browser: bool) -> None:
    """Serve the artifact and its overlays in Model Explorer until interrupted (Ctrl-C)."""
    if artifact.suffix != ".tflite":
        raise UsageError(f"Model Explorer {_version()} has no built-in ONNX adapter, so it cannot open {artifact.name}",
                         hint="use --export DIR and load the files in a Model Explorer with an ONNX extension")
    explorer = model_explorer()
    _no_update_check()
    config = explorer.config().add_model_from_path(str(artifact.resolve()))
    for path in files:
        config.add_node_data_from_path(str(path.resolve()))
    explorer.visualize_from_config(config, host=host, port=port, no_open_in_browser=not open_browser)


def _no_update_check() -> None:
    """Model Explorer 0.1.34 asks GitHub for a newer release once its server is up; edgedl makes no
    network request at run time, so that check is switched off (a no-op when the module changes)."""
    try:
        from model_explorer import server
    except ImportError:
        return
    if hasattr(server, "_check_new_version"):
        server._check_new_version = lambda print_msg=True: {"version": "", "runningVersion": _version(),
                                                            "releaseUrl": "", "desktopAppUrl": ""}


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("ai-edge-model-explorer")
    except metadata.PackageNotFoundError:
        return "(not installed)"
