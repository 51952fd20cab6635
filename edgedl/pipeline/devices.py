"""The pipeline's ``devices`` step: a recipe's ``[devices]`` fleet checks the shipped bundle and times every
TFLite artifact on each device (deploy/fleet.py), and the report gets their table, facts and plot.

    [devices]
    file = "devices.toml"      # beside the recipe (docs/DEPLOY.md, Your devices)
    ssh_config = "ssh_config"  # optional: ssh -F, beside the recipe
    runs = 200                 # optional, as warmup, samples, threads = [1], xnnpack = [true]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..core.files import write_json

DEFAULTS = {"runs": 200, "warmup": 20, "samples": 100, "threads": [1], "xnnpack": [True]}


def run_devices(settings: dict, bundle_dir: Path, shipped: str, artifacts: list[Path], out: Path, say) -> dict:
    """Check the bundle (parity + timing) and time the other .tflite artifacts on every device; write ``out``."""
    from ..deploy.fleet import Job, artifact_bundle, load_devices, remote_check

    options = DEFAULTS | {k: v for k, v in settings.items() if k in DEFAULTS}
    common = {"runs": options["runs"], "warmup": options["warmup"], "threads": list(options["threads"]),
              "xnnpack": tuple(options["xnnpack"])}
    ssh_config = str(settings["ssh_config"]) if settings.get("ssh_config") else None
    indent = lambda m: say("    " + m)  # noqa: E731
    check = remote_check(bundle_dir, load_devices(settings["file"]),
                         Job(bundle=bundle_dir, samples=options["samples"], **common), ssh_config, say=indent)
    timed = {shipped: check}
    with tempfile.TemporaryDirectory(prefix="edgedl-devices-") as tmp:
        for artifact in artifacts:
            if artifact.suffix != ".tflite" or artifact.name == shipped:
                continue
            say(f"    timing {artifact.name} on the devices …")
            folder = artifact_bundle(artifact, Path(tmp) / artifact.stem)
            timed[artifact.name] = remote_check(folder, load_devices(settings["file"]),
                                                Job(bundle=folder, parity=False, **common), ssh_config, say=indent)
    result = {"shipped": shipped, "check": check, "timed": timed}
    write_json(out, result)
    return {"devices": len(check["devices"]), "passed": all(r["passed"] for r in timed.values())}


def failures(result: dict) -> list[str]:
    """One line per device that failed a check or a timing, for the recipe's errors."""
    lines = []
    for artifact, report in result["timed"].items():
        for device in report["devices"]:
            if not device["passed"]:
                lines.append(f"devices: {device['label']} ({artifact}): {device.get('error', 'a measurement failed')}")
    return lines


def _best_clean(device: dict) -> dict | None:
    """The fastest unflagged measurement (flagged ones are never mixed in); None when there is none."""
    clean = [m for m in device.get("measurements", []) if "error" not in m and not m.get("flags")]
    return min(clean, key=lambda m: m["p50_us"]) if clean else None


def section(result: dict) -> str:
    """Markdown: device facts and parity of the shipped bundle, then p50 per artifact × device."""
    check = result["check"]
    lines = ["| device | board | arch | cores | governor | memory | OS | runtime | shipped bundle on it |",
             "|---|---|---|---|---|---|---|---|---|"]
    for device in check["devices"]:
        facts = device.get("device") or {}
        outputs = device.get("outputs") or {}
        verdict = ("✗ " + device["error"]) if "error" in device else \
            f"✓ self-test; outputs vs x86: {outputs.get('detail', '–')}"
        lines.append(f"| {device['label']} | {facts.get('model', '–')} | {facts.get('arch', '–')} | "
                     f"{facts.get('cores', '–')} | {facts.get('governor') or '–'} | "
                     f"{_mb(facts.get('memory_mb'))} | {facts.get('os', '–')} | "
                     f"{facts.get('runtime', '–')} {facts.get('runtime_version', '')} | {_cell(verdict)} |")
    labels = [d["label"] for d in check["devices"]]
    lines += ["", "p50 latency in µs (the fastest clean setting: threads, XNNPACK); ⚠ = only flagged runs "
              "(throttling or a changed CPU frequency), – = failed:", "",
              "| artifact | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for artifact, report in result["timed"].items():
        cells = []
        for label in labels:
            device = next((d for d in report["devices"] if d["label"] == label), {})
            best = _best_clean(device)
            flagged = [m for m in device.get("measurements", []) if m.get("flags") and "error" not in m]
            if best:
                cells.append(f"{best['p50_us']:.1f} ({best['threads']}t, XNNPACK {'on' if best['xnnpack'] else 'off'})")
            elif flagged:
                cells.append(f"⚠ {min(m['p50_us'] for m in flagged):.1f}")
            else:
                cells.append("–")
        star = " ★" if artifact == result["shipped"] else ""
        lines.append(f"| {artifact}{star} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mb(value) -> str:
    return f"{value:,} MB" if value else "–"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")[:160]


def figure(plt, results: dict):
    """Grouped bars: p50 latency by artifact (groups) and device (bars), log scale; None when nothing was timed."""
    import numpy as np

    points = {}  # (artifact, device) -> p50
    for recipe, result in results.items():
        for artifact, report in result["timed"].items():
            for device in report["devices"]:
                best = _best_clean(device)
                if best:
                    points[(f"{recipe}: {artifact}", device["label"])] = best["p50_us"]
    if not points:
        return None
    artifacts = sorted({a for a, _ in points})
    devices = sorted({d for _, d in points})
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(artifacts) * max(1, len(devices) / 2) + 1.8))
    height = 0.8 / len(devices)
    for j, device in enumerate(devices):
        values = [points.get((a, device), np.nan) for a in artifacts]
        ax.barh(np.arange(len(artifacts)) + j * height, values, height=height, label=device)
    ax.set_yticks(np.arange(len(artifacts)) + height * (len(devices) - 1) / 2, artifacts, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency per inference on the device (µs, log; fastest clean setting)")
    ax.set_title("Latency by device and artifact")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
