"""Process-wide settings that must be in place before TensorFlow is imported."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings

_QUIET = {
    # 3 hides INFO/WARNING/ERROR C++ logs; the Python-side errors still surface as exceptions.
    "TF_CPP_MIN_LOG_LEVEL": "3",
    # oneDNN reorders float sums, which makes same-seed training differ run to run and
    # prints a banner; we want bit-identical weights for a seed.
    "TF_ENABLE_ONEDNN_OPTS": "0",
}
# Set (by train/backends.py) only in a training child that runs Keras on JAX or PyTorch.
TRAINING_BACKEND = "EDGEDL_TRAINING_BACKEND"


def keras_backend() -> str:
    """The Keras backend of this process: TensorFlow, except in a training child started for another.

    Forced, not defaulted: a user's KERAS_BACKEND or ~/.keras/keras.json must not move conversion,
    validation or the reference model off TensorFlow (Keras reads the variable once, at import)."""
    return os.environ.get(TRAINING_BACKEND) or "tensorflow"


def quiet_tensorflow(verbose: bool = False) -> None:
    """Silence TensorFlow's log noise unless the user asked for it (``--verbose``)."""
    for key, value in _QUIET.items():
        if verbose and key == "TF_CPP_MIN_LOG_LEVEL":
            continue
        os.environ.setdefault(key, value)
    os.environ["KERAS_BACKEND"] = keras_backend()
    if not verbose:
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")


def import_tensorflow():
    """Import TensorFlow quietly; raise RuntimeMissing with the install hint if absent."""
    quiet_tensorflow(os.environ.get("EDGEDL_VERBOSE") == "1")
    try:
        import tensorflow as tf
    except ImportError as exc:  # pragma: no cover - depends on the install
        from .errors import RuntimeMissing

        raise RuntimeMissing(
            f"TensorFlow is needed for this step but could not be imported: {exc}",
            hint="pip install tensorflow-cpu==2.21.0",
        ) from exc
    import logging

    tf.get_logger().setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    return tf


def import_keras():
    if keras_backend() == "tensorflow":
        import_tensorflow()
    else:  # a JAX or PyTorch training child: TensorFlow stays out of it (train/backend_child.py)
        quiet_tensorflow(os.environ.get("EDGEDL_VERBOSE") == "1")
    import keras

    return keras


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a result, without importing any of them."""
    from importlib import metadata

    names = [
        "edgedl", "tensorflow-cpu", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime",
        "ai-edge-litert", "numpy", "protobuf", "jax", "jaxlib", "torch",
    ]
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    import platform

    versions["python"] = platform.python_version()
    return versions


@contextlib.contextmanager
def quiet_output():
    """Silence the converter's C++ and Python chatter (it writes straight to fds 1 and 2)."""
    if os.environ.get("EDGEDL_VERBOSE") == "1":
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as devnull:
        try:
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        finally:
            sys.stdout.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


CPU_FLAGS = {"avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16",
             "sse4_2", "f16c"}


def machine_fingerprint() -> dict:
    """The CPU, its SIMD flags and the system: what a latency figure must be read against."""
    import platform

    model, flags = "unknown", []
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name") and model == "unknown":
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = sorted(set(line.split(":", 1)[1].split()) & CPU_FLAGS)
                    break
    except OSError:
        pass
    return {"cpu": model, "cpu_flags": flags, "cores": os.cpu_count(), "machine": platform.machine(),
            "system": f"{platform.system()} {platform.release()}", "python": platform.python_version()}


MEMORY_LIMIT_MB = 4096  # per child that runs an untrusted model (EDGEDL_MEMORY_LIMIT_MB overrides)
TIME_LIMIT_S = 120.0  # to load an untrusted model and run its first sample (EDGEDL_TIME_LIMIT_S overrides)


# Every EDGEDL_* limit, checked once here: (default, least, most, unit). A value outside is an error that
# names it, never a silent fallback to the default (inf, 1e308, 0, negatives and text included).
ENV_LIMITS = {
    "EDGEDL_MEMORY_LIMIT_MB": (MEMORY_LIMIT_MB, 64, 1 << 20, "MB"),
    "EDGEDL_TIME_LIMIT_S": (TIME_LIMIT_S, 1, 86_400, "s"),
    "EDGEDL_MAX_DATA_BYTES": (2 * 2**30, 1024, 2**40, "bytes"),
    "EDGEDL_MAX_MODEL_BYTES": (4 * 2**30, 1024, 2**40, "bytes"),
}


def env_limit(name: str) -> float:
    """The limit ``name`` from the environment, or its default; a UsageError for a value that is no limit."""
    from .errors import UsageError

    default, low, high, unit = ENV_LIMITS[name]
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # NaN fails too
        raise UsageError(f"{name}={raw!r} is not a usable limit: give a number from {low:,} to {high:,} {unit}",
                         hint=f"unset it for the default ({default:,} {unit})")
    return value


def check_environment() -> None:
    """Refuse bad EDGEDL_* limits before any command starts work."""
    for name in ENV_LIMITS:
        env_limit(name)


def memory_limit_mb() -> int:
    return int(env_limit("EDGEDL_MEMORY_LIMIT_MB"))


def time_limit_s() -> float:
    return env_limit("EDGEDL_TIME_LIMIT_S")


def die_with_parent(parent_pid: int | None = None) -> None:
    """Ask Linux to kill this process when its parent dies (a killed edgedl leaves no workers behind).

    ``parent_pid`` is the parent as the caller knew it: if it is already gone, exit now.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if parent_pid is not None and os.getppid() != parent_pid:  # it died before the request took effect
        os._exit(1)


def limit_memory(megabytes: int | None = None) -> None:
    """Cap this process's address space, so a model that asks for too much fails instead of the machine."""
    import resource

    limit = (megabytes or memory_limit_mb()) * 2**20
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def untrusted_child(parent_pid: int | None = None, megabytes: int | None = None) -> None:
    """Start-up of a child process that runs an untrusted model: bounded memory, dies with its parent."""
    die_with_parent(parent_pid)
    limit_memory(megabytes)


def child_preexec(megabytes: int | None = None):
    """A ``preexec_fn`` for subprocess: the child dies with this process and has bounded memory."""
    import functools

    return functools.partial(untrusted_child, os.getpid(), megabytes)
