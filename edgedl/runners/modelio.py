"""Loading user model files safely: Keras safe mode by default, clear errors for bad files."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from ..core.env import untrusted_child
from ..core.errors import ModelError
from ..core.warm import WarmWorker


def load_keras_model(path: str | Path, safe_mode: bool = True, probe: bool = True):
    """Load a ``.keras`` file. Safe mode refuses Lambda layers and other embedded code. A file edgedl did
    not train is first loaded once in a child process bounded in memory and time (``probe_in_child``)."""
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
    if probe and not _written_by_edgedl(path):
        probe_in_child(path, safe_mode)  # a hostile file exhausts a bounded child, not this process
    from ..core.env import import_keras

    keras = import_keras()
    if not safe_mode:
        import warnings

        warnings.warn(f"loading {path} with safe mode off: code inside it will run", stacklevel=2)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=safe_mode)
    except Exception as exc:  # Keras raises ValueError/TypeError/KeyError/OSError for bad archives
        raise ModelError(_explain(path, exc)) from exc


_PROBED: set[tuple] = set()  # (path, size, mtime) of files already loaded once in a bounded child
_PROBER = WarmWorker(untrusted_child)  # started as untrusted_child(our pid, memory limit): bounded, dies with us
_UNSAFE_PROBER = WarmWorker(untrusted_child)


def _written_by_edgedl(path: Path) -> bool:
    """A training run's own model.keras: its manifest names it and records its sha256 (checked on load_run)."""
    import json

    try:
        manifest = json.loads((path.parent / "manifest.json").read_text(encoding="utf-8"))
        return manifest["model"]["file"] == path.name and str(manifest.get("edgedl", "")).startswith("training-run/")
    except (OSError, ValueError, KeyError, TypeError):
        return False


def probe_in_child(path: Path, safe_mode: bool) -> None:
    """Load ``path`` once in a worker process under EDGEDL_MEMORY_LIMIT_MB and EDGEDL_TIME_LIMIT_S: a 78 KB
    file that declares a 10 GB layer ends the worker with a clear error instead of the OOM killer ending us.
    The worker stays warm between probes (TensorFlow's import is most of a probe's time); a file that
    fails in a worker that has loaded others before is tried again in a fresh one, so what earlier files
    left behind never makes a verdict. With safe mode off the file's own code runs: a fresh worker each time."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _PROBED:
        return
    worker = _PROBER if safe_mode else _UNSAFE_PROBER
    try:
        warm = worker.tasks > 0
        status, message = _probe_once(worker, path, safe_mode)
        if warm and status in _SPENT:  # judged again by a fresh worker
            status, message = _probe_once(worker, path, safe_mode)
    finally:
        if not safe_mode:
            worker.discard()
    if status != "ok":
        raise ModelError(message)
    _PROBED.add(key)


_SPENT = ("died", "memory")  # the worker ran out: it is not trusted with the next file


def _probe_once(worker: WarmWorker, path: Path, safe_mode: bool) -> tuple[str, str]:
    from concurrent import futures

    from ..core.env import memory_limit_mb, time_limit_s

    try:
        status, message = worker.run(_probe, str(path), safe_mode, key=(memory_limit_mb(),), timeout=time_limit_s())
    except futures.process.BrokenProcessPool:
        status, message = "died", (f"{path.name}: loading it ended its process: it needs more than the "
                                   f"{memory_limit_mb()} MB memory limit (EDGEDL_MEMORY_LIMIT_MB) or is hostile")
    except futures.TimeoutError:
        raise ModelError(f"{path.name}: loading it did not finish within {time_limit_s():.0f} s "
                         "(EDGEDL_TIME_LIMIT_S); the file is hostile or far too large") from None
    if status in _SPENT:
        worker.discard()
    return status, message


def _probe(path: str, safe_mode: bool) -> tuple[str, str]:  # pragma: no cover - runs in the worker
    from ..core.env import import_keras, memory_limit_mb
    from ..core.errors import EdgedlError

    try:
        load_keras_model(path, safe_mode=safe_mode, probe=False)
        return "ok", ""
    except Exception as exc:  # noqa: BLE001 - sorted below; everything becomes one line for the parent
        if _out_of_memory(exc):
            return "memory", (f"{Path(path).name} needs more than the {memory_limit_mb()} MB memory limit to load "
                              "(EDGEDL_MEMORY_LIMIT_MB)")
        if isinstance(exc, EdgedlError):
            return "error", exc.one_line()
        return "error", (f"{Path(path).name} could not be loaded: {exc.__class__.__name__}: "
                         f"{' '.join(str(exc).split())[:200]}")
    finally:
        import gc

        import_keras().backend.clear_session()  # the next probe starts from what a fresh worker has
        gc.collect()


def _out_of_memory(exc: BaseException | None) -> bool:
    """Python's MemoryError or TensorFlow's OOM (ResourceExhaustedError), here or as a cause."""
    while exc is not None:
        if isinstance(exc, MemoryError) or exc.__class__.__name__ == "ResourceExhaustedError":
            return True
        exc = exc.__cause__
    return False


MAX_CONFIG_BYTES = 64 * 2**20  # config.json and metadata.json: text that describes the layers
MAX_RATIO = 50  # Keras stores its members uncompressed; a member inflating 50× is a bomb, not a model


def check_archive(path: Path) -> None:
    """Refuse a .keras archive whose members would inflate beyond reason, before anything extracts it."""
    from ..core.env import env_limit

    limit = int(env_limit("EDGEDL_MAX_MODEL_BYTES"))
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


# Layers that scale the raw input inside the model: data fed to such a model must not be scaled outside.
RESCALING = {"Rescaling", "Normalization"}
# Layers that compute: a Rescaling after one of these is not the input's scaling.
_COMPUTE = {"Dense", "EinsumDense", "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D", "LSTM",
            "GRU", "SimpleRNN", "Bidirectional", "Embedding", "MultiHeadAttention"}


def model_facts(model) -> dict:
    """What a data pipeline must know about a model: does it scale its own input, does it take token ids,
    and what does each output's last layer do (softmax/sigmoid = classification-like)."""
    rescaling = None
    for layer in model._flatten_layers(include_self=False, recursive=True):
        kind = layer.__class__.__name__
        if kind in RESCALING:
            rescaling = layer.name
            break
        if kind in _COMPUTE:
            break
    return {
        "rescaling": rescaling,
        "integer_input": any(str(t.dtype).startswith(("int", "uint")) for t in model.inputs),
        "integer_inputs": [str(t.dtype).startswith(("int", "uint")) for t in model.inputs],
        "output_activations": [_activation_of(t) for t in model.outputs],
        # scores over classes: the last axis, where it has two or more (labels beyond it are refused)
        "output_classes": [t.shape[-1] if len(t.shape) >= 2 and (t.shape[-1] or 0) >= 2 else None
                           for t in model.outputs],
    }


def _activation_of(tensor) -> str | None:
    history = getattr(tensor, "_keras_history", None)
    layer = history.operation if history else None
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None)
    if layer is not None and layer.__class__.__name__ in ("Softmax", "Activation"):
        name = "softmax" if layer.__class__.__name__ == "Softmax" else getattr(layer.activation, "__name__", None)
    return name


# ---------------------------------------------------------------- tensors back to layers

def layer_classes(model) -> dict[str, str]:
    """Keras layer name → layer class name."""
    if model is None:
        return {}
    return {layer.name: layer.__class__.__name__
            for layer in model._flatten_layers(include_self=False, recursive=True)}


# Fused ops lose the Keras scope in their tensor names; their op type still says which layer kind.
FUSED_OP_HINTS = {"unidirectional_sequence_lstm": "LSTM", "lstm__": "LSTM", "gru__": "GRU"}


def layers_in(name: str, layers: dict[str, str]) -> set[str]:
    """Every Keras layer a converted op's name mentions (a fused op can span two); the fused LSTM,
    whose ops lose the scope, by its kind."""
    parts = {re.sub(r"_\d+$", "", part) for part in re.split(r"[/;:]", name)}
    owners = {layer for layer in layers if layer in parts}
    if not owners:
        single = layer_for(name, layers)
        owners = {single} if single else set()
    return owners


def layer_for(tensor: str, layers: dict[str, str]) -> str | None:
    """The Keras layer a converted tensor came from, read from its name.

    TF scopes repeat a layer's name with a call-count suffix: "cnn_1/hidden_1/MatMul" → hidden."""
    # TF scopes repeat a layer's name with a call-count suffix: "cnn_1/hidden_1/MatMul" → hidden
    parts = {re.sub(r"_\d+$", "", part) for part in re.split(r"[/;:]", tensor)}
    for name in sorted(layers, key=len, reverse=True):
        if name in parts:
            return name
    lowered = tensor.lower()
    for hint, kind in FUSED_OP_HINTS.items():
        candidates = [name for name, cls in layers.items() if cls == kind]
        if hint in lowered and len(candidates) == 1:
            return candidates[0]
    return None
