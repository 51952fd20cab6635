"""The bottom layer: errors, process environment, atomic files, the run-folder layout and metrics.

Nothing here imports any other part of edgedl, and nothing here imports TensorFlow at module level.
"""
