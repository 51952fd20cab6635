"""Judge a candidate's outputs against a reference's: per-output metrics and a verdict.

Pure numpy on saved results; it never touches a runner. Every output is measured and judged
before anything fails, so one run shows every problem.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..core.metrics import EPS, accuracy, agreement, is_classification, sqnr_db


@dataclass
class OutputCheck:
    name: str
    shape: list
    passed: bool
    metrics: dict
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        mark = "✓" if self.passed else "✗"
        m = self.metrics
        parts = [f"max|Δ| {_fmt(m.get('max_abs'))}", f"cos {_fmt(m.get('cosine'), 6)}",
                 f"SQNR {_fmt(m.get('sqnr_db'), 1)} dB"]
        if "agreement" in m:
            parts.append(f"agree {m['agreement']:.2%}")
        if m.get("candidate_accuracy") is not None:
            parts.append(f"acc {m['candidate_accuracy']:.2%} (Δ {m['accuracy_delta'] * 100:+.2f} pp)")
        if m.get("max_error_steps") is not None:
            parts.append(f"{m['max_error_steps']:.0f} steps max, {m['mean_error_steps']:.2f} mean")
        why = f"  ← {'; '.join(self.failures)}" if self.failures else ""
        return f"  {mark} {self.name} {tuple(self.shape)}: " + ", ".join(parts) + why


@dataclass
class ParityReport:
    artifact: str
    precision: str
    passed: bool
    outputs: list[OutputCheck]
    tolerances: dict
    samples: int
    evidence: str  # "held-out real data", "user data", "synthetic (weaker evidence)"

    def as_dict(self) -> dict:
        return asdict(self)


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}g}" if digits < 6 else f"{value:.6f}"


def output_metrics(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None,
                   scale: float | None) -> dict:
    """Every number we judge on, for one output."""
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    nonfinite = int(np.count_nonzero(~np.isfinite(cand)))
    if nonfinite:
        return {"nonfinite": nonfinite}
    diff = np.abs(ref - cand)
    metrics = {
        "nonfinite": 0,
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        # relative to each value, floored at 1e-3 of the output's range so near-zero
        # probabilities do not turn rounding into huge ratios
        "max_rel": float(np.max(diff / np.maximum(np.abs(ref), 1e-3 * max(float(np.abs(ref).max()), EPS)))),
        "cosine": float(np.dot(ref.ravel(), cand.ravel())
                        / max(np.linalg.norm(ref) * np.linalg.norm(cand), EPS)),
        "sqnr_db": sqnr_db(ref, cand),
    }
    if is_classification(ref):
        metrics.update(_classification(ref, cand, labels))
    if scale:
        steps = diff / scale
        metrics.update(max_error_steps=float(steps.max()), mean_error_steps=float(steps.mean()),
                       p99_error_steps=float(np.percentile(steps, 99)), output_scale=scale)
    return metrics


def _classification(ref: np.ndarray, cand: np.ndarray, labels: np.ndarray | None) -> dict:
    metrics = {"agreement": agreement(ref, cand)}
    if labels is not None and len(labels) == len(ref):
        metrics["reference_accuracy"] = accuracy(ref, labels)
        metrics["candidate_accuracy"] = accuracy(cand, labels)
        metrics["accuracy_delta"] = metrics["candidate_accuracy"] - metrics["reference_accuracy"]
    return metrics


def judge(metrics: dict, tolerances: dict) -> list[str]:
    """The reasons an output fails its tolerances; empty when it passes."""
    if metrics.get("nonfinite"):
        return [f"{metrics['nonfinite']} NaN/Inf values in the output"]
    failures = []
    atol = tolerances.get("atol")
    if atol is not None and metrics["max_abs"] > atol:
        failures.append(f"max|Δ| {metrics['max_abs']:.3g} > atol {atol:g}")
    if "agreement" in metrics and metrics["agreement"] < tolerances.get("min_agreement", 0):
        failures.append(f"agreement {metrics['agreement']:.2%} < {tolerances['min_agreement']:.2%}")
    drop_limit = tolerances.get("max_accuracy_drop")
    if drop_limit is not None and "accuracy_delta" in metrics and -metrics["accuracy_delta"] > drop_limit + 1e-12:
        failures.append(f"accuracy drop {-metrics['accuracy_delta'] * 100:.2f} pp > {drop_limit * 100:.2f} pp")
    steps_limit = tolerances.get("max_mean_error_steps")
    if steps_limit is not None and metrics.get("mean_error_steps") is not None \
            and metrics["mean_error_steps"] > steps_limit:
        failures.append(f"mean error {metrics['mean_error_steps']:.2f} quantization steps > {steps_limit:g}")
    return failures


def compare(reference: list[np.ndarray], candidate: list[np.ndarray], names: list[str], labels,
            tolerances: dict, scales: list[float | None] | None = None) -> list[OutputCheck]:
    """Check every output; never stop at the first failure."""
    checks = []
    scales = scales or [None] * len(reference)
    for name, ref, cand, scale in zip(names, reference, candidate, scales, strict=True):
        if ref.shape != cand.shape:
            checks.append(OutputCheck(name, list(cand.shape), False, {},
                                      [f"shape {tuple(cand.shape)} differs from the reference {tuple(ref.shape)}"]))
            continue
        metrics = output_metrics(ref, cand, labels, scale)
        failures = judge(metrics, tolerances)
        checks.append(OutputCheck(name, list(ref.shape[1:]), not failures, metrics, failures))
    return checks


def align_outputs(reference_names: list[str], reference_shapes: list[tuple], outputs: list[np.ndarray],
                  names: list[str]) -> tuple[list[np.ndarray], list[str]]:
    """The candidate's outputs in the reference's order: by name, else by unique shape, else as given."""
    if len(outputs) == 1:
        return outputs, names
    if set(names) == set(reference_names):
        order = [names.index(n) for n in reference_names]
    else:
        shapes = [tuple(o.shape) for o in outputs]
        wanted = [tuple(s) for s in reference_shapes]
        unique = len(set(shapes)) == len(shapes) and set(shapes) == set(wanted)
        order = [shapes.index(s) for s in wanted] if unique else list(range(len(outputs)))
    return [outputs[i] for i in order], [names[i] for i in order]
