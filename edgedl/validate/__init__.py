"""``edgedl validate``: inputs → reference and candidate results → parity verdicts, matrix and drift.

Producing outputs (runners, results.py) and judging them (parity.py) are separate, so a saved
reference can judge a new export without loading Keras again.
"""
