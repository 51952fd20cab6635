"""Loading user model files safely: Keras safe mode by default, clear errors for bad files."""

from __future__ import annotations

import zipfile
from pathlib import Path

from ..core.errors import ModelError


def load_keras_model(path: str | Path, safe_mode: bool = True):
    """Load a ``.keras`` file. Safe mode refuses Lambda layers and other embedded code."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelError(f"{path} is a folder, not a .keras file",
                         hint="pass the model.keras inside it, or a training run folder")
    if path.suffix != ".keras":
        raise ModelError(f"{path} is not a .keras file (suffix {path.suffix or 'none'})",
                         hint="save the model with model.save('name.keras')")
    if path.stat().st_size == 0 or not zipfile.is_zipfile(path):
        raise ModelError(f"{path} is empty, truncated or not a Keras archive")
    check_archive(path)
    from ..core.env import import_keras

    keras = import_keras()
    if not safe_mode:
        import warnings

        warnings.warn(f"loading {path} with safe mode off: code inside it will run", stacklevel=2)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=safe_mode)
    except Exception as exc:  # Keras raises ValueError/TypeError/KeyError/OSError for bad archives
        raise ModelError(_explain(path, exc)) from exc


MAX_MODEL_BYTES = 4 * 2**30  # uncompressed size of a .keras archive (EDGEDL_MAX_MODEL_BYTES overrides)
MAX_CONFIG_BYTES = 64 * 2**20  # config.json and metadata.json: text that describes the layers
MAX_RATIO = 50  # Keras stores its members uncompressed; a member inflating 50× is a bomb, not a model


def check_archive(path: Path) -> None:
    """Refuse a .keras archive whose members would inflate beyond reason, before anything extracts it."""
    import os

    limit = int(os.environ.get("EDGEDL_MAX_MODEL_BYTES", MAX_MODEL_BYTES))
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"{path} is not a readable Keras archive: {exc}") from exc
    total = sum(m.file_size for m in members)
    if total > limit:
        raise ModelError(f"{path} would unpack to {total / 2**30:.1f} GiB; edgedl opens at most "
                         f"{limit / 2**30:.1f} GiB (EDGEDL_MAX_MODEL_BYTES)")
    for member in members:
        if member.filename.endswith(".json") and member.file_size > MAX_CONFIG_BYTES:
            raise ModelError(f"{path}: {member.filename} is {member.file_size / 2**20:.0f} MB; a Keras config is "
                             f"at most {MAX_CONFIG_BYTES // 2**20} MB")
        if member.file_size > 2**20 and member.file_size > MAX_RATIO * max(member.compress_size, 1):
            raise ModelError(f"{path}: {member.filename} inflates {member.file_size // max(member.compress_size, 1)}× "
                             f"(to {member.file_size / 2**20:.0f} MB); refusing what looks like a zip bomb")


def _explain(path: Path, exc: Exception) -> str:
    text = " ".join(str(exc).split())
    if "safe_mode" in text or "Lambda" in text:
        return (f"{path} contains a Lambda layer or other embedded code, refused in safe mode; "
                "if you trust the file, pass --unsafe")
    if "Could not locate" in text or "Unknown layer" in text or "custom_objects" in text:
        return (f"{path} uses a custom layer edgedl does not know ({text[:160]}); register it with "
                "keras.saving.register_keras_serializable and import it, or rebuild the model from builtin layers")
    return f"{path} could not be loaded as a Keras model: {exc.__class__.__name__}: {text[:200]}"


def input_names(model) -> list[str]:
    return [t.name.split(":")[0] for t in model.inputs]


def output_names(model) -> list[str]:
    """The layer names that produce the outputs ("probs"), not Keras 3's keras_tensor_N names."""
    names = []
    for tensor in model.outputs:
        history = getattr(tensor, "_keras_history", None)
        names.append(history.operation.name if history else tensor.name.split(":")[0])
    return names
