"""Pipeline reports: ``report.md`` (with PNG plots), a self-contained ``report.html``
(``html_report.py``), JUnit XML."""

from __future__ import annotations

import platform
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from ..bench.render import latency_figure, pyplot, save_figure
from ..core.env import machine_fingerprint
from ..core.files import atomic_path, write_text
from ..deploy.firmware import firmware_cell
from ..validate.matrix import matrix_markdown
from .gates import rows

PLOTS = "plots"


# ---------------------------------------------------------------- tables

def _fmt(value, spec: str, scale: float | None = None) -> str:
    if value is None:
        return "–"
    return format(value * scale if scale else value, spec)


SUMMARY_HEADER = ("| model | artifact | format | precision | size (KB) | accuracy | Δ acc (pp) | agreement | "
                  "p50 (µs) | p99 (µs) | init (ms) | peak RSS (MB) | parity | gates |")


def summary_table(summary: dict) -> str:
    target = summary.get("target")
    header = SUMMARY_HEADER + (f" MCU ({target}) | firmware ({target}) |" if target else "")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for recipe in summary["recipes"]:
        failed = {g["artifact"] for g in recipe["gates"] if not g["passed"]}
        for r in rows(recipe["validation"], recipe["bench"]):
            ship = " ★" if r["artifact"] == recipe["ship"] else (" (no effect)" if r.get("no_effect") else "")
            ship += f" (rescue: {r['rescue']})" if r.get("rescue") else ""
            cells = [recipe["name"], r["artifact"] + ship, r["format"], r["precision"], _fmt(r["size"] / 1024, ",.1f"),
                     _fmt(r.get("candidate_accuracy"), ".2%"), _fmt(r.get("accuracy_delta"), "+.2f", 100),
                     _fmt(r.get("agreement"), ".2%"), _fmt(r.get("p50_us"), ".1f"), _fmt(r.get("p99_us"), ".1f"),
                     _fmt(r.get("init_ms"), ".0f"), _fmt(r.get("peak_rss_mb"), ".0f"),
                     "pass" if r["verdict"] == "pass" else f"**{r['verdict']}**",
                     "**fail**" if r["artifact"] in failed else "pass"]
            if target:
                cells.append(_mcu_cell((recipe.get("mcu") or {}).get(r["artifact"])))
                cells.append(firmware_cell(recipe.get("firmware")) if r["artifact"] == recipe["ship"] else "–")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mcu_cell(verdict: dict | None) -> str:
    """A board verdict in a table cell: fits with RAM and flash, or why not; – for non-int8 artifacts."""
    if verdict is None:
        return "–"
    if not verdict.get("fit"):
        return f"**✗** {verdict['why']}"
    fit = verdict["fit"]
    sizes = (f"RAM {verdict['ram'] / 1024:,.1f} KB ({fit['ram_headroom'] / 1024:+,.1f}), flash "
             f"{verdict['flash'] / 1024:,.1f} KB ({fit['flash_headroom'] / 1024:+,.1f})")
    return f"✓ {sizes}" if verdict["passed"] else f"**✗** {verdict['why']}"


def _rescue_section(recipe: dict) -> str:
    """Each failed int8 artifact, and every rung tried for it, side by side with plain PTQ."""
    timing = {r["artifact"]: r for r in (recipe["bench"] or {}).get("results", [])
              if r.get("threads") == 1 and r.get("batch") == 1}
    lines = ["| failed int8 | rung | artifact | verdict | agreement | accuracy (Δ pp) | size (KB) | p50 (µs) | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for failed, entry in (recipe.get("rescue") or {}).items():
        ptq = entry["ptq"]
        lines.append(f"| {failed} | PTQ (as exported) | {failed} | **FAIL** | {_fmt(ptq.get('agreement'), '.2%')} | "
                     f"{_fmt(ptq.get('candidate_accuracy'), '.2%')} ({_fmt(ptq.get('accuracy_delta'), '+.2f', 100)}) | "
                     f"{_fmt((ptq.get('size') or 0) / 1024, ',.1f')} | "
                     f"{_fmt(timing.get(failed, {}).get('p50_us'), '.1f')} | |")
        for rung in entry["rungs"]:
            verdict = "pass" if rung["passed"] else ("–" if rung.get("skipped") else "**FAIL**")
            note = rung.get("note") or ""
            if rung.get("layers"):
                note = f"float: {', '.join(rung['layers'])}"
            if rung.get("method"):
                note = f"activation ranges: {rung['method']}"
            if rung.get("reference"):
                note = f"vs {rung['reference']}; float accuracy {_fmt(rung.get('original_float_accuracy'), '.2%')} → " \
                       f"{_fmt(rung.get('float_accuracy'), '.2%')}"
            lines.append(f"| | {rung['rung']} | {rung.get('artifact') or '–'} | {verdict} | "
                         f"{_fmt(rung.get('agreement'), '.2%')} | {_fmt(rung.get('candidate_accuracy'), '.2%')} "
                         f"({_fmt(rung.get('accuracy_delta'), '+.2f', 100)}) | "
                         f"{_fmt((rung.get('size') or 0) / 1024 if rung.get('size') else None, ',.1f')} | "
                         f"{_fmt(timing.get(rung.get('artifact'), {}).get('p50_us'), '.1f')} | {_inline_safe(note)} |")
    return "\n".join(lines)


def _inline_safe(text: str) -> str:
    return text.replace("|", "/")


def _drift_section(recipe: dict) -> str:
    drift = (recipe["validation"] or {}).get("drift") or {}
    parts = []
    for artifact, entry in drift.items():
        if "error" in entry:
            parts.append(f"- {artifact}: per-layer drift unavailable: {entry['error']}")
            continue
        worst = ", ".join(
            f"{w['layer'] or 'inserted by the converter'} ({w['sqnr_db']:.1f} dB)" if w["metric"] == "sqnr_db"
            else f"{w['layer'] or 'inserted by the converter'} ({w['score']:.2f} × scale)"
            for w in (entry.get("layers") or entry["worst"])[:5])
        parts.append(f"- {artifact} — worst layers by {entry['metric']}: {worst}")
    return "\n".join(parts) or "- no int8 artifacts"


def _environment(summary: dict) -> str:
    machine = machine_fingerprint()
    versions = ", ".join(f"{k} {v}" for k, v in summary["versions"].items())
    return (f"- CPU: {machine['cpu']} ({machine['cores']} cores; {', '.join(machine['cpu_flags'])})\n"
            f"- System: {machine['system']}, Python {platform.python_version()}\n- Libraries: {versions}")


def _commands(summary: dict) -> str:
    board = f" --target {summary['target']}" if summary.get("target") else ""
    lines = ["```sh", f"edgedl pipeline {' '.join(r['recipe'] for r in summary['recipes'])} --out {summary['out']}"
             + board]
    for recipe in summary["recipes"]:
        run = recipe["run_dir"]
        lines += [f"# {recipe['name']}, step by step",
                  f"edgedl train {recipe['recipe']} --out {run}",
                  f"edgedl export {run} --format tflite,onnx --quantize none,fp16,dynamic,int8",
                  f"edgedl validate {run} --layers",
                  f"edgedl bench {run}/exports"]
        if recipe["ship"]:
            board = f" --target all,{summary['target']}" if summary.get("target") else ""
            lines.append(f"edgedl bundle {run}/exports/{recipe['ship']} --out {recipe['bundle']}{board}")
    lines.append("```")
    return "\n".join(lines)


def markdown(summary: dict, plots: dict) -> str:
    verdict = "PASS" if summary["passed"] else "FAIL"
    parts = [f"# edgedl pipeline report — {verdict}",
             f"Finished in {summary['seconds']:.0f} s. ★ marks the artifact recommended to ship "
             + ("(fastest faithful TFLite; smaller wins a near tie)." if not summary.get("target") else
                f"for {summary['target']} (the fastest full-int8 TFLite under TFLite Micro that passes its check "
                "and fits the board's RAM and flash; smaller wins a near tie). Sizes: RAM = tensor arena with "
                "margin + I/O buffers; flash = model + TFLM framework + kernels (upper bound)."),
             "## Summary", summary_table(summary)]
    for recipe in summary["recipes"]:
        metrics, training = recipe["metrics"], recipe["training"]
        parts += [f"## {recipe['name']}",
                  f"Keras {_score(metrics)} on {recipe['dataset']['sizes']['test']} held-out samples "
                  f"({_how_trained(metrics, training)}). Steps: "
                  + ", ".join(f"{step} {_timing(t)}" for step, t in recipe["timings"].items()),
                  "### Parity matrix", _parity_matrix(recipe), "### Per-layer drift (int8)", _drift_section(recipe)]
        if recipe.get("rescue"):
            parts += ["### Rescue ladder", "An int8 artifact failed its gates; the remedies were tried in order "
                      "until one passed (keep_float: the fewest layers in float; int16x8: 16-bit activations; "
                      "qat: quantization-aware fine-tuning, validated against the fine-tuned model).",
                      _rescue_section(recipe)]
        if recipe.get("devices"):
            from .devices import section

            parts += ["### On your devices", section(recipe["devices"])]
        failed = [g for g in recipe["gates"] if not g["passed"]]
        parts.append("### Gates\n" + ("\n".join(f"- ✗ {g['gate']}: {g['detail']}" for g in failed)
                                       or f"- ✓ all {len(recipe['gates'])} gate checks pass"))
        for error in recipe["errors"]:
            parts.append(f"- ✗ {error}")
    parts += ["## Plots"] + [f"![{name}]({PLOTS}/{path.name})" for name, path in plots.items()]
    parts += ["## Environment", _environment(summary), "## Reproduce", _commands(summary)]
    return "\n\n".join(parts) + "\n"


def _score(metrics: dict) -> str:
    if metrics.get("test_accuracy") is not None:
        return f"test accuracy {metrics['test_accuracy']:.2%}"
    if metrics.get("test_mae") is not None:
        return f"test MAE {metrics['test_mae']:.4g} (RMSE {metrics['test_rmse']:.4g})"
    return "(no labels)"


def _how_trained(metrics: dict, training: dict) -> str:
    if training.get("adopted"):
        return "trained elsewhere, adopted with its model card"
    restored = f", restored epoch {metrics['restored_epoch']}" if metrics.get("restored_epoch") else ""
    return (f"{metrics['epochs_run']} epochs{restored}, {training['time_s']:.0f} s on "
            f"{', '.join(training['devices']) or 'cpu'}")


def _timing(entry: dict) -> str:
    if entry["skipped"]:
        return f"skipped (unchanged; {entry.get('last_seconds', 0):.1f} s when it ran)"
    return f"{entry['seconds']:.1f} s"


def _parity_matrix(recipe: dict) -> str:
    matrix = (recipe["validation"] or {}).get("matrix") or []
    return matrix_markdown(matrix) if matrix else "_no validation results_"


# ---------------------------------------------------------------- plots

def _plots(out: Path, summary: dict) -> dict:
    plt = pyplot()
    folder = out / PLOTS
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for name, draw in (("tradeoff", _tradeoff), ("latency", _latency), ("training", _training), ("devices", _devices)):
        fig = draw(plt, summary)
        if fig is not None:
            made[name] = save_figure(plt, fig, folder / f"{name}.png", dpi=100)
    return made


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both lower latency and higher accuracy."""
    front = []
    for i, (lat, acc) in enumerate(points):
        dominated = any((l2 <= lat and a2 >= acc) and (l2 < lat or a2 > acc) for j, (l2, a2) in enumerate(points)
                        if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _tradeoff(plt, summary):
    fig, ax = plt.subplots(figsize=(8, 5))
    everything = []
    for recipe in summary["recipes"]:
        table = [r for r in rows(recipe["validation"], recipe["bench"])
                 if r.get("p50_us") and r.get("candidate_accuracy") is not None]
        if not table:
            continue
        sizes = np.array([r["size"] for r in table], float)
        ax.scatter([r["p50_us"] for r in table], [r["candidate_accuracy"] * 100 for r in table],
                   s=20 + 400 * sizes / max(sizes.max(), 1), alpha=0.55, label=recipe["name"])
        for r in table:
            ax.annotate(r["artifact"].split("_", 1)[-1], (r["p50_us"], r["candidate_accuracy"] * 100), fontsize=7)
        points = [(r["p50_us"], r["candidate_accuracy"] * 100) for r in table]
        front = pareto_front(points)  # each model its own: a front across models means nothing
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "--", lw=1, color="0.3")
        everything += points
    if not everything:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency, batch 1, 1 thread (µs, log)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title("Accuracy vs latency (marker area ∝ file size; dashed: each model's Pareto front)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _latency(plt, summary):
    measured = [r for recipe in summary["recipes"] for r in (recipe["bench"] or {}).get("results", [])
                if r.get("latencies_us")]
    return latency_figure(plt, [r["latencies_us"] for r in measured], [r["artifact"] for r in measured],
                          title="Latency distributions")


def _devices(plt, summary):
    from .devices import figure

    return figure(plt, {r["name"]: r["devices"] for r in summary["recipes"] if r.get("devices")})


def _training(plt, summary):
    fig, ax = plt.subplots(figsize=(8, 4))
    drew = False
    for recipe in summary["recipes"]:
        history = recipe.get("history") or {}
        if history.get("val_accuracy"):
            epochs = range(1, len(history["val_accuracy"]) + 1)
            line, = ax.plot(epochs, [a * 100 for a in history["val_accuracy"]], label=f"{recipe['name']} val")
            if history.get("accuracy"):
                ax.plot(epochs, [a * 100 for a in history["accuracy"]], ls=":", color=line.get_color(),
                        label=f"{recipe['name']} train")
            drew = True
    if not drew:
        plt.close(fig)
        return None
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Training curves (train augmented; validation clean)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- writers

def write_reports(out: Path, summary: dict) -> Path:
    """report.md (terminals, CI; PNG plots beside it) and report.html (one self-contained page)."""
    from .html_report import to_html
    from .overlays import write_for_pipeline

    write_for_pipeline(out, summary)  # Model Explorer overlays beside the report (edgedl explore)
    plots = _plots(out, summary)
    write_text(out / "report.md", markdown(summary, plots))
    commands = "\n".join(line for line in _commands(summary).splitlines() if not line.startswith("```"))
    write_text(out / "report.html", to_html(summary, commands))
    return out / "report.html"


def write_junit(path: Path, summary: dict) -> None:
    suites = ElementTree.Element("testsuites", name="edgedl pipeline")
    for recipe in summary["recipes"]:
        gates = recipe["gates"]
        suite = ElementTree.SubElement(suites, "testsuite", name=recipe["name"], tests=str(len(gates)),
                                       failures=str(sum(not g["passed"] for g in gates)))
        for gate in gates:
            case = ElementTree.SubElement(suite, "testcase", classname=f"{recipe['name']}.{gate['gate']}",
                                          name=gate["artifact"])
            if not gate["passed"]:
                ElementTree.SubElement(case, "failure", message=gate["detail"])
    with atomic_path(path) as tmp:
        ElementTree.ElementTree(suites).write(tmp, encoding="utf-8", xml_declaration=True)
