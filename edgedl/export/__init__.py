"""``edgedl export``: plan (format, precision) targets, convert them in a worker process, index them.

Public face: ``plan_targets``, ``parse_targets``, ``with_keep_float``, ``ExportOptions``, ``Target`` (plan.py) and
``export``, ``check``, ``layers_with_ops`` (run.py). The worker side (worker.py, tflite.py, onnx.py,
fused_lstm.py) runs in a spawned process that imports TensorFlow once.
"""

from .plan import ExportOptions, Target, parse_targets, plan_targets, unrolled_targets, with_keep_float
from .run import check, export, layers_with_ops

__all__ = ["ExportOptions", "Target", "check", "export", "layers_with_ops", "parse_targets", "plan_targets",
           "unrolled_targets", "with_keep_float"]
