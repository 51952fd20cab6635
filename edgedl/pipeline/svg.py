"""Inline SVG plots for the HTML report: written by hand, no plotting library, no fonts to fetch.

Every label sits in a column or row of its own, spaced by at least one line height, so no two labels
can overlap whatever the data; a point's exact numbers are in its hover title.
"""

from __future__ import annotations

import math
from html import escape

import numpy as np

LINE = 17  # px between label baselines (11 px text in a 14 px box)
FONT = 11
PASS, FAIL, SHIP = "#2f7d4f", "#c0392b", "#1f4e9c"


def _ticks_log(lo: float, hi: float, most: int = 7) -> list[float]:
    """1-2-5 ticks per decade; over a wide range only powers of ten (every other one if still too many),
    so that tick labels keep their distance."""
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    for marks in ((1, 2, 5), (1, 3), (1,)):
        ticks = [m * 10**exp for exp in decades for m in marks if lo <= m * 10**exp <= hi]
        if len(ticks) <= most:
            return ticks or [lo, hi]
    return ticks[::2]


def _ticks_lin(lo: float, hi: float, count: int = 5) -> list[float]:
    span = hi - lo or 1.0
    step = 10 ** math.floor(math.log10(span / count))
    for mult in (1, 2, 5, 10):
        if span / (step * mult) <= count:
            step *= mult
            break
    start = math.ceil(lo / step) * step
    return [round(start + i * step, 10) for i in range(int((hi - start) / step) + 1)]


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _spread(targets: list[float], top: float, bottom: float, gap: float = LINE) -> list[float]:
    """Positions as close to ``targets`` (sorted ascending) as possible, at least ``gap`` apart, inside
    [top, bottom] when they fit (the caller sizes the plot so that they do)."""
    placed = []
    for t in targets:
        placed.append(max(t, top, placed[-1] + gap if placed else top))
    overflow = placed[-1] - bottom if placed else 0
    if overflow > 0:  # push the column back up, keeping the gaps
        for i in range(len(placed) - 1, -1, -1):
            limit = bottom if i == len(placed) - 1 else placed[i + 1] - gap
            placed[i] = min(placed[i], limit)
    return placed


def _label(x: float, y: float, text: str, cls: str = "plot-label", anchor: str = "start") -> str:
    width = len(text) * 6.4 + 8
    left = x if anchor == "start" else x - width
    return (f"<g class='{cls}'><rect x='{left:.1f}' y='{y - 11:.1f}' width='{width:.1f}' height='14' rx='2'/>"
            f"<text x='{left + 4:.1f}' y='{y:.1f}'>{escape(text)}</text></g>")


def pareto_indices(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both lower x (latency) and higher y (accuracy)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any(x2 <= x and y2 >= y and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def tradeoff(points: list[dict], title: str) -> str:
    """Accuracy vs p50 latency of one model's artifacts; marker area ∝ file size; the model's own
    Pareto front; labels in a column at the right, joined to their points by leader lines.

    ``points``: {"label", "latency_us", "accuracy" (0..1), "size", "passed", "ship"}."""
    if not points:
        return ""
    plot_h = max(220, LINE * len(points) + 40)
    left, top, plot_w, col = 64, 28, 420, 230
    width, height = left + plot_w + 30 + col, top + plot_h + 44
    lat = [p["latency_us"] for p in points]
    acc = [p["accuracy"] * 100 for p in points]
    x_lo, x_hi = min(lat) / 1.25, max(lat) * 1.25
    a_lo, a_hi = min(acc), max(acc)
    pad = max((a_hi - a_lo) * 0.15, 0.5)
    y_lo, y_hi = a_lo - pad, min(a_hi + pad, 100.5) if a_hi <= 100 else a_hi + pad

    def px(v):
        return left + plot_w * (math.log10(v) - math.log10(x_lo)) / (math.log10(x_hi) - math.log10(x_lo))

    def py(v):
        return top + plot_h * (1 - (v - y_lo) / (y_hi - y_lo))

    out = [f"<svg class='plot tradeoff' viewBox='0 0 {width} {height}' width='{width}' height='{height}' "
           f"role='img' aria-label='{escape(title)}'><title>{escape(title)}</title>",
           f"<rect class='frame' x='{left}' y='{top}' width='{plot_w}' height='{plot_h}'/>"]
    for t in _ticks_log(x_lo, x_hi):
        out.append(f"<line class='grid' x1='{px(t):.1f}' x2='{px(t):.1f}' y1='{top}' y2='{top + plot_h}'/>"
                   f"<text class='tick' x='{px(t):.1f}' y='{top + plot_h + 14}' text-anchor='middle'>{_num(t)}</text>")
    for t in _ticks_lin(y_lo, y_hi):
        out.append(f"<line class='grid' x1='{left}' x2='{left + plot_w}' y1='{py(t):.1f}' y2='{py(t):.1f}'/>"
                   f"<text class='tick' x='{left - 6}' y='{py(t) + 4:.1f}' text-anchor='end'>{t:g}</text>")
    out.append(f"<text class='axis' x='{left + plot_w / 2}' y='{height - 8}' text-anchor='middle'>p50 latency, "
               "batch 1, 1 thread (µs, log scale)</text>"
               f"<text class='axis' transform='translate(14 {top + plot_h / 2}) rotate(-90)' text-anchor='middle'>"
               "held-out accuracy (%)</text>")
    front = pareto_indices(list(zip(lat, acc, strict=True)))
    if len(front) > 1:
        path = " ".join(f"{px(lat[i]):.1f},{py(acc[i]):.1f}" for i in front)
        out.append(f"<polyline class='front' points='{path}'><title>Pareto front of this model</title></polyline>")
    biggest = max(p["size"] for p in points) or 1
    order = sorted(range(len(points)), key=lambda i: py(acc[i]))
    ys = _spread([py(acc[i]) + 4 for i in order], top + 12, top + plot_h)
    col_x = left + plot_w + 30
    for i, y in zip(order, ys, strict=True):
        p = points[i]
        r = 3 + 13 * math.sqrt(p["size"] / biggest)
        colour = SHIP if p.get("ship") else (PASS if p["passed"] else FAIL)
        tip = (f"{p['label']}: p50 {p['latency_us']:,.1f} µs, accuracy {p['accuracy']:.2%}, "
               f"{p['size'] / 1024:,.1f} KB" + (" — shipped" if p.get("ship") else "")
               + ("" if p["passed"] else " — fails a gate"))
        out.append(f"<line class='leader' x1='{px(lat[i]) + r:.1f}' y1='{py(acc[i]):.1f}' x2='{col_x - 2}' "
                   f"y2='{y - 4:.1f}'/>")
        if i in front:
            out.append(f"<circle class='front-mark' cx='{px(lat[i]):.1f}' cy='{py(acc[i]):.1f}' r='{r + 3:.1f}'/>")
        out.append(f"<circle class='point' data-artifact='{escape(p['label'])}' cx='{px(lat[i]):.1f}' "
                   f"cy='{py(acc[i]):.1f}' r='{r:.1f}' fill='{colour}'><title>{escape(tip)}</title></circle>")
        out.append(_label(col_x, y, p["label"] + (" ★" if p.get("ship") else "")))
    out.append("</svg>")
    return "".join(out)


def latency_boxes(series: list[tuple[str, list[float]]], title: str) -> str:
    """One row per artifact: whiskers p1–p99, box p25–p75, a tick at the median (log scale)."""
    series = [(name, np.asarray(v, float)) for name, v in series if len(v)]
    if not series:
        return ""
    left, top, plot_w, row = 190, 24, 470, 22
    width, height = left + plot_w + 20, top + row * len(series) + 44
    stats = [(name, np.percentile(v, [1, 25, 50, 75, 99])) for name, v in series]
    lo = min(s[0] for _, s in stats) / 1.2
    hi = max(s[4] for _, s in stats) * 1.2

    def px(v):
        return left + plot_w * (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    out = [f"<svg class='plot latency' viewBox='0 0 {width} {height}' width='{width}' height='{height}' "
           f"role='img' aria-label='{escape(title)}'><title>{escape(title)}</title>"]
    for t in _ticks_log(lo, hi):
        out.append(f"<line class='grid' x1='{px(t):.1f}' x2='{px(t):.1f}' y1='{top}' y2='{top + row * len(stats)}'/>"
                   f"<text class='tick' x='{px(t):.1f}' y='{top + row * len(stats) + 14}' "
                   f"text-anchor='middle'>{_num(t)}</text>")
    for k, (name, (p1, p25, p50, p75, p99)) in enumerate(stats):
        y = top + row * k + row / 2
        tip = f"{name}: p1 {p1:,.1f}, p25 {p25:,.1f}, p50 {p50:,.1f}, p75 {p75:,.1f}, p99 {p99:,.1f} µs"
        out.append(f"<g class='box'><title>{escape(tip)}</title>"
                   f"<line class='whisker' x1='{px(p1):.1f}' x2='{px(p99):.1f}' y1='{y}' y2='{y}'/>"
                   f"<rect x='{px(p25):.1f}' y='{y - 6}' width='{max(px(p75) - px(p25), 1):.1f}' height='12'/>"
                   f"<line class='median' x1='{px(p50):.1f}' x2='{px(p50):.1f}' y1='{y - 7}' y2='{y + 7}'/></g>")
        out.append(_label(left - 8, y + 4, name, anchor="end"))
    out.append(f"<text class='axis' x='{left + plot_w / 2}' y='{height - 8}' text-anchor='middle'>latency per "
               "inference (µs, log scale): whiskers p1–p99, box p25–p75, tick p50</text></svg>")
    return "".join(out)


def bars(items: list[tuple], title: str, axis: str) -> str:
    """Horizontal bars, one per (label, value, hover text[, fill colour]), in the given order; values ≥ 0."""
    if not items:
        return ""
    left, top, plot_w, row = 220, 10, 400, 20
    width, height = left + plot_w + 70, top + row * len(items) + 36
    hi = max(item[1] for item in items) or 1.0
    out = [f"<svg class='plot bars' viewBox='0 0 {width} {height}' width='{width}' height='{height}' "
           f"role='img' aria-label='{escape(title)}'><title>{escape(title)}</title>"]
    for k, (name, value, tip, *colour) in enumerate(items):
        y = top + row * k
        w = plot_w * value / hi
        fill = f" style='fill:{colour[0]}'" if colour and colour[0] else ""
        out.append(f"<g class='bar'><title>{escape(tip)}</title><rect{fill} x='{left}' y='{y + 3}' width='{max(w, 1):.1f}' "
                   f"height='{row - 6}'/><text class='value' x='{left + w + 4:.1f}' y='{y + row - 6}'>{value:.3g}"
                   "</text></g>")
        out.append(_label(left - 8, y + row - 6, name, anchor="end"))
    out.append(f"<text class='axis' x='{left + plot_w / 2}' y='{height - 6}' text-anchor='middle'>{escape(axis)}"
               "</text></svg>")
    return "".join(out)
