"""Figures written under ``<workdir>/plots`` (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(figure, path: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def learning_curve(history: list[dict], path: str) -> str:
    """Train loss (and learning rate) against step, with eval metrics on a second panel.

    Args:
      history: entries ``{'step', 'split': 'train'|'eval', <metric>: value, ...}``.
    """
    train = [entry for entry in history if entry["split"] == "train"]
    evals = [entry for entry in history if entry["split"] == "eval"]
    figure, (loss_axis, eval_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    if train:
        steps = [entry["step"] for entry in train]
        loss_axis.plot(steps, [entry["loss"] for entry in train], label="train loss")
    if evals and "loss" in evals[0]:
        loss_axis.plot(
            [e["step"] for e in evals], [e["loss"] for e in evals], "o-", label="test loss"
        )
    loss_axis.set(xlabel="step", ylabel="loss", title="loss")
    loss_axis.set_yscale("log")
    loss_axis.legend()
    if train and "learning_rate" in train[0]:
        rate_axis = loss_axis.twinx()
        rate_axis.plot(steps, [e["learning_rate"] for e in train], color="gray", alpha=0.4)
        rate_axis.set_ylabel("learning rate", color="gray")
    for key in sorted(evals[0]) if evals else []:
        if key not in ("step", "split", "loss"):
            eval_axis.plot([e["step"] for e in evals], [e[key] for e in evals], "o-", label=key)
    eval_axis.set(xlabel="step", title="test metrics")
    if eval_axis.lines:
        eval_axis.legend()
    return _save(figure, path)


def confusion_matrix(
    labels: np.ndarray, predictions: np.ndarray, num_classes: int, path: str
) -> str:
    """Row-normalised confusion matrix (rows: true class) with counts in the cells."""
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    counts = sk_confusion_matrix(labels, predictions, labels=np.arange(num_classes))
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.45 * num_classes + 1.5)
    figure, axis = plt.subplots(figsize=(size, size * 0.9))
    image = axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    if num_classes <= 20:
        for (row, col), count in np.ndenumerate(counts):
            color = "white" if rates[row, col] > 0.5 else "black"
            axis.text(col, row, str(count), ha="center", va="center", fontsize=7, color=color)
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    axis.set(xlabel="predicted", ylabel="true", title=f"confusion matrix (accuracy {accuracy:.2%})")
    figure.colorbar(image, ax=axis, fraction=0.046)
    return _save(figure, path)


def gate_activations(
    images: np.ndarray, update_gates: np.ndarray, labels: np.ndarray, path: str
) -> str:
    """For a few examples: the image, and the update gate z of every hidden unit over time.

    Args:
      images: f32[n, H, W, C] input images.
      update_gates: f32[n, time, hidden] update-gate activations (z near 1: the unit keeps
        its state; near 0: it takes the new candidate).
      labels: i32[n] true classes (titles).
    """
    count = len(images)
    figure, axes = plt.subplots(
        2, count, figsize=(2.8 * count, 5.4), squeeze=False, layout="constrained"
    )
    for index in range(count):
        image = images[index]
        axes[0, index].imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray")
        axes[0, index].set_title(f"label {labels[index]}")
        axes[0, index].axis("off")
        heat = axes[1, index].imshow(
            update_gates[index].T,
            aspect="auto",
            cmap="viridis",
            vmin=0,
            vmax=1,
            interpolation="nearest",
        )
        axes[1, index].set(xlabel="time step", ylabel="hidden unit" if index == 0 else None)
        if index > 0:
            axes[1, index].set_yticklabels([])
    figure.suptitle("update gate z of the first GRU layer (forward direction)")
    figure.colorbar(heat, ax=axes[1, :].tolist(), fraction=0.02, label="z")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
