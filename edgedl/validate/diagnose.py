"""Why an int8 file failed, measured: each quantized tensor against the range calibration gave it.

A value outside the int8 range of its tensor is clipped. For an output, the clipping's share of the
output's error is measured directly (|reference − clip(reference)| against |reference − int8|); for
an input, the share of held-out values that are clipped. For a tensor inside the network, the file's
own int8 values are read (LiteRT's builtin kernels, every tensor kept): a value clipped there sits on
the edge of the range, so the share of values on an edge on the held-out data, beyond the share on
the calibration samples themselves (a ReLU6 or a saturated sigmoid sits on its edge in both), is the
share the calibration did not cover. Causes are ranked by that measured effect, each with the remedy
that addresses it. When nothing is clipped, the error comes from inside the network's arithmetic,
and the per-layer drift says where.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import data as data_lib
from ..core.errors import EdgedlError
from ..core.files import sha256_file
from ..core.layout import resolve_from

REPRESENTATIVE = 0.999  # below this share of held-out values inside a calibrated range, clipping is a cause
# A value at most one step beyond its range loses no more than rounding does: a softmax's range is pinned
# to 0…255/256, so every confident 1.0 is "clipped" by one step whatever the calibration.
SLACK_STEPS = 1.0


def inside_share(values: np.ndarray, spec) -> float:
    """The share of ``values`` that the tensor's int8 range holds, to within SLACK_STEPS."""
    low, high = calibrated_range(spec)
    slack = spec.scale * SLACK_STEPS * (1 + 1e-6)
    return float(np.mean((values >= low - slack) & (values <= high + slack)))

REMEDY = {
    "output": "keep the output layer in float (`--keep-float LAYER`, or `auto`), or `--quantize int16x8`, or "
              "calibration data whose outputs reach as far as the real ones",
    "input": "calibration data as wide as the real inputs (`--calibration FILE`), or `--calibration-method auto`",
    "tensor": "calibration data as wide as the real data (`--calibration FILE`), `--calibration-method auto`, "
              "or that layer kept in float (`--keep-float LAYER`, or `auto`)",
    "inside": "`--keep-float auto` (the layers int8 hurts most stay float), `--quantize int16x8`, or `edgedl "
              "finetune --qat`; `edgedl validate --layers` shows which layer drifts",
}


def calibrated_range(spec) -> tuple[float, float]:
    info = np.iinfo(spec.dtype)
    return (info.min - spec.zero_point) * spec.scale, (info.max - spec.zero_point) * spec.scale


def output_coverage(specs, names: list[str], references: list[np.ndarray], candidates: list[np.ndarray]) -> dict:
    """For each quantized output: its calibrated range, the reference's range, the share inside, and the
    share of the int8 output's error that clipping the reference to that range alone explains."""
    found = {}
    for spec, name, reference, candidate in zip(specs, names, references, candidates, strict=True):
        if not spec.quantized:
            continue
        low, high = calibrated_range(spec)
        values = np.asarray(reference, np.float64)
        inside = inside_share(values, spec)
        error = float(np.mean(np.abs(values - np.asarray(candidate, np.float64).reshape(values.shape))))
        clipped = float(np.mean(np.abs(values - np.clip(values, low, high))))
        found[name] = {"calibrated": [float(low), float(high)], "data": [float(values.min()),
                            float(values.max())], "inside": inside,
                            "explains": min(1.0, clipped / error) if error > 0 else 0.0}
    return found


# the samples each side of the comparison reads: enough to see a 0.1 % share, bounded in time
INSIDE_SAMPLES = 200


def inside_coverage(artifact: Path, facts: dict, specs, feed: list[np.ndarray]) -> tuple[dict | None, str | None]:
    """For each quantized tensor inside the network: its calibrated range and the share of its values on
    an edge of it on the held-out ``feed`` and on the calibration samples. (None, why) when the
    calibration samples recorded in the sidecar are not at hand as they were."""
    from ..runners.base import EVERY_TENSOR
    from ..runners.open import open_runner

    calibration, why = calibration_feed(artifact, facts, specs)
    if calibration is None:
        return None, why
    ends = {t.tensor or t.name for t in specs}
    found = {}
    with open_runner(artifact, xnnpack=False) as whole, whole.with_outputs(EVERY_TENSOR) as runner:
        ends |= {t.tensor or t.name for t in whole.outputs}
        held = runner.run(runner.prepare([x[:INSIDE_SAMPLES] for x in feed]))
        calibrated = runner.run(runner.prepare(calibration))
    for spec, h, c in zip(runner.outputs, held, calibrated, strict=True):
        if not spec.quantized or spec.name in ends or h.size == 0 or c.size == 0:
            continue
        low, high = calibrated_range(spec)
        found[spec.name] = {"calibrated": [float(low), float(high)], "edge_heldout": _on_edge(h, spec),
                            "edge_calibration": _on_edge(c, spec)}
    return found, None


def _on_edge(raw: np.ndarray, spec) -> float:
    """The share of a tensor's integer values on an edge of its range, an edge at real zero excepted
    (a ReLU's zeros sit there by design, not by clipping)."""
    info = np.iinfo(spec.dtype)
    edges = [q for q in (info.min, info.max) if abs((q - spec.zero_point) * spec.scale) > spec.scale]
    return float(np.mean(np.isin(raw, edges))) if edges else 0.0


def calibration_feed(artifact: Path, facts: dict, specs) -> tuple[list[np.ndarray] | None, str]:
    """The calibration samples the sidecar records, as model inputs in ``specs`` order (its recorded
    preprocessing applied), or (None, why not)."""
    recorded = facts.get("calibration") or {}
    if not isinstance(recorded.get("path"), str):
        return None, "the sidecar records no calibration samples"
    path = resolve_from(recorded["path"], artifact.parent)
    try:
        if not path.is_file() or sha256_file(path) != recorded.get("sha256"):
            return None, f"the calibration samples ({path.name}) are missing or changed since the export"
        names = [s.name for s in specs]
        arrays, _ = data_lib.read_named(path, names, [], INSIDE_SAMPLES, "calibration file")
    except EdgedlError as exc:
        return None, f"the calibration samples could not be read: {exc.one_line()}"
    decision = recorded.get("preprocessing")
    feed = []
    for spec in specs:
        x = arrays[spec.name]
        real = spec.quantized or spec.dtype.startswith("float")  # not token ids, which are never scaled
        if decision and real:
            x = data_lib.apply_preprocessing(x, decision)
        feed.append(data_lib.fit_to_input(x, tuple(spec.shape[1:]), "calibration",
                                          dtype="float32" if real else spec.dtype))
    return feed, ""


def causes(inputs: dict, outputs: dict, inside: dict | None = None) -> list[dict]:
    """The measured causes of a failed int8 file, largest effect first; 'inside the network' when none."""
    found = [{"cause": f"{1 - c['inside']:.2%} of output {name!r} values lie outside the calibrated int8 range "
                       f"({c['calibrated'][0]:.4g}…{c['calibrated'][1]:.4g}; reference {c['data'][0]:.4g}…"
                       f"{c['data'][1]:.4g}) and are clipped: that explains {c['explains']:.0%} of its error",
              "effect": c["explains"], "remedy": REMEDY["output"]}
             for name, c in outputs.items() if c["inside"] < REPRESENTATIVE]
    found += [{"cause": f"{1 - c['inside']:.2%} of input {name!r} values lie outside the calibrated int8 range "
                        f"({c['calibrated'][0]:.4g}…{c['calibrated'][1]:.4g}; data {c['data'][0]:.4g}…"
                        f"{c['data'][1]:.4g}) and are clipped",
               "effect": 1 - c["inside"], "remedy": REMEDY["input"]}
              for name, c in inputs.items() if c["inside"] < REPRESENTATIVE]
    found += [{"cause": f"{c['edge_heldout'] - c['edge_calibration']:.2%} of the values of tensor "
                        f"{_short(name)!r} inside the network are clipped at the edge of its calibrated int8 range "
                        f"({c['calibrated'][0]:.4g}…{c['calibrated'][1]:.4g}) on the held-out data, beyond the "
                        f"{c['edge_calibration']:.2%} on the calibration samples",
               "effect": c["edge_heldout"] - c["edge_calibration"], "remedy": REMEDY["tensor"]}
              for name, c in (inside or {}).items() if c["edge_heldout"] - c["edge_calibration"] > 1 - REPRESENTATIVE]
    if not found:
        checked = "input, output and tensor inside the network" if inside else "input and output"
        return [{"cause": f"every {checked} lies inside its calibrated range: the error comes from the "
                          "network's int8 arithmetic", "effect": None, "remedy": REMEDY["inside"]}]
    return sorted(found, key=lambda c: -c["effect"])


def lines(found: list[dict]) -> list[str]:
    """What validate prints under a failed int8 file."""
    return [f"  likely cause {i}: {c['cause']}; remedy: {c['remedy']}" for i, c in enumerate(found, 1)]


def _short(tensor: str) -> str:
    """A TFLite tensor name is every fused op's name joined by ';': the first is the layer's."""
    return tensor.split(";")[0]
