"""``edgedl bundle``: the folder an Android or Raspberry Pi app embeds, proven before it is written.

The artifact is validated first (a bundle is only built from a faithful export). The bundle
carries the model, labels, a manifest with everything an app must do to feed it (preprocessing,
quantization, state reset), golden vectors for a self-test, the parity report, a standalone
``run.py`` for the Pi, an Android asset layout, and a C array for TFLite Micro.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import numpy as np

from .. import data as data_lib
from ..core.env import library_versions
from ..core.errors import ArtifactError, EdgedlError, ParityFailure, UsageError
from ..core.files import (
    STAGING_SUFFIX,
    copy_file,
    read_json,
    sha256_file,
    staging_dir,
    write_json,
    write_npz,
    write_text,
)
from ..core.layout import MANIFEST, load_run, resolve_from, sidecar_path
from ..core.outputs import check_output, foreign_files, seal

TARGETS = ("rpi", "android", "mcu")
SIDECAR_KEYS = {"precision": str, "inputs": list, "outputs": list, "sha256": str}
GOLDEN_COUNT = 8
# How far the self-test lets a device's outputs stray from ours: ARM and x86 kernels round
# float sums in other orders; int8 kernels are expected to match bit for bit.
GOLDEN_ATOL = {"fp32": 1e-5, "fp16": 1e-3, "dynamic": 5e-3, "int8": 0.0}


def bundle(artifact: str | Path, out: str | Path, labels: str | Path | None = None,
           targets: list[str] | None = None, say=print, tolerances: dict | None = None) -> dict:
    """Validate ``artifact`` (with ``tolerances`` overriding the defaults, as validate's flags do),
    then write the bundle folder ``out`` whole, or not at all."""
    artifact = Path(artifact)
    explicit = bool(targets) and "all" not in targets
    targets = _targets(targets)
    facts, run_dir, run = _sources(artifact)
    if "mcu" in targets and facts.get("precision") != "int8" and not explicit:
        targets.remove("mcu")  # "all": TFLite Micro runs full-integer models only; say so, don't fail
        say(f"note: no mcu/ C array: TFLite Micro needs a full-integer int8 model, {artifact.name} is "
            f"{facts.get('precision')}")
    label_names = _labels(labels, run)
    out = _check_out(Path(out), artifact, run_dir)
    say(f"validating {artifact.name} against {run_dir} …")
    from ..validate.run import ValidateOptions, failure_message, validate

    with staging_dir(out.parent, out.name) as staging:
        options = ValidateOptions(report=str(staging / "parity.json"), **(tolerances or {}))
        parity = validate(run_dir, [artifact], options, say=lambda m: say("  " + m))
        refused = failure_message(parity)
        if refused:
            raise ParityFailure(f"bundle refused: {refused}")
        manifest = _build(staging, artifact, facts, run_dir, run, label_names, targets, parity)
        seal(staging, "bundle")
        _replace_dir(staging, out)
    say(f"bundle written to {out}")
    return manifest


def _check_out(out: Path, artifact: Path, run_dir: Path) -> Path:
    """The bundle folder may be new, empty, or an earlier bundle holding only what edgedl wrote."""
    check_output(out, "bundle", protect=(run_dir, artifact.parent))
    if out.is_dir() and any(out.iterdir()):
        foreign = foreign_files(out)
        if foreign:
            raise UsageError(f"--out {out} is an earlier bundle, but holds files edgedl did not write "
                             f"({', '.join(foreign[:3])}{'…' if len(foreign) > 3 else ''}); they would be lost",
                             hint="move them out, or choose a new folder for the bundle")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgedlError(f"cannot write to output directory {out.parent}: {exc.strerror or exc}",
                          hint="choose a writable --out") from exc
    return out


def _targets(targets) -> list[str]:
    chosen = list(TARGETS) if not targets or "all" in targets else list(targets)
    unknown = [t for t in chosen if t not in TARGETS]
    if unknown:
        raise UsageError(f"unknown target {unknown[0]!r}; choose from {', '.join(TARGETS)} or all")
    return chosen


def _sources(artifact: Path) -> tuple[dict, Path, dict]:
    if artifact.suffix != ".tflite":
        raise UsageError(f"{artifact.name}: bundles are built from .tflite artifacts (what phones and Pis run)",
                         hint="export with --format tflite")
    if not artifact.exists():
        raise ArtifactError(f"artifact not found: {artifact}")
    sidecar = sidecar_path(artifact)
    if not sidecar.exists():
        raise ArtifactError(f"{artifact.name} has no manifest ({sidecar.name}); bundle needs an edgedl export",
                            hint="re-export it with `edgedl export`")
    facts = read_json(sidecar, "artifact manifest")
    recorded = (facts.get("source_model") or {}).get("path") if isinstance(facts, dict) else None
    if not isinstance(recorded, str) or not all(isinstance(facts.get(k), t) for k, t in SIDECAR_KEYS.items()):
        raise ArtifactError(f"{sidecar.name} is not an edgedl artifact manifest (it needs source_model.path and "
                            f"{', '.join(SIDECAR_KEYS)})", hint="re-export the model with `edgedl export`")
    run_dir = resolve_from(recorded, artifact.parent).parent
    if not (run_dir / MANIFEST).exists():
        raise ArtifactError(f"{artifact.name} was not exported from a training run (no {run_dir}/{MANIFEST}); "
                            "the bundle needs its preprocessing, labels and held-out data")
    return facts, run_dir, load_run(run_dir)


def _labels(path, run: dict) -> list[str]:
    names = list(run.get("class_names") or [])
    if path is None:
        return names
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text (byte {exc.start}); labels are one UTF-8 name per line") from exc
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if names and len(lines) != len(names):
        raise UsageError(f"{path} has {len(lines)} labels but the model has {len(names)} classes")
    return lines


def _build(staging: Path, artifact: Path, facts: dict, run_dir: Path, run: dict, labels: list[str],
           targets: list[str], parity: dict) -> dict:
    copy_file(artifact, staging / artifact.name)
    write_text(staging / "labels.txt", "\n".join(labels) + "\n")
    golden = _golden(staging, artifact, run_dir, run, facts["precision"])
    manifest = _manifest(artifact, facts, run, labels, golden, parity, targets)
    write_json(staging / "manifest.json", manifest)
    if "rpi" in targets:
        for name in ("run.py", "requirements.txt"):
            write_text(staging / name, resources.files("edgedl.deploy.bundle_files").joinpath(name).read_text())
    if "android" in targets:
        assets = staging / "android" / "app" / "src" / "main" / "assets"
        copy_file(artifact, assets / artifact.name)
        write_text(assets / "labels.txt", "\n".join(labels) + "\n")
    if "mcu" in targets:
        _mcu(staging, artifact, facts)
    from .readme import readme

    write_text(staging / "README.md", readme(manifest, targets))
    return manifest


def _golden(staging: Path, artifact: Path, run_dir: Path, run: dict, precision: str) -> dict:
    from ..runners import open_runner

    with np.load(run_dir / run["heldout"]["file"], allow_pickle=False) as archive:
        x, y = archive["x"][:GOLDEN_COUNT], archive["y"][:GOLDEN_COUNT]
    with open_runner(artifact) as runner:  # the user's file: run bounded, in a child process
        inputs = data_lib.fit_to_input(x, tuple(runner.inputs[0].shape[1:]), "golden")
        raw = runner.run(runner.prepare([inputs]))[0]
        expected = runner.dequantize([raw])[0]  # the same run, dequantized
    write_npz(staging / "golden.npz", inputs=inputs, expected_raw=raw, expected=expected, labels=y)
    # int8: ai-edge-litert must match bit for bit (x86 and aarch64 alike). tflite-runtime 2.14 is an
    # older kernel set: on x86 too it differs from these outputs by 1 step (CNN) and up to 2 steps
    # (fused int8 LSTM), so it gets 3. `edgedl device-check` still holds each runtime to its own x86
    # outputs bit for bit.
    steps = {"ai-edge-litert": 0, "tflite-runtime": 3, "tf.lite": 0} if raw.dtype.kind in "iu" else None
    return {"file": "golden.npz", "count": int(len(inputs)), "tolerance_steps": steps,
            "atol": GOLDEN_ATOL.get(precision, 1e-5)}


def _manifest(artifact: Path, facts: dict, run: dict, labels, golden, parity: dict, targets) -> dict:
    preprocessing = dict(run["dataset"]["preprocessing"])
    sample_shape = run["dataset"]["sample_shape"]
    if len(sample_shape) == 3:
        preprocessing.update(image_size=sample_shape[:2], channels=sample_shape[2])
    preprocessing["description"] = (
        f"model input = raw value × {preprocessing['scale']:.6g} + {preprocessing['offset']:g}, "
        f"samples of shape {sample_shape} reshaped to the model input {facts['inputs'][0]['shape'][1:]}"
        + (" (image rows as timesteps)" if len(facts["inputs"][0]["shape"]) == 3 else ""))
    stateful = bool(facts.get("stateful"))
    row = next((a for a in parity["artifacts"] if a["artifact"] == artifact.name), {})
    return {
        "edgedl": "bundle/1",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {"file": artifact.name, "sha256": sha256_file(artifact), "size": artifact.stat().st_size,
                  "format": "tflite", "precision": facts["precision"], "architecture": run.get("architecture")},
        "inputs": facts["inputs"],
        "outputs": facts["outputs"],
        "preprocessing": preprocessing,
        "labels": labels,
        "sequence_output": run.get("sequence_output", False),
        "runtime": {
            "reset_variables_before_invoke": stateful,
            "why": ("the fused LSTM op keeps h/c in variable tensors between invokes; call "
                    "interpreter.reset_all_variables() (Android: interpreter.resetVariableTensors()) before "
                    "every inference") if stateful else "stateless: no reset needed",
            "interpreters": ["ai-edge-litert", "tflite-runtime (numpy<2; no dynamic-range models from TF>=2.21)",
                             "tf.lite"],
            "quantized_io": bool(facts["inputs"][0].get("quantization")),
        },
        "golden": golden,
        "parity": {"passed": parity["passed"], "evidence": parity["evidence"], "samples": parity["samples"],
                   "metrics": (row.get("outputs") or [{}])[0].get("metrics", {}), "report": "parity.json"},
        "validated_with": library_versions(),
        "targets": targets,
        "test_accuracy_keras": run["metrics"]["test_accuracy"],
    }


def c_array(data: bytes, name: str = "g_model_data") -> tuple[str, str]:
    """(model_data.cc, model_data.h) text for TFLite Micro: a 16-byte aligned array plus its length."""
    rows = [", ".join(f"0x{b:02x}" for b in data[i : i + 12]) for i in range(0, len(data), 12)]
    body = ",\n  ".join(rows)
    header = (f"// Generated by edgedl. TFLite Micro model, {len(data)} bytes.\n#pragma once\n\n"
              f"extern const unsigned char {name}[];\nextern const unsigned int {name}_len;\n")
    source = (f'// Generated by edgedl. TFLite Micro model, {len(data)} bytes.\n#include "model_data.h"\n\n'
              f"// 16-byte alignment: TFLite Micro reads the flatbuffer in place.\n"
              f"alignas(16) const unsigned char {name}[] = {{\n  {body}\n}};\n"
              f"const unsigned int {name}_len = {len(data)};\n")
    return source, header


def parse_c_array(source: str) -> bytes:
    """The bytes inside a model_data.cc (for the round-trip test and for auditing a firmware tree)."""
    body = source[source.index("{") + 1 : source.index("};")]
    return bytes(int(token, 16) for token in body.replace("\n", " ").split(",") if token.strip())


def _mcu(staging: Path, artifact: Path, facts: dict) -> None:
    if facts["precision"] != "int8":
        raise UsageError(f"TFLite Micro needs a full-integer int8 model; {artifact.name} is {facts['precision']}",
                         hint="bundle the int8 export, or pass --target rpi,android")
    source, header = c_array(artifact.read_bytes())
    write_text(staging / "mcu" / "model_data.cc", source)
    write_text(staging / "mcu" / "model_data.h", header)


def _replace_dir(staging: Path, out: Path) -> None:
    """Swap the finished bundle into place; an old bundle at ``out`` is replaced whole, never mixed.

    The old one (checked to hold only edgedl's own files) is moved aside under a temporary name
    that a later run sweeps should this process die before removing it.
    """
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.{os.getpid()}-old{STAGING_SUFFIX}")
        os.rename(out, old)
    os.rename(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
