"""``edgedl pipeline``: train → export → validate → bench → bundle → report, incrementally.

Each step records the hash of everything it read (model, data, settings, library versions) in
``OUT/<recipe>/steps.json``; a step whose inputs hash the same, and whose outputs still exist,
is skipped. Gates turn the results into a pass/fail with a named reason, and JUnit XML.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from ._env import library_versions
from .errors import EdgedlError, ParityFailure, UsageError
from .files import read_json, sha256_file, write_json
from .recipe import Recipe, load_recipe

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
    for root in (Path.cwd() / "models", Path(__file__).resolve().parent.parent / "models"):
        found = [root / f"{name}.toml" for name in DEFAULT_RECIPES if (root / f"{name}.toml").exists()]
        if found:
            return found
    raise UsageError("no recipes given and no models/ folder found", hint="pass RECIPE.toml files")


def _hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class StepCache:
    """steps.json: for each step, the hash of its inputs and what it produced."""

    def __init__(self, folder: Path, force: bool):
        self.path = folder / "steps.json"
        self.force = force
        self.steps = read_json(self.path, "pipeline state").get("steps", {}) if self.path.exists() else {}

    def fresh(self, step: str, key: str) -> dict | None:
        entry = self.steps.get(step)
        if self.force or not entry or entry.get("key") != key:
            return None
        if not all(Path(p).exists() for p in entry.get("outputs", [])):
            return None
        return entry

    def record(self, step: str, key: str, outputs: list[str], seconds: float, result=None) -> dict:
        self.steps[step] = {"key": key, "outputs": outputs, "seconds": round(seconds, 2), "result": result}
        write_json(self.path, {"edgedl": "pipeline-state/1", "steps": self.steps})
        return self.steps[step]


def pipeline(recipes: list[str | Path] | None = None, options: PipelineOptions | None = None, say=print) -> dict:
    options = options or PipelineOptions()
    paths = [Path(r) for r in recipes] if recipes else default_recipes()
    loaded = [load_recipe(p) for p in paths]
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


def _run_recipe(recipe: Recipe, options: PipelineOptions, say) -> dict:
    folder = options.out / recipe.name
    folder.mkdir(parents=True, exist_ok=True)
    cache = StepCache(folder, options.force)
    versions = library_versions()
    timings, errors = {}, []
    run_dir, export_dir = folder / "run", folder / "run" / "exports"

    train_key = _hash("train", recipe.architecture, recipe.data, recipe.seed, recipe.train, options.epochs,
                      recipe.calibration_samples, versions, _arch_source(recipe.architecture), __version__)
    _step(cache, "train", train_key, timings, say, lambda: _train(recipe, options, run_dir),
          [str(run_dir / "manifest.json")])
    run = read_json(run_dir / "manifest.json", "training manifest")

    export_key = _hash("export", run["model"]["sha256"], recipe.targets, run["calibration"]["sha256"], versions)
    _step(cache, "export", export_key, timings, say, lambda: _export(recipe, run_dir, export_dir, say),
          [str(export_dir / "artifacts.json")])
    artifacts = sorted(p for p in export_dir.iterdir() if p.suffix in (".tflite", ".onnx"))
    artifact_hashes = {p.name: sha256_file(p) for p in artifacts}

    validate_key = _hash("validate", artifact_hashes, run["heldout"]["sha256"], options.samples, options.layers,
                         versions)
    _step(cache, "validate", validate_key, timings, say, lambda: _validate(run_dir, artifacts, options, say),
          [str(export_dir / "validation.json")])
    validation = read_json(export_dir / "validation.json", "validation report")
    bench_key = _hash("bench", artifact_hashes, options.bench_min_time, _machine_key(), versions)
    _step(cache, "bench", bench_key, timings, say, lambda: _bench(artifacts, folder / "bench.json", options, say),
          [str(folder / "bench.json")])
    bench = read_json(folder / "bench.json", "benchmark results")

    ship = recommend(validation, bench)
    bundle_dir = folder / "bundle"
    if ship:
        bundle_key = _hash("bundle", artifact_hashes.get(ship), validate_key, versions)
        try:
            _step(cache, "bundle", bundle_key, timings, say, lambda: _bundle(export_dir / ship, bundle_dir, say),
                  [str(bundle_dir / "manifest.json")])
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
        "history": read_json(run_dir / "history.json", "training history"),
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
    from . import architectures

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
    from .bench import machine_fingerprint

    return _hash(machine_fingerprint())


def _train(recipe: Recipe, options: PipelineOptions, run_dir: Path) -> dict:
    from .api import train_config
    from .train import train

    config = train_config(recipe=str(recipe.path), out=run_dir, epochs=options.epochs)
    manifest = train(config)
    return {"test_accuracy": manifest["metrics"]["test_accuracy"]}


def _export(recipe: Recipe, run_dir: Path, export_dir: Path, say) -> dict:
    from .export import export, parse_targets

    records = export(run_dir, parse_targets(recipe.targets), out=export_dir, progress=lambda m: say("    " + m))
    return {"artifacts": [r["file"] for r in records]}


def _validate(run_dir: Path, artifacts: list[Path], options: PipelineOptions, say) -> dict:
    from .validate import ValidateOptions, validate

    opts = ValidateOptions(layers=options.layers)
    if options.samples:
        opts.samples = options.samples
    try:
        return {"passed": validate(run_dir, artifacts, opts, say=lambda m: say("    " + m))["passed"]}
    except ParityFailure as exc:  # recorded in validation.json; the gates turn it into the exit code
        say(f"    ✗ {exc.one_line()}")
        return {"passed": False}


def _bench(artifacts: list[Path], out: Path, options: PipelineOptions, say) -> dict:
    from .bench import BenchOptions, bench

    result = bench(artifacts, BenchOptions(min_time=options.bench_min_time), say=lambda m: say("  " + m))
    write_json(out, result)
    return {"measurements": len(result["results"])}


def _bundle(artifact: Path, out: Path, say) -> dict:
    from .bundle import bundle

    manifest = bundle(artifact, out, say=lambda m: say("    " + m))
    return {"artifact": artifact.name, "sha256": manifest["model"]["sha256"]}


# ---------------------------------------------------------------- judgement

def rows(validation: dict | None, bench: dict | None) -> list[dict]:
    """One row per artifact: size, accuracy, agreement, latency, init, memory, verdict."""
    timing = {r["artifact"]: r for r in (bench or {}).get("results", []) if r.get("threads") == 1
              and r.get("batch") == 1}
    table = []
    for row in (validation or {}).get("matrix", []):
        t = timing.get(row["artifact"], {})
        table.append({**row, "p50_us": t.get("p50_us"), "p99_us": t.get("p99_us"), "init_ms": t.get("init_ms"),
                      "peak_rss_mb": t.get("peak_rss_mb"), "bench_error": t.get("error")})
    return table


def recommend(validation: dict | None, bench: dict | None) -> str | None:
    """What to ship on a device: the fastest faithful TFLite artifact (smaller wins a near tie)."""
    candidates = [r for r in rows(validation, bench)
                  if r["verdict"] == "pass" and r["artifact"].endswith(".tflite") and r.get("p50_us")]
    if not candidates:
        return None
    fastest = min(r["p50_us"] for r in candidates)
    near = [r for r in candidates if r["p50_us"] <= fastest * 1.10]
    return min(near, key=lambda r: r["size"])["artifact"]


def check_gates(gates: dict, validation: dict | None, bench: dict | None) -> list[dict]:
    results = []
    table = rows(validation, bench)
    for row in table:
        name = row["artifact"]
        if "max_accuracy_drop" in gates and row.get("accuracy_delta") is not None:
            drop = -row["accuracy_delta"]
            results.append(_gate("max_accuracy_drop", name, drop <= gates["max_accuracy_drop"] + 1e-12,
                                 f"{name}: accuracy drop {drop * 100:.2f} pp (limit {gates['max_accuracy_drop'] * 100:.2f} pp)"))
        if "min_agreement" in gates and row.get("agreement") is not None:
            results.append(_gate("min_agreement", name, row["agreement"] >= gates["min_agreement"],
                                 f"{name}: agreement {row['agreement']:.2%} (limit {gates['min_agreement']:.2%})"))
        if "max_latency_ms" in gates and row.get("p50_us") is not None:
            ms = row["p50_us"] / 1000
            results.append(_gate("max_latency_ms", name, ms <= gates["max_latency_ms"],
                                 f"{name}: p50 {ms:.3f} ms (limit {gates['max_latency_ms']} ms)"))
        if "max_size_kb" in gates:
            kb = row["size"] / 1024
            results.append(_gate("max_size_kb", name, kb <= gates["max_size_kb"],
                                 f"{name}: {kb:.1f} KB (limit {gates['max_size_kb']} KB)"))
        results.append(_gate("parity", name, row["verdict"] == "pass", f"{name}: parity {row['verdict']}"))
    return results


def _gate(gate: str, artifact: str, passed: bool, detail: str) -> dict:
    return {"gate": gate, "artifact": artifact, "passed": bool(passed), "detail": detail}


def failed_gate_message(summary: dict) -> str | None:
    failures = [f"{r['name']}: {g['gate']} ({g['detail']})" for r in summary["recipes"] for g in r["gates"]
                if not g["passed"]]
    failures += [f"{r['name']}: {e}" for r in summary["recipes"] for e in r["errors"]]
    return "; ".join(failures) if failures else None


__all__ = ["pipeline", "PipelineOptions", "recommend", "check_gates", "rows"]
