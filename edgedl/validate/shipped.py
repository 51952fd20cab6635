"""Quantization-aware fine-tuning judged on what ships: the int8 file exported from the fine-tuned run.

QAT's own numbers come from fake quantization in Keras. What a device runs is the converter's int8
model, which also quantizes values inside a layer (a Dense's logits before its softmax) and takes its
ranges from calibration, where QAT fake-quantizes each input and each layer's output with moving
averages. After
`edgedl finetune --qat`, the int8 TFLite file is exported and validated on the run's held-out data
with the same gates as any int8 file, and both numbers are printed side by side.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.layout import EXPORTS, HISTORY_FILE, MANIFEST
from ..export import ExportOptions, export, plan_targets
from .run import ValidateOptions, validate

LIKELY_CAUSES = ("values quantized inside a layer, which QAT does not simulate (a Dense's logits before its "
                 "softmax), or calibrated activation ranges that differ from QAT's moving averages")


def int8_as_shipped(run_dir: str | Path, say=print) -> dict:
    """Export the run's int8 TFLite file, validate it, and compare it with what fake quantization reported."""
    run_dir = Path(run_dir)
    say("exporting and validating the int8 TFLite file that would ship …")
    targets, _ = plan_targets(["tflite"], ["int8"])
    records = export(run_dir, targets, out=run_dir / EXPORTS, options=ExportOptions(), progress=lambda m: None)
    artifact = run_dir / EXPORTS / records[0]["file"]
    row = validate(run_dir, [artifact], ValidateOptions(), say=lambda m: None)["artifacts"][0]
    metrics = (row.get("outputs") or [{}])[0].get("metrics") or {}
    return {"artifact": str(artifact), "passed": bool(row["passed"]), "accuracy": metrics.get("candidate_accuracy"),
            "agreement": metrics.get("agreement"), "promised": _fake_quantized_accuracy(run_dir),
            "failures": [f for o in row.get("outputs", []) for f in o.get("failures", [])]}


def _fake_quantized_accuracy(run_dir: Path) -> float | None:
    """QAT's validation accuracy at the epoch it kept (fake-quantized, on the validation split)."""
    kept = (json.loads((run_dir / MANIFEST).read_text()).get("finetune") or {}).get("kept_epoch")
    history = json.loads((run_dir / HISTORY_FILE).read_text()) if (run_dir / HISTORY_FILE).is_file() else {}
    values = history.get("qat_val_accuracy") or []
    return float(values[kept - 1]) if kept and len(values) >= kept else None


def lines(check: dict) -> list[str]:
    """What `edgedl finetune --qat` prints about the shipped int8 file."""
    promised = f"{check['promised']:.2%}" if check["promised"] is not None else "not recorded"
    shipped = (f"accuracy {check['accuracy']:.2%}, " if check["accuracy"] is not None else "") + \
        (f"agreement {check['agreement']:.2%} with the fine-tuned model" if check["agreement"] is not None else "")
    out = [f"fake-quantized validation accuracy {promised}; the int8 TFLite file on held-out data: {shipped} "
           f"({'passes' if check['passed'] else 'FAILS'} the int8 gates): {check['artifact']}"]
    if not check["passed"]:
        out.append(f"⚠ the int8 file does not keep what fine-tuning reached ({'; '.join(check['failures'][:2])}); "
                   f"likely cause: {LIKELY_CAUSES}. Try `edgedl export RUN --quantize int8 --calibration-method "
                   "auto`, or `--keep-float auto`")
    return out
