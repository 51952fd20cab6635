"""Judge a candidate's outputs against a reference's: per-output metrics and a verdict.

Pure numpy on saved results; it never touches a runner. Every output is measured and judged
before anything fails, so one run shows every problem.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..core.metrics import EPS, accuracy, agreement, is_classification, sqnr_db
from ..core.settings import TOLERANCES


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
        if m.get("kind") == "regression" and "rel_error" in m:
            parts.append(f"{m['rel_error']:.3%} of range")
            if m.get("candidate_mae") is not None:
                parts.append(f"MAE {m['candidate_mae']:.4g} (ref {m['reference_mae']:.4g})")
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
                   scale: float | None, kind: str = "classification") -> dict:
    """Every number we judge on, for one output of ``kind`` (classification or regression)."""
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    nonfinite = int(np.count_nonzero(~np.isfinite(cand)))
    if nonfinite:
        return {"nonfinite": nonfinite, "kind": kind}
    diff = np.abs(ref - cand)
    magnitude = float(np.abs(ref).max())
    spread = float(ref.max() - ref.min())
    metrics = {
        "kind": kind,
        "nonfinite": 0,
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "magnitude": magnitude,  # the largest |output|: fp32 error is judged relative to it
        # relative to each value, floored at 1e-3 of the output's range so near-zero
        # probabilities do not turn rounding into huge ratios
        "max_rel": float(np.max(diff / np.maximum(np.abs(ref), 1e-3 * max(magnitude, EPS)))),
        # the error as a share of the output's range: what a regression output is judged by
        "rel_error": float(diff.max() / max(spread, EPS)),
        "cosine": float(np.dot(ref.ravel(), cand.ravel())
                        / max(np.linalg.norm(ref) * np.linalg.norm(cand), EPS)),
        "sqnr_db": sqnr_db(ref, cand),
    }
    if kind == "classification" and is_classification(ref):
        metrics.update(_classification(ref, cand, labels))
    elif kind == "regression" and labels is not None and len(labels) == len(ref):
        metrics.update(_regression(ref, cand, labels))
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


def _regression(ref: np.ndarray, cand: np.ndarray, labels: np.ndarray) -> dict:
    """Each model's mean absolute error against the labels, and how much the candidate adds."""
    target = np.asarray(labels, np.float64).reshape(ref.shape)
    ref_mae, cand_mae = float(np.mean(np.abs(ref - target))), float(np.mean(np.abs(cand - target)))
    return {"reference_mae": ref_mae, "candidate_mae": cand_mae, "mae_delta": cand_mae - ref_mae,
            "mae_increase": (cand_mae - ref_mae) / max(ref_mae, EPS)}


# Every limit a validation applies, with what it means; any of them can be overridden
# (``--tolerance KEY=VALUE``, a recipe's [tolerances], bundle's flags).
TOLERANCE_KEYS = {name: setting.help for name, setting in TOLERANCES.items()}  # core/settings.py


def judge(metrics: dict, tolerances: dict) -> list[str]:
    """The reasons an output fails its tolerances; empty when it passes."""
    if metrics.get("nonfinite"):
        return [f"{metrics['nonfinite']} NaN/Inf values in the output"]
    failures = []
    atol, rtol = tolerances.get("atol"), tolerances.get("rtol")
    if atol is not None or rtol is not None:
        limit = (atol or 0.0) + (rtol or 0.0) * metrics["magnitude"]
        if metrics["max_abs"] > limit:
            failures.append(f"max|Δ| {metrics['max_abs']:.3g} > {limit:.3g} (atol {atol or 0:g} + rtol {rtol or 0:g}"
                            f" × magnitude {metrics['magnitude']:.3g})")
    cosine = tolerances.get("min_cosine")
    if cosine is not None and metrics["cosine"] < cosine:
        failures.append(f"cosine {metrics['cosine']:.6f} < {cosine:g}")
    if "agreement" in metrics and metrics["agreement"] < tolerances.get("min_agreement", 0):
        failures.append(f"agreement {metrics['agreement']:.2%} < {tolerances['min_agreement']:.2%}")
    drop_limit = tolerances.get("max_accuracy_drop")
    if drop_limit is not None and "accuracy_delta" in metrics and -metrics["accuracy_delta"] > drop_limit + 1e-12:
        failures.append(f"accuracy drop {-metrics['accuracy_delta'] * 100:.2f} pp > {drop_limit * 100:.2f} pp")
    steps_limit = tolerances.get("max_mean_error_steps")
    if steps_limit is not None and metrics.get("mean_error_steps") is not None \
            and metrics["mean_error_steps"] > steps_limit:
        failures.append(f"mean error {metrics['mean_error_steps']:.2f} quantization steps > {steps_limit:g}")
    if metrics["kind"] == "regression":
        failures += _judge_regression(metrics, tolerances)
    return failures


def _judge_regression(metrics: dict, tolerances: dict) -> list[str]:
    failures = []
    rel = tolerances.get("max_rel_error")
    if rel is not None and metrics["rel_error"] > rel:
        failures.append(f"error {metrics['rel_error']:.3%} of the output's range > {rel:.3%}")
    increase = tolerances.get("max_mae_increase")
    if increase is not None and metrics.get("mae_increase") is not None and metrics["mae_increase"] > increase:
        if metrics["reference_mae"] > 1e-12:
            failures.append(f"MAE {metrics['candidate_mae']:.4g} is {metrics['mae_increase']:.2%} above the "
                            f"reference's {metrics['reference_mae']:.4g} > {increase:.2%}")
        else:  # a reference that fits its labels exactly: a percentage of 0 says nothing
            failures.append(f"MAE {metrics['candidate_mae']:.4g} where the reference's is 0")
    return failures


def compare(reference: list[np.ndarray], candidate: list[np.ndarray], names: list[str], labels: dict,
            tolerances: dict, scales: list[float | None] | None = None, kinds: list[str] | None = None) \
        -> list[OutputCheck]:
    """Check every output against its own labels and kind; never stop at the first failure."""
    checks = []
    scales = scales or [None] * len(reference)
    kinds = kinds or ["classification"] * len(reference)
    for name, ref, cand, scale, kind in zip(names, reference, candidate, scales, kinds, strict=True):
        if ref.shape != cand.shape:
            checks.append(OutputCheck(name, list(cand.shape), False, {},
                                      [f"shape {tuple(cand.shape)} differs from the reference {tuple(ref.shape)}"]))
            continue
        metrics = output_metrics(ref, cand, (labels or {}).get(name), scale, kind)
        failures = judge(metrics, tolerances)
        checks.append(OutputCheck(name, list(ref.shape[1:]), not failures, metrics, failures))
    return checks


def output_kind(name: str, reference: np.ndarray, labels: np.ndarray | None, declared: str | None,
                activation: str | None) -> str:
    """Classification or regression, for one output: declared, else read from the labels, the output
    layer's activation, or the values themselves (rows of probabilities)."""
    if declared:
        return declared
    if not is_classification(reference):
        return "regression"
    if labels is not None:
        labels = np.asarray(labels)
        whole = labels.dtype.kind in "iub" or bool(np.all(labels == np.round(labels)))
        return "classification" if whole and labels.ndim == 1 else "regression"
    if activation in ("softmax", "sigmoid", "log_softmax"):
        return "classification"
    rows = reference.reshape(-1, reference.shape[-1])
    distribution = np.all(rows >= -1e-6) and np.allclose(rows.sum(-1), 1.0, atol=1e-3)
    return "classification" if distribution else "regression"


def align_outputs(reference_names: list[str], reference_shapes: list[tuple], outputs: list[np.ndarray],
                  names: list[str]) -> tuple[list[np.ndarray], list[str]]:
    """The candidate's outputs in the reference's order: by name (TFLite's ``output_i`` is Keras
    output i), else by unique shape, else as given."""
    if len(outputs) == 1:
        return outputs, names
    positional = [f"output_{i}" for i in range(len(reference_names))]
    if set(names) == set(reference_names):
        order = [names.index(n) for n in reference_names]
    elif sorted(names) == sorted(positional):
        order = [names.index(n) for n in positional]
    else:
        shapes = [tuple(o.shape) for o in outputs]
        wanted = [tuple(s) for s in reference_shapes]
        unique = len(set(shapes)) == len(shapes) and set(shapes) == set(wanted)
        order = [shapes.index(s) for s in wanted] if unique else list(range(len(outputs)))
    return [outputs[i] for i in order], [names[i] for i in order]
