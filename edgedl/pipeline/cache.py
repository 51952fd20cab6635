"""Incremental pipeline steps: ``steps.json`` records, per step, the hash of its inputs and its outputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..core.files import read_json, sha256_file, write_json


def step_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class StepCache:
    """steps.json: for each step, the hash of its inputs and the sha256 of every file it produced.

    A step is skipped only when its inputs hash the same *and* each of its outputs is still there,
    byte for byte: a deleted or edited output makes the step run again.
    """

    def __init__(self, folder: Path, force: bool):
        self.path = folder / "steps.json"
        self.force = force
        state = read_json(self.path, "pipeline state") if self.path.exists() else {}
        steps = state.get("steps", {}) if isinstance(state, dict) else {}
        self.steps = steps if isinstance(steps, dict) else {}

    def fresh(self, step: str, key: str) -> dict | None:
        entry = self.steps.get(step)
        if self.force or not isinstance(entry, dict) or entry.get("key") != key:
            return None
        outputs = entry.get("outputs")
        if not isinstance(outputs, dict) or not outputs:
            return None
        if any(digest_of(path) != digest for path, digest in outputs.items()):
            return None
        return entry

    def record(self, step: str, key: str, outputs: list[str], seconds: float, result=None) -> dict:
        digests = {str(path): digest_of(path) for path in outputs}
        self.steps[step] = {"key": key, "outputs": digests, "seconds": round(seconds, 2), "result": result}
        write_json(self.path, {"edgedl": "pipeline-state/2", "steps": self.steps})
        return self.steps[step]


def digest_of(path: str | Path | None) -> str | None:
    """A file's sha256, or None when there is no such file."""
    return sha256_file(path) if path is not None and Path(path).is_file() else None
