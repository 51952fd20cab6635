"""``edgedl pipeline``: train → export → validate → bench → bundle → report, incrementally.

Each step records the hash of everything it read (model, data, settings, library versions) in
``OUT/<recipe>/steps.json``; a step whose inputs hash the same, and whose outputs still exist,
is skipped. Gates turn the results into a pass/fail with a named reason, and JUnit XML.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..core.env import library_versions, machine_fingerprint
from ..core.errors import EdgedlError, UsageError
from ..core.files import read_json, sha256_file, write_json
from ..core.layout import EXPORTS, HISTORY_FILE, INDEX, MANIFEST, SUFFIX, VALIDATION_REPORT, sidecar_path
from ..core.outputs import claim, inside, safe_name
from ..recipe import Recipe, load_recipe, train_config
from ..recipe import check_gates as check_gates_settings
from .cache import StepCache, step_key
from .gates import check_gates, recommend

DEFAULT_OUT = Path("runs") / "pipeline"
DEFAULT_RECIPES = ("mlp", "cnn", "lstm")
STEPS = ("train", "export", "validate", "bench", "bundle")


@dataclass
class PipelineOptions:
    out: Path = DEFAULT_OUT
    force: bool = False
    epochs: int | None = None
    gates: dict = field(default_factory=dict)
    bench_min_time: float = 1.0
    layers: bool = True
    samples: int | None = None


def default_recipes() -> list[Path]:
    for root in (Path.cwd() / "models", Path(__file__).resolve().parents[2] / "models"):
        found = [root / f"{name}.toml" for name in DEFAULT_RECIPES if (root / f"{name}.toml").exists()]
        if found:
            return found
    raise UsageError("no recipes given and no models/ folder found", hint="pass RECIPE.toml files")


def pipeline(recipes: list[str | Path] | None = None, options: PipelineOptions | None = None, say=print) -> dict:
    options = options or PipelineOptions()
    paths = [Path(r) for r in recipes] if recipes else default_recipes()
    loaded = _load_all(paths)  # every recipe, gate and name checked before any work starts
    check_gates_settings({k: v for k, v in options.gates.items() if v is not None}, "pipeline options")
    claim(options.out, "pipeline")
    started = time.perf_counter()
    outcomes = []
    for number, recipe in enumerate(loaded, 1):
        say(f"\n== [{number}/{len(loaded)}] {recipe.name} ({recipe.architecture} on {recipe.data}) ==")
        outcomes.append(_run_recipe(recipe, options, say))
    summary = {
        "edgedl": "pipeline/1",
        "out": str(options.out),
        "seconds": round(time.perf_counter() - started, 1),
        "versions": library_versions(),
        "recipes": outcomes,
        "passed": all(o["passed"] for o in outcomes),
    }
    from .report import write_junit, write_reports

    write_json(options.out / "pipeline.json", summary)
    write_junit(options.out / "junit.xml", summary)
    summary["report"] = str(write_reports(options.out, summary))
    return summary


def _load_all(paths: list[Path]) -> list[Recipe]:
    loaded = [load_recipe(p) for p in paths]
    folders: dict[str, Path] = {}
    for recipe in loaded:
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

    train_key = step_key("train", recipe.architecture, recipe.data, recipe.seed, recipe.train, options.epochs,
                      recipe.calibration_samples, versions, _arch_source(recipe.architecture), __version__)
    _step(cache, "train", train_key, timings, say, lambda: _train(recipe, options, run_dir),
          [str(run_dir / MANIFEST)])
    run = read_json(run_dir / MANIFEST, "training manifest")

    expected = _expected_artifacts(recipe)
    export_key = step_key("export", run["model"]["sha256"], recipe.targets, run["calibration"]["sha256"], versions)
    _step(cache, "export", export_key, timings, say, lambda: _export(recipe, run_dir, export_dir, say),
          [str(export_dir / INDEX)] + [str(export_dir / f) for name in expected for f in (name, name + ".json")])
    _forget_unrequested(export_dir, expected, say)
    artifacts = [export_dir / name for name in expected]
    artifact_hashes = {p.name: sha256_file(p) for p in artifacts}

    validate_key = step_key("validate", artifact_hashes, run["heldout"]["sha256"], options.samples, options.layers,
                         versions)
    _step(cache, "validate", validate_key, timings, say, lambda: _validate(run_dir, artifacts, options, say),
          [str(export_dir / VALIDATION_REPORT)])
    validation = read_json(export_dir / VALIDATION_REPORT, "validation report")
    bench_key = step_key("bench", artifact_hashes, options.bench_min_time, _machine_key(), versions)
    _step(cache, "bench", bench_key, timings, say, lambda: _bench(artifacts, folder / "bench.json", options, say),
          [str(folder / "bench.json")])
    bench = read_json(folder / "bench.json", "benchmark results")

    ship = recommend(validation, bench)
    bundle_dir = folder / "bundle"
    if ship:
        bundle_key = step_key("bundle", artifact_hashes.get(ship), validate_key, versions)
        try:
            _step(cache, "bundle", bundle_key, timings, say, lambda: _bundle(export_dir / ship, bundle_dir, say),
                  [str(bundle_dir / MANIFEST), str(bundle_dir / ship)])
        except EdgedlError as exc:
            errors.append(f"bundle: {exc.one_line()}")
    gates = {**recipe.gates, **{k: v for k, v in options.gates.items() if v is not None}}
    gate_results = check_gates(gates, validation, bench)
    failed_gates = [g for g in gate_results if not g["passed"]]
    for gate in failed_gates:
        say(f"✗ gate {gate['gate']}: {gate['detail']}")
    return {
        "name": recipe.name, "architecture": recipe.architecture, "data": recipe.data,
        "recipe": str(recipe.path), "run_dir": str(run_dir), "training": run["training"], "metrics": run["metrics"],
        "dataset": run["dataset"], "validation": validation, "bench": bench, "gates": gate_results,
        "ship": ship, "bundle": str(bundle_dir) if ship else None, "timings": timings, "errors": errors,
        "passed": bool(validation and validation.get("passed")) and not failed_gates and not errors,
        "history": read_json(run_dir / HISTORY_FILE, "training history"),
    }


def _step(cache: StepCache, name: str, key: str, timings: dict, say, action, outputs: list[str]):
    cached = cache.fresh(name, key)
    if cached:
        say(f"  {name:<9} unchanged, skipped ({cached['seconds']:.1f} s last time)")
        timings[name] = {"seconds": 0.0, "skipped": True, "last_seconds": cached["seconds"]}
        return cached.get("result")
    say(f"  {name:<9} …")
    started = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - started
    cache.record(name, key, outputs, seconds, result)
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


def _train(recipe: Recipe, options: PipelineOptions, run_dir: Path) -> dict:
    from ..train.fit import train

    config = train_config(recipe=str(recipe.path), out=run_dir, epochs=options.epochs)
    manifest = train(config)
    return {"test_accuracy": manifest["metrics"]["test_accuracy"]}


def _expected_artifacts(recipe: Recipe) -> list[str]:
    """The artifact files the recipe's targets make: named after the recipe, one per target."""
    from ..export import parse_targets

    return [f"{recipe.name}_{t.precision}{SUFFIX[t.format]}" for t in parse_targets(recipe.targets)]


def _export(recipe: Recipe, run_dir: Path, export_dir: Path, say) -> dict:
    from ..export import ExportOptions, export, parse_targets

    records = export(run_dir, parse_targets(recipe.targets), out=export_dir, options=ExportOptions(name=recipe.name),
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


def _validate(run_dir: Path, artifacts: list[Path], options: PipelineOptions, say) -> dict:
    from ..validate.run import ValidateOptions, failure_message, validate

    opts = ValidateOptions(layers=options.layers)
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


def _bundle(artifact: Path, out: Path, say) -> dict:
    from ..deploy.bundle import bundle

    manifest = bundle(artifact, out, say=lambda m: say("    " + m))
    return {"artifact": artifact.name, "sha256": manifest["model"]["sha256"]}


__all__ = ["pipeline", "PipelineOptions"]
