"""The parity matrix: one row per artifact with its headline metrics, as data and as Markdown."""

from __future__ import annotations

MATRIX_COLUMNS = ("artifact", "format", "precision", "size", "max_abs", "mean_abs", "cosine", "sqnr_db",
                  "agreement", "candidate_accuracy", "accuracy_delta", "verdict")


def matrix_rows(reports: list[dict]) -> list[dict]:
    rows = []
    for report in reports:
        first = (report.get("outputs") or [{}])[0]
        metrics = first.get("metrics", {}) if isinstance(first, dict) else {}
        rows.append({"artifact": report["artifact"], "format": report.get("format"),
                     "precision": report.get("precision"), "size": report.get("size"),
                     **{k: metrics.get(k) for k in MATRIX_COLUMNS[4:-1]},
                     "verdict": "pass" if report["passed"] else ("error" if report.get("error") else "FAIL"),
                     "no_effect": bool(report.get("no_effect"))})
    return rows


def _cell(value, fmt: str, scale: float | None = None) -> str:
    if value is None:
        return "–"
    return format(value * scale if scale else value, fmt)


def matrix_markdown(rows: list[dict]) -> str:
    lines = ["| artifact | format | precision | size (B) | max abs | mean abs | cosine | SQNR dB | agreement "
             "| accuracy | Δ acc (pp) | verdict |", "|" + "---|" * 12]
    for r in rows:
        cells = [r["artifact"], r["format"], r["precision"], _cell(r.get("size"), ","),
                 _cell(r.get("max_abs"), ".2e"), _cell(r.get("mean_abs"), ".2e"), _cell(r.get("cosine"), ".6f"),
                 _cell(r.get("sqnr_db"), ".1f"), _cell(r.get("agreement"), ".2%"),
                 _cell(r.get("candidate_accuracy"), ".2%"), _cell(r.get("accuracy_delta"), "+.2f", 100),
                 r["verdict"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)
