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
    VALIDATION_REPORT,
    find_artifacts,
    model_key,
    precision_of,
    read_sidecar,
    relative_to,
    resolve_from,
    sidecar_path,
)
from ..core.metrics import accuracy, is_classification
from ..core.outputs import OWN_MARKDOWN, check_output_file, claim
from ..core.settings import TOLERANCES, check_table
from ..runners.base import TensorInfo
from ..subject import Declared, Subject
from ..train.architectures import registry as architectures
from .diagnose import REPRESENTATIVE, calibrated_range, causes, inside_coverage, inside_share, output_coverage
from .diagnose import lines as cause_lines
from .inputs import Inputs, gather_inputs
from .matrix import matrix_markdown, matrix_rows
from .parity import ParityReport, align_outputs, compare, output_kind
from .results import RunResult, inputs_sha256, load_result, save_result

DEFAULT_SAMPLES = 1000


RESCUE_PRECISIONS = ("mixed", "int16x8")  # the float-output rescues of a failed int8


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
    overrides: dict = field(default_factory=dict)  # any TOLERANCE_KEYS limit (--tolerance KEY=VALUE)
    # What a training run would know, for a model edgedl did not train (core/card.py).
    card: str | None = None
    task: str | None = None
    labels: str | None = None
    input_scale: float | None = None
    input_offset: float | None = None
    force: bool = False  # replace an existing --report that edgedl did not write
    keep_inputs: int = 0  # return the first N model-ready inputs and labels (not saved): golden vectors
    # A rescue answers to the gates of the int8 artifact it replaces: its float outputs are judged in that
    # artifact's output quantization steps ({reference output name: scale}, from ``step_scales``).
    step_scales: dict | None = None


# ---------------------------------------------------------------- the run

def validate(model: str | Path | None, artifacts: list[str | Path], options: ValidateOptions | None = None,
             say=print) -> dict:
    """Validate each artifact; return the report (``report["passed"]``), having judged every output."""
    options = options or ValidateOptions()
    if options.save_results:  # refused before any work when it would land on someone else's files
        claim(options.save_results, "results", option="--save-results")
    check_overrides({**_named_limits(options), **options.overrides})
    subject = _subject(model, options)
    model_path = subject.model_path
    if not artifacts and model_path is not None:
        artifacts = [subject.default_exports]  # a run's exports/, or the exports/ beside a .keras file
    files = find_artifacts(artifacts)
    _check_report_paths(subject, files, options)
    reference = _reference(subject, options, say)
    warnings = check_reference(reference.result, say)
    reports, results = [], {}
    model = (subject.model_path, subject.model_sha256) if subject.model_path is not None else None
    for artifact in files:
        stale = _stale(artifact, model) if not options.reference else None
        if stale:
            say(f"✗ {artifact.name}: {stale['error']}")
            reports.append(stale)
            continue
        report, result = _validate_one(artifact, reference, options, say)
        reports.append(report)
        if result is not None:
            results[artifact.name] = result
    summary = _summary(model_path, reference, reports, options)
    summary["warnings"] = warnings + _resolution_notes(reports, reference, say)
    if options.keep_inputs:
        n = options.keep_inputs
        summary["kept_inputs"] = {name: x[:n] for name, x in reference.inputs.arrays.items()}
        summary["kept_labels"] = {name: y[:n] for name, y in reference.inputs.labels.items()}
    if options.layers:
        from .drift import layer_drift

        summary["drift"] = layer_drift(subject, files, reference, reports, options, say)
    _save(summary, reference, results, files, options)
    return summary


def _check_report_paths(subject: Subject, files: list[Path], options) -> None:
    """The report and the .md beside it may land neither on an input nor on a file edgedl did not write."""
    report = report_path(files, options)
    inputs = [*files, *(sidecar_path(f) for f in files), *subject.input_files()]
    for path, option in ((report, "--report"), (report.with_suffix(".md"), "--report (its .md)")):
        check_output_file(path, inputs, force=options.force, option=option)


def report_path(files: list[Path], options) -> Path:
    return Path(options.report) if options.report else files[0].parent / VALIDATION_REPORT


def _subject(model, options) -> Subject:
    """The model's facts: a Subject a caller resolved already (bundle), else resolved from the flags."""
    if isinstance(model, Subject):
        return model
    declared = Declared.of(options)
    return Subject.resolve(model, declared) if model is not None else Subject.bare(declared)


def failure_message(summary: dict) -> str | None:
    """One line naming the unfaithful artifacts, or None when every artifact passed."""
    failed = [r["artifact"] for r in summary["artifacts"] if not r["passed"]]
    if not failed:
        return None
    return f"{len(failed)} of {len(summary['artifacts'])} artifact(s) are not faithful: {', '.join(failed)}"


def remedies_hint(summary: dict) -> str | None:
    """The int8 remedies that apply to the failed artifacts of this model, as one hint, or None.

    Calibration ranges and layers kept in float apply to every int8 file; int16 activations to TFLite
    only; quantization-aware fine-tuning to a model edgedl trained (recurrent layers are refused)."""
    failed = [r for r in summary["artifacts"] if not r["passed"] and not r.get("stale")
              and r.get("precision") in ("int8", "mixed")]
    if not failed:
        return None
    hints = ["export again with --calibration-method auto (ranges from histograms)",
             "--keep-float auto (the layers int8 hurts most stay float)"]
    if any(r["artifact"].endswith(".tflite") for r in failed):
        hints.append("--quantize int16x8 (TFLite: 16-bit activations)")
    if summary.get("architecture"):  # a training run: it can be fine-tuned
        hints.append("edgedl finetune RUN --qat (quantization-aware fine-tuning; not for recurrent layers)")
    return "int8 remedies that apply: " + "; ".join(hints) + "; or `edgedl pipeline` tries them in order"


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
    def __init__(self, result: RunResult, inputs: Inputs, architecture: str | None, kinds: list[str],
                 labels: list[str] | None = None):
        self.result, self.inputs, self.architecture, self.kinds = result, inputs, architecture, kinds
        self.labels = labels  # class names, when known (run manifest, card or --labels)


def _reference(subject: Subject, options, say) -> Reference:
    if options.reference:
        return _saved_reference(subject, options, say)
    if subject.model_path is None:
        raise UsageError("validate needs the original model (a .keras file or run folder) or --reference")
    from ..runners.keras import KerasRunner
    from ..runners.modelio import model_facts

    runner = KerasRunner(subject.model_path, safe_mode=not options.unsafe)
    facts = model_facts(runner.model)
    names = [t.name for t in runner.outputs]
    inputs = gather_inputs(subject, runner.inputs, names, options, facts, say)
    started = time.perf_counter()
    outputs = runner.infer(inputs.arrays)
    specs = [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in runner.inputs]
    kinds = [output_kind(name, out, inputs.labels.get(name), subject.task_for(name), activation)
             for name, out, activation in zip(names, outputs, facts["output_activations"], strict=True)]
    subject.check_outputs([(name, kind, int(out.shape[-1]) if kind == "classification" else None)
                           for name, kind, out in zip(names, kinds, outputs, strict=True)])
    _check_targets(names, kinds, outputs, inputs.labels)
    result = RunResult(source=str(subject.model_path), backend="keras", outputs=outputs, output_names=names,
                       inputs_sha256=inputs_sha256(inputs.as_list),
                       info={"inputs": specs, "architecture": subject.architecture, "kinds": kinds},
                       seconds=time.perf_counter() - started)
    say(f"reference: {subject.model_path} on {inputs.count} samples of {inputs.evidence}")
    return Reference(result, inputs, subject.architecture, kinds, subject.labels)


def _check_targets(names, kinds, outputs, labels: dict) -> None:
    """Regression targets hold as many values per sample as the output they score."""
    for name, kind, out in zip(names, kinds, outputs, strict=True):
        y = labels.get(name)
        if kind == "regression" and y is not None and y.size != out.size:
            per_sample = out.size // max(len(out), 1)
            raise DataError(f"output {name!r} gives {per_sample} value(s) per sample but its regression targets hold "
                            f"{y.size // max(len(y), 1)}", hint="is it a classifier? drop --task regression, or pass "
                                                                 "one target per output value")


def _saved_reference(subject: Subject, options, say) -> Reference:
    saved = load_result(options.reference)
    specs = [TensorInfo(s["name"], tuple(s["shape"]), s["dtype"]) for s in saved.info.get("inputs", [])]
    if not specs:
        raise ArtifactError(f"saved reference {options.reference} does not record its inputs; save it again")
    inputs = gather_inputs(subject, specs, saved.output_names, options, {}, say)
    if inputs_sha256(inputs.as_list) != saved.inputs_sha256:
        raise DataError(f"saved reference {options.reference} was made on other inputs than these",
                        hint="use the same --data/--samples as when it was saved")
    say(f"reference: saved result {options.reference} ({inputs.count} samples)")
    kinds = saved.info.get("kinds") or ["classification"] * len(saved.outputs)
    return Reference(saved, inputs, subject.architecture or saved.info.get("architecture"), kinds, subject.labels)


def check_overrides(overrides: dict) -> None:
    """Every tolerance override is a known limit in its range (core/settings.py), before any work."""
    check_table(overrides, TOLERANCES, "--tolerance")


def _named_limits(options) -> dict:
    return {k: getattr(options, k) for k in NAMED_LIMITS if getattr(options, k) is not None}


NAMED_LIMITS = ("atol", "min_agreement", "max_accuracy_drop")  # ValidateOptions fields that are tolerances


def tolerances(architecture: str | None, precision: str, options: ValidateOptions, in_steps: bool = False) -> dict:
    limits = architectures.tolerances_for(architecture, precision)
    if in_steps and precision in RESCUE_PRECISIONS:  # judged in the replaced int8's steps, by its limit
        limits["max_mean_error_steps"] = architectures.tolerances_for(architecture, "int8")["max_mean_error_steps"]
    limits.update(_named_limits(options))
    limits.update(options.overrides)
    return limits


def sibling_step_scales(artifact: Path, precision: str, facts: dict) -> tuple[dict, str | None]:
    """A mixed or int16x8 TFLite file validated on its own is judged in the output steps of the plain int8
    file of the same model beside it (the file it replaces), as the rescue that wrote it judged it:
    ({output name: scale}, that file's name), or ({}, None) when there is none. Without that file, a
    file the keep-float search wrote is judged in the steps its sidecar recorded from the plain int8
    the search started from (that int8 was never written: only the rescue was). ``facts``: the
    artifact's own sidecar."""
    if precision not in RESCUE_PRECISIONS:
        return {}, None
    plain = artifact.with_name(f"{Path(model_key(artifact)).stem}_int8{artifact.suffix}")
    beside = read_sidecar(plain) if plain.is_file() else {}
    scales = {o["name"]: o["quantization"]["scale"] for o in beside.get("outputs", [])
              if (o.get("quantization") or {}).get("scale")}
    if scales:
        return scales, plain.name
    searched = ((facts.get("keep_float_search") or {}).get("baseline") or {}).get("step_scales")
    if isinstance(searched, dict) and searched and all(isinstance(v, float) and v > 0 for v in searched.values()):
        return searched, f"the plain int8 its keep-float search started from ({plain.name}, not written)"
    return {}, None


def step_scales(report: dict) -> dict:
    """An int8 artifact's output quantization steps, by output name, from its validation report: what a
    rescue of it is judged in."""
    return {o["name"]: o["metrics"]["output_scale"] for o in report.get("outputs", [])
            if (o.get("metrics") or {}).get("output_scale")}


def _resolution_notes(reports: list[dict], reference: Reference, say) -> list[str]:
    """Say when the samples cannot resolve an accuracy or agreement gate (one flip moves it too far)."""
    count, notes = reference.inputs.count, []
    flip = 1.0 / max(count, 1)
    limits = {r["precision"]: r.get("tolerances", {}) for r in reports if r.get("tolerances")}
    if "classification" not in reference.kinds:  # accuracy and agreement gates judge classes only
        return []
    for precision, limit in sorted(limits.items()):
        drop, agreement_limit = limit.get("max_accuracy_drop"), limit.get("min_agreement")
        if reference.inputs.labels and drop is not None and drop < flip:
            notes.append(f"{count} samples cannot resolve the {precision} accuracy gate of {drop * 100:.2g} pp: one "
                         f"flipped sample moves accuracy {flip * 100:.2g} pp, so any flip fails it "
                         "(use more samples, or --tolerance max_accuracy_drop=...)")
        if agreement_limit is not None and 1 - agreement_limit < flip and agreement_limit < 1:
            notes.append(f"{count} samples cannot resolve the {precision} agreement gate of {agreement_limit:.2%}: "
                         f"one disagreement is {flip:.2%}")
    for note in notes:
        say(f"note: {note}")
    return notes


def _stale(artifact: Path, model: tuple[Path, str] | None) -> dict | None:
    """An artifact exported from an older version of this very model file is stale, not unfaithful: say so."""
    facts = read_sidecar(artifact)
    source = (facts.get("source_model") or {}) if isinstance(facts, dict) else {}
    recorded, path = source.get("sha256"), source.get("path")
    if model is None or not isinstance(recorded, str) or not isinstance(path, str):
        return None
    model_path, model_sha = model
    if recorded == model_sha or resolve_from(path, artifact.parent).resolve() != model_path.resolve():
        return None
    error = (f"stale: exported from an older version of the model (sha256 {recorded[:12]}…, the model is now "
             f"{model_sha[:12]}…); export it again")
    return {"artifact": artifact.name, "precision": facts.get("precision", "?"), "passed": False, "stale": True,
            "outputs": [], "error": error, "format": facts.get("format", artifact.suffix[1:]),
            "size": artifact.stat().st_size}


def _validate_one(artifact: Path, reference: Reference, options, say) -> tuple[dict, RunResult | None]:
    from ..runners.open import open_runner

    facts = read_sidecar(artifact)
    try:
        verify_sha256(artifact, facts.get("sha256"), what="artifact")
        with open_runner(artifact) as runner:  # a bounded child process: closed as soon as it has answered
            precision = precision_of(artifact, facts) or _precision_from_io(runner)
            feed = _feed(artifact, runner, reference)
            coverage = input_coverage(runner.inputs, feed)
            started = time.perf_counter()
            raw = runner.infer(feed)
            seconds = time.perf_counter() - started
    except EdgedlError as exc:
        say(f"✗ {artifact.name}: {exc.one_line()}")
        return _error_report(artifact, facts, exc), None
    outputs, names = align_outputs(reference.result.output_names, [o.shape for o in reference.result.outputs],
                                   raw, [t.name for t in runner.outputs])
    given, beside = (options.step_scales, None) if options.step_scales else \
        sibling_step_scales(artifact, precision, facts)
    if beside:
        say(f"  {artifact.name}: float outputs judged in the output steps of {beside}, the int8 file it replaces")
    scales = [t.scale if t.quantized else given.get(name)
              for t, name in zip(_aligned_specs(runner.outputs, names), reference.result.output_names, strict=True)]
    limits = tolerances(reference.architecture, precision, options, in_steps=bool(given))
    checks = compare(reference.result.outputs, outputs, reference.result.output_names,
                     reference.inputs.labels, limits, scales, reference.kinds)
    report = ParityReport(artifact=artifact.name, precision=precision, passed=all(c.passed for c in checks),
                          outputs=checks, tolerances=limits, samples=len(outputs[0]),
                          evidence=reference.inputs.evidence)
    say(f"{'✓' if report.passed else '✗'} {artifact.name} ({facts.get('format', artifact.suffix[1:])} {precision}, "
        f"{artifact.stat().st_size:,} B)")
    for check in checks:
        say(check.line())
    for name, cover in coverage.items():
        if cover["inside"] < REPRESENTATIVE:
            say(f"  note: {1 - cover['inside']:.2%} of input {name!r} values fall outside the int8 range the "
                f"calibration set gave it ({cover['calibrated'][0]:.4g}…{cover['calibrated'][1]:.4g}; data "
                f"{cover['data'][0]:.4g}…{cover['data'][1]:.4g}) and are clipped: the calibration set is not "
                "representative of this data")
    result = RunResult(source=str(artifact), backend=runner.backend, outputs=outputs, output_names=names,
                       inputs_sha256=reference.result.inputs_sha256, info={"precision": precision},
                       seconds=seconds)
    row = report.as_dict() | {"format": facts.get("format", artifact.suffix[1:]), "size": artifact.stat().st_size,
                              "seconds": round(seconds, 3), "backend": runner.backend,
                              "no_effect": bool(facts.get("no_effect"))}
    if beside:
        row["judged_in_steps_of"] = beside
    covered = output_coverage(_aligned_specs(runner.outputs, names), reference.result.output_names,
                              reference.result.outputs, outputs)
    if covered:
        row["output_coverage"] = covered
    if not report.passed and precision in ("int8", "mixed", "int16x8"):  # measured causes, largest first
        inside, skipped = _inside(artifact, facts, runner.inputs, feed)
        row["inside_coverage"] = {"tensors": len(inside or {}), "skipped": skipped}
        row["diagnosis"] = causes(coverage, covered, inside)
        if skipped:
            say(f"  note: tensors inside the network not checked against their calibrated ranges: {skipped}")
        for line in cause_lines(row["diagnosis"]):
            say(line)
    if coverage:
        row["input_coverage"] = coverage
    return row, result


def _inside(artifact: Path, facts: dict, specs, feed: list[np.ndarray]) -> tuple[dict | None, str | None]:
    try:
        return inside_coverage(artifact, facts, specs, feed)
    except EdgedlError as exc:  # a diagnosis that cannot be made is said, never a crash of the verdict
        return None, exc.one_line()


def input_coverage(specs, feed: list[np.ndarray]) -> dict:
    """For each quantized input: the range its scale and zero point can hold (set by the calibration
    data), the held-out data's range, and the share of values inside (the rest is clipped)."""
    found = {}
    for spec, x in zip(specs, feed, strict=True):
        if not spec.quantized:
            continue
        low, high = calibrated_range(spec)
        values = np.asarray(x, np.float64)
        inside = inside_share(values, spec)
        found[spec.name] = {"calibrated": [float(low), float(high)], "data": [float(values.min()), float(values.max())],
                            "inside": inside}
    return found


def _precision_from_io(runner) -> str:
    return "int8" if any(t.quantized for t in runner.inputs + runner.outputs) else "fp32"


def _error_report(artifact: Path, facts: dict, exc: EdgedlError) -> dict:
    return {"artifact": artifact.name, "precision": facts.get("precision", "?"), "passed": False,
            "outputs": [], "error": exc.one_line(), "format": facts.get("format", artifact.suffix[1:]),
            "size": artifact.stat().st_size if artifact.exists() else 0}


def _feed(artifact: Path, runner, reference: Reference):
    """The reference's inputs in the artifact's terms: by name when the names agree, else by position.
    Raises when the artifact's I/O cannot be this model's."""
    arrays = reference.inputs.arrays
    if len(runner.inputs) != len(arrays) or len(runner.outputs) != len(reference.result.outputs):
        raise ArtifactError(
            f"{artifact.name} has {len(runner.inputs)} inputs/{len(runner.outputs)} outputs but the model has "
            f"{len(arrays)}/{len(reference.result.outputs)}: it was not exported from this model")
    by_name = {spec.name for spec in runner.inputs} == set(arrays)
    ordered = [arrays[spec.name] for spec in runner.inputs] if by_name else list(arrays.values())
    for spec, x in zip(runner.inputs, ordered, strict=True):
        shape = tuple(x.shape[1:])
        if len(spec.shape) - 1 != len(shape) or any(
                d is not None and d != s for d, s in zip(spec.shape[1:], shape, strict=True)):
            raise ArtifactError(f"{artifact.name} input {spec.name!r} takes {tuple(spec.shape[1:])} but the "
                                f"model's input is {shape}: it was not exported from this model")
    return ordered


def _aligned_specs(specs, names):
    by_name = {s.name: s for s in specs}
    return [by_name[n] for n in names]


# ---------------------------------------------------------------- summary and saving

def _summary(model_path, reference: Reference, reports: list[dict], options) -> dict:
    first = reference.result.output_names[0]
    labels = reference.inputs.labels.get(first) if reference.kinds[0] == "classification" else None
    return {
        "edgedl": "validation/1",
        "model": str(model_path) if model_path else reference.result.source,
        "architecture": reference.architecture,
        "samples": reference.inputs.count,
        "evidence": reference.inputs.evidence,
        "preprocessing": reference.inputs.preprocessing,
        "data_dtype": reference.inputs.raw_dtype,
        "outputs": [{"name": n, "kind": k, "classes": int(o.shape[-1]) if k == "classification" else None}
                    for n, k, o in zip(reference.result.output_names, reference.kinds, reference.result.outputs,
                                       strict=True)],
        "labels": reference.labels,
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
    path = report_path(files, options)
    model = summary["model"]  # recorded relative to the report, like sidecars: the folder can move
    saved = {k: v for k, v in summary.items() if not k.startswith("kept_")}
    write_json(path, {**saved, "model": relative_to(model, path.parent) if model else model})
    write_text(path.with_suffix(".md"), f"{OWN_MARKDOWN} validate -->\n" + matrix_markdown(summary["matrix"]) + "\n")
    summary["report_path"] = str(path)
    if options.save_results:
        folder = Path(options.save_results)
        save_result(reference.result, folder / "reference")
        for name, result in results.items():
            save_result(result, folder / name)


def dumps(summary: dict) -> str:
    return json.dumps(summary, indent=2, default=str)
