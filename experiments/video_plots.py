"""Figures of the video experiments: frame grids, animated GIFs and per-frame error curves
(matplotlib Agg, imageio)."""

from __future__ import annotations

import os

import imageio.v3 as iio
import numpy as np

from experiments import plots
from experiments.plots import plt


def frame_grid(
    context: np.ndarray,
    truth: np.ndarray,
    prediction: np.ndarray,
    path: str,
    labels: list[str] | None = None,
) -> str:
    """Per example three rows, input / truth / prediction, one frame per column; a label
    per example (e.g. its error) goes under its "prediction" row name.

    Args:
      context: f32[n, T_in, H, W, 1] in [0, 1], the frames the model saw.
      truth: f32[n, T_out, H, W, 1], the future frames.
      prediction: f32[n, T_out, H, W, 1], the predicted frames.
    """
    count, columns = len(context), max(context.shape[1], truth.shape[1])
    figure, axes = plt.subplots(
        3 * count, columns, figsize=(1.0 * columns, 1.05 * 3 * count), squeeze=False
    )
    for axis in axes.flat:
        axis.axis("off")
    for index in range(count):
        predicted = "prediction" if labels is None else f"prediction\n{labels[index]}"
        rows = (("input", context[index], 0), ("truth", truth[index], context.shape[1]),
                (predicted, prediction[index], context.shape[1]))  # fmt: skip
        for offset, (name, frames, first) in enumerate(rows):
            row = 3 * index + offset
            for column, frame in enumerate(frames):
                axes[row, column].imshow(frame[..., 0], cmap="gray", vmin=0, vmax=1)
                axes[row, column].set_title(f"t={first + column + 1}", fontsize=6)
            axes[row, 0].text(-0.1, 0.5, name, transform=axes[row, 0].transAxes,
                              ha="right", va="center", fontsize=8)  # fmt: skip
    return plots._save(figure, path)


def _to_uint8(frames: np.ndarray, scale: int) -> np.ndarray:
    """f32[..., H, W, 1] in [0, 1] → u8[..., H·scale, W·scale] (nearest-neighbour zoom)."""
    pixels = np.rint(np.clip(frames[..., 0], 0.0, 1.0) * 255).astype(np.uint8)
    return pixels.repeat(scale, axis=-2).repeat(scale, axis=-1)


def prediction_gif(
    context: np.ndarray,
    truth: np.ndarray,
    prediction: np.ndarray,
    path: str,
    scale: int = 2,
    frame_seconds: float = 0.2,
) -> str:
    """An animated GIF: one row per example, truth on the left and the model on the right.

    The first ``T_in`` frames show the input on both sides; from then on the right side is
    the prediction (marked by a white bar above it). Arrays as in `frame_grid`.
    """
    steps_in = context.shape[1]
    truth_video = np.concatenate([context, truth], axis=1)  # [n, T, H, W, 1]
    model_video = np.concatenate([context, prediction], axis=1)
    left, right = _to_uint8(truth_video, scale), _to_uint8(model_video, scale)
    marker = np.zeros((*right.shape[:2], 3, right.shape[-1]), np.uint8)  # [n, T, 3, W]
    marker[:, steps_in:] = 255
    right = np.concatenate([marker, right], axis=2)
    left = np.concatenate([np.zeros_like(marker), left], axis=2)
    gap = np.full((*left.shape[:3], 2 * scale), 128, np.uint8)
    rows = np.concatenate([left, gap, right], axis=3)  # [n, T, h, w]
    frames = np.concatenate(list(rows), axis=1)  # examples stacked vertically: [T, n*h, w]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    iio.imwrite(path, frames, duration=int(frame_seconds * 1000), loop=0)
    return path


def per_frame_curve(curves: dict[str, np.ndarray], path: str, ylabel: str) -> str:
    """Error per predicted frame (1..T) for the model and each baseline.

    Args:
      curves: ``{label: f32[T]}``; the first entry is drawn as the model (thick line).
    """
    figure, axis = plt.subplots(figsize=(6, 4))
    for index, (label, values) in enumerate(curves.items()):
        steps = np.arange(1, len(values) + 1)
        style = {"linewidth": 2.5, "marker": "o"} if index == 0 else {"linestyle": "--"}
        axis.plot(steps, values, label=label, **style)
    axis.set(xlabel="predicted frame", ylabel=ylabel, title=f"{ylabel} per predicted frame")
    axis.set_ylim(bottom=0)
    axis.legend()
    return plots._save(figure, path)


def classified_videos(
    videos: np.ndarray, true_names: list[str], predicted_names: list[str], path: str
) -> str:
    """One row per video (frames left to right), titled with the true and predicted class.

    Args:
      videos: f32[n, T, H, W, C] in [0, 1] (C = 1 or 3).
      true_names, predicted_names: n class names each.
    """
    count, steps = videos.shape[:2]
    figure, axes = plt.subplots(count, steps, figsize=(1.1 * steps, 1.3 * count), squeeze=False)
    for row in range(count):
        for column in range(steps):
            frame = videos[row, column]
            axes[row, column].imshow(
                frame[..., 0] if frame.shape[-1] == 1 else frame, cmap="gray", vmin=0, vmax=1
            )
            axes[row, column].axis("off")
        axes[row, 0].set_title(
            f"true {true_names[row]} / predicted {predicted_names[row]}", fontsize=8, loc="left"
        )
    return plots._save(figure, path)
