"""Why an int8 file failed, measured: each quantized input and output against the range calibration gave it.

A value outside the int8 range of its tensor is clipped. For an output, the clipping's share of the
output's error is measured directly (|reference − clip(reference)| against |reference − int8|); for
an input, the share of held-out values that are clipped. Causes are ranked by that measured effect,
each with the remedy that addresses it. When nothing is clipped, the error comes from inside the
network, and the per-layer drift says where.
"""

from __future__ import annotations

import numpy as np

REPRESENTATIVE = 0.999  # below this share of held-out values inside a calibrated range, clipping is a cause

REMEDY = {
    "output": "keep the output layer in float (`--keep-float LAYER`, or `auto`), or `--quantize int16x8`, or "
              "calibration data whose outputs reach as far as the real ones",
    "input": "calibration data as wide as the real inputs (`--calibration FILE`), or `--calibration-method auto`",
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
        half = spec.scale / 2
        inside = float(np.mean((values >= low - half) & (values <= high + half)))
        error = float(np.mean(np.abs(values - np.asarray(candidate, np.float64).reshape(values.shape))))
        clipped = float(np.mean(np.abs(values - np.clip(values, low, high))))
        found[name] = {"calibrated": [float(low), float(high)], "data": [float(values.min()),
                            float(values.max())], "inside": inside,
                            "explains": min(1.0, clipped / error) if error > 0 else 0.0}
    return found


def causes(inputs: dict, outputs: dict) -> list[dict]:
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
    if not found:
        return [{"cause": "every input and output lies inside its calibrated range: the error comes from inside "
                          "the network", "effect": None, "remedy": REMEDY["inside"]}]
    return sorted(found, key=lambda c: -c["effect"])


def lines(found: list[dict]) -> list[str]:
    """What validate prints under a failed int8 file."""
    return [f"  likely cause {i}: {c['cause']}; remedy: {c['remedy']}" for i, c in enumerate(found, 1)]
