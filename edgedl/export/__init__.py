"""``edgedl export``: plan (format, precision) targets, convert them in a worker process, index them.

Public face: ``plan_targets``, ``parse_targets``, ``ExportOptions``, ``Target`` (plan.py) and
``export``, ``check`` (run.py). The worker side (worker.py, tflite.py, onnx.py, fused_lstm.py)
runs in a spawned process that imports TensorFlow once.
"""

from .plan import ExportOptions, Target, parse_targets, plan_targets
from .run import check, export

__all__ = ["ExportOptions", "Target", "check", "export", "parse_targets", "plan_targets"]
