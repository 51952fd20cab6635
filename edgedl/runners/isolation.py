"""Load untrusted model files in a throwaway process first.

A corrupt or hostile ``.tflite``/``.onnx`` can crash the native runtime (a segfault is not an
exception). Before a file is opened in-process, a child process loads it, allocates its tensors
and runs one inference on zeros; if that child dies, the caller gets an ArtifactError naming the
file and the signal, and the parent process lives on.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from ..core.errors import ArtifactError

PROBE_TIMEOUT_S = 120
_PROBE = """
import json, sys
import numpy as np
from edgedl.runners import open_runner
from edgedl.core.errors import EdgedlError
try:
    runner = open_runner(sys.argv[1], isolated=False)
    feeds = [np.zeros([1, *[d or 1 for d in t.shape[1:]]], np.float32) for t in runner.inputs]
    runner.infer(feeds)
    print(json.dumps({"ok": True}))
except EdgedlError as exc:
    print(json.dumps({"ok": False, "error": exc.one_line()}))
except Exception as exc:
    print(json.dumps({"ok": False, "error": f"{exc.__class__.__name__}: {' '.join(str(exc).split())[:200]}"}))
"""


def probe(path: str | Path) -> None:
    """Raise ArtifactError unless ``path`` loads and runs in a separate process."""
    path = Path(path)
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ArtifactError(f"{path.name}: loading it hung for {PROBE_TIMEOUT_S} s; the file is not usable") from exc
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise ArtifactError(f"{path.name} crashed the runtime while loading ({name}); the file is corrupt or hostile")
    try:
        verdict = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path.name}: the load check failed: {done.stderr.strip()[-200:]}") from exc
    if not verdict["ok"]:
        raise ArtifactError(verdict["error"])
