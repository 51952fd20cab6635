"""``edgedl validate``: run the reference and every artifact on the same inputs, then judge parity.

Inputs, in order of strength: the held-out split recorded at training (real data), a user's
``.npz``, or seeded synthetic inputs inside the calibration range (reported as weaker evidence).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import architectures
from . import data as data_lib
from .errors import ArtifactError, DataError, EdgedlError, ParityFailure, UsageError
from .files import read_json, verify_sha256, write_json, write_text
from .parity import ParityReport, compare
from .results import RunResult, inputs_sha256, load_result, save_result

ARTIFACT_SUFFIXES = (".tflite", ".onnx")
DEFAULT_SAMPLES = 1000
REPORT_FILE = "validation.json"


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


@dataclass
class Inputs:
    arrays: list[np.ndarray]
    labels: np.ndarray | None
    evidence: str


# ---------------------------------------------------------------- what to validate

def find_artifacts(paths: list[str | Path]) -> list[Path]:
    """Files as given; folders expand to the .tflite/.onnx files inside them (sorted)."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix in ARTIFACT_SUFFIXES))
        elif path.exists():
            found.append(path)
        else:
            raise ArtifactError(f"artifact not found: {path}")
    if not found:
        raise UsageError(f"no .tflite or .onnx files in {', '.join(map(str, paths))}",
                         hint="run `edgedl export` first, or name the artifact files")
    return found


def sidecar(artifact: Path) -> dict:
    path = artifact.with_name(artifact.name + ".json")
    return read_json(path, "artifact manifest") if path.exists() else {}


def precision_of(artifact: Path, facts: dict, runner) -> str:
    if facts.get("precision"):
        return facts["precision"]
    for token in ("int8", "dynamic", "fp16", "fp32"):
        if token in artifact.stem:
            return token
    return "int8" if any(t.quantized for t in runner.inputs + runner.outputs) else "fp32"


# ---------------------------------------------------------------- inputs

def gather_inputs(model_dir: Path | None, manifest: dict | None, input_shapes: list[tuple],
                  options: ValidateOptions) -> Inputs:
    if options.data:
        x, y = data_lib.load_samples_npz(options.data, "validation data")
        evidence = "user data"
    elif manifest and manifest.get("heldout") and not options.synthetic:
        with np.load(model_dir / manifest["heldout"]["file"], allow_pickle=False) as archive:
            x, y = archive["x"], archive["y"]
        evidence = "held-out real data"
    else:
        x, y = _synthetic(model_dir, manifest, input_shapes, options), None
        evidence = "synthetic inputs in the calibration range (weaker evidence)"
    if options.samples:
        x, y = x[: options.samples], (None if y is None else y[: options.samples])
    if len(input_shapes) != 1:
        raise DataError(f"the model takes {len(input_shapes)} inputs; pass --data with one array per input")
    return Inputs([data_lib.fit_to_input(x, input_shapes[0], "validation")], y, evidence)


def _synthetic(model_dir, manifest, input_shapes, options) -> np.ndarray:
    low, high = 0.0, 1.0
    if manifest and manifest.get("calibration"):
        with np.load(model_dir / manifest["calibration"]["file"], allow_pickle=False) as archive:
            calib = archive["x"]
        low, high = float(calib.min()), float(calib.max())
    count = options.synthetic or 256
    shape = tuple(d if d else 1 for d in input_shapes[0])
    rng = np.random.default_rng(options.seed)
    return rng.uniform(low, high, size=(count, *shape)).astype(np.float32)


# ---------------------------------------------------------------- the run

def validate(model: str | Path | None, artifacts: list[str | Path], options: ValidateOptions | None = None,
             say=print) -> dict:
    """Validate each artifact; return the report dict. Raises ParityFailure after reporting all."""
    options = options or ValidateOptions()
    model_path, model_dir, manifest = _resolve_model(model)
    if not artifacts and model_dir is not None:
        artifacts = [model_dir / "exports"]
    files = find_artifacts(artifacts)
    reference = _reference(model_path, model_dir, manifest, options, say)
    reports, results = [], {}
    for artifact in files:
        report, result = _validate_one(artifact, reference, manifest, options, say)
        reports.append(report)
        if result is not None:
            results[artifact.name] = result
    summary = _summary(model_path, reference, reports, options)
    if options.layers:
        from .drift import layer_drift

        summary["drift"] = layer_drift(model_path, files, reference, reports, manifest, model_dir, options, say)
    _save(summary, reference, results, files, options)
    failed = [r for r in reports if not r["passed"]]
    if failed:
        raise ParityFailure(f"{len(failed)} of {len(reports)} artifact(s) are not faithful: "
                            + ", ".join(r["artifact"] for r in failed))
    return summary


def _resolve_model(model) -> tuple[Path | None, Path | None, dict | None]:
    if model is None:
        return None, None, None
    path = Path(model)
    if path.is_dir():
        from .train import load_run

        manifest = load_run(path)
        return path / manifest["model"]["file"], path, manifest
    if not path.exists():
        raise ArtifactError(f"model not found: {path}")
    return path, None, None


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
    from .runners.keras import KerasRunner

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
    from .runners import open_runner

    facts = sidecar(artifact)
    try:
        verify_sha256(artifact, facts.get("sha256"), what="artifact")
        runner = open_runner(artifact)
        precision = precision_of(artifact, facts, runner)
        _check_io(artifact, runner, reference)
        started = time.perf_counter()
        raw = runner.infer(reference.inputs.arrays)
        seconds = time.perf_counter() - started
    except EdgedlError as exc:
        say(f"✗ {artifact.name}: {exc.one_line()}")
        return _error_report(artifact, facts, exc), None
    outputs, names = _align(reference.result, raw, [t.name for t in runner.outputs])
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


def _align(reference: RunResult, outputs: list[np.ndarray], names: list[str]):
    """Put the candidate's outputs in the reference's order: by name, else by unique shape, else as given."""
    ref_names = reference.output_names
    if len(outputs) == 1:
        return outputs, names
    if set(names) == set(ref_names):
        order = [names.index(n) for n in ref_names]
    else:
        shapes = [o.shape for o in outputs]
        ref_shapes = [o.shape for o in reference.outputs]
        unique = len(set(shapes)) == len(shapes) and set(shapes) == set(ref_shapes)
        order = [shapes.index(s) for s in ref_shapes] if unique else list(range(len(outputs)))
    return [outputs[i] for i in order], [names[i] for i in order]


def _aligned_specs(specs, names):
    by_name = {s.name: s for s in specs}
    return [by_name[n] for n in names]


# ---------------------------------------------------------------- summary and saving

MATRIX_COLUMNS = ("artifact", "format", "precision", "size", "max_abs", "mean_abs", "cosine", "sqnr_db",
                  "agreement", "candidate_accuracy", "accuracy_delta", "verdict")


def matrix_rows(reports: list[dict]) -> list[dict]:
    rows = []
    for report in reports:
        first = (report.get("outputs") or [{}])[0]
        metrics = first.get("metrics", {}) if isinstance(first, dict) else {}
        rows.append({"artifact": report["artifact"], "format": report.get("format"),
                     "precision": report.get("precision"), "size": report.get("size"),
                     **{k: metrics.get(k) for k in MATRIX_COLUMNS[4:-1]},
                     "verdict": "pass" if report["passed"] else ("error" if report.get("error") else "FAIL")})
    return rows


def _cell(value, fmt: str, scale: float | None = None) -> str:
    if value is None:
        return "–"
    return format(value * scale if scale else value, fmt)


def matrix_markdown(rows: list[dict]) -> str:
    lines = ["| artifact | format | precision | size (B) | max abs | mean abs | cosine | SQNR dB | agreement "
             "| accuracy | Δ acc (pp) | verdict |", "|" + "---|" * 12]
    for r in rows:
        cells = [r["artifact"], r["format"], r["precision"], _cell(r.get("size"), ","),
                 _cell(r.get("max_abs"), ".2e"), _cell(r.get("mean_abs"), ".2e"), _cell(r.get("cosine"), ".6f"),
                 _cell(r.get("sqnr_db"), ".1f"), _cell(r.get("agreement"), ".2%"),
                 _cell(r.get("candidate_accuracy"), ".2%"), _cell(r.get("accuracy_delta"), "+.2f", 100),
                 r["verdict"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


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
        "reference_accuracy": None if labels is None else _ref_accuracy(reference.result.outputs[0], labels),
        "passed": all(r["passed"] for r in reports),
        "artifacts": reports,
        "matrix": matrix_rows(reports),
    }


def _ref_accuracy(probs: np.ndarray, labels: np.ndarray) -> float | None:
    if probs.ndim < 2 or probs.shape[-1] < 2:
        return None
    top = np.argmax(probs, -1)
    top = top[:, -1] if top.ndim == 2 else top
    return float(np.mean(top == labels))


def _save(summary: dict, reference: Reference, results: dict, files: list[Path], options) -> None:
    report_path = Path(options.report) if options.report else files[0].parent / REPORT_FILE
    write_json(report_path, summary)
    write_text(report_path.with_suffix(".md"), matrix_markdown(summary["matrix"]) + "\n")
    summary["report_path"] = str(report_path)
    if options.save_results:
        folder = Path(options.save_results)
        save_result(reference.result, folder / "reference")
        for name, result in results.items():
            save_result(result, folder / name)


def dumps(summary: dict) -> str:
    return json.dumps(summary, indent=2, default=str)
