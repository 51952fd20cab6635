"""``report.html``: one self-contained page to look at (inline SVG, CSS and a little vanilla JS).

Summary first (a verdict per model, what ships and why), then one section per model: its trade-off
plot with its own Pareto front, latency distributions, the parity matrix coloured by gate (failed
first), per-layer drift named by Keras layer, and the rescue ladder, microcontroller and device
results when there are any. Tables sort (click a heading) and filter (type in the box above them).
Nothing is fetched: no CDN, no fonts, no images by URL; it prints to PDF without its controls.
"""

from __future__ import annotations

import platform
from html import escape

from ..core.env import machine_fingerprint
from ..deploy.firmware import firmware_cell
from . import svg
from .gates import rows
from .overlays import SQNR_THRESHOLDS, STEPS_THRESHOLDS

# Which gate judges which column of the parity matrix (pipeline/gates.py names them).
GATE_OF_COLUMN = {"size": "max_size_kb", "agreement": "min_agreement", "accuracy_delta": "max_accuracy_drop",
                  "p50_us": "max_latency_ms", "verdict": "parity"}

STYLE = """
:root{--ok:#e3f4e8;--okt:#1d5e35;--bad:#fbe0dc;--badt:#8e2418;--mute:#667;--line:#d8dbe0}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1c1f24;
max-width:1180px;margin:0 auto;padding:1.5em}h1{font-size:1.6em;margin:.2em 0}h2{margin-top:2em;
border-bottom:2px solid var(--line);padding-bottom:.2em}h3{margin:1.4em 0 .4em}.muted{color:var(--mute)}
.badge{display:inline-block;border-radius:3px;padding:0 .5em;font-weight:600;font-size:.85em}
.badge.pass{background:var(--ok);color:var(--okt)}.badge.fail{background:var(--bad);color:var(--badt)}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:12px;margin:1em 0}
.card{border:1px solid var(--line);border-radius:6px;padding:.8em 1em}.card h3{margin:0 0 .3em}
.card dl{display:grid;grid-template-columns:auto 1fr;gap:2px 10px;margin:.4em 0 0}.card dt{color:var(--mute)}
.card dd{margin:0}table{border-collapse:collapse;font-size:12.5px;margin:.3em 0 1em;width:100%}
th,td{border:1px solid var(--line);padding:3px 6px;text-align:right;white-space:nowrap}
th{background:#f3f4f6;cursor:pointer;user-select:none;position:sticky;top:0}
th[aria-sort=ascending]::after{content:" ▲"}th[aria-sort=descending]::after{content:" ▼"}
td.t,th.t{text-align:left}td.ok{background:var(--ok);color:var(--okt)}td.bad{background:var(--bad);
color:var(--badt);font-weight:600}td.wrap{white-space:normal;text-align:left}
input.filter{font:inherit;padding:3px 8px;width:280px;border:1px solid var(--line);border-radius:4px}
figure{margin:.5em 0 1em}figcaption{color:var(--mute);font-size:.9em}
.plot{max-width:100%;height:auto;font:11px system-ui,sans-serif}.plot .frame{fill:none;stroke:#aab}
.plot .grid{stroke:#eceef1}.plot .tick{fill:#556}.plot .axis{fill:#334;font-size:12px}
.plot .front{fill:none;stroke:#333;stroke-dasharray:5 4}.plot .front-mark{fill:none;stroke:#333;stroke-dasharray:3 2}.plot .leader{stroke:#b8bcc4}
.plot .point{fill-opacity:.75;stroke:#fff}.plot .plot-label rect{fill:#fff;stroke:#d8dbe0}
.plot .plot-label text{fill:#222}.plot .box rect{fill:#cfe0f5;stroke:#1f4e9c}.plot .whisker{stroke:#1f4e9c}
.plot .median{stroke:#0b2350;stroke-width:2}.plot .bar rect{fill:#e39b54;stroke:#8a6d4a;stroke-width:.5}.plot .value{fill:#444}
pre{background:#f4f5f7;padding:1em;overflow:auto}
@media print{body{max-width:none;padding:0;font-size:11px}input.filter,.noprint{display:none}
th{position:static}th,td{white-space:normal;padding:2px 3px}table{font-size:9px}h2{break-before:page}section.summary h2{break-before:auto}
figure,table,.card{break-inside:avoid}a{color:inherit;text-decoration:none}}
@page{margin:12mm}
"""

SCRIPT = """
(function(){
function key(td){var v=td.getAttribute('data-v');if(v!==null&&v!==''){var n=parseFloat(v);if(!isNaN(n))return n;}
return td.textContent.trim().toLowerCase();}
function sortTable(table,col,th){var dir=th.getAttribute('aria-sort')==='ascending'?-1:1;
table.querySelectorAll('th').forEach(function(h){h.removeAttribute('aria-sort');});
th.setAttribute('aria-sort',dir>0?'ascending':'descending');var body=table.tBodies[0];
var rows=Array.prototype.slice.call(body.rows);rows.sort(function(a,b){var x=key(a.cells[col]),y=key(b.cells[col]);
if(typeof x==='number'&&typeof y==='number')return (x-y)*dir;if(typeof x==='number')return -1;
if(typeof y==='number')return 1;return x<y?-dir:x>y?dir:0;});rows.forEach(function(r){body.appendChild(r);});}
document.querySelectorAll('table.sortable').forEach(function(table){
table.querySelectorAll('thead th').forEach(function(th,col){th.tabIndex=0;th.title='sort';
th.addEventListener('click',function(){sortTable(table,col,th);});
th.addEventListener('keydown',function(e){if(e.key==='Enter')sortTable(table,col,th);});});});
document.querySelectorAll('input.filter').forEach(function(input){var table=document.getElementById(input.getAttribute('data-table'));
input.addEventListener('input',function(){var terms=input.value.toLowerCase().split(/\\s+/).filter(Boolean);
Array.prototype.forEach.call(table.tBodies[0].rows,function(r){var text=r.textContent.toLowerCase();
r.hidden=!terms.every(function(t){return text.indexOf(t)>=0;});});});});
})();
"""


def _fmt(value, spec: str, scale: float | None = None) -> str:
    if value is None:
        return "–"
    return format(value * scale if scale else value, spec)


def _td(text: str, value=None, cls: str = "") -> str:
    v = "" if value is None else f" data-v='{value}'"
    c = f" class='{cls}'" if cls else ""
    return f"<td{c}{v}>{escape(text)}</td>"


def _table(table_id: str, head: list[tuple[str, bool]], body: list[str], filterable: bool = True) -> str:
    """``head``: (label, is_text). ``body``: finished <tr> rows."""
    ths = "".join(f"<th class='t'>{escape(h)}</th>" if text else f"<th>{escape(h)}</th>" for h, text in head)
    search = (f"<p class='noprint'><input class='filter' type='search' data-table='{table_id}' "
              f"placeholder='filter rows: type words, e.g. int8 onnx' aria-label='filter {table_id}'></p>"
              if filterable else "")
    return (f"{search}<table id='{table_id}' class='sortable'><thead><tr>{ths}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


# ---------------------------------------------------------------- summary

def ship_reason(recipe: dict, target: str | None) -> str:
    """Why the shipped artifact was chosen, in one sentence with its numbers."""
    ship = recipe.get("ship")
    if not ship:
        return "Nothing ships: no TFLite artifact passed every check" + (f" and fit {target}." if target else ".")
    table = {r["artifact"]: r for r in rows(recipe["validation"], recipe["bench"])}
    row = table.get(ship, {})
    if target:
        verdict = (recipe.get("mcu") or {}).get(ship) or {}
        us = (verdict.get("seconds_per_inference") or 0) * 1e6
        return (f"The fastest full-int8 TFLite model under TFLite Micro ({us:,.0f} µs per inference) that passes "
                f"its check and fits {target}: RAM {verdict.get('ram', 0) / 1024:,.1f} KB, flash "
                f"{verdict.get('flash', 0) / 1024:,.1f} KB.")
    faithful = [r for r in table.values() if r["verdict"] == "pass" and r["artifact"].endswith(".tflite")
                and r.get("p50_us") and not r.get("no_effect")]
    faster = [r for r in faithful if r["p50_us"] < (row.get("p50_us") or 0)]
    tie = f" {faster[0]['artifact']} is within 10% of its speed but larger." if faster else ""
    return (f"The fastest faithful TFLite artifact: p50 {_fmt(row.get('p50_us'), ',.1f')} µs, "
            f"{row.get('size', 0) / 1024:,.1f} KB, agreement {_fmt(row.get('agreement'), '.2%')} with Keras "
            f"({len(faithful)} of {len(table)} artifacts were candidates).{tie}")


def _card(recipe: dict, target: str | None) -> str:
    failed = [g for g in recipe["gates"] if not g["passed"]]
    ok = not failed and not recipe["errors"]
    metrics = recipe["metrics"]
    score = (f"{metrics['test_accuracy']:.2%} accuracy" if metrics.get("test_accuracy") is not None
             else f"MAE {metrics.get('test_mae', 0):.4g}" if metrics.get("test_mae") is not None else "–")
    gates = (f"all {len(recipe['gates'])} pass" if not failed else
             f"{len(failed)} of {len(recipe['gates'])} fail: " + "; ".join(g["detail"] for g in failed[:3]))
    return (f"<div class='card' id='card-{escape(recipe['name'])}'><h3><a href='#model-{escape(recipe['name'])}'>"
            f"{escape(recipe['name'])}</a> <span class='badge {'pass' if ok else 'fail'}'>"
            f"{'PASS' if ok else 'FAIL'}</span></h3><dl><dt>ships</dt><dd><b>{escape(recipe.get('ship') or 'nothing')}"
            f"</b></dd><dt>why</dt><dd>{escape(ship_reason(recipe, target))}</dd><dt>Keras</dt><dd>{escape(score)} "
            f"on {recipe['dataset']['sizes']['test']} held-out samples</dd><dt>gates</dt><dd>{escape(gates)}</dd>"
            + "".join(f"<dt>error</dt><dd>{escape(e)}</dd>" for e in recipe["errors"]) + "</dl></div>")


def _artifacts_table(summary: dict) -> str:
    body = []
    for recipe in summary["recipes"]:
        failed = {g["artifact"] for g in recipe["gates"] if not g["passed"]}
        for r in rows(recipe["validation"], recipe["bench"]):
            name = r["artifact"] + (" ★" if r["artifact"] == recipe["ship"] else "")
            bad = r["artifact"] in failed
            body.append("<tr>" + _td(recipe["name"], cls="t") + _td(name, cls="t") + _td(r["format"], cls="t")
                        + _td(r["precision"], cls="t") + _td(_fmt(r["size"] / 1024, ",.1f"), r["size"])
                        + _td(_fmt(r.get("candidate_accuracy"), ".2%"), r.get("candidate_accuracy"))
                        + _td(_fmt(r.get("agreement"), ".2%"), r.get("agreement"))
                        + _td(_fmt(r.get("p50_us"), ",.1f"), r.get("p50_us"))
                        + _td(_fmt(r.get("p99_us"), ",.1f"), r.get("p99_us"))
                        + _td("fail" if bad else "pass", 0 if bad else 1, "bad" if bad else "ok") + "</tr>")
    head = [("model", True), ("artifact", True), ("format", True), ("precision", True), ("size (KB)", False),
            ("accuracy", False), ("agreement", False), ("p50 (µs)", False), ("p99 (µs)", False), ("gates", False)]
    return _table("artifacts", head, body)


# ---------------------------------------------------------------- per model

def _gate_map(recipe: dict) -> dict:
    judged: dict[tuple[str, str], bool] = {}
    for g in recipe["gates"]:
        judged[(g["artifact"], g["gate"])] = judged.get((g["artifact"], g["gate"]), True) and g["passed"]
    return judged


def _parity(recipe: dict) -> str:
    judged = _gate_map(recipe)
    table = rows(recipe["validation"], recipe["bench"])
    failures = {r["artifact"]: sum(not ok for (a, _), ok in judged.items() if a == r["artifact"]) for r in table}
    table.sort(key=lambda r: -failures[r["artifact"]])  # failed gates first

    def cell(r, column, text, value):
        ok = judged.get((r["artifact"], GATE_OF_COLUMN.get(column, "")))
        return _td(text, value, "" if ok is None else ("ok" if ok else "bad"))

    body = []
    for r in table:
        body.append("<tr>" + _td(r["artifact"], cls="t") + _td(r["precision"], cls="t")
                    + cell(r, "size", f"{r['size']:,}", r["size"])
                    + _td(_fmt(r.get("max_abs"), ".2e"), r.get("max_abs"))
                    + _td(_fmt(r.get("sqnr_db"), ".1f"), r.get("sqnr_db"))
                    + cell(r, "agreement", _fmt(r.get("agreement"), ".2%"), r.get("agreement"))
                    + _td(_fmt(r.get("candidate_accuracy"), ".2%"), r.get("candidate_accuracy"))
                    + cell(r, "accuracy_delta", _fmt(r.get("accuracy_delta"), "+.2f", 100), r.get("accuracy_delta"))
                    + cell(r, "p50_us", _fmt(r.get("p50_us"), ",.1f"), r.get("p50_us"))
                    + cell(r, "verdict", r["verdict"], 0 if r["verdict"] != "pass" else 1)
                    + _td(str(failures[r["artifact"]]), -failures[r["artifact"]],
                          "bad" if failures[r["artifact"]] else "ok") + "</tr>")
    head = [("artifact", True), ("precision", True), ("size (B)", False), ("max abs", False), ("SQNR dB", False),
            ("agreement", False), ("accuracy", False), ("Δ acc (pp)", False), ("p50 (µs)", False),
            ("verdict", False), ("failed gates", False)]
    return _table(f"parity-{recipe['name']}", head, body)


def _tradeoff(recipe: dict) -> str:
    failed = {g["artifact"] for g in recipe["gates"] if not g["passed"]}
    points = [{"label": r["artifact"], "latency_us": r["p50_us"], "accuracy": r["candidate_accuracy"],
               "size": r["size"], "passed": r["artifact"] not in failed and r["verdict"] == "pass",
               "ship": r["artifact"] == recipe["ship"]}
              for r in rows(recipe["validation"], recipe["bench"])
              if r.get("p50_us") and r.get("candidate_accuracy") is not None]
    plot = svg.tradeoff(points, f"{recipe['name']}: accuracy vs latency")
    return (f"<figure>{plot}<figcaption>Accuracy vs p50 latency of {escape(recipe['name'])}'s artifacts; marker area ∝ "
            "file size; dashed ring and line: this model's Pareto front (no other artifact is both faster and more accurate); blue: shipped (★); red: fails a gate. Hover a marker "
            "for its numbers.</figcaption></figure>") if plot else ""


def _latency(recipe: dict) -> str:
    series = [(r["artifact"], r["latencies_us"]) for r in (recipe["bench"] or {}).get("results", [])
              if r.get("latencies_us") and r.get("threads") == 1 and r.get("batch") == 1]
    plot = svg.latency_boxes(series, f"{recipe['name']}: latency distributions")
    return f"<figure>{plot}<figcaption>Per-artifact latency, batch 1, 1 thread.</figcaption></figure>" if plot else ""


def _drift(recipe: dict) -> str:
    drift = (recipe["validation"] or {}).get("drift") or {}
    if not drift:
        return "<p class='muted'>No per-layer drift: no int8 artifact, or the pipeline ran with --no-layers.</p>"
    parts = []
    for artifact, entry in drift.items():
        if "error" in entry:
            parts.append(f"<p><b>{escape(artifact)}</b>: per-layer drift unavailable — {escape(entry['error'])}</p>")
            continue
        layers = entry.get("layers") or entry.get("worst") or []
        if entry.get("metric") == "sqnr_db":
            items = [(row["layer"] or "inserted by the converter", max(60.0 - row["sqnr_db"], 0.0),
                      f"{row['layer']}: SQNR {row['sqnr_db']:.1f} dB (worst of {row.get('tensors', 1)} tensors; "
                      f"60 dB − SQNR drawn)", _colour(row["sqnr_db"], SQNR_THRESHOLDS)) for row in layers]
            axis = "60 dB − SQNR against the float ONNX model (longer is worse)"
        else:
            items = [(row["layer"] or "inserted by the converter", row["score"],
                      f"{row['layer']}: RMSE {row['score']:.3g} quantization steps (worst of "
                      f"{row.get('tensors', 1)} tensors)", _colour(row["score"], STEPS_THRESHOLDS)) for row in layers]
            axis = "RMSE against float, in quantization steps of the tensor (longer is worse)"
        plot = svg.bars(items, f"{artifact}: per-layer drift", axis)
        plot += (f"<p class='muted'>On the graph: <code>edgedl explore {escape(recipe['run_dir'])}/exports/"
                 f"{escape(artifact)}</code>, or load <code>overlays/{escape(artifact)}.*.json</code> into Model "
                 "Explorer.</p>")
        parts.append(f"<figure class='drift' data-artifact='{escape(artifact)}'><figcaption><b>{escape(artifact)}"
                     f"</b>, by Keras layer</figcaption>{plot}</figure>")
    return "".join(parts)


def _colour(value: float, thresholds: list[dict]) -> str | None:
    """The colour Model Explorer gives ``value`` on the graph (the same thresholds as the overlays)."""
    return next((t["bgColor"] for t in thresholds if value <= t["value"]), None)


def _rescue(recipe: dict) -> str:
    rescue = recipe.get("rescue") or {}
    if not rescue:
        return ""
    body = []
    for failed, entry in rescue.items():
        ptq = entry["ptq"]
        body.append("<tr>" + _td(failed, cls="t") + _td("PTQ (as exported)", cls="t") + _td(failed, cls="t")
                    + _td("FAIL", 0, "bad") + _td(_fmt(ptq.get("agreement"), ".2%"), ptq.get("agreement"))
                    + _td(_fmt(ptq.get("candidate_accuracy"), ".2%"), ptq.get("candidate_accuracy"))
                    + _td("", cls="wrap") + "</tr>")
        for rung in entry["rungs"]:
            verdict = "pass" if rung["passed"] else ("skipped" if rung.get("skipped") else "FAIL")
            note = rung.get("note") or (f"float: {', '.join(rung['layers'])}" if rung.get("layers") else "")
            body.append("<tr>" + _td(failed, cls="t") + _td(rung["rung"], cls="t")
                        + _td(rung.get("artifact") or "–", cls="t")
                        + _td(verdict, int(bool(rung["passed"])), "ok" if rung["passed"] else
                              ("" if rung.get("skipped") else "bad"))
                        + _td(_fmt(rung.get("agreement"), ".2%"), rung.get("agreement"))
                        + _td(_fmt(rung.get("candidate_accuracy"), ".2%"), rung.get("candidate_accuracy"))
                        + _td(note, cls="wrap") + "</tr>")
    head = [("failed int8", True), ("rung", True), ("artifact", True), ("verdict", False), ("agreement", False),
            ("accuracy", False), ("note", True)]
    return "<h3>Rescue ladder</h3>" + _table(f"rescue-{recipe['name']}", head, body, filterable=False)


def _mcu(recipe: dict, target: str | None) -> str:
    mcu = recipe.get("mcu") or {}
    if not mcu:
        return ""
    body = []
    for artifact, v in mcu.items():
        fit = v.get("fit") or {}
        body.append("<tr>" + _td(artifact, cls="t") + _td("pass" if v.get("passed") else "FAIL",
                                                          int(bool(v.get("passed"))), "ok" if v.get("passed") else "bad")
                    + _td(_fmt((v.get("seconds_per_inference") or 0) * 1e6 or None, ",.0f"),
                          (v.get("seconds_per_inference") or 0) * 1e6)
                    + _td(_fmt((v.get("ram") or 0) / 1024, ",.1f"), v.get("ram"))
                    + _td(_fmt((v.get("flash") or 0) / 1024, ",.1f"), v.get("flash"))
                    + _td(_fmt((fit.get("ram_headroom") or 0) / 1024 if fit else None, "+,.1f"), fit.get("ram_headroom"))
                    + _td(_fmt((fit.get("flash_headroom") or 0) / 1024 if fit else None, "+,.1f"),
                          fit.get("flash_headroom"))
                    + _td(v.get("why") or "", cls="wrap") + "</tr>")
    head = [("artifact", True), ("TFLite Micro", False), ("µs / inference", False), ("RAM (KB)", False),
            ("flash (KB)", False), ("RAM headroom", False), ("flash headroom", False), ("why", True)]
    firmware = recipe.get("firmware")
    line = (f"<p>Firmware of the shipped bundle on {escape(target or '')}'s core (emulated): "
            f"{escape(firmware_cell(firmware).replace('**', ''))}</p>" if firmware else "")
    return (f"<h3>Microcontroller ({escape(target or '')})</h3>"
            + _table(f"mcu-{recipe['name']}", head, body, filterable=False) + line)


def _device(recipe: dict) -> str:
    device = recipe.get("device") or {}
    if not device:
        return ""
    items = "".join(f"<li><b>{escape(str(k))}</b>: {escape(str(v))}</li>" for k, v in device.items())
    return f"<h3>Device</h3><ul>{items}</ul>"


def _model(recipe: dict, target: str | None) -> str:
    failed = [g for g in recipe["gates"] if not g["passed"]]
    gates = ("".join(f"<li>✗ {escape(g['gate'])}: {escape(g['detail'])}</li>" for g in failed)
             or f"<li>✓ all {len(recipe['gates'])} gate checks pass</li>")
    steps = ", ".join(f"{step} {'skipped' if t['skipped'] else format(t['seconds'], '.1f') + ' s'}"
                      for step, t in recipe["timings"].items())
    return (f"<section class='model' id='model-{escape(recipe['name'])}'><h2>{escape(recipe['name'])}</h2>"
            f"<p class='muted'>Steps: {escape(steps)}</p>"
            f"<h3>Trade-off</h3>{_tradeoff(recipe)}{_latency(recipe)}"
            f"<h3>Parity matrix</h3><p class='muted'>Cells judged by a gate are green (pass) or red (fail); rows "
            f"with failed gates come first. Click a heading to sort.</p>{_parity(recipe)}"
            f"<h3>Per-layer drift (int8)</h3>{_drift(recipe)}{_rescue(recipe)}{_mcu(recipe, target)}"
            f"{_device(recipe)}<h3>Gates</h3><ul>{gates}</ul>"
            + "".join(f"<p class='bad'>✗ {escape(e)}</p>" for e in recipe["errors"]) + "</section>")


def _environment(summary: dict) -> str:
    machine = machine_fingerprint()
    versions = ", ".join(f"{k} {v}" for k, v in summary["versions"].items())
    return (f"<ul><li>CPU: {escape(str(machine['cpu']))} ({machine['cores']} cores; "
            f"{escape(', '.join(machine['cpu_flags']))})</li><li>System: {escape(str(machine['system']))}, Python "
            f"{platform.python_version()}</li><li>Libraries: {escape(versions)}</li></ul>")


def to_html(summary: dict, commands: str) -> str:
    """The whole page for a pipeline ``summary``; ``commands``: the shell lines that reproduce it."""
    target = summary.get("target")
    verdict = "PASS" if summary["passed"] else "FAIL"
    body = (f"<header><h1>edgedl pipeline report <span class='badge {verdict.lower()}'>{verdict}</span></h1>"
            f"<p class='muted'>{len(summary['recipes'])} models, finished in {summary['seconds']:.0f} s"
            + (f", for {escape(target)}" if target else "") + "</p></header>"
            "<section class='summary' id='summary'><h2>Summary</h2><div class='cards'>"
            + "".join(_card(r, target) for r in summary["recipes"]) + "</div><h3>Every artifact</h3>"
            + _artifacts_table(summary) + "</section>"
            + "".join(_model(r, target) for r in summary["recipes"])
            + f"<section><h2>Environment</h2>{_environment(summary)}<h2>Reproduce</h2><pre>{escape(commands)}</pre>"
            "</section>")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
            f"content='width=device-width,initial-scale=1'><title>edgedl report — {verdict}</title>"
            f"<style>{STYLE}</style></head><body>{body}<script>{SCRIPT}</script></body></html>\n")
