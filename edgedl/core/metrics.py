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
    """Top-1 accuracy; per-step labels of a sequence model (N, T) are judged on their last step, as
    its scores are."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        labels = labels[:, -1]
    return float(np.mean(top1(probs) == labels.reshape(-1)))


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


def regression_metrics(predictions: np.ndarray, targets: np.ndarray) -> dict:
    """Mean absolute and root-mean-square error over every target of every sample."""
    error = (np.asarray(predictions, np.float64).reshape(len(predictions), -1)
             - np.asarray(targets, np.float64).reshape(len(targets), -1))
    return {"test_mae": float(np.mean(np.abs(error))), "test_rmse": float(np.sqrt(np.mean(error**2)))}


def task_metrics(task: str, predictions: np.ndarray, labels: np.ndarray | None) -> dict:
    """A model's test metrics for its task: accuracy for classes, MAE and RMSE for regression; {} without labels."""
    if labels is None:
        return {}
    if task == "regression":
        return regression_metrics(predictions, labels)
    return {"test_accuracy": accuracy(predictions, labels)}
