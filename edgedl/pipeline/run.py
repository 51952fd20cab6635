"""``edgedl pipeline``: train → export → validate → bench → bundle → report, incrementally.

Each step records the hash of everything it read (model, data, settings, library versions) in
``OUT/<recipe>/steps.json``; a step whose inputs hash the same, and whose outputs still exist,
is skipped. Gates turn the results into a pass/fail with a named reason, and JUnit XML.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..core.env import library_versions, machine_fingerprint
from ..core.errors import EdgedlError, UsageError
from ..core.files import read_json, sha256_file, write_json
from ..core.layout import EXPORTS, HISTORY_FILE, INDEX, MANIFEST, VALIDATION_REPORT, sidecar_path
from ..core.outputs import claim, inside, safe_name
from ..recipe import Recipe, check_gate_settings, load_recipe, train_config
from .cache import StepCache, digest_of, step_key
from .gates import judge_gates, recommend
from .rescue import artifacts as rescue_artifacts
from .rescue import failing_int8, ladder, rescue_rows, rescued

DEFAULT_OUT = Path("runs") / "pipeline"
DEFAULT_RECIPES = ("mlp", "cnn", "lstm")
STEPS = ("train", "export", "validate", "rescue", "bench", "mcu", "bundle", "devices")


@dataclass
class PipelineOptions:
    out: Path = DEFAULT_OUT
    force: bool = False
    epochs: int | None = None
    gates: dict = field(default_factory=dict)
    bench_min_time: float = 1.0
    layers: bool = True
    samples: int | None = None
    tolerances: dict = field(default_factory=dict)  # parity limits over the recipes' [tolerances]
    target: str | None = None  # a microcontroller board: int8 artifacts are checked under TFLite Micro for it
    rescue: bool = True  # climb the rescue ladder when an int8 artifact fails (the recipe's [rescue] rungs)
    backend: str | None = None  # the Keras backend that trains every recipe (else each recipe's own)
    unsafe: bool = False  # a bare `edgedl pipeline` may run ./models recipes that import code
    tflm: str | None = None  # a TFLite Micro tree for the --target firmware check (else $EDGEDL_TFLM_ROOT)


PROJECT_MODELS = Path(__file__).resolve().parents[2] / "models"  # edgedl's own seed recipes


def default_recipes() -> list[Path]:
    for root in (Path.cwd() / "models", PROJECT_MODELS):
        found = [root / f"{name}.toml" for name in DEFAULT_RECIPES if (root / f"{name}.toml").exists()]
        if found:
            return found
    raise UsageError("no recipes given and no models/ folder found", hint="pass RECIPE.toml files")


def _refuse_foreign_code(recipes: list[Recipe], named: bool, unsafe: bool) -> None:
    """A recipe whose architecture is Python code runs that code. A bare `edgedl pipeline` trusts only the
    project's own models/; recipes found in ./models elsewhere need --unsafe (or to be named explicitly)."""
    for recipe in recipes:
        code = recipe.architecture and ":" in recipe.architecture
        own = PROJECT_MODELS in Path(recipe.path).resolve().parents
        if code and not named and not own and not unsafe:
            raise UsageError(f"{recipe.path} was picked up from ./models and would import {recipe.architecture}",
                             hint="name the recipes you trust on the command line, or pass --unsafe")


def pipeline(recipes: list[str | Path] | None = None, options: PipelineOptions | None = None, say=print) -> dict:
    options = options or PipelineOptions()
    paths = [Path(r) for r in recipes] if recipes else default_recipes()
    loaded = _load_all(paths)  # every recipe, gate and name checked before any work starts
    _refuse_foreign_code(loaded, named=bool(recipes), unsafe=options.unsafe)
    check_gate_settings({k: v for k, v in options.gates.items() if v is not None}, "pipeline options")
    if options.target:
        from ..deploy.boards import board

        board(options.target)  # an unknown name is a usage error that lists the boards, before any work
        options.target = options.target.lower()
    claim(options.out, "pipeline")
    started = time.perf_counter()
    outcomes = []
    for number, recipe in enumerate(loaded, 1):
        what = f"{recipe.architecture} on {recipe.data}" if recipe.architecture else f"{recipe.keras.name}, adopted"
        say(f"\n== [{number}/{len(loaded)}] {recipe.name} ({what}) ==")
        outcomes.append(_run_recipe(recipe, options, say))
    summary = {
        "edgedl": "pipeline/1",
        "out": str(options.out),
        "seconds": round(time.perf_counter() - started, 1),
        "versions": library_versions(),
        "recipes": outcomes,
        "passed": all(o["passed"] for o in outcomes),
        "target": options.target,
    }
    from .report import write_junit, write_reports

    write_json(options.out / "pipeline.json", summary)
    write_junit(options.out / "junit.xml", summary)
    summary["report"] = str(write_reports(options.out, summary))
    return summary


def _load_all(paths: list[Path]) -> list[Recipe]:
    from ..export.plan import CALIBRATION_METHODS, parse_targets

    loaded = [load_recipe(p) for p in paths]
    folders: dict[str, Path] = {}
    for recipe in loaded:
        try:
            parse_targets(recipe.targets)  # a bad target is a usage error before any training
        except UsageError as exc:
            raise UsageError(f"recipe {recipe.path} [export] targets: {exc}") from exc
        if recipe.calibration_method not in CALIBRATION_METHODS:  # before any recipe starts training
            raise UsageError(f"recipe {recipe.path}: [export] calibration_method must be one of "
                             f"{', '.join(CALIBRATION_METHODS)}, got {recipe.calibration_method!r}")
        recipe.name = safe_name(recipe.name)  # a recipe name becomes a folder and artifact names
        if recipe.name in folders:
            raise UsageError(f"recipes {folders[recipe.name]} and {recipe.path} both name the model "
                             f"{recipe.name!r}; their outputs would overwrite each other",
                             hint="give each recipe its own [model] name")
        folders[recipe.name] = recipe.path
    return loaded


def _run_recipe(recipe: Recipe, options: PipelineOptions, say) -> dict:
    folder = claim(options.out / recipe.name, "recipe")
    inside(options.out, folder)
    cache = StepCache(folder, options.force)
    versions = library_versions()
    timings, errors = {}, []
    run_dir = folder / "run"
    export_dir = run_dir / EXPORTS
    limits = {**recipe.tolerances, **options.tolerances}  # parity limits for validate, the ladder and bundle

    if recipe.keras:  # a model trained elsewhere: adopted with its card instead of trained
        train_key = step_key("adopt", digest_of(recipe.keras), digest_of(recipe.card), versions, __version__)
        _step(cache, "adopt", train_key, timings, say, lambda: _adopt(recipe, run_dir, say), [str(run_dir / MANIFEST)])
    else:
        train_key = step_key("train", recipe.architecture, recipe.data, recipe.seed, recipe.train, options.epochs,
                             recipe.calibration_samples, recipe.task, versions, _arch_source(recipe.architecture),
                             options.backend, __version__)
        _step(cache, "train", train_key, timings, say, lambda: _train(recipe, options, run_dir, say),
              [str(run_dir / MANIFEST)])
    run = read_json(run_dir / MANIFEST, "training manifest")

    expected = _expected_artifacts(recipe)
    export_key = step_key("export", run["model"]["sha256"], recipe.targets, recipe.calibration_method,
                          (run.get("calibration") or {}).get("sha256"), versions)
    _step(cache, "export", export_key, timings, say, lambda: _export(recipe, run_dir, export_dir, say),
          [str(export_dir / INDEX)] + [str(export_dir / f) for name in expected for f in (name, name + ".json")])
    _forget_unrequested(export_dir, expected, say)
    artifacts = [export_dir / name for name in expected]
    artifact_hashes = {p.name: sha256_file(p) for p in artifacts}

    validate_key = step_key("validate", artifact_hashes, run["heldout"]["sha256"], options.samples, options.layers,
                            limits, versions)
    _step(cache, "validate", validate_key, timings, say,
          lambda: _validate(run_dir, artifacts, options, limits, say), [str(export_dir / VALIDATION_REPORT)])
    validation = read_json(export_dir / VALIDATION_REPORT, "validation report")
    rescue = _rescue_step(recipe, options, cache, timings, folder, run_dir, validation, artifact_hashes,
                          validate_key, limits, say)
    if rescue:  # rescued artifacts join the tables, the benchmark, the gates and the choice of what to ship
        validation = {**validation, "matrix": validation["matrix"] + rescue_rows(rescue)}
        rescued_files = [p for p in rescue_artifacts(rescue) if p.is_file()]
        artifacts = artifacts + rescued_files
        artifact_hashes |= {p.name: sha256_file(p) for p in rescued_files}
    bench_key = step_key("bench", artifact_hashes, options.bench_min_time, _machine_key(), versions)
    _step(cache, "bench", bench_key, timings, say, lambda: _bench(artifacts, folder / "bench.json", options, say),
          [str(folder / "bench.json")])
    bench = read_json(folder / "bench.json", "benchmark results")

    mcu = None
    if options.target:
        int8 = [p for p in artifacts if _is_int8_tflite(p)]
        mcu_key = step_key("mcu", {p.name: artifact_hashes[p.name] for p in int8}, options.target,
                           run["heldout"]["sha256"], versions, __version__)
        _step(cache, "mcu", mcu_key, timings, say, lambda: _mcu(int8, options.target, folder / "mcu.json", say),
              [str(folder / "mcu.json")])
        mcu = read_json(folder / "mcu.json", "microcontroller checks")
        if not int8:
            errors.append(f"mcu: the recipe exports no full-int8 TFLite model for {options.target}; add "
                          "\"tflite:int8\" to its [export] targets")

    ship = recommend(validation, bench, mcu)
    firmware = None
    if options.target and ship is None and mcu:
        why = "; ".join(f"{name}: {entry.get('why', 'not faithful')}" for name, entry in mcu.items())
        errors.append(f"mcu: no full-int8 TFLite artifact passes TFLite Micro and fits {options.target} ({why})")
    bundle_dir = folder / "bundle"
    if ship:
        tree = options.tflm or os.environ.get("EDGEDL_TFLM_ROOT") if options.target else None
        bundle_key = step_key("bundle", artifact_hashes.get(ship), validate_key, options.target, tree, versions)
        try:
            bundled = _step(cache, "bundle", bundle_key, timings, say,
                            lambda: _bundle(export_dir / ship, bundle_dir, limits, options.target, tree, say),
                            [str(bundle_dir / MANIFEST), str(bundle_dir / ship)])
            firmware = (bundled or {}).get("firmware")
            if firmware and firmware.get("passed") is False:
                errors.append(f"firmware: {firmware.get('error') or 'FAIL on the emulated core'}")
        except EdgedlError as exc:
            errors.append(f"bundle: {exc.one_line()}")
    devices = _devices_step(recipe, cache, timings, folder, bundle_dir, ship, artifacts, artifact_hashes, versions,
                            errors, say)
    gates = {**recipe.gates, **{k: v for k, v in options.gates.items() if v is not None}}
    gate_results = judge_gates(gates, validation, bench, rescued(rescue or {}))
    failed_gates = [g for g in gate_results if not g["passed"]]
    for gate in failed_gates:
        say(f"✗ gate {gate['gate']}: {gate['detail']}")
    return {
        "name": recipe.name, "architecture": recipe.architecture or f"{recipe.keras.name} (adopted)",
        "data": recipe.data,
        "recipe": str(recipe.path), "run_dir": str(run_dir), "training": run["training"], "metrics": run["metrics"],
        "dataset": run["dataset"], "validation": validation, "bench": bench, "gates": gate_results, "mcu": mcu,
        "firmware": firmware, "ship": ship, "bundle": str(bundle_dir) if ship else None, "timings": timings, "errors": errors,
        "rescue": rescue, "devices": devices,
        "passed": bool(validation and (validation.get("passed") or _all_rescued(validation, rescue)))
        and not failed_gates and not errors,
        "history": read_json(run_dir / HISTORY_FILE, "training history"),
    }


def _devices_step(recipe, cache, timings, folder, bundle_dir, ship, artifacts, hashes, versions, errors, say):
    """The recipe's [devices] fleet (pipeline/devices.py): None without one, or when no bundle was made."""
    if not recipe.devices or not ship or not (bundle_dir / MANIFEST).is_file():
        return None
    from .devices import failures, run_devices

    settings = recipe.devices
    key = step_key("devices", {p.name: hashes.get(p.name) for p in artifacts}, ship, digest_of(settings["file"]),
                   digest_of(settings.get("ssh_config")) if settings.get("ssh_config") else None,
                   {k: str(v) for k, v in settings.items()}, versions, __version__)
    try:
        _step(cache, "devices", key, timings, say,
              lambda: run_devices(settings, bundle_dir, ship, artifacts, folder / "devices.json", say),
              [str(folder / "devices.json")])
    except EdgedlError as exc:  # e.g. a devices.toml with a wrong key: this recipe's error, not the run's end
        errors.append(f"devices: {exc.one_line()}")
        return None
    result = read_json(folder / "devices.json", "device results")
    errors.extend(failures(result))
    return result


def _rescue_step(recipe, options, cache, timings, folder, run_dir, validation, hashes, validate_key, tolerances,
                 say):
    """The rescue ladder for int8 artifacts that failed (pipeline/rescue.py); None when none failed."""
    failing = failing_int8(validation) if options.rescue and recipe.rescue else []
    if not failing:
        return None
    key = step_key("rescue", {r["artifact"]: hashes[r["artifact"]] for r in failing}, recipe.rescue,
                   recipe.qat_epochs, tolerances, validate_key, library_versions(), __version__)
    out = folder / "rescue.json"

    def run():
        write_json(out, ladder(recipe, run_dir, folder, failing, tolerances, say))

    def made():  # rescue.json and every artifact it names: a deleted one makes the ladder run again
        return [str(out)] + [str(p) for p in rescue_artifacts(read_json(out, "rescue ladder"))]

    _step(cache, "rescue", key, timings, say, run, made)
    return read_json(out, "rescue ladder")


def _all_rescued(validation: dict, rescue: dict | None) -> bool:
    """Every artifact of the recipe passed, or failed as int8 and was rescued by a rung that passed."""
    saved = rescued(rescue or {})
    return all(row["verdict"] == "pass" or row["artifact"] in saved
               for row in validation.get("matrix", []) if not row.get("rescue"))


def _step(cache: StepCache, name: str, key: str, timings: dict, say, action, outputs):
    """Run ``action`` unless its inputs (``key``) and its ``outputs`` (files, or a function naming them once
    the action has made them) are unchanged since last time."""
    cached = cache.fresh(name, key)
    if cached:
        say(f"  {name:<9} unchanged, skipped ({cached['seconds']:.1f} s last time)")
        timings[name] = {"seconds": 0.0, "skipped": True, "last_seconds": cached["seconds"]}
        return cached.get("result")
    say(f"  {name:<9} …")
    started = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - started
    cache.record(name, key, outputs() if callable(outputs) else outputs, seconds, result)
    timings[name] = {"seconds": round(seconds, 2), "skipped": False}
    say(f"  {name:<9} done in {seconds:.1f} s")
    return result


def _arch_source(name: str) -> str | None:
    from ..train.architectures import registry as architectures

    try:
        arch = architectures.get(name)
    except EdgedlError:
        return None
    import inspect

    try:
        return hashlib.sha256(inspect.getsource(arch.build).encode()).hexdigest()[:16]
    except (OSError, TypeError):
        return None


def _machine_key() -> str:
    return step_key(machine_fingerprint())


def _train(recipe: Recipe, options: PipelineOptions, run_dir: Path, say) -> dict:
    from ..train.fit import train

    config = train_config(recipe=str(recipe.path), out=run_dir, epochs=options.epochs, backend=options.backend)
    return train(config, say=lambda m: say("    " + m))["metrics"]


def _adopt(recipe: Recipe, run_dir: Path, say) -> dict:
    from ..train.adopt import adopt

    if recipe.card is None:
        raise UsageError(f"recipe {recipe.path}: [model] keras needs a card = \"model.card.toml\" naming its held-out "
                         "data (README: Your own model)")
    return adopt(recipe.keras, recipe.card, run_dir, name=recipe.name, say=lambda m: say("    " + m))["metrics"]


def _expected_artifacts(recipe: Recipe) -> list[str]:
    """The artifact files the recipe's targets make: named after the recipe, one per target."""
    from ..export import parse_targets

    return [t.file_name(recipe.name) for t in parse_targets(recipe.targets)]


def _export(recipe: Recipe, run_dir: Path, export_dir: Path, say) -> dict:
    from ..export import ExportOptions, export, parse_targets

    options = ExportOptions(name=recipe.name, calibration_method=recipe.calibration_method)
    records = export(run_dir, parse_targets(recipe.targets), out=export_dir, options=options,
                     progress=lambda m: say("    " + m))
    return {"artifacts": [r["file"] for r in records]}


def _forget_unrequested(export_dir: Path, expected: list[str], say) -> None:
    """Artifacts of targets the recipe no longer asks for leave the folder, the index and the gates.

    Only files the index lists (edgedl wrote them) are removed; anything else is left alone.
    """
    index_path = export_dir / INDEX
    index = read_json(index_path, "artifact index")
    entries = [a for a in index.get("artifacts", []) if isinstance(a, dict)]
    stale = [a for a in entries if a.get("file") not in expected]
    if not stale:
        return
    for entry in stale:
        artifact = export_dir / safe_name(str(entry.get("file")))
        if artifact.is_file() and sha256_file(artifact) == entry.get("sha256"):
            artifact.unlink()
            sidecar_path(artifact).unlink(missing_ok=True)
        say(f"    dropped {entry.get('file')}: its target is no longer in the recipe")
    write_json(index_path, {**index, "artifacts": [a for a in entries if a.get("file") in expected]})


def _validate(run_dir: Path, artifacts: list[Path], options: PipelineOptions, tolerances: dict, say) -> dict:
    from ..validate.run import ValidateOptions, failure_message, validate

    opts = ValidateOptions(layers=options.layers, overrides=dict(tolerances))
    if options.samples:
        opts.samples = options.samples
    summary = validate(run_dir, artifacts, opts, say=lambda m: say("    " + m))
    message = failure_message(summary)  # recorded in validation.json; the gates turn it into the exit code
    if message:
        say(f"    ✗ {message}")
    return {"passed": summary["passed"]}


def _bench(artifacts: list[Path], out: Path, options: PipelineOptions, say) -> dict:
    from ..bench.run import BenchOptions, bench

    result = bench(artifacts, BenchOptions(min_time=options.bench_min_time), say=lambda m: say("  " + m))
    write_json(out, result)
    return {"measurements": len(result["results"])}


def _is_int8_tflite(artifact: Path) -> bool:
    from ..core.layout import read_sidecar

    return artifact.suffix == ".tflite" and read_sidecar(artifact).get("precision") == "int8"


def _mcu(artifacts: list[Path], target: str, out: Path, say) -> dict:
    """Each int8 TFLite artifact under TFLite Micro, fitted to ``target``: a compact verdict per artifact."""
    from ..deploy.mcu import failure, mcu_check, render

    verdicts = {}
    for artifact in artifacts:
        try:
            report = mcu_check(artifact, target=target, say=lambda m: say("    " + m))
        except EdgedlError as exc:  # one artifact TFLM cannot load is a verdict, not the end of the run
            verdicts[artifact.name] = {"passed": False, "why": exc.one_line()}
            say(f"    ✗ {artifact.name}: {exc.one_line()}")
            continue
        for line in render(report)[:4]:
            say("    " + line)
        verdict = {"passed": report["passed"], "why": None if report["passed"] else failure(report)}
        if "target" in report:
            verdict |= {"fit": report["target"], "ram": report["ram"]["total"], "flash": report["flash"]["total"],
                        "arena": report["arena"]["with_margin"], "max_steps": report["parity"]["max_steps"],
                        "seconds_per_inference": report["seconds_per_inference"]}
        say(f"    {'✓' if verdict['passed'] else '✗'} {artifact.name} on {target}: "
            + ("fits" if verdict["passed"] else verdict["why"]))
        verdicts[artifact.name] = verdict
    write_json(out, verdicts)
    return {"checked": len(verdicts)}


def _bundle(artifact: Path, out: Path, tolerances: dict, target: str | None, tflm: str | None, say) -> dict:
    """The bundle, and for a board its firmware run on the emulated core (which records its arena in the
    bundle, so both are one step)."""
    from ..deploy.bundle import TARGETS, bundle
    from ..deploy.firmware import firmware_check

    targets = [*TARGETS, target] if target else None
    manifest = bundle(artifact, out, say=lambda m: say("    " + m), tolerances=tolerances, targets=targets)
    result = {"artifact": artifact.name, "sha256": manifest["model"]["sha256"]}
    if target:
        result["firmware"] = firmware_check(out, target, tflm, say=lambda m: say("    " + m))
    return result


__all__ = ["pipeline", "PipelineOptions"]
