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
    from ..core.env import import_keras

    keras = import_keras()
    if not safe_mode:
        import warnings

        warnings.warn(f"loading {path} with safe mode off: code inside it will run", stacklevel=2)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=safe_mode)
    except Exception as exc:  # Keras raises ValueError/TypeError/KeyError/OSError for bad archives
        raise ModelError(_explain(path, exc)) from exc


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
