"""``edgedl bundle``: the folder an Android or Raspberry Pi app embeds, proven before it is written.

The artifact is validated first (a bundle is only built from a faithful export). The bundle
carries the model, labels, a manifest with everything an app must do to feed it (preprocessing,
quantization, state reset), golden vectors for a self-test, the parity report, a standalone
``run.py`` for the Pi, an Android asset layout, and a C array for TFLite Micro.
"""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import numpy as np

from ..core.env import library_versions
from ..core.errors import ArtifactError, EdgedlError, ParityFailure, UsageError
from ..core.files import (
    copy_file,
    read_json,
    replace_dir,
    sha256_file,
    staging_dir,
    sweep_leftovers,
    write_json,
    write_npz,
    write_text,
)
from ..core.layout import resolve_from, sidecar_path
from ..core.outputs import check_output, foreign_files, seal
from ..subject import Declared, Subject
from .bundle_files.run import contract_sha256

TARGETS = ("rpi", "android", "mcu")
SIDECAR_KEYS = {"precision": str, "inputs": list, "outputs": list, "sha256": str}
GOLDEN_COUNT = 8
# How far the self-test lets a device's outputs stray from ours: ARM and x86 kernels round
# float sums in other orders; int8 kernels are expected to match bit for bit.
GOLDEN_ATOL = {"fp32": 1e-5, "fp16": 1e-3, "dynamic": 5e-3, "int8": 0.0, "int16x8": 5e-3, "mixed": 5e-3}


def bundle(artifact: str | Path, out: str | Path, labels: str | Path | None = None,
           targets: list[str] | None = None, say=print, tolerances: dict | None = None,
           declared: dict | None = None) -> dict:
    """Validate ``artifact`` (``tolerances`` override the defaults, as validate's flags do), then
    write the bundle folder ``out`` whole, or not at all. ``declared`` (data, card, task, labels,
    input_scale, input_offset) stands in for a training run when the model was trained elsewhere."""
    artifact = Path(artifact)
    explicit = bool(targets) and "all" not in targets
    targets, board = _targets(targets)
    explicit = explicit or board is not None  # a named board asks for the microcontroller build
    facts, origin = _sources(artifact, Declared.of(None, **dict(declared or {}, labels=labels)))
    if "mcu" in targets and facts.get("precision") != "int8" and not explicit:
        targets.remove("mcu")  # "all": TFLite Micro runs full-integer models only; say so, don't fail
        say(f"note: no mcu/ C array: TFLite Micro needs a full-integer int8 model, {artifact.name} is "
            f"{facts.get('precision')}")
    out = _check_out(Path(out), artifact, origin)
    say(f"validating {artifact.name} against {origin.run_dir or origin.model_path} …")
    from ..validate.run import ValidateOptions, failure_message, validate

    sweep_leftovers(out.parent)  # staging folders of dead writers; an old bundle moved aside goes back
    with exclusive(out), staging_dir(out.parent, out.name) as staging:
        limits, named = _split_tolerances(tolerances or {})
        options = ValidateOptions(report=str(staging / "parity.json"), keep_inputs=GOLDEN_COUNT, overrides=limits,
                                  **named)
        parity = validate(origin, [artifact], options, say=lambda m: say("  " + m))
        refused = failure_message(parity)
        if refused:
            raise ParityFailure(f"bundle refused: {refused}")
        manifest = _build(staging, artifact, facts, origin, targets, parity, board, say, mcu_required=explicit)
        seal(staging, "bundle")
        replace_dir(staging, out)
    say(f"bundle written to {out}")
    return manifest


def _split_tolerances(tolerances: dict) -> tuple[dict, dict]:
    """Named options of validate (min_agreement, max_accuracy_drop, atol) and the other limits."""
    from ..validate.run import NAMED_LIMITS

    named = {k: v for k, v in tolerances.items() if k in NAMED_LIMITS}
    return {k: v for k, v in tolerances.items() if k not in named}, named


@contextlib.contextmanager
def exclusive(out: Path):
    """One bundle writer per output folder at a time: a second one fails at once, never both succeed."""
    import fcntl

    handle = os.open(out.parent, os.O_RDONLY)  # the parent folder itself: no lock file is left behind
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise EdgedlError(f"another edgedl process is writing a bundle into {out.parent}",
                              hint="wait for it to finish, then run again") from exc
        yield
    finally:
        os.close(handle)


def _declared(origin: Subject) -> dict:
    """What the user declared for the model (flags, and the card found or given), as the manifest records it."""
    found = {k: str(v) for k, v in origin.declared.present().items() if k != "labels"}
    return found | ({"card": str(origin.card.path)} if origin.card.path else {})


def _check_out(out: Path, artifact: Path, origin: Subject) -> Path:
    """The bundle folder may be new, empty, or an earlier bundle holding only what edgedl wrote."""
    check_output(out, "bundle", protect=tuple(p for p in (origin.run_dir, artifact.parent, origin.model_path.parent) if p))
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


def _targets(targets) -> tuple[list[str], str | None]:
    """Deployment kinds (rpi, android, mcu), and at most one board name, which implies mcu."""
    from .boards import BOARDS

    chosen = list(targets or ["all"])
    if "all" in chosen:  # every kind, and still the board named beside it ("all,nano33ble")
        chosen = list(TARGETS) + [t for t in chosen if t != "all" and t not in TARGETS]
    boards = [t for t in chosen if t.lower() in BOARDS]
    unknown = [t for t in chosen if t not in TARGETS and t.lower() not in BOARDS]
    if unknown:
        raise UsageError(f"unknown target {unknown[0]!r}; choose from {', '.join(TARGETS)}, all, or a board: "
                         f"{', '.join(sorted(BOARDS))}")
    if len(boards) > 1:
        raise UsageError(f"one board at a time, got {', '.join(boards)}")
    kinds = [t for t in chosen if t in TARGETS]
    if boards and "mcu" not in kinds:
        kinds.append("mcu")
    return kinds or ["mcu"], boards[0].lower() if boards else None


def _sources(artifact: Path, declared: Declared) -> tuple[dict, Subject]:
    """The artifact's sidecar and the Subject of the model it was exported from."""
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
    model = resolve_from(recorded, artifact.parent)
    if not model.exists():
        raise ArtifactError(f"{artifact.name} was exported from {model}, which is gone; the bundle validates "
                            "against the original model", hint="export again from the model you have")
    subject = Subject.resolve(model, declared)
    if subject.heldout[0] is None:
        raise UsageError(f"{artifact.name} was exported from {model.name}, not from an edgedl training run: the "
                         "bundle needs held-out data to validate it and make golden vectors",
                         hint=f"pass --data heldout.npz (and --labels, --task, --input-scale as needed), or a "
                              f"model card --card (or {model.stem}.card.toml beside the model)")
    return facts, subject


def _build(staging: Path, artifact: Path, facts: dict, origin: Subject, targets: list[str], parity: dict,
           board: str | None, say, mcu_required: bool = True) -> dict:
    copy_file(artifact, staging / artifact.name)
    labels = _labels(parity, origin)
    write_text(staging / "labels.txt", "\n".join(labels) + "\n")
    golden = _golden(staging, artifact, parity, facts["precision"])
    manifest = _manifest(artifact, facts, origin, labels, golden, parity, targets)
    _raw_golden(staging / golden["file"], manifest)
    manifest["contract_sha256"] = contract_sha256(manifest)  # run.py --self-test recomputes it
    write_json(staging / "manifest.json", manifest)
    if "rpi" in targets:
        for name in ("run.py", "requirements.txt"):
            write_text(staging / name, resources.files("edgedl.deploy.bundle_files").joinpath(name).read_text())
    if "android" in targets:
        assets = staging / "android" / "app" / "src" / "main" / "assets"
        copy_file(artifact, assets / artifact.name)
        write_text(assets / "labels.txt", "\n".join(labels) + "\n")
    if "mcu" in targets:
        try:
            manifest["mcu"] = _mcu(staging, artifact, facts, board, say)
        except EdgedlError as exc:
            if mcu_required:  # asked for by name (mcu, or a board): a failure refuses the bundle
                raise
            # "all": a model TFLite Micro cannot run still makes a phone and Pi bundle; say why, record it
            say(f"note: no mcu/ folder: {exc.one_line()}")
            manifest["mcu"] = {"skipped": exc.one_line()}
            targets.remove("mcu")
            manifest["targets"] = targets
        write_json(staging / "manifest.json", manifest)
    from .readme import readme

    write_text(staging / "README.md", readme(manifest, targets))
    return manifest


def _raw_golden(path: Path, manifest: dict) -> None:
    """The first golden sample of each scaled input, back in raw units: run.py prepares it with the manifest's
    preprocessing and must get the golden input again (a changed scale or offset fails the self-test)."""
    pre = manifest["preprocessing"]
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    for i, spec in enumerate(manifest["inputs"]):
        if spec["name"] in pre.get("applies_to", []) and pre["scale"]:
            x = np.asarray(arrays[f"input_{i}"][:1], np.float64)
            arrays[f"raw_input_{i}"] = ((x - pre["offset"]) / pre["scale"]).astype(np.float64)
    write_npz(path, **arrays)


def _labels(parity: dict, origin: Subject) -> list[str]:
    """Class names of the first classification output (validate already read a card or --labels)."""
    names = list(parity.get("labels") or origin.labels or [])
    outputs = parity.get("outputs", [])
    origin.check_outputs([(o["name"], o["kind"], o.get("classes")) for o in outputs])
    return names if any(o["kind"] == "classification" for o in outputs) else []


def _golden(staging: Path, artifact: Path, parity: dict, precision: str) -> dict:
    """The first validated samples and the artifact's outputs on them: the device's self-test."""
    from ..runners.open import open_runner

    inputs = parity["kept_inputs"]
    with open_runner(artifact) as runner:  # the user's file: run bounded, in a child process
        feed = [inputs[spec.name] for spec in runner.inputs] if {s.name for s in runner.inputs} == set(inputs) \
            else list(inputs.values())
        raw = runner.run(runner.prepare(feed))
        expected = runner.dequantize(raw)  # the same run, dequantized
        specs_in, specs_out = runner.inputs, runner.outputs
    arrays = {f"input_{i}": x for i, x in enumerate(feed)}
    arrays |= {f"raw_{j}": y for j, y in enumerate(raw)} | {f"expected_{j}": y for j, y in enumerate(expected)}
    for j, spec in enumerate(specs_out):
        if spec.name in parity.get("kept_labels", {}):
            arrays[f"labels_{j}"] = parity["kept_labels"][spec.name]
    write_npz(staging / "golden.npz", **arrays)
    # int8: ai-edge-litert must match bit for bit (x86 and aarch64 alike). tflite-runtime 2.14 is an
    # older kernel set: on x86 too it differs from these outputs by 1 step (CNN) and up to 2 steps
    # (fused int8 LSTM), so it gets 3. `edgedl device-check` still holds each runtime to its own x86
    # outputs bit for bit.
    steps = {"ai-edge-litert": 0, "tflite-runtime": 3, "tf.lite": 0} if raw[0].dtype.kind in "iu" else None
    return {"file": "golden.npz", "count": int(len(feed[0])), "tolerance_steps": steps,
            "atol": GOLDEN_ATOL.get(precision, 1e-5), "inputs": [s.name for s in specs_in],
            "outputs": [s.name for s in specs_out]}


def describe_input(spec: dict, kind: str | None, sample_shape: list | None = None, pixels: bool = False) -> dict:
    """What one sample of an input is, in words an app developer can use: read from the input's own
    shape and dtype, and from the data it was trained on (an image fed to an MLP is flattened). Only
    data that came as pixels (uint8) is called an image; other H×W×C inputs (MFCCs, spectrograms) are
    described by their shape."""
    shape = list(spec["shape"][1:])
    dtype = spec["dtype"]
    if kind is None:
        kind = ("tokens" if dtype.startswith(("int", "uint")) and not spec.get("quantization") else
                "image" if len(shape) == 3 else "sequence" if len(shape) == 2 else "vector")
    values = int(np.prod(shape or [1]))
    image = list(sample_shape or shape)
    if kind == "tokens":
        words = f"{shape[0] if shape else 1} integer token ids ({dtype})"
    elif kind == "image" and len(image) == 3:
        picture = (f"a {image[0]}×{image[1]} image with {image[2]} channel(s)" if pixels else
                   f"{image[0]}×{image[1]}×{image[2]} features")
        words = (f"{picture}, height × width × channels (NHWC)" if len(shape) == 3 else
                 f"{picture}, read as {shape[0]} timesteps (rows) × {shape[1]} features" if len(shape) == 2 else
                 f"{picture}, flattened to {values} values")
    elif kind == "sequence" and len(shape) == 2:
        words = f"a sequence of {shape[0]} timesteps × {shape[1]} features"
    else:
        words = f"a vector of {values} values"
    return {"kind": kind, "description": words}


def _manifest(artifact: Path, facts: dict, origin: Subject, labels, golden, parity: dict, targets) -> dict:
    run = origin.manifest
    dataset = run.get("dataset") or {}
    preprocessing = dict(parity.get("preprocessing") or dataset.get("preprocessing") or
                         {"scale": 1.0, "offset": 0.0, "reason": "none declared: inputs are fed as given"})
    preprocessing.pop("input_range", None)
    sample_kind = dataset.get("sample_kind") or ("image" if len(dataset.get("sample_shape") or []) == 3 else None)
    single = len(facts["inputs"]) == 1
    inputs = [dict(spec, **describe_input(spec, sample_kind if single else None,
                                          dataset.get("sample_shape") if single else None,
                                          pixels=(dataset.get("dtype") or parity.get("data_dtype")) == "uint8"))
              for spec in facts["inputs"]]
    floats = [spec["name"] for spec in inputs if spec["kind"] != "tokens"]
    sample_shape = dataset.get("sample_shape") or facts["inputs"][0]["shape"][1:]
    if inputs[0]["kind"] == "image" and len(sample_shape) == 3:
        preprocessing.update(image_size=sample_shape[:2], channels=sample_shape[2])
    reshaped = list(sample_shape) != list(facts["inputs"][0]["shape"][1:])
    preprocessing["applies_to"] = floats
    preprocessing["description"] = (
        f"model input = raw value × {preprocessing['scale']:.6g} + {preprocessing['offset']:g} for "
        f"{', '.join(floats) or 'no input'} ({preprocessing['reason']})"
        + (f"; samples of shape {sample_shape} are reshaped to {facts['inputs'][0]['shape'][1:]}" if reshaped else ""))
    kinds = {o["name"]: o["kind"] for o in parity.get("outputs", [])}
    outputs = [dict(spec, kind=kinds.get(spec["name"], "regression" if not labels else "classification"))
               for spec in facts["outputs"]]
    stateful = bool(facts.get("stateful"))
    row = next((a for a in parity["artifacts"] if a["artifact"] == artifact.name), {})
    return {
        "edgedl": "bundle/2",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {"file": artifact.name, "sha256": sha256_file(artifact), "size": artifact.stat().st_size,
                  "format": "tflite", "precision": facts["precision"], "architecture": run.get("architecture"),
                  "source": origin.model_path.name, "trained_by_edgedl": origin.run_dir is not None},
        "task": run.get("task") or ("classification" if labels else "regression"),
        "inputs": inputs,
        "outputs": outputs,
        "preprocessing": preprocessing,
        "labels": labels,
        "sequence_output": run.get("sequence_output", len(outputs[0]["shape"]) == 3),
        "runtime": {
            "reset_variables_before_invoke": stateful,
            "why": ("the fused LSTM op keeps h/c in variable tensors between invokes; call "
                    "interpreter.reset_all_variables() (Android: interpreter.resetVariableTensors()) before "
                    "every inference") if stateful else "stateless: no reset needed",
            "interpreters": ["ai-edge-litert", "tflite-runtime (numpy<2; no dynamic-range models from TF>=2.21)",
                             "tf.lite (TF 2.21's miscomputes int8 BATCH_MATMUL under XNNPACK: avoid for attention)"],
            "quantized_io": any(spec.get("quantization") for spec in facts["inputs"]),
        },
        "golden": golden,
        "parity": {"passed": parity["passed"], "evidence": parity["evidence"], "samples": parity["samples"],
                   "outputs": {c["name"]: c["metrics"] for c in row.get("outputs") or []}, "report": "parity.json",
                   "metrics": (row.get("outputs") or [{}])[0].get("metrics", {})},
        "declared": _declared(origin) or None,
        "validated_with": library_versions(),
        "targets": targets,
        "keras_metrics": run.get("metrics") or {"reference_accuracy": parity.get("reference_accuracy")},
    }


def _mcu(staging: Path, artifact: Path, facts: dict, board: str | None, say) -> dict:
    """Check the int8 model under TFLite Micro and write the firmware folder (see mcu_project.py)."""
    from . import mcu_project
    from .mcu import MCU_TOLERANCE, failure, mcu_check, render

    if facts["precision"] != "int8":
        raise UsageError(f"TFLite Micro needs a full-integer int8 model; {artifact.name} is {facts['precision']}",
                         hint="bundle the int8 export, or pass --target rpi,android")
    report = mcu_check(staging, target=board, say=lambda m: say("  " + m))
    for line in render(report):
        say("  " + line)
    if report.get("error"):
        raise ArtifactError(f"{artifact.name} cannot run on a microcontroller: {report['error']}")
    if not report["passed"]:
        raise ParityFailure(f"{artifact.name} {failure(report)}")
    folder = staging / "mcu"
    source, header = mcu_project.c_array(artifact.read_bytes())
    write_text(folder / "model_data.cc", source)
    write_text(folder / "model_data.h", header)
    with np.load(staging / "golden.npz") as golden:
        manifest = read_json(staging / "manifest.json", "bundle manifest")
        inputs = [golden[f"input_{i}"] for i in range(len(manifest["inputs"]))]
        expected = [golden[f"raw_{j}"] for j in range(len(manifest["outputs"]))]
    # main.cc indexes tensors as TFLite Micro does (graph order), not in the manifest's signature order
    ins, outs = report["tflm_order"]["inputs"], report["tflm_order"]["outputs"]
    inputs, expected = [inputs[i] for i in ins], [expected[j] for j in outs]
    quantization = [manifest["inputs"][i].get("quantization") for i in ins]
    gold_source, gold_header = mcu_project.golden_data(inputs, expected, quantization,
                                                       [manifest["inputs"][i].get("dtype") for i in ins])
    write_text(folder / "golden_data.cc", gold_source)
    write_text(folder / "golden_data.h", gold_header)
    write_text(folder / "main.cc", mcu_project.main_cc(report["resolver"], report["arena"]["with_margin"],
                                                       len(inputs), len(expected),
                                                       manifest["runtime"]["reset_variables_before_invoke"],
                                                       MCU_TOLERANCE["max_steps"]))
    write_text(folder / "README.md", mcu_project.readme(artifact.name, report))
    write_text(folder / "CMakeLists.txt", mcu_project.CMAKE)
    write_text(folder / "platformio.ini", mcu_project.PLATFORMIO)
    return {key: report[key] for key in ("parity", "arena", "ram", "flash", "resolver", "ops", "boards")} | \
        ({"target": report["target"]} if board else {})
