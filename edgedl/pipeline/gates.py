"""Judgement over a recipe's results: one row per artifact, the artifact to ship, and the gates."""

from __future__ import annotations


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


def recommend(validation: dict | None, bench: dict | None, mcu: dict | None = None) -> str | None:
    """What to ship on a device: the fastest faithful TFLite artifact (smaller wins a near tie). An
    artifact whose quantization had no effect (it is float32 by another name) is never recommended.

    For a microcontroller (``mcu``: verdicts per int8 artifact), only full-int8 TFLite artifacts that
    pass TFLite Micro and fit the board qualify, timed under TFLite Micro's kernels, not the host's."""
    candidates = [r for r in rows(validation, bench) if r["verdict"] == "pass" and not r.get("no_effect")
                  and r["artifact"].endswith(".tflite") and r.get("p50_us")]
    if mcu is not None:
        candidates = [dict(r, p50_us=mcu[r["artifact"]]["seconds_per_inference"] * 1e6) for r in candidates
                      if (mcu.get(r["artifact"]) or {}).get("passed")]
    if not candidates:
        return None
    fastest = min(r["p50_us"] for r in candidates)
    near = [r for r in candidates if r["p50_us"] <= fastest * 1.10]
    return min(near, key=lambda r: r["size"])["artifact"]


def judge_gates(gates: dict, validation: dict | None, bench: dict | None, rescued: dict | None = None) -> list[dict]:
    """Each gate on each artifact. An int8 artifact the rescue ladder replaced is judged through its
    rescue, and a rung that was tried and did not pass is a record of the climb, not a failure."""
    results = []
    table = rows(validation, bench)
    for row in table:
        name = row["artifact"]
        if rescued and name in rescued:
            by = rescued[name]
            results.append(_gate("rescued", name, True, f"{name} failed as int8; rescued by {by['rung']} "
                                 f"({by['artifact']})"))
            continue
        if row.get("rescue") and row["verdict"] != "pass":
            results.append(_gate("rescue", name, True, f"{name}: rung {row['rescue']} tried, did not pass"))
            continue
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
