"""``--keep-float auto``: the fewest Keras layers to keep in float so that an int8 model meets its gates.

Plain int8 is converted and judged first, alone: when it passes, nothing else is converted and
nothing is written. Otherwise a greedy forward search, one layer at a time:
1. every layer not yet kept float is tried in addition to the current set, all candidates converted in
   one export worker (calibrated once) and validated against one Keras reference;
2. candidates are ranked by the worst output SQNR on the held-out data (a continuous measure of the
   whole output's error: it moves with each layer's effect, where agreement moves by whole samples and
   would tune the choice to a few flipped ones); the first candidate set that passes the gates, fewest
   layers first, wins;
3. otherwise the best-ranked candidate becomes the current set and the search goes on, up to
   ``max_layers``. When no single layer raises the SQNR, adjacent pairs are tried too: an activation
   whose range hurts can only be float when both the layer making it and the layer reading it are.

Per-tensor error statistics (TensorFlow's QuantizationDebugger) are not used to rank: measured on a
Transformer they are flat across layers and blame ops that TF's own interpreter miscomputes; the
effect of keeping a layer float is what decides (docs/BENCHMARKS.md, Rescuing int8).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..core.errors import ParityFailure, UsageError
from ..core.files import staging_dir
from .run import ValidateOptions, step_scales, validate

MAX_LAYERS = 4
MIN_GAIN_DB = 0.5  # an SQNR gain below this is noise: time to try pairs


def keep_float_search(source: str | Path, fmt: str, export_options, validate_options: ValidateOptions,
                      work: Path, max_layers: int = MAX_LAYERS, say=print) -> dict:
    """Search the layers to keep float for ``fmt`` (tflite or onnx); return {"layers", "steps", "passed", …}.

    Raises ParityFailure, with the best set found and its numbers, when no set of up to ``max_layers``
    layers passes.
    """
    from ..export import Target, export, layers_with_ops

    say(f"keep-float search ({fmt}): plain int8 first, judged by the gates on the held-out data")
    current: list[str] = []
    steps = []
    with staging_dir(work, "keep-float-search") as folder:
        reference_path = folder / "reference"  # the Keras outputs, saved by the first validation
        # plain int8 first, alone: where the search starts from, and often already enough (then no
        # candidate is converted at all); the candidates answer to its gates, in its output steps
        records = export(source, [Target(fmt, "int8", tag="baseline")], out=folder / "baseline",
                         options=export_options)
        baseline = _score(source, records, [[]], validate_options, reference_path, folder)[0]
        if baseline["passed"]:  # nothing needs to be float: say so rather than pay for float layers
            say(f"  plain int8 already passes (SQNR {baseline['sqnr_db']:.1f} dB): no layer kept float")
            return {"layers": [], "steps": [], "passed": True, "baseline": baseline, "candidates": []}
        validate_options = dataclasses.replace(validate_options, step_scales=baseline["step_scales"])
        layers = layers_with_ops(source, export_options)
        say(f"  plain int8 fails (SQNR {baseline['sqnr_db']:.1f} dB; {baseline['failures'][0]}); {len(layers)} "
            "layers with ops to try, ranked by output SQNR, gates decide")
        for step in range(1, max_layers + 1):
            sets = _candidates(layers, current, pairs=bool(steps) and steps[-1]["gain_db"] < MIN_GAIN_DB)
            if not sets:
                break
            targets = [Target(fmt, "mixed", keep_float=tuple(s), tag=f"s{step}c{i}") for i, s in enumerate(sets)]
            records = export(source, targets, out=folder / f"step{step}", options=export_options)
            rows = [_no_better(row, baseline) for row in
                    _score(source, records, sets, validate_options, reference_path, folder)]
            best = max(rows, key=lambda r: r["sqnr_db"])
            passing = [r for r in rows if r["passed"]]
            chosen = min(passing, key=lambda r: (len(r["layers"]), -r["sqnr_db"])) if passing else best
            before = steps[-1]["sqnr_db"] if steps else baseline["sqnr_db"]
            steps.append({"step": step, "tried": len(sets), "layers": chosen["layers"], "sqnr_db": chosen["sqnr_db"],
                          "gain_db": chosen["sqnr_db"] - before, "passed": chosen["passed"],
                          "agreement": chosen.get("agreement"), "failures": chosen["failures"]})
            say(f"  step {step}: {len(sets)} candidate(s); best {', '.join(chosen['layers'])}: SQNR "
                f"{chosen['sqnr_db']:.1f} dB ({steps[-1]['gain_db']:+.1f})"
                + (" ✓ passes the gates" if chosen["passed"] else f" ✗ {chosen['failures'][0]}"))
            if chosen["passed"]:
                return {"layers": chosen["layers"], "steps": steps, "passed": True, "baseline": baseline,
                        "candidates": layers}
            current = chosen["layers"]
    last = steps[-1] if steps else {"layers": [], "sqnr_db": None, "failures": ["no candidate"]}
    raise ParityFailure(f"no set of up to {max_layers} float layers makes the {fmt} int8 model pass: best "
                        f"{', '.join(last['layers'])} ({last['failures'][0]})",
                        hint="try --quantize int16x8, quantization-aware training (edgedl finetune --qat), "
                             "or dynamic range")


def _candidates(layers: list[str], current: list[str], pairs: bool) -> list[list[str]]:
    rest = [name for name in layers if name not in current]
    sets = [current + [name] for name in rest]
    if pairs:  # neighbours in graph order: the maker and the reader of one activation
        sets += [current + [a, b] for a, b in zip(rest, rest[1:], strict=False)]
    return sets


def _score(source, records: list[dict], sets: list[list[str]], options: ValidateOptions, saved: Path,
           folder: Path) -> list[dict]:
    """Validate every candidate (the Keras reference computed once, then reused from disk)."""
    artifacts = [Path(r["out_dir"]) / r["file"] for r in records]
    first = not (saved / "reference.json").exists()
    quiet = dataclasses.replace(options, report=str(folder / "validation.json"), layers=False, keep_inputs=0,
                                save_results=str(saved) if first else None,
                                reference=None if first else str(saved / "reference"))
    summary = validate(source, artifacts, quiet, say=lambda m: None)
    if "synthetic" in summary["evidence"]:
        raise UsageError("--keep-float auto needs held-out data to judge candidates by",
                         hint="export a training run, or give the .keras file a model card naming [data] heldout")
    rows = []
    for layers, report in zip(sets, summary["artifacts"], strict=False):
        rows.append({"layers": layers, "passed": bool(report.get("passed")), "sqnr_db": _worst_sqnr(report),
                     "agreement": _first(report, "agreement"), "step_scales": step_scales(report),
                     "failures": [f for o in report.get("outputs", []) for f in o.get("failures", [])]
                     or [report.get("error", "passes")]})
    return rows


def _no_better(row: dict, baseline: dict) -> dict:
    """A candidate that passes but is not better than plain int8 on the measure that ranks them is refused:
    its pass would come from a gate that did not apply, not from what it fixed."""
    reason = not_better(row, baseline) if row["passed"] else None
    return row | {"passed": False, "failures": [reason]} if reason else row


def not_better(rescue: dict, replaced: dict, against_labels: bool = False) -> str | None:
    """Why a rescue that passes its gates is still no better than the int8 file it replaces, or None.

    Both are rows with ``sqnr_db``, ``agreement`` and ``candidate_accuracy``. A rescue judged against the
    same reference (calibration, keep-float, int16x8) must raise the SQNR, or where there is none the
    agreement; one with a reference of its own (QAT's fine-tuned model: ``against_labels``) must raise
    the accuracy on the held-out labels, the only measure the two share."""
    if against_labels:
        mine, theirs = rescue.get("candidate_accuracy"), replaced.get("candidate_accuracy")
        if mine is None or theirs is None:
            return "no labelled held-out data shows it beats the post-training int8 (accuracy unmeasured)"
        return None if mine > theirs else (f"held-out accuracy {mine:.2%} is no better than the post-training "
                                           f"int8's {theirs:.2%}")
    for key, label, shown in (("sqnr_db", "SQNR", "{:.1f} dB"), ("agreement", "agreement", "{:.2%}")):
        mine, theirs = rescue.get(key), replaced.get(key)
        if mine is not None and theirs is not None and np.isfinite([mine, theirs]).all():
            if mine > theirs:
                return None
            return f"{label} {shown.format(mine)} is no better than plain int8's {shown.format(theirs)}"
    return None


def _worst_sqnr(report: dict) -> float:
    values = [o["metrics"].get("sqnr_db") for o in report.get("outputs", []) if o.get("metrics")]
    values = [v for v in values if v is not None]
    return min(values) if values else float("-inf")


def _first(report: dict, key: str):
    outputs = report.get("outputs") or [{}]
    return (outputs[0].get("metrics") or {}).get(key)


def export_with_search(source: str | Path, targets: list, out: str | Path | None, export_options,
                       validate_options: ValidateOptions, say=print) -> list[dict]:
    """Export ``targets``; each mixed one (``--keep-float auto``) first gets its layers by the search above,
    which is recorded in its sidecar. When plain int8 already passes, no mixed file is written (the search
    did not choose one). Each searched artifact is validated again, as written, before it is kept."""
    from ..export import Target, export
    from ..export.source import resolve_source

    work = Path(out or resolve_source(source, export_options).default_out)
    resolved, searched = [], {}
    for target in targets:
        if target.precision != "mixed" or target.keep_float:
            resolved.append(target)
            continue
        found = keep_float_search(source, target.format, export_options, validate_options, work, say=say)
        if not found["layers"]:
            say(f"keep-float ({target.format}): nothing written; use the plain int8 {target.format} artifact "
                f"(`edgedl export --format {target.format} --quantize int8`), which passes the gates")
            continue
        say(f"keep-float ({target.format}): {', '.join(found['layers'])}")
        resolved.append(Target(target.format, "mixed", keep_float=tuple(found["layers"]),
                               facts={"keep_float_search": found}))
        searched[target.format] = found["baseline"].get("step_scales") or {}
    records = export(source, resolved, out=out, options=export_options, progress=say) if resolved else []
    for record in records:
        if record.get("precision") == "mixed" and record.get("format") in searched:
            _confirm(source, record, dataclasses.replace(validate_options, step_scales=searched[record["format"]]),
                     say)
    return records


def _confirm(source, record: dict, options: ValidateOptions, say) -> None:
    """The written mixed artifact, judged on the held-out data by the full gates; removed when it fails."""
    from ..core.layout import sidecar_path

    artifact = Path(record["out_dir"]) / record["file"]
    with staging_dir(artifact.parent, "keep-float-confirm") as folder:
        quiet = dataclasses.replace(options, report=str(folder / "validation.json"), layers=False, keep_inputs=0)
        report = validate(source, [artifact], quiet, say=lambda m: None)["artifacts"][0]
    if not report.get("passed"):
        failures = [f for o in report.get("outputs", []) for f in o.get("failures", [])] or [report.get("error")]
        artifact.unlink(missing_ok=True)
        sidecar_path(artifact).unlink(missing_ok=True)
        raise ParityFailure(f"{artifact.name} as written fails its gates on the held-out data ({failures[0]}); "
                            "removed", hint="try --quantize int16x8 or quantization-aware training")
    say(f"✓ {artifact.name} passes the gates on the held-out data, as written (SQNR {_worst_sqnr(report):.1f} dB)")
