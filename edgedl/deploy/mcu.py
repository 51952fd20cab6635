"""``edgedl mcu-check``: run an int8 model in TFLite Micro's own interpreter, measure its arena, estimate
its flash and RAM, and fit it to microcontroller boards.

The interpreter is TFLite Micro's (the ``tflite-micro`` package: its reference kernels, on x86), run in
a child process that imports only numpy and tflite_micro (``mcu_child.py``). Its outputs are compared
with LiteRT's on the same inputs (the bundle's golden vectors, or held-out samples), resetting state
before every inference.

- **Arena**: the smallest that works, in 16-byte steps (probed in forked children: a too-small arena
  segfaults), plus a stated margin. The x86-64 figure is an upper bound for a 32-bit MCU, whose
  pointers and structs are smaller (0.7–1 KB less on the seed models, measured 2026-11-27).
- **Flash** = the model's bytes + TFLM's framework + the code of each kernel the model uses
  (tflm_kernels.py: measured per op, Cortex-M4F, -Os; an upper bound).
- **RAM** = the arena (with margin) + the app's input and output buffers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from ..core import metrics
from ..core.env import child_preexec, time_limit_s
from ..core.errors import ArtifactError, UsageError
from ..core.files import read_json, temp_dir, verify_sha256
from ..core.layout import MANIFEST, VALIDATION_REPORT, read_sidecar, resolve_from
from ..runners.base import TensorInfo
from ..runners.tflm_kernels import FRAMEWORK_FLASH, KERNELS, alternatives
from .boards import BOARDS, board, fit

# The arena edgedl records is the measured minimum plus this margin: 5 %, at least 256 bytes, in
# 16-byte steps. It covers the alignment slack of another build and a different allocator layout.
ARENA_MARGIN = 0.05
MIN_MARGIN = 256
# TFLM against LiteRT (XNNPACK) on held-out digits, state reset each time (2026-11-27): the seed CNN,
# MLP and LSTM differ by at most 8 int8 steps, with the same top-1 on 99.9–100 % of samples. Both
# limits below are what the check holds every model to; validate's tolerances override them per model.
MCU_TOLERANCE = {"max_steps": 8, "min_agreement": 0.99}


def with_margin(arena: int) -> int:
    return -(-max(int(arena * (1 + ARENA_MARGIN)), arena + MIN_MARGIN) // 16) * 16


def unsupported_ops(ops: list[dict]) -> list[dict]:
    """Ops TFLite Micro has no kernel for (with the tensor they make, which names the layer)."""
    return [op for op in ops if op["op"] not in KERNELS]


def flash_estimate(model_bytes: int, op_names: set[str]) -> dict:
    kernels = {name: KERNELS[name][1] for name in sorted(op_names) if name in KERNELS}
    return {"model": model_bytes, "framework": FRAMEWORK_FLASH, "kernels": kernels,
            "total": model_bytes + FRAMEWORK_FLASH + sum(kernels.values()),
            "basis": "upper bound: Cortex-M4F reference kernels at -Os (docs/DEPLOY.md, Microcontrollers)"}


def resolver_methods(op_names: set[str]) -> list[str]:
    """The MicroMutableOpResolver calls that register exactly the model's ops, in a stable order."""
    return sorted(KERNELS[name][0] for name in op_names if name in KERNELS)


# ---------------------------------------------------------------- the check

def mcu_check(source: str | Path, target: str | None = None, data: str | None = None, samples: int = 100,
              say=print) -> dict:
    """Check ``source`` (an int8 .tflite, or a bundle folder) under TFLite Micro; return the report."""
    if target:
        board(target)  # an unknown name is a usage error naming the boards, before any run
    model, inputs, expected, stateful, tensors = _resolve(Path(source), data, samples)
    say(f"running {model.name} in TFLite Micro's interpreter (reference kernels) on {len(inputs[0])} sample(s) …")
    with temp_dir("mcu") as tmp:
        child = _child(model, inputs, stateful, tensors, Path(tmp))
        missing = unsupported_ops(child["ops"])
        report = {"model": model.name, "size": model.stat().st_size, "ops": sorted({o["op"] for o in child["ops"]}),
                  "unsupported": missing}
        if missing:
            report.update(passed=False, error=_unsupported_message(missing))
            return report
        if "error" in child:
            report.update(passed=False, error=f"TFLite Micro could not run it: {child['error']}")
            return report
        with np.load(Path(tmp) / "outputs.npz") as archive:
            micro = [archive[f"raw_{j}"] for j in range(len(archive.files))]
    report |= _parity(micro, expected, tensors.get("output_kinds")) | _resources(child, model, inputs, micro)
    if not report["parity"]["passed"]:  # which side moved: TFLite Micro, or LiteRT's own kernels too
        report["kernels"] = kernel_comparison(model, inputs, micro, expected)
    report["seconds_per_inference"] = child["seconds_per_inference"]
    # for each TFLite Micro input/output index, the index of edgedl's array (golden files follow it)
    report["tflm_order"] = child["tflm_order"]
    report["boards"] = {key: fit(report["ram"]["total"], report["flash"]["total"], b) for key, b in BOARDS.items()}
    report["validate"] = validate_verdict(Path(source))
    report["passed"] = report["parity"]["passed"] and report["validate"]["passed"] is not False
    if target:
        report["target"] = report["boards"][target.lower()] | {"key": target.lower()}
        report["passed"] = report["passed"] and report["target"]["fits"]
    if not report["passed"]:  # a failed verdict always says which limit it hit, with the numbers
        report["failed_because"] = failure(report)
    return report


def validate_verdict(source: Path) -> dict:
    """What `edgedl validate` said of this int8 file against the Keras model, which mcu-check does not judge
    (it compares TFLite Micro with LiteRT): a file validate refused never passes here either."""
    if source.is_dir():
        parity = read_json(source / MANIFEST, "bundle manifest").get("parity") or {}
        return {"passed": parity.get("passed"), "source": "the bundle's validation"}
    report = source.parent / VALIDATION_REPORT
    rows = read_json(report, "validation report").get("artifacts", []) if report.is_file() else []
    row = next((r for r in rows if r.get("artifact") == source.name), None)
    if row is None:
        return {"passed": None, "source": "not validated: mcu-check compares TFLite Micro with LiteRT only; "
                                          f"`edgedl validate` compares {source.name} with the Keras model"}
    failures = [f for o in row.get("outputs", []) for f in o.get("failures", [])]
    return {"passed": bool(row.get("passed")), "source": str(report), "failures": failures[:3]}


def failure(report: dict) -> str:
    """Why the check failed, in one line with the numbers (for the CLI and the bundle)."""
    if report.get("error"):
        return report["error"]
    if report.get("validate", {}).get("passed") is False:
        why = "; ".join(report["validate"].get("failures") or []) or "see its report"
        return f"`edgedl validate` refused this int8 file against the Keras model ({why}): TFLite Micro " \
               "would run an unfaithful model"
    target = report.get("target")
    if target and not target["fits"]:
        short = [f"{what} needs {need / 1024:,.1f} KB of {usable / 1024:,.1f} KB usable (short by "
                 f"{-left / 1024:,.1f} KB)" for what, need, usable, left in
                 (("RAM", report["ram"]["total"], target["usable_ram"], target["ram_headroom"]),
                  ("flash", report["flash"]["total"], target["usable_flash"], target["flash_headroom"])) if left < 0]
        return f"does not fit {target['board']}: {'; '.join(short)}"
    parity = report["parity"]
    why = f"; {report['kernels']['verdict']}" if report.get("kernels") else ""
    return (f"differs from LiteRT under TFLite Micro by up to {parity['max_steps']} int8 steps "
            f"(limit {parity['tolerance']['max_steps']}), top-1 agreement {parity['agreement']}{why}")


def _unsupported_message(missing: list[dict]) -> str:
    named = ", ".join(f"{o['op']} (tensor {o['tensor'] or '?'})" for o in missing[:4])
    return f"TFLite Micro has no kernel for {named}; {alternatives(o['op'] for o in missing)}"


def _resolve(source: Path, data: str | None, samples: int):
    """(model file, float inputs per model input, LiteRT raw outputs on them, stateful) for a bundle or an artifact."""
    if source.is_dir():
        manifest = read_json(source / MANIFEST, "bundle manifest")
        model = source / Path(manifest["model"]["file"]).name
        _require_int8(model, manifest["model"].get("precision"))
        with np.load(source / manifest["golden"]["file"], allow_pickle=False) as archive:
            inputs = [archive[f"input_{i}"] for i in range(len(manifest["inputs"]))]
            expected = [archive[f"raw_{j}"] for j in range(len(manifest["outputs"]))]
        kinds = {"output_kinds": [spec.get("kind") for spec in manifest["outputs"]]}  # the bundle knows its tasks
        return model, inputs, expected, bool(manifest["runtime"]["reset_variables_before_invoke"]), \
            _tensor_names(manifest) | kinds
    if source.suffix != ".tflite" or not source.is_file():
        raise UsageError(f"{source}: mcu-check takes an int8 .tflite artifact or a bundle folder")
    facts = read_sidecar(source)  # {} for a file edgedl did not export: then --data gives the inputs
    verify_sha256(source, facts.get("sha256"), what="artifact")
    _require_int8(source, facts.get("precision"))
    from ..runners.open import open_runner

    with open_runner(source) as runner:  # LiteRT, bounded: the outputs TFLM must reproduce
        specs = [TensorInfo(t.name, t.shape, "float32" if t.quantized else t.dtype) for t in runner.inputs]
        inputs = _inputs_for(source, facts, specs, data, samples)
        expected = runner.run(runner.prepare(inputs))
        stateful = runner.stateful
        tensors = {"input_tensors": [t.tensor or t.name for t in runner.inputs],
                   "output_tensors": [t.tensor or t.name for t in runner.outputs]}
    return source, inputs, expected, stateful, tensors


def _tensor_names(facts: dict) -> dict:
    """The runtime tensor names of the inputs and outputs, in the order edgedl keeps their arrays."""
    return {f"{side[:-1]}_tensors": [spec.get("tensor", spec["name"]) for spec in facts.get(side, [])]
            for side in ("inputs", "outputs")}


def _require_int8(model: Path, precision: str | None) -> None:
    if precision not in (None, "int8"):
        raise UsageError(f"TFLite Micro runs full-integer int8 models; {model.name} is {precision}",
                         hint="export with --quantize int8 and check that artifact")


def _inputs_for(artifact: Path, facts: dict, specs: list, data: str | None, samples: int) -> list[np.ndarray]:
    """Model-ready samples: ``--data`` as given, else the held-out data of the model's Subject (its run's
    split, or the model card's, preprocessed by the subject's one decision)."""
    from .. import data as data_lib
    from ..subject import Subject

    if data:
        arrays, _ = data_lib.read_named(Path(data), [s.name for s in specs], [], samples, "mcu-check data")
    else:
        recorded = (facts.get("source_model") or {}).get("path")
        model = resolve_from(recorded, artifact.parent) if recorded else None
        subject = Subject.resolve(model) if model is not None and model.is_file() else None
        path, ready = subject.heldout if subject else (None, False)
        if path is None:
            raise UsageError(f"{artifact.name} has no training run or model card to take held-out samples from",
                             hint="pass --data inputs.npz (model-ready inputs: x, or one array per input name)")
        arrays, _ = subject.read(path, specs, [], samples, "held-out data")
        if not ready:
            arrays, _ = subject.to_model(arrays, specs, {}, "mcu-check")
    return [data_lib.fit_to_input(arrays[s.name], tuple(s.shape[1:]), "mcu-check", dtype=s.dtype) for s in specs]


def _child(model: Path, inputs: list[np.ndarray], stateful: bool, tensors: dict, tmp: Path) -> dict:
    np.savez(tmp / "inputs.npz", **{f"input_{i}": x for i, x in enumerate(inputs)})
    spec = {"model": str(model), "inputs": str(tmp / "inputs.npz"), "out": str(tmp / "outputs.npz"),
            "stateful": stateful, **tensors}
    (tmp / "spec.json").write_text(json.dumps(spec))
    try:
        done = subprocess.run([sys.executable, "-m", "edgedl.deploy.mcu_child", str(tmp / "spec.json")],
                              capture_output=True, text=True, timeout=time_limit_s() * 5, preexec_fn=child_preexec())
    except subprocess.TimeoutExpired as exc:
        raise ArtifactError(f"{model.name}: TFLite Micro did not finish within {time_limit_s() * 5:.0f} s") from exc
    if done.returncode != 0:
        raise ArtifactError(f"{model.name}: TFLite Micro's interpreter crashed (exit {done.returncode}): "
                            f"{done.stderr.strip()[-200:]}")
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{model.name}: the TFLite Micro check printed no result: {done.stderr[-200:]}") from exc


def _parity(micro: list[np.ndarray], expected: list[np.ndarray], kinds: list[str | None] | None = None) -> dict:
    """Raw int8 outputs, step for step, and the top-1 decisions of the first class output, against LiteRT's.

    ``kinds`` (a bundle's output tasks) keeps agreement away from regression outputs, where a top-1
    decision means nothing; without them, any output with more than one column is taken as classes."""
    steps = _steps(micro, expected)
    kinds = kinds or [None] * len(micro)
    classes = [j for j, (a, kind) in enumerate(zip(micro, kinds, strict=True)) if kind != "regression"
               and a.shape[-1] > 1]
    agreement = (metrics.agreement(expected[classes[0]].reshape(micro[classes[0]].shape), micro[classes[0]])
                 if classes else None)
    passed = steps <= MCU_TOLERANCE["max_steps"] and (agreement is None or agreement >= MCU_TOLERANCE["min_agreement"])
    return {"parity": {"max_steps": steps, "agreement": agreement, "samples": int(len(micro[0])),
                       "tolerance": MCU_TOLERANCE, "passed": passed, "against": "LiteRT (default kernels)"}}


def kernel_comparison(model: Path, inputs: list[np.ndarray], micro: list[np.ndarray],
                      xnnpack: list[np.ndarray]) -> dict:
    """TFLite Micro, LiteRT with XNNPACK and LiteRT's builtin kernels, pairwise in int8 steps, on the same
    inputs, and what the three together say. Two correct kernel sets of one runtime that disagree by more
    than the limit mean the model itself is fragile in int8: rounding alone moves its outputs."""
    from ..runners.open import open_runner

    with open_runner(model, xnnpack=False) as runner:  # the reference C kernels, no default delegate
        builtin = runner.run(runner.prepare(inputs))
    found = {"tflm_vs_xnnpack": _steps(micro, xnnpack), "tflm_vs_builtin": _steps(micro, builtin),
             "xnnpack_vs_builtin": _steps(xnnpack, builtin)}
    return found | {"verdict": kernel_verdict(found, MCU_TOLERANCE["max_steps"])}


def kernel_verdict(steps: dict, limit: int) -> str:
    """One sentence from the three pairwise step distances (``kernel_comparison``)."""
    numbers = (f"TFLite Micro vs LiteRT-XNNPACK {steps['tflm_vs_xnnpack']}, vs LiteRT-builtin "
               f"{steps['tflm_vs_builtin']}, LiteRT-XNNPACK vs LiteRT-builtin {steps['xnnpack_vs_builtin']} step(s)")
    if steps["xnnpack_vs_builtin"] > limit:
        return (f"the model is fragile in int8: LiteRT disagrees with itself by {steps['xnnpack_vs_builtin']} steps "
                f"between two correct kernel sets, so rounding alone moves its outputs ({numbers}); make the int8 "
                "model robust (validate's remedies) rather than blaming TFLite Micro")
    if steps["tflm_vs_builtin"] <= limit:
        return (f"TFLite Micro matches LiteRT's builtin kernels; it is XNNPACK's rounding that differs ({numbers})")
    return (f"TFLite Micro differs from both of LiteRT's kernel sets, which agree with each other ({numbers}): "
            "one of TFLite Micro's kernels computes this model differently")


def _steps(a: list[np.ndarray], b: list[np.ndarray]) -> int:
    """The largest difference between two runs' raw integer outputs, in steps."""
    return max(int(np.max(np.abs(x.astype(np.int64) - y.reshape(x.shape).astype(np.int64))))
               for x, y in zip(a, b, strict=True))


def _resources(child: dict, model: Path, inputs: list[np.ndarray], outputs: list[np.ndarray]) -> dict:
    arena = child["arena"]["bytes"]
    # the app's copies of one sample's inputs (int8: a byte per value) and of the outputs it reads back
    io_bytes = sum(x[0].size for x in inputs) + sum(y[0].size * y.dtype.itemsize for y in outputs)
    ops = {o["op"] for o in child["ops"]}
    flash = flash_estimate(model.stat().st_size, ops)
    recorded = with_margin(arena)
    return {"arena": {"minimum": arena, "with_margin": recorded, "margin": f"{ARENA_MARGIN:.0%}, at least "
                      f"{MIN_MARGIN} B", "method": child["arena"]["method"], "probes": child["arena"]["probes"],
                      "note": "measured on x86-64: a 32-bit MCU needs about 0.7–1 KB less"},
            "ram": {"arena": recorded, "io_buffers": io_bytes, "total": recorded + io_bytes},
            "flash": flash, "resolver": resolver_methods(ops)}


def render(report: dict) -> list[str]:
    """The lines `edgedl mcu-check` prints."""
    if report.get("error"):
        return [f"✗ {report['model']}: {report['error']}"]
    parity, ram, flash = report["parity"], report["ram"], report["flash"]
    agree = f", top-1 agreement {parity['agreement']:.2%}" if parity["agreement"] is not None else ""
    lines = [f"{'✓' if parity['passed'] else '✗'} TFLite Micro vs LiteRT on {parity['samples']} sample(s): "
             f"at most {parity['max_steps']} int8 step(s) apart (limit {parity['tolerance']['max_steps']}){agree}",
             f"  arena {report['arena']['minimum']:,} B measured ({report['arena']['method']}), "
             f"{report['arena']['with_margin']:,} B with margin; RAM {ram['total']:,} B with I/O buffers",
             f"  flash ≈ {flash['total'] / 1024:,.1f} KB: model {flash['model'] / 1024:,.1f} KB + framework "
             f"{flash['framework'] / 1024:.1f} KB + kernels {sum(flash['kernels'].values()) / 1024:.1f} KB (upper bound)",
             f"  ops: {', '.join(report['ops'])}; {report['seconds_per_inference'] * 1e6:,.0f} µs per inference "
             "on x86 (reference kernels, not device timing)"]
    if report.get("kernels"):
        lines.append(f"  three-way: {report['kernels']['verdict']}")
    judged = report.get("validate") or {}
    if judged.get("passed") is not None:
        lines.append(f"  {'✓' if judged['passed'] else '✗'} against the Keras model: "
                     f"{'passed' if judged['passed'] else 'refused'} by validate ({judged['source']})")
    elif judged:
        lines.append(f"  note: {judged['source']}")
    for key, verdict in report["boards"].items():
        mark = "✓" if verdict["fits"] else "✗"
        lines.append(f"  {mark} {key:<12} {verdict['board']}: RAM headroom {verdict['ram_headroom'] / 1024:+,.1f} KB, "
                     f"flash headroom {verdict['flash_headroom'] / 1024:+,.1f} KB")
    return lines
