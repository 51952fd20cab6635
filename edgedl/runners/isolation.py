"""Untrusted model files run in a child process, bounded in time and memory.

A corrupt or hostile ``.tflite``/``.onnx`` can crash the native runtime (a segfault is not an
exception), loop forever on some inputs (an ONNX ``Loop`` whose count comes from the data), or ask
for gigabytes (a huge declared shape). So a file the user handed in is loaded and run by an
``IsolatedRunner``: its model lives in a spawned child with an address-space limit, every call has
a time limit, the child dies with its parent, and any failure becomes an ArtifactError naming the
file and the cause while the parent process lives on.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np

from ..core.env import memory_limit_mb, time_limit_s
from ..core.errors import ArtifactError
from ..core.files import temp_dir
from .base import Runner, TensorInfo, join_batches

# A probe feeds one sample of the declared input shapes; beyond this many values the file is refused
# before anything is allocated (2^26 float32 values = 256 MB).
MAX_PROBE_VALUES = 2**26
# After the first sample has been timed, a call on n samples may take this many times n × its time.
SLACK = 20.0


def _serve(conn, spec: dict, parent_pid: int) -> None:
    """The child: load the model, describe it, then run whatever the parent sends."""
    from ..core.env import untrusted_child

    untrusted_child(parent_pid, spec["memory_mb"])
    from .local import local_runner

    try:
        runner = local_runner(spec["path"], spec["backend"], threads=spec["threads"], xnnpack=spec["xnnpack"])
        if spec.get("outputs") is not None:
            whole, runner = runner, runner.with_outputs(spec["outputs"])
            whole.close()
        ops = runner.ops() if hasattr(runner, "ops") else []
        conn.send(("ok", {"inputs": runner.inputs, "outputs": runner.outputs, "stateful": runner.stateful,
                          "library": runner.library, "backend": runner.backend, "ops": ops}))
    except BaseException as exc:  # noqa: BLE001 - everything becomes a message for the parent
        conn.send(("error", _describe_exception(exc)))
        return
    while True:
        try:
            command, payload = conn.recv()
        except EOFError:
            return
        if command == "close":
            return
        try:
            result = runner.run(payload) if command == "run" else runner.set_batch(payload)
            conn.send(("ok", result))
        except BaseException as exc:  # noqa: BLE001
            conn.send(("error", _describe_exception(exc)))


def _describe_exception(exc: BaseException) -> str:
    from ..core.errors import EdgedlError

    if isinstance(exc, EdgedlError):
        return exc.one_line()
    if isinstance(exc, MemoryError):
        return f"the model needs more than the {memory_limit_mb()} MB memory limit (EDGEDL_MEMORY_LIMIT_MB)"
    return f"{exc.__class__.__name__}: {' '.join(str(exc).split())[:200]}"


class IsolatedRunner(Runner):
    """A Runner whose model runs in a bounded child process. Same public face as every Runner."""

    def __init__(self, path: str | Path, backend: str, threads: int | None = 1, xnnpack: bool = True,
                 outputs: list[str | int] | str | None = None):
        """``outputs``: the child's runner is ``with_outputs(outputs)`` of the model's."""
        super().__init__()
        self.path = Path(path)
        self.backend = backend
        self._options = {"threads": threads, "xnnpack": xnnpack}
        spec = {"path": str(self.path), "backend": backend, "threads": threads, "xnnpack": xnnpack,
                "memory_mb": memory_limit_mb(), "outputs": outputs}
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited locks or state
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(target=_serve, args=(child_conn, spec, os.getpid()),
                                        daemon=True)
        self._process.start()
        child_conn.close()
        self._per_sample_s: float | None = None
        info = self._call(None, time_limit_s(), "loading it")
        self.inputs: list[TensorInfo] = info["inputs"]
        self.outputs: list[TensorInfo] = info["outputs"]
        self.stateful, self._library, self.ops_list = info["stateful"], info["library"], info["ops"]

    @property
    def library(self) -> str:
        return self._library

    def ops(self) -> list[str]:
        return list(self.ops_list)

    def with_outputs(self, names: list[str | int] | str) -> IsolatedRunner:
        """The same file in a new bounded child, whose runner exposes ``names`` (see Runner.with_outputs)."""
        runner = IsolatedRunner(self.path, self.backend, outputs=names, **self._options)
        runner._tempdir = getattr(self, "_tempdir", None)  # a file of isolated_bytes lives as long as both
        return runner

    def set_batch(self, batch: int) -> None:
        self._call(("set_batch", batch), time_limit_s(), f"resizing it to batch {batch}")

    def _run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        count = len(feeds[0])
        if self._per_sample_s is None and count > 1:  # time one sample first: a hang shows in seconds
            first = self._run([x[:1] for x in feeds])
            return [join_batches([a, b]) for a, b in zip(first, self._run([x[1:] for x in feeds]), strict=True)]
        budget = time_limit_s() if self._per_sample_s is None else time_limit_s() + SLACK * self._per_sample_s * count
        started = time.perf_counter()
        result = self._call(("run", feeds), budget, f"running {count} sample(s)")
        if self._per_sample_s is None:
            self._per_sample_s = (time.perf_counter() - started) / max(count, 1)
        return result

    def _call(self, message, timeout: float, doing: str):
        if message is not None:
            self._require_open()
            try:
                self._conn.send(message)
            except (BrokenPipeError, OSError):
                raise self._died(doing) from None
        if not self._conn.poll(timeout):
            self._kill()
            raise ArtifactError(f"{self.path.name}: {doing} did not finish within {timeout:.0f} s; the model hangs "
                                "or is far too slow (time limit: EDGEDL_TIME_LIMIT_S)")
        try:
            status, payload = self._conn.recv()
        except (EOFError, OSError):
            raise self._died(doing) from None
        if status == "error":
            raise ArtifactError(f"{self.path.name}: {payload}")
        return payload

    def _died(self, doing: str) -> ArtifactError:
        self._process.join(5)
        code = self._process.exitcode
        self._open = False
        if code is not None and code < 0:
            cause = f"crashed the runtime ({signal.Signals(-code).name})"
        else:
            cause = f"ended the runtime's process (exit {code})"
        return ArtifactError(f"{self.path.name} {cause} while {doing}; the file is corrupt, hostile, or needs "
                             f"more than the {memory_limit_mb()} MB memory limit")

    def _kill(self) -> None:
        self._open = False
        if self._process.is_alive():
            self._process.kill()
        self._process.join(5)

    def _release(self) -> None:
        if self._process.is_alive():
            try:
                self._conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
            self._process.join(5)
        self._kill()
        self._conn.close()

    def __del__(self):
        process = getattr(self, "_process", None)
        if process is not None and process.is_alive():
            process.kill()


def probe_feeds(inputs: list[TensorInfo], name: str) -> list[np.ndarray]:
    """One zero sample per input, open sizes set to 1; refused when the declared shape is huge."""
    shapes = [[1, *[d or 1 for d in spec.shape[1:]]] for spec in inputs]
    values = sum(int(np.prod(shape, dtype=np.float64)) for shape in shapes)
    if values > MAX_PROBE_VALUES:
        raise ArtifactError(f"{name} declares inputs of {values:,} values per sample ({shapes}); edgedl refuses "
                            f"more than {MAX_PROBE_VALUES:,} (is the file hostile?)")
    return [np.zeros(shape, np.float32) for shape in shapes]


def probe(path: str | Path, backend: str, xnnpack: bool = True) -> dict:
    """Load ``path`` and run one zero sample in a bounded child; return what the runtime saw.

    Raises ArtifactError when the file crashes, hangs or exhausts the child.
    """
    path = Path(path)
    with IsolatedRunner(path, backend, xnnpack=xnnpack) as runner:
        runner.infer(probe_feeds(runner.inputs, path.name))
        return {"inputs": runner.inputs, "outputs": runner.outputs, "ops": runner.ops(),
                "stateful": runner.stateful}


def isolated_bytes(blob: bytes, suffix: str, backend: str):
    """An IsolatedRunner over model bytes (e.g. a rewritten graph), through a private temporary file."""
    folder = temp_dir("isolated")
    path = Path(folder.name) / f"model{suffix}"
    path.write_bytes(blob)
    runner = IsolatedRunner(path, backend)
    runner._tempdir = folder  # removed when the runner is collected; the child has loaded the file
    return runner
