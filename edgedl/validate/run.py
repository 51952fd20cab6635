"""``edgedl validate``: run the reference and every artifact on the same inputs, then judge parity.

It returns the report (``passed`` for the whole, a row per artifact) and raises nothing for an
artifact that fails: the CLI, bundle and pipeline each decide what a failure means to them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import ArtifactError, DataError, EdgedlError, ModelError, UsageError
from ..core.files import verify_sha256, write_json, write_text
from ..core.layout import (
    EXPORTS,
    VALIDATION_REPORT,
    find_artifacts,
    load_run,
    precision_of,
    read_sidecar,
    relative_to,
)
from ..core.metrics import accuracy, is_classification
from ..core.outputs import claim
from ..train.architectures import registry as architectures
from .inputs import Inputs, gather_inputs
from .matrix import matrix_markdown, matrix_rows
from .parity import ParityReport, align_outputs, compare
from .results import RunResult, inputs_sha256, load_result, save_result

DEFAULT_SAMPLES = 1000


@dataclass
class ValidateOptions:
    data: str | None = None
    synthetic: int | None = None
    samples: int | None = DEFAULT_SAMPLES
    atol: float | None = None
    min_agreement: float | None = None
    max_accuracy_drop: float | None = None
    layers: bool = False
    top_k: int = 5
    reference: str | None = None
    save_results: str | None = None
    report: str | None = None
    unsafe: bool = False
    seed: int = 0
    overrides: dict = field(default_factory=dict)


# ---------------------------------------------------------------- the run

def validate(model: str | Path | None, artifacts: list[str | Path], options: ValidateOptions | None = None,
             say=print) -> dict:
    """Validate each artifact; return the report (``report["passed"]``), having judged every output."""
    options = options or ValidateOptions()
    if options.save_results:  # refused before any work when it would land on someone else's files
        claim(options.save_results, "results", option="--save-results")
    model_path, model_dir, manifest = _resolve_model(model)
    if not artifacts and model_dir is not None:
        artifacts = [model_dir / EXPORTS]
    files = find_artifacts(artifacts)
    reference = _reference(model_path, model_dir, manifest, options, say)
    warnings = check_reference(reference.result, say)
    reports, results = [], {}
    for artifact in files:
        report, result = _validate_one(artifact, reference, manifest, options, say)
        reports.append(report)
        if result is not None:
            results[artifact.name] = result
    summary = _summary(model_path, reference, reports, options)
    summary["warnings"] = warnings
    if options.layers:
        from .drift import layer_drift

        summary["drift"] = layer_drift(model_path, files, reference, reports, manifest, model_dir, options, say)
    _save(summary, reference, results, files, options)
    return summary


def failure_message(summary: dict) -> str | None:
    """One line naming the unfaithful artifacts, or None when every artifact passed."""
    failed = [r["artifact"] for r in summary["artifacts"] if not r["passed"]]
    if not failed:
        return None
    return f"{len(failed)} of {len(summary['artifacts'])} artifact(s) are not faithful: {', '.join(failed)}"


def _resolve_model(model) -> tuple[Path | None, Path | None, dict | None]:
    if model is None:
        return None, None, None
    path = Path(model)
    if path.is_dir():
        manifest = load_run(path)
        return path / manifest["model"]["file"], path, manifest
    if not path.exists():
        raise ArtifactError(f"model not found: {path}")
    return path, None, None


def check_reference(result: RunResult, say) -> list[str]:
    """A reference with NaN/Inf outputs certifies nothing: refuse. One whose output never changes
    (an untrained or collapsed model) certifies little: flag it, in the report and on screen."""
    warnings = []
    for name, output in zip(result.output_names, result.outputs, strict=True):
        bad = int(np.count_nonzero(~np.isfinite(output)))
        if bad:
            raise ModelError(f"the reference model's output {name!r} holds {bad} NaN/Inf values on "
                             f"{len(output)} samples; no export can be certified against it",
                             hint="retrain the model (lower the learning rate) or check the input data")
        spread = float(np.max(np.abs(output - output[:1]))) if len(output) > 1 else None
        if spread is not None and spread <= 1e-6 * max(1.0, float(np.max(np.abs(output)))):
            warnings.append(f"the reference model's output {name!r} is the same for all {len(output)} inputs: "
                            "an untrained or collapsed model, against which parity proves little")
            say(f"⚠ {warnings[-1]}")
    return warnings


class Reference:
    def __init__(self, result: RunResult, inputs: Inputs, architecture: str | None):
        self.result, self.inputs, self.architecture = result, inputs, architecture


def _reference(model_path, model_dir, manifest, options, say) -> Reference:
    architecture = (manifest or {}).get("architecture")
    if options.reference:
        saved = load_result(options.reference)
        shapes = [tuple(s) for s in saved.info.get("input_shapes", [])]
        inputs = gather_inputs(model_dir, manifest, shapes, options)
        if inputs_sha256(inputs.arrays) != saved.inputs_sha256:
            raise DataError(f"saved reference {options.reference} was made on other inputs than these",
                            hint="use the same --data/--samples as when it was saved")
        say(f"reference: saved result {options.reference} ({len(inputs.arrays[0])} samples)")
        return Reference(saved, inputs, architecture or saved.info.get("architecture"))
    if model_path is None:
        raise UsageError("validate needs the original model (a .keras file or run folder) or --reference")
    from ..runners.keras import KerasRunner

    runner = KerasRunner(model_path, safe_mode=not options.unsafe)
    shapes = [tuple(t.shape[1:]) for t in runner.inputs]
    inputs = gather_inputs(model_dir, manifest, shapes, options)
    started = time.perf_counter()
    outputs = runner.infer(inputs.arrays)
    result = RunResult(source=str(model_path), backend="keras", outputs=outputs,
                       output_names=[t.name for t in runner.outputs], inputs_sha256=inputs_sha256(inputs.arrays),
                       info={"input_shapes": [list(s) for s in shapes], "architecture": architecture},
                       seconds=time.perf_counter() - started)
    say(f"reference: {model_path} on {len(inputs.arrays[0])} samples of {inputs.evidence}")
    return Reference(result, inputs, architecture)


def tolerances(architecture: str | None, precision: str, options: ValidateOptions) -> dict:
    limits = architectures.tolerances_for(architecture, precision)
    for key in ("atol", "min_agreement", "max_accuracy_drop"):
        value = getattr(options, key)
        if value is not None:
            limits[key] = value
    limits.update(options.overrides)
    return limits


def _validate_one(artifact: Path, reference: Reference, manifest, options, say) -> tuple[dict, RunResult | None]:
    from ..runners import open_runner

    facts = read_sidecar(artifact)
    try:
        verify_sha256(artifact, facts.get("sha256"), what="artifact")
        runner = open_runner(artifact)
        precision = precision_of(artifact, facts) or _precision_from_io(runner)
        _check_io(artifact, runner, reference)
        started = time.perf_counter()
        raw = runner.infer(reference.inputs.arrays)
        seconds = time.perf_counter() - started
    except EdgedlError as exc:
        say(f"✗ {artifact.name}: {exc.one_line()}")
        return _error_report(artifact, facts, exc), None
    outputs, names = align_outputs(reference.result.output_names, [o.shape for o in reference.result.outputs],
                                   raw, [t.name for t in runner.outputs])
    scales = [t.scale if t.quantized else None for t in _aligned_specs(runner.outputs, names)]
    limits = tolerances(reference.architecture, precision, options)
    checks = compare(reference.result.outputs, outputs, reference.result.output_names,
                     reference.inputs.labels, limits, scales)
    report = ParityReport(artifact=artifact.name, precision=precision, passed=all(c.passed for c in checks),
                          outputs=checks, tolerances=limits, samples=len(outputs[0]),
                          evidence=reference.inputs.evidence)
    say(f"{'✓' if report.passed else '✗'} {artifact.name} ({facts.get('format', artifact.suffix[1:])} {precision}, "
        f"{artifact.stat().st_size:,} B)")
    for check in checks:
        say(check.line())
    result = RunResult(source=str(artifact), backend=runner.backend, outputs=outputs, output_names=names,
                       inputs_sha256=reference.result.inputs_sha256, info={"precision": precision},
                       seconds=seconds)
    row = report.as_dict() | {"format": facts.get("format", artifact.suffix[1:]), "size": artifact.stat().st_size,
                              "seconds": round(seconds, 3), "backend": runner.backend}
    return row, result


def _precision_from_io(runner) -> str:
    return "int8" if any(t.quantized for t in runner.inputs + runner.outputs) else "fp32"


def _error_report(artifact: Path, facts: dict, exc: EdgedlError) -> dict:
    return {"artifact": artifact.name, "precision": facts.get("precision", "?"), "passed": False,
            "outputs": [], "error": exc.one_line(), "format": facts.get("format", artifact.suffix[1:]),
            "size": artifact.stat().st_size if artifact.exists() else 0}


def _check_io(artifact: Path, runner, reference: Reference) -> None:
    ref_shapes = [tuple(a.shape[1:]) for a in reference.inputs.arrays]
    if len(runner.inputs) != len(ref_shapes) or len(runner.outputs) != len(reference.result.outputs):
        raise ArtifactError(
            f"{artifact.name} has {len(runner.inputs)} inputs/{len(runner.outputs)} outputs but the model has "
            f"{len(ref_shapes)}/{len(reference.result.outputs)}: it was not exported from this model")
    for spec, shape in zip(runner.inputs, ref_shapes, strict=True):
        if len(spec.shape) - 1 != len(shape) or any(
                d is not None and d != s for d, s in zip(spec.shape[1:], shape, strict=True)):
            raise ArtifactError(f"{artifact.name} input {spec.name!r} takes {tuple(spec.shape[1:])} but the "
                                f"model's inputs are {shape}: it was not exported from this model")


def _aligned_specs(specs, names):
    by_name = {s.name: s for s in specs}
    return [by_name[n] for n in names]


# ---------------------------------------------------------------- summary and saving

def _summary(model_path, reference: Reference, reports: list[dict], options) -> dict:
    labels = reference.inputs.labels
    return {
        "edgedl": "validation/1",
        "model": str(model_path) if model_path else reference.result.source,
        "architecture": reference.architecture,
        "samples": len(reference.inputs.arrays[0]),
        "evidence": reference.inputs.evidence,
        "inputs_sha256": reference.result.inputs_sha256,
        "reference_seconds": round(reference.result.seconds, 3),
        "reference_accuracy": _reference_accuracy(reference.result.outputs[0], labels),
        "passed": all(r["passed"] for r in reports),
        "artifacts": reports,
        "matrix": matrix_rows(reports),
    }


def _reference_accuracy(probs: np.ndarray, labels: np.ndarray | None) -> float | None:
    return accuracy(probs, labels) if labels is not None and is_classification(probs) else None


def _save(summary: dict, reference: Reference, results: dict, files: list[Path], options) -> None:
    report_path = Path(options.report) if options.report else files[0].parent / VALIDATION_REPORT
    model = summary["model"]  # recorded relative to the report, like sidecars: the folder can move
    write_json(report_path, {**summary, "model": relative_to(model, report_path.parent) if model else model})
    write_text(report_path.with_suffix(".md"), matrix_markdown(summary["matrix"]) + "\n")
    summary["report_path"] = str(report_path)
    if options.save_results:
        folder = Path(options.save_results)
        save_result(reference.result, folder / "reference")
        for name, result in results.items():
            save_result(result, folder / name)


def dumps(summary: dict) -> str:
    return json.dumps(summary, indent=2, default=str)
