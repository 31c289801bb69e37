"""Attention maps of an image-to-sequence model drawn over its input images."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def attention_maps(
    images: np.ndarray,
    attention: np.ndarray,
    token_labels: list[list[str]],
    titles: list[str],
    column_width: int,
    path: str,
) -> str:
    """One figure column per example, one row per decoded token: the image with that step's
    attention weights over the annotation columns drawn on top (red, opacity = weight
    relative to the step's largest weight) and as a bar profile under the image.

    Args:
      images: f32[n, H, W, 1] input images in [0, 1].
      attention: f32[n, steps, columns] attention weights (rows sum to 1).
      token_labels: per example, the label of each drawn step ('3', 'EOS'); its length is
        the number of rows drawn for that example (at most ``steps``).
      titles: per example, the figure column's title.
      column_width: input pixels per annotation column (``W / columns``).
      path: where the PNG goes.
    """
    count = len(images)
    rows = max(len(labels) for labels in token_labels)
    height, width = images.shape[1:3]
    figure, axes = plt.subplots(
        rows, count, figsize=(2.6 * count, 0.75 * rows + 0.5), squeeze=False
    )
    for index in range(count):
        for step in range(rows):
            axis = axes[step, index]
            axis.axis("off")
            if step >= len(token_labels[index]):
                continue
            weights = attention[index, step]
            axis.imshow(images[index, ..., 0], cmap="gray", vmin=0, vmax=1, aspect="equal")
            overlay = np.zeros((height, width, 4), np.float32)
            overlay[..., 0] = 1.0
            per_pixel = np.repeat(weights, column_width)[:width]
            overlay[..., 3] = 0.6 * per_pixel / max(float(weights.max()), 1e-12)
            axis.imshow(overlay, aspect="equal")
            centres = (np.arange(len(weights)) + 0.5) * column_width - 0.5
            axis.plot(centres, height - 0.5 - weights * height * 0.9, color="yellow", lw=0.8)
            axis.set_xlim(-0.5, width - 0.5)
            axis.set_ylim(height - 0.5, -0.5)
            axis.text(
                -1.5, height / 2, token_labels[index][step], ha="right", va="center", fontsize=9
            )
        axes[0, index].set_title(titles[index], fontsize=9)
    figure.suptitle("attention over image columns, one row per decoded token", fontsize=10)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
