"""The rescue ladder: when an int8 artifact fails its gates, try the remedies in order, re-prove each.

Rungs (a recipe's ``[rescue] rungs`` chooses and orders them):
0. ``calibration`` — int8 again, every activation-range method (minmax, entropy, percentile) built and
   the most faithful on the calibration samples kept → ``NAME_int8-calibrated.tflite``/``.onnx``; still
   fully integer, so it goes first: outlier activations that min/max stretches a scale over are clipped.
1. ``keep_float`` — the fewest Keras layers kept in float (validate/rescue.py: greedy search ranked by
   output SQNR, gates decide) → ``NAME_mixed.tflite``/``.onnx``; most activations stay integer.
2. ``int16x8`` — TFLite 16-bit activations, 8-bit weights, checked against LiteRT's kernels →
   ``NAME_int16x8.tflite`` (no search; the most faithful, but slower on CPUs without int16 kernels).
3. ``qat`` — quantization-aware fine-tuning into a new run (``RECIPE/qat``), then ordinary int8 of it.
   It changes the float model, so its int8 is validated against the fine-tuned model, and its accuracy
   against the labels says whether it beats plain post-training quantization. Needs the training data.

The ladder stops at the first rung that passes; every rung tried is recorded with accuracy,
agreement, size (and latency, once benchmarked) for the report.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import EdgedlError
from ..core.files import read_json
from ..core.layout import EXPORTS, MANIFEST, VALIDATION_REPORT

QAT_RUN = "qat"
CALIBRATED_TAG = "calibrated"


def failing_int8(validation: dict) -> list[dict]:
    """The validation rows of int8 artifacts that failed their gates (what the ladder is for), each with
    its output quantization steps: a float-output rescue of it is judged in them."""
    from ..validate.run import step_scales

    reports = {r.get("artifact"): r for r in validation.get("artifacts", [])}
    return [row | {"step_scales": step_scales(reports.get(row["artifact"], {}))}
            for row in validation.get("matrix", []) if row.get("precision") == "int8" and row["verdict"] != "pass"]


def ladder(recipe, run_dir: Path, folder: Path, failing: list[dict], tolerances: dict, say) -> dict:
    """Climb the ladder for each failing int8 artifact; return {artifact: {"rungs": [...], "rescued_by": …}}."""
    outcome = {}
    for row in failing:
        fmt = row["format"]
        say(f"    rescue ladder for {row['artifact']} (agreement {_pct(row.get('agreement'))}, "
            f"Δ acc {_pp(row.get('accuracy_delta'))}): {', '.join(recipe.rescue)}")
        rungs = []
        for rung in recipe.rescue:
            record = _refuse_if_no_better(climb(rung, fmt, recipe, run_dir, folder, tolerances,
                                                row.get("step_scales"), say), row)
            rungs.append(record)
            mark = "✓" if record["passed"] else ("–" if record.get("skipped") else "✗")
            say(f"    {mark} {rung}: " + (record.get("note") or _summary(record)))
            if record["passed"]:
                break
        rescued = next((r for r in rungs if r["passed"]), None)
        outcome[row["artifact"]] = {"format": fmt, "ptq": _numbers(row), "rungs": rungs,
                                    "rescued_by": rescued and {"rung": rescued["rung"], "artifact": rescued["artifact"]}}
    return outcome


def climb(rung: str, fmt: str, recipe, run_dir: Path, folder: Path, tolerances: dict, scales: dict | None,
          say) -> dict:
    """One rung; ``scales``: the failed int8's output steps, in which a float-output rescue is judged."""
    try:
        if rung == "calibration":
            return _calibrated(fmt, recipe, run_dir, tolerances)
        if rung == "keep_float":
            return _keep_float(fmt, recipe, run_dir, tolerances, scales, say)
        if rung == "int16x8":
            if fmt != "tflite":
                return _skipped(rung, "int16x8 is a TFLite mode")
            return _int16(recipe, run_dir, tolerances, scales)
        return _qat(fmt, recipe, run_dir, folder, tolerances, say)
    except EdgedlError as exc:
        return {"rung": rung, "passed": False, "artifact": None, "note": exc.one_line()}


def _refuse_if_no_better(record: dict, replaced: dict) -> dict:
    """A rung that passes its gates but does not beat the int8 it replaces, on the measure the two share,
    is refused: its pass would come from a gate, not from a repair (validate.rescue.not_better)."""
    from ..validate.rescue import not_better

    if not record["passed"]:
        return record
    reason = not_better(record, replaced, against_labels=record["rung"] == "qat")
    if reason is None:
        return record
    row = dict(record.get("row") or {}, verdict="not better")
    return record | {"passed": False, "row": row, "failures": [reason, *record.get("failures", [])]}


def _skipped(rung: str, why: str) -> dict:
    return {"rung": rung, "passed": False, "skipped": True, "artifact": None, "note": f"skipped: {why}"}


def _options(recipe, tolerances: dict):
    from ..export import ExportOptions
    from ..validate.run import ValidateOptions

    return ExportOptions(name=recipe.name), ValidateOptions(overrides=dict(tolerances))


def _keep_float(fmt: str, recipe, run_dir: Path, tolerances: dict, scales: dict | None, say) -> dict:
    from ..export import Target
    from ..validate.rescue import export_with_search

    export_options, validate_options = _options(recipe, tolerances)
    records = export_with_search(run_dir, [Target(fmt, "mixed")], run_dir / EXPORTS, export_options,
                                 validate_options, say=lambda m: say("      " + m))
    if not records:  # the search found plain int8 passing on its samples: it wrote nothing to judge
        return _skipped("keep_float", "the search judged plain int8 as passing; no mixed artifact was written")
    record = _judge("keep_float", run_dir, Path(records[0]["out_dir"]) / records[0]["file"], tolerances, scales)
    return record | {"layers": records[0].get("keep_float", []), "integer_ops": records[0].get("integer_ops")}


def _calibrated(fmt: str, recipe, run_dir: Path, tolerances: dict) -> dict:
    from ..export import Target, export

    export_options, _ = _options(recipe, tolerances)
    export_options.calibration_method = "auto"
    if fmt == "onnx":
        export_options.onnx_quant = "static"  # the calibration method is a static-quantization idea
    records = export(run_dir, [Target(fmt, "int8", tag=CALIBRATED_TAG)], out=run_dir / EXPORTS, options=export_options)
    record = _judge("calibration", run_dir, Path(records[0]["out_dir"]) / records[0]["file"], tolerances)
    return record | {"method": records[0].get("calibration_method")
                     or (records[0].get("onnx_quantization") or {}).get("calibration_method")}


def _int16(recipe, run_dir: Path, tolerances: dict, scales: dict | None) -> dict:
    from ..export import Target, export

    export_options, _ = _options(recipe, tolerances)
    records = export(run_dir, [Target("tflite", "int16x8")], out=run_dir / EXPORTS, options=export_options)
    return _judge("int16x8", run_dir, Path(records[0]["out_dir"]) / records[0]["file"], tolerances, scales)


def _qat(fmt: str, recipe, run_dir: Path, folder: Path, tolerances: dict, say) -> dict:
    from ..export import Target, export
    from ..train.finetune import finetune

    manifest = read_json(run_dir / MANIFEST, "training manifest")
    if not (manifest.get("dataset") or {}).get("source"):
        return _skipped("qat", "no training data for this model (a card can name it: [data] train = …)")
    qat_dir = folder / QAT_RUN
    finetune(run_dir, qat_dir, epochs=recipe.qat_epochs, qat=True, say=lambda m: say("      " + m))
    export_options, _ = _options(recipe, tolerances)
    export_options.name = f"{recipe.name}-qat"
    records = export(qat_dir, [Target(fmt, "int8")], out=qat_dir / EXPORTS, options=export_options)
    record = _judge("qat", qat_dir, Path(records[0]["out_dir"]) / records[0]["file"], tolerances)
    qat_manifest = read_json(qat_dir / MANIFEST, "fine-tuned run")
    return record | {"reference": "the fine-tuned float model", "run": str(qat_dir),
                     "float_accuracy": (qat_manifest.get("metrics") or {}).get("test_accuracy"),
                     "original_float_accuracy": (manifest.get("metrics") or {}).get("test_accuracy")}


def _judge(rung: str, run_dir: Path, artifact: Path, tolerances: dict, scales: dict | None = None) -> dict:
    """Validate one rescued artifact against its reference, as the pipeline's validate step does; a
    float-output rescue in the replaced int8's output steps (``scales``), by int8's steps limit."""
    from ..validate.run import ValidateOptions, validate

    report = run_dir / EXPORTS / f".{artifact.stem}.{VALIDATION_REPORT}"  # beside, never over, the main report
    options = ValidateOptions(overrides=dict(tolerances), report=str(report), step_scales=scales or None)
    summary = validate(run_dir, [artifact], options, say=lambda m: None)
    report.unlink(missing_ok=True)
    report.with_suffix(".md").unlink(missing_ok=True)
    row = summary["matrix"][0]
    failures = [f for o in summary["artifacts"][0].get("outputs", []) for f in o.get("failures", [])]
    return {"rung": rung, "passed": row["verdict"] == "pass", "artifact": artifact.name, "path": str(artifact),
            "row": row, **_numbers(row), "failures": failures}


def _numbers(row: dict) -> dict:
    return {key: row.get(key) for key in ("agreement", "candidate_accuracy", "accuracy_delta", "size", "sqnr_db")}


def _summary(record: dict) -> str:
    text = (f"{record['artifact']}: agreement {_pct(record.get('agreement'))}, accuracy "
            f"{_pct(record.get('candidate_accuracy'))} (Δ {_pp(record.get('accuracy_delta'))}), "
            f"{(record.get('size') or 0) / 1024:,.1f} KB")
    if record.get("layers"):
        text += f"; float layers: {', '.join(record['layers'])}"
    if record.get("method"):
        text += f"; activation ranges: {record['method']}"
    if not record["passed"] and record.get("failures"):
        text += f" ← {record['failures'][0]}"
    return text


def _pct(value) -> str:
    return "–" if value is None else f"{value:.2%}"


def _pp(value) -> str:
    return "–" if value is None else f"{value * 100:+.2f} pp"


def rescue_rows(outcome: dict) -> list[dict]:
    """Validation rows of the rescued artifacts, for the report's tables, the gates and the recommendation."""
    return [dict(r["row"], rescue=r["rung"], reference=r.get("reference")) for entry in outcome.values()
            for r in entry["rungs"] if r.get("row")]


def rescued(outcome: dict) -> dict:
    """Failed artifact → the rung and artifact that rescued it."""
    return {name: entry["rescued_by"] for name, entry in outcome.items() if entry.get("rescued_by")}


def artifacts(outcome: dict) -> list[Path]:
    return [Path(r["path"]) for entry in outcome.values() for r in entry["rungs"] if r.get("path")]
