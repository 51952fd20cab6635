"""The numbers every stage judges by, defined once: top-1 decisions, accuracy, agreement, SQNR."""

from __future__ import annotations

import numpy as np

EPS = 1e-12


def is_classification(output: np.ndarray) -> bool:
    """Scores over classes: a batch axis and at least two values in the last axis."""
    return output.ndim >= 2 and output.shape[-1] >= 2


def top1(probs: np.ndarray) -> np.ndarray:
    """Predicted class per sample; a sequence output (N, T, classes) decides on its last step."""
    top = np.argmax(probs, axis=-1)
    return top[:, -1] if top.ndim == 2 else top


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(top1(probs) == np.asarray(labels).reshape(-1)))


def agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Share of positions (every step of a sequence) where both pick the same class."""
    return float(np.mean(np.argmax(reference, -1) == np.argmax(candidate, -1)))


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB; inf when the two are identical."""
    ref = np.asarray(reference, np.float64)
    noise = float(np.sum((ref - np.asarray(candidate, np.float64)) ** 2))
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(max(float(np.sum(ref**2)), EPS) / noise))
