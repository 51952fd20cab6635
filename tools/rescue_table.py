"""PTQ against every rescue, side by side: the "Rescuing int8" table of docs/BENCHMARKS.md.

    python tools/rescue_table.py [FOLDER]

For each model — the seed MLP and CNN (built-in digits), the sensor model (models/sensor.toml) and
the outlier-channel CNN (tools/zoo.py) — it exports full-int8 TFLite, then climbs *every* rung of
the rescue ladder (the pipeline stops at the first that passes; this shows them all), validates each
against its reference and benchmarks each in LiteRT (p50, batch 1, one thread, same process run).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def runs(folder: Path) -> dict[str, Path]:
    from edgedl.api import train
    from edgedl.recipe import train_config
    from edgedl.train.adopt import adopt
    from edgedl.train.fit import train as fit
    from tools import zoo

    made = {}
    for name in ("mlp", "cnn"):
        made[name] = folder / name
        if not (made[name] / "manifest.json").exists():
            train(model=name, out=made[name], verbose=0)
    made["sensor"] = folder / "sensor"
    if not (made["sensor"] / "manifest.json").exists():
        fit(train_config(recipe=str(ROOT / "models" / "sensor.toml"), out=made["sensor"], verbose=0))
    made["outlier_cnn"] = folder / "outlier_cnn"
    if not (made["outlier_cnn"] / "manifest.json").exists():
        built = zoo.outlier_channels(folder / "outlier_model", np.random.default_rng(0))
        adopt(built.model, built.card, made["outlier_cnn"], say=lambda m: None)
    return made


def table(folder: Path) -> str:
    from edgedl.api import bench, export, validate
    from edgedl.core.files import read_json
    from edgedl.export.ranges import METHODS
    from edgedl.pipeline.rescue import _pct, climb
    from edgedl.recipe import RESCUE_RUNGS, Recipe

    lines = ["| model | method | artifact | verdict | agreement | accuracy (Δ pp) | size (KB) | p50 (µs) | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, run in runs(folder).items():
        manifest = read_json(run / "manifest.json", "run")
        stem = manifest["name"]
        export(run, ("tflite",), ("int8",))
        ptq = validate(run, [run / "exports" / f"{stem}_int8.tflite"])["matrix"][0]
        recipe = Recipe(name=stem, architecture=None, qat_epochs=10 if name == "outlier_cnn" else 3)
        rows = [("PTQ int8", ptq, run / "exports" / f"{stem}_int8.tflite", "")]
        for rung in RESCUE_RUNGS:
            record = climb(rung, "tflite", recipe, run, folder / f"{name}-rescue", {}, say=lambda m: None)
            note = ", ".join(record.get("layers") or []) and f"float: {', '.join(record['layers'])}"
            if record.get("method"):
                note = f"activation ranges: {record['method']} (of {', '.join(METHODS)})"
            if rung == "keep_float" and record.get("passed") and not record.get("layers"):
                note = "nothing needs float (PTQ passes)"
            if record.get("reference"):
                note = (f"vs fine-tuned float; float acc {_pct(record.get('original_float_accuracy'))} → "
                        f"{_pct(record.get('float_accuracy'))}")
            if not record.get("row"):
                note = record.get("note", "")
            rows.append((rung, record.get("row") or {}, Path(record["path"]) if record.get("path") else None, note))
        timing = {r["artifact"]: r for r in bench(*[p for _, _, p, _ in rows if p], min_time=0.5)["results"]
                  if r.get("threads") == 1 and r.get("batch") == 1}
        for method, row, path, note in rows:
            p50 = timing.get(path.name, {}).get("p50_us") if path else None
            lines.append(f"| {name} | {method} | {path.name if path else '–'} | {row.get('verdict', '–')} | "
                         f"{_pct(row.get('agreement'))} | {_pct(row.get('candidate_accuracy'))} "
                         f"({_pp(row.get('accuracy_delta'))}) | {_kb(row.get('size'))} | "
                         f"{'–' if p50 is None else f'{p50:.1f}'} | {note} |")
    return "\n".join(lines)


def _pp(value) -> str:
    return "–" if value is None else f"{value * 100:+.2f}"


def _kb(value) -> str:
    return "–" if value is None else f"{value / 1024:,.1f}"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(table(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/rescue-table")))
