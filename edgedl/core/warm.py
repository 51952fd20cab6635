"""A warm worker process: spawned once, kept between the tasks of this process.

A spawned Python that imports TensorFlow takes 4–6 s to start, and every conversion and every load
probe of an untrusted model ran in a fresh one. A ``WarmWorker`` is made once per start-up
environment (the variables that TensorFlow, its thread pools and Python read when they start,
``STARTUP``) and per ``key`` the caller gives (a memory limit set when the worker starts). Everything
else of the caller's is applied to the worker at the start of each task: its other environment
variables (edgedl's limits and folders, read when used) and its working folder, so a converter that
drops a file in the working folder drops it where a fresh worker would have.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.util
import os
import re
from collections.abc import Callable
from concurrent import futures

from .env import quiet_tensorflow

# Read once, when a process starts: a worker made under other values must not serve the caller.
STARTUP = re.compile(r"^(TF_|KERAS_|XLA_|CUDA_|NVIDIA_|OMP_|MKL_|KMP_|OPENBLAS_|ONEDNN_|DNNL_|JAX_|PYTHON|LD_|"
                     r"(PATH|HOME|TMPDIR|TEMP|TMP)$)")


def startup_environment() -> tuple:
    return tuple(sorted((name, value) for name, value in os.environ.items() if STARTUP.match(name)))


class WarmWorker:
    """One worker process, made on first use; remade when the start-up environment or the key changes,
    and after a task died in it, timed out or was interrupted (then it is killed, not waited for)."""

    def __init__(self, initializer: Callable):
        self._initializer = initializer  # initializer(parent_pid, *key), run first in each new worker
        self._pool: futures.ProcessPoolExecutor | None = None
        self._made_in: tuple | None = None
        self.tasks = 0  # tasks the current worker has finished: 0 means a fresh worker
        # Let go before multiprocessing joins this process's children at exit: in a worker that has a
        # warm worker of its own (the export worker's load probe), an atexit hook would never run. Before
        # the queues' own finalizers too (priority 10): a closed queue would never carry the stop signal.
        multiprocessing.util.Finalize(None, self.discard, exitpriority=100)

    @property
    def pool(self) -> futures.ProcessPoolExecutor | None:
        return self._pool

    def run(self, task: Callable, *args, key: tuple = (), timeout: float | None = None):
        """``task(*args)`` in the worker, with this process's environment and folder; its result.
        Raises ``futures.TimeoutError`` past ``timeout`` and ``BrokenProcessPool`` when the worker died."""
        pool = self._ensure(key)
        future = pool.submit(_adopt_and_run, dict(os.environ), os.getcwd(), task, args)
        try:
            result = future.result(timeout)
        except futures.process.BrokenProcessPool:
            self.discard()
            raise
        except BaseException:  # a timeout or an interrupt: the task may still be writing
            self.discard(kill=True)
            raise
        self.tasks += 1
        return result

    def _ensure(self, key: tuple) -> futures.ProcessPoolExecutor:
        # the settings edgedl gives TensorFlow, set here as the worker will set them, so that this process
        # importing TensorFlow later does not change the key
        quiet_tensorflow(os.environ.get("EDGEDL_VERBOSE") == "1")
        made_in = (startup_environment(), key)
        if self._pool is not None and self._made_in == made_in:
            return self._pool
        self.discard()
        # spawn, not fork: the worker must not inherit a half-initialised TensorFlow or locks
        self._pool = futures.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=self._initializer, initargs=(os.getpid(), *key))
        self._made_in, self.tasks = made_in, 0
        return self._pool

    def discard(self, kill: bool = False) -> None:
        """Let the worker go: shut down, or killed when a task was interrupted mid-write."""
        pool, self._pool, self._made_in = self._pool, None, None
        if pool is None:
            return
        if kill:  # ProcessPoolExecutor has no public kill before Python 3.14; its process table is stable
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.kill()
        pool.shutdown(wait=not kill, cancel_futures=True)


def _adopt_and_run(environ: dict, cwd: str, task: Callable, args: tuple):  # pragma: no cover - in the worker
    """The caller's environment and folder for this task, then the task."""
    for name in set(os.environ) - set(environ):
        del os.environ[name]
    os.environ.update(environ)
    os.chdir(cwd)
    return task(*args)
