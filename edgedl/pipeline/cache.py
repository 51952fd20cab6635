"""Incremental pipeline steps: ``steps.json`` records, per step, the hash of its inputs and its outputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..core.files import read_json, write_json


def step_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class StepCache:
    """steps.json: for each step, the hash of its inputs and what it produced."""

    def __init__(self, folder: Path, force: bool):
        self.path = folder / "steps.json"
        self.force = force
        self.steps = read_json(self.path, "pipeline state").get("steps", {}) if self.path.exists() else {}

    def fresh(self, step: str, key: str) -> dict | None:
        entry = self.steps.get(step)
        if self.force or not entry or entry.get("key") != key:
            return None
        if not all(Path(p).exists() for p in entry.get("outputs", [])):
            return None
        return entry

    def record(self, step: str, key: str, outputs: list[str], seconds: float, result=None) -> dict:
        self.steps[step] = {"key": key, "outputs": outputs, "seconds": round(seconds, 2), "result": result}
        write_json(self.path, {"edgedl": "pipeline-state/1", "steps": self.steps})
        return self.steps[step]
