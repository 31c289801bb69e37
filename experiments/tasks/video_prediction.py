"""Video prediction: given the first frames of a moving-digits video, predict the rest
(`gru_jax.models.VideoPredictor`, a ConvGRU encoder-forecaster).

Metrics follow the Moving MNIST literature: per-frame errors are **summed over pixels**
and averaged over test sequences and predicted frames (``mse``, ``mae``, and one
``mse_frame_<k>`` per predicted frame k = 1..T), with ``ssim`` from dm-pix (and
``ssim_frame_<k>``). ``sharpness`` (and ``sharpness_frame_<k>``) measures blur: the
predictions' gradient energy over the truth's (:func:`gradient_energy`, summed over the
test set), 1 for frames as sharp as the truth, towards 0 as they blur; dimming a frame
lowers it too (half the contrast, a quarter of the energy). ``relative_sharpness`` (and
``relative_sharpness_frame_<k>``) divides each side's gradient energy by its contrast
energy (the squared deviations from the frame's mean, :func:`contrast_energy`) first, so
it is blind to contrast: 1 for the truth dimmed or brightened, below 1 only for blur. Three trivial
predictors are scored on the same test set: all zeros (``baseline_zeros_mse``), the mean
training frame (``baseline_mean_mse``) and the last input frame repeated
(``baseline_copy_last_mse``); ``mse_reduction`` is ``1 - mse / (best baseline)``.

Frames are kept as uint8 (as Moving MNIST is distributed): a generated video is rounded
to 1/255 steps once, and the test targets are those rounded frames. The training set is a
fixed pool generated at start-up (``dataset.num_train`` videos, about 1 ms each).
"""

from __future__ import annotations

import os

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx

from experiments import video_plots
from experiments.tasks.base import Array, Batch, Task, TaskData
from gru_jax import data as gru_data
from gru_jax.models import VideoPredictor
from gru_jax.models.video_ops import MATCHING_TEMPERATURE

EXAMPLE_CHOICES = ("first", "quantiles")  # plots.examples
LOSSES = ("bce", "mse", "mae")
TEST_SETS = ("generated", "tfds")
BASELINES = ("zeros", "mean", "copy_last")
_CHUNK = 1000  # videos generated per call (bounds the float32 copy in memory)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """f32 frames in [0, 1] → u8 (rounded to the nearest of 256 levels)."""
    return np.rint(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)


def to_float(frames: Array) -> Array:
    """u8 frames → f32 in [0, 1]."""
    return frames.astype(jnp.float32) / 255.0


def image_gradients(frames: Array) -> tuple[Array, Array]:
    """Differences of neighbouring pixels of ``frames f32[..., H, W, C]``: vertical
    f32[..., H-1, W, C] and horizontal f32[..., H, W-1, C]."""
    return jnp.diff(frames, axis=-3), jnp.diff(frames, axis=-2)


def gradient_energy(frames: Array) -> Array:
    """Sum of squared neighbouring-pixel differences per frame: ``f32[batch, T, H, W, C]``
    → ``f32[batch, T]``. Blurring a frame lowers it; a sharp edge of height 1 adds 1 per
    pixel of its length."""
    vertical, horizontal = image_gradients(frames)
    return jnp.sum(vertical**2, axis=(2, 3, 4)) + jnp.sum(horizontal**2, axis=(2, 3, 4))


def contrast_energy(frames: Array) -> Array:
    """Sum of squared deviations from the frame's mean intensity per frame:
    ``f32[batch, T, H, W, C]`` → ``f32[batch, T]``. Scaling a frame's contrast by ``a``
    scales it, as it does :func:`gradient_energy`, by ``a²``; blurring lowers the gradient
    energy much more than this."""
    mean = frames.mean(axis=(2, 3, 4), keepdims=True)
    return jnp.sum((frames - mean) ** 2, axis=(2, 3, 4))


def split_entropy(assignment: Array, frame: Array) -> Array:
    """How split the layered model's pixels are, per example f32[batch]: the entropy (in
    nats) of each pixel's shares in the ``K`` layers (``assignment f32[B, H, W, K]``),
    averaged over the pixels weighted by their intensity in ``frame f32[B, H, W, C]``
    (the last context frame: only content can be split). 0 when every pixel is wholly
    in one layer, ``log K`` when spread evenly over all."""
    shares = jnp.clip(assignment, 1e-12, 1.0)
    entropy = -jnp.sum(assignment * jnp.log(shares), axis=-1)  # [B, H, W]
    weight = frame.astype(jnp.float32).sum(axis=-1)
    return (weight * entropy).sum(axis=(1, 2)) / jnp.maximum(weight.sum(axis=(1, 2)), 1e-6)


def ramp_weight(progress: Array | None, start: float) -> Array:
    """The ramped terms' weight factor: 0 until ``start`` (a fraction of the run), then
    linear to 1 at its end; 1 throughout for ``start = 0`` (or outside training)."""
    if progress is None or start <= 0:
        return jnp.ones(())
    return jnp.clip((progress - start) / (1.0 - start), 0.0, 1.0)


def gradient_difference(prediction: Array, truth: Array) -> Array:
    """The gradient difference loss (Mathieu et al. 2016, α = 1) per example, f32[batch]:
    the mean over pixels of ``| |∇_y pred| - |∇_y truth| | + | |∇_x pred| - |∇_x truth| |``.
    A blurred edge has smaller differences than the true one, so this penalises blur that a
    per-pixel loss rewards under uncertainty."""
    terms = [
        jnp.abs(jnp.abs(p) - jnp.abs(t)).mean(axis=tuple(range(1, p.ndim)))
        for p, t in zip(image_gradients(prediction), image_gradients(truth))
    ]
    return terms[0] + terms[1]


def frame_errors(prediction: Array, truth: Array) -> dict[str, Array]:
    """Per-frame errors summed over pixels, SSIM, and the gradient energy of both.

    Args:
      prediction, truth: f32[batch, T, H, W, C] in [0, 1].

    Returns:
      ``squared_error``, ``absolute_error`` (sums over H·W·C), ``ssim``,
      ``gradient_energy`` and ``truth_gradient_energy`` (:func:`gradient_energy`),
      ``contrast_energy`` and ``truth_contrast_energy`` (:func:`contrast_energy`), each
      f32[batch, T].
    """
    difference = prediction - truth
    images = (-1, *prediction.shape[2:])  # pix.ssim takes [N, H, W, C]
    ssim = pix.ssim(prediction.reshape(images), truth.reshape(images), max_val=1.0)
    return {
        "squared_error": jnp.sum(difference**2, axis=(2, 3, 4)),
        "absolute_error": jnp.sum(jnp.abs(difference), axis=(2, 3, 4)),
        "ssim": ssim.reshape(prediction.shape[:2]),
        "gradient_energy": gradient_energy(prediction),
        "truth_gradient_energy": gradient_energy(truth),
        "contrast_energy": contrast_energy(prediction),
        "truth_contrast_energy": contrast_energy(truth),
    }


def baseline_squared_errors(context: Array, future: Array, mean_frame: Array) -> dict[str, Array]:
    """Squared errors (summed over pixels) of the trivial predictors, each f32[batch, T].

    Args:
      context: f32[batch, T_in, H, W, C], the input frames.
      future: f32[batch, T, H, W, C], the frames to predict.
      mean_frame: f32[H, W, C], the mean training frame.
    """
    guesses = {"zeros": jnp.zeros_like(future), "mean": mean_frame, "copy_last": context[:, -1:]}
    return {
        f"baseline_{name}": jnp.sum((future - guesses[name]) ** 2, axis=(2, 3, 4))
        for name in BASELINES
    }


def per_frame_sharpness(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """f32[T]: the predictions' gradient energy over the truth's, each summed over the
    test videos (1: as sharp as the truth; blur lowers it)."""
    truth_energy = outputs["truth_gradient_energy"].sum(axis=0)
    return outputs["gradient_energy"].sum(axis=0) / np.maximum(truth_energy, 1e-12)


def per_frame_relative_sharpness(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """f32[T]: the predictions' gradient energy per unit of contrast energy over the
    truth's, each side summed over the test videos first (1: edges as steep, relative to
    the frame's contrast, as the truth's; blur lowers it, dimming does not)."""

    def ratio(prefix: str) -> np.ndarray:
        edges = outputs[f"{prefix}gradient_energy"].sum(axis=0)
        return edges / np.maximum(outputs[f"{prefix}contrast_energy"].sum(axis=0), 1e-12)

    return ratio("") / np.maximum(ratio("truth_"), 1e-12)


def summarize_frames(outputs: dict[str, np.ndarray]) -> dict[str, float]:
    """Test metrics from per-example arrays (see the module docstring for the names)."""
    per_frame = outputs["squared_error"].mean(axis=0)
    metrics = {
        "mse": float(per_frame.mean()),
        "mae": float(outputs["absolute_error"].mean()),
        "ssim": float(outputs["ssim"].mean()),
        "loss": float(outputs["loss"].mean()),
    }
    metrics.update({f"mse_frame_{k + 1}": float(value) for k, value in enumerate(per_frame)})
    ssim = outputs["ssim"].mean(axis=0)
    metrics.update({f"ssim_frame_{k + 1}": float(value) for k, value in enumerate(ssim)})
    sharpness = per_frame_sharpness(outputs)
    metrics["sharpness"] = float(sharpness.mean())
    metrics.update({f"sharpness_frame_{k + 1}": float(v) for k, v in enumerate(sharpness)})
    relative = per_frame_relative_sharpness(outputs)
    metrics["relative_sharpness"] = float(relative.mean())
    metrics.update({f"relative_sharpness_frame_{k + 1}": float(v) for k, v in enumerate(relative)})
    for name in BASELINES:
        metrics[f"baseline_{name}_mse"] = float(outputs[f"baseline_{name}"].mean())
    best = min(metrics[f"baseline_{name}_mse"] for name in BASELINES)
    metrics["mse_reduction"] = 1.0 - metrics["mse"] / best if best > 0 else 0.0
    return metrics


class VideoPredictionTask(Task):
    """Config fields used: ``dataset.{digit_source, data_dir, split_seed, test_set,
    num_train, num_test, test_seed, context_frames, future_frames, canvas, digit_size,
    num_digits}``, ``model.*`` (`VideoPredictor`'s arguments), ``train.{loss,
    context_loss_weight, one_step_loss_weight, gradient_loss_weight,
    assignment_entropy_weight, absolute_loss_weight, ramp_start}``, ``plots.{num_examples,
    examples}``; ``seed`` also seeds the training videos."""

    main_metric = "mse"

    def __init__(self, config):
        super().__init__(config)
        _check_choice("train.loss", config.train.loss, LOSSES)
        _check_choice("dataset.test_set", config.dataset.test_set, TEST_SETS)
        _check_choice("plots.examples", config.plots.get("examples", "first"), EXAMPLE_CHOICES)
        train, model = config.train, config.model
        for field in ("assignment_entropy_weight", "absolute_loss_weight"):
            if train.get(field, 0.0) < 0:
                raise ValueError(f"train.{field} must be >= 0, got {train.get(field)}")
        if not 0.0 <= train.get("ramp_start", 0.0) < 1.0:
            raise ValueError(f"train.ramp_start must be in [0, 1), got {train.ramp_start}")
        layered = model.get("advection_source") == "splat" and model.get("advection_motions", 0)
        if train.get("assignment_entropy_weight", 0.0) > 0 and not layered:
            raise ValueError(
                "train.assignment_entropy_weight needs the layered model "
                "(model.advection_source='splat' with model.advection_motions > 0)"
            )
        auxiliary = train.context_loss_weight > 0 or train.one_step_loss_weight > 0
        if train.get("assignment_entropy_weight", 0.0) > 0 and auxiliary:
            raise ValueError(
                "train.assignment_entropy_weight cannot be combined with "
                "train.context_loss_weight or train.one_step_loss_weight"
            )
        self.mean_frame: np.ndarray | None = None

    def _generate(self, count: int, split: str, seed: int) -> np.ndarray:
        """u8[count, T, canvas, canvas, 1], built in chunks: chunk k uses the seed drawn
        from ``SeedSequence([seed, k])``."""
        cfg = self.config.dataset
        chunks = []
        for index, start in enumerate(range(0, count, _CHUNK)):
            chunk_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
            videos = gru_data.make_moving_digits(
                min(_CHUNK, count - start),
                seed=chunk_seed,
                split=split,
                num_frames=cfg.context_frames + cfg.future_frames,
                canvas=cfg.canvas,
                digit_size=cfg.digit_size,
                num_digits=cfg.num_digits,
                source=cfg.digit_source,
                split_seed=cfg.split_seed,
                data_dir=cfg.data_dir or None,
            )
            chunks.append(to_uint8(videos))
        return np.concatenate(chunks)

    def _test_videos(self) -> np.ndarray:
        cfg = self.config.dataset
        if cfg.test_set == "generated":
            return self._generate(cfg.num_test, "test", cfg.test_seed)
        videos = gru_data.load_moving_mnist_tfds(data_dir=cfg.data_dir or None)
        needed = (cfg.context_frames + cfg.future_frames, cfg.canvas, cfg.canvas, 1)
        if videos.shape[1:] != needed:
            raise ValueError(
                f"tfds:moving_mnist videos have shape {videos.shape[1:]}; this config needs "
                f"{needed} (dataset.context_frames + future_frames, canvas, canvas, 1)"
            )
        return to_uint8(videos[: cfg.num_test])

    def load_data(self) -> TaskData:
        cfg = self.config.dataset
        train = self._generate(cfg.num_train, "train", self.config.seed)
        test = self._test_videos()
        self.mean_frame = train.mean(axis=(0, 1), dtype=np.float64).astype(np.float32) / 255.0
        logging.info(
            "moving digits: %d train videos (digits from %r), %d test videos (%s) of shape %s",
            len(train), cfg.digit_source, len(test), cfg.test_set, test.shape[1:],
        )  # fmt: skip
        info = {"mean_frame": self.mean_frame}
        return TaskData(train={"frames": train}, test={"frames": test}, info=info)

    def build_model(self, data: TaskData, rngs: nnx.Rngs) -> nnx.Module:
        cfg = self.config.model
        return VideoPredictor(
            data.train["frames"].shape[-1],
            patch_size=cfg.patch_size,
            hidden_channels=tuple(cfg.hidden_channels),
            kernel_size=cfg.kernel_size,
            input_kernel_size=cfg.input_kernel_size,
            head_kernel_size=cfg.head_kernel_size,
            head_hidden_channels=cfg.head_hidden_channels,
            forecaster_input=cfg.forecaster_input,
            forecaster=cfg.forecaster,
            output=cfg.output,
            advection_kernel_size=cfg.advection_kernel_size,
            advection_cell_size=cfg.advection_cell_size,
            advection_motions=cfg.advection_motions,
            # .get: configs saved before the field existed (experiments.evaluate, restore)
            advection_temperature=cfg.get("advection_temperature", 1.0),
            layer_temperature=cfg.get("layer_temperature", 1.0),
            layer_fade=cfg.get("layer_fade", False),
            layer_gate=cfg.get("layer_gate", False),
            layer_split_steps=cfg.get("layer_split_steps", 0),
            layer_split_weight=cfg.get("layer_split_weight", 1.0),
            advection_source=cfg.advection_source,
            advection_prior=cfg.advection_prior,
            prior_frames=cfg.get("prior_frames", 1),
            prior_temperature=cfg.get("prior_temperature", MATCHING_TEMPERATURE),
            prior_neighbourhood=cfg.get("prior_neighbourhood", True),
            forecaster_motion=cfg.forecaster_motion,
            motion_input=cfg.motion_input,
            motion_temperature=cfg.get("motion_temperature", MATCHING_TEMPERATURE),
            matching_radius=cfg.matching_radius,
            motion_channels=cfg.motion_channels,
            dtype=jnp.dtype(cfg.dtype),
            convgru_gradient=cfg.convgru_gradient,
            rngs=rngs,
        )

    def _split(self, batch: Batch) -> tuple[Array, Array]:
        frames = to_float(batch["frames"])
        steps = self.config.dataset.context_frames
        return frames[:, :steps], frames[:, steps:]

    def _objective(self, logits: Array, future: Array) -> Array:
        """Per-example loss f32[batch]: mean BCE on logits, or mean squared ('mse') or
        absolute ('mae') error of the predicted intensities ``sigmoid(logits)``. Under
        uncertainty squared error is least for the pixel's mean (a blur or a faint copy
        in each likely place), absolute error for its median (each pixel all or nothing:
        the likelier place, wholly)."""
        loss = self.config.train.loss
        if loss == "bce":
            per_pixel = optax.sigmoid_binary_cross_entropy(logits, future)
        elif loss == "mae":
            per_pixel = jnp.abs(jax.nn.sigmoid(logits) - future)
        else:
            per_pixel = (jax.nn.sigmoid(logits) - future) ** 2
        return per_pixel.mean(axis=(1, 2, 3, 4))

    def loss(
        self, model: nnx.Module, batch: Batch, progress: Array | None = None
    ) -> tuple[Array, dict[str, Array]]:
        context, future = self._split(batch)
        train = self.config.train
        weight = train.context_loss_weight
        one_step_weight = train.one_step_loss_weight
        entropy_weight = train.get("assignment_entropy_weight", 0.0)
        one_step_loss = jnp.zeros(())
        split = jnp.zeros(())
        if weight > 0:
            logits, guesses = model(context, future.shape[1], return_context_logits=True)
            context_loss = self._objective(guesses, context[:, 1:]).mean()
        elif one_step_weight > 0:
            logits, one_step = model(context, future.shape[1], teacher_future=future)
            context_loss = jnp.zeros(())
            if one_step.shape[1]:
                one_step_loss = self._objective(one_step, future[:, 1:]).mean()
        elif entropy_weight > 0:
            logits, assignment = model(context, future.shape[1], return_assignment=True)
            split = split_entropy(assignment, context[:, -1]).mean()
            context_loss = jnp.zeros(())
        else:
            logits, context_loss = model(context, future.shape[1]), jnp.zeros(())
        future_loss = self._objective(logits, future).mean()
        predicted = jax.nn.sigmoid(logits)
        squared = jnp.sum((predicted - future) ** 2, axis=(2, 3, 4))
        gradient_weight = train.gradient_loss_weight
        gradient_loss = (
            gradient_difference(predicted, future).mean() if gradient_weight else jnp.zeros(())
        )
        absolute_weight = train.get("absolute_loss_weight", 0.0)
        absolute = jnp.abs(predicted - future).mean() if absolute_weight else jnp.zeros(())
        ramp = ramp_weight(progress, train.get("ramp_start", 0.0))
        metrics = {
            "mse": squared.mean(),
            "future_loss": future_loss,
            "context_loss": context_loss,
            "one_step_loss": one_step_loss,
            "gradient_loss": gradient_loss,
            "split_entropy": split,
            "absolute_loss": absolute,
        }
        loss = (
            future_loss
            + weight * context_loss
            + one_step_weight * one_step_loss
            + gradient_weight * gradient_loss
            + ramp * (entropy_weight * split + absolute_weight * absolute)
        )
        return loss, metrics

    def eval_outputs(self, model: nnx.Module, batch: Batch) -> dict[str, Array]:
        context, future = self._split(batch)
        logits = model(context, future.shape[1])
        outputs = frame_errors(jax.nn.sigmoid(logits), future)
        outputs.update(baseline_squared_errors(context, future, jnp.asarray(self.mean_frame)))
        outputs["loss"] = self._objective(logits, future)
        return outputs

    def summarize(self, outputs: dict[str, np.ndarray]) -> dict[str, float]:
        return summarize_frames(outputs)

    def plots(
        self, model: nnx.Module, data: TaskData, outputs: dict[str, np.ndarray], plot_dir: str
    ) -> list[str]:
        count = min(self.config.plots.num_examples, len(data.test["frames"]))
        errors = outputs["squared_error"].mean(axis=1)  # per test video, mean over frames
        chosen = pick_examples(errors, count, self.config.plots.get("examples", "first"))
        labels = [f"MSE {errors[i]:.0f}" for i in chosen]
        frames = to_float(jnp.asarray(data.test["frames"][chosen]))
        steps = self.config.dataset.context_frames
        context, future = np.asarray(frames[:, :steps]), np.asarray(frames[:, steps:])

        @nnx.jit(static_argnums=2)
        def predict(model, context, num_future):
            return jax.nn.sigmoid(model(context, num_future))

        prediction = np.asarray(predict(model, context, future.shape[1]))
        curves = {"model": outputs["squared_error"].mean(axis=0)}
        for name in BASELINES:
            curves[f"{name.replace('_', ' ')} baseline"] = outputs[f"baseline_{name}"].mean(0)
        return [
            video_plots.frame_grid(
                context, future, prediction, os.path.join(plot_dir, "predictions.png"), labels
            ),
            video_plots.prediction_gif(
                context, future, prediction, os.path.join(plot_dir, "predictions.gif")
            ),
            video_plots.per_frame_curve(
                curves, os.path.join(plot_dir, "mse_per_frame.png"), "MSE (sum over pixels)"
            ),
            video_plots.per_frame_curve(
                {
                    "model": per_frame_sharpness(outputs),
                    "model, contrast-blind (relative_sharpness)": (
                        per_frame_relative_sharpness(outputs)
                    ),
                    "truth": np.ones(future.shape[1]),
                },
                os.path.join(plot_dir, "sharpness_per_frame.png"),
                "sharpness (gradient energy / truth's)",
            ),
        ]


def pick_examples(errors: np.ndarray, count: int, how: str) -> np.ndarray:
    """Indices of the ``count`` test videos to plot: the first ones (``'first'``), or the
    videos at evenly spaced quantiles of the model's error ``errors f32[N]``
    (``'quantiles'``: for 3, the 1/6, 1/2 and 5/6 quantiles, i.e. an easier, a median and
    a harder video), so that the pictures show the typical case rather than whichever
    videos come first. Returned in increasing order of error for ``'quantiles'``."""
    _check_choice("plots.examples", how, EXAMPLE_CHOICES)
    if how == "first":
        return np.arange(count)
    order = np.argsort(errors, kind="stable")
    ranks = ((np.arange(count) + 0.5) / count * len(errors)).astype(int)
    return order[np.minimum(ranks, len(errors) - 1)]


def _check_choice(field: str, value: str, choices: tuple[str, ...]) -> None:
    """A one-line ``ValueError`` naming the config field when ``value`` is not a choice."""
    if value not in choices:
        raise ValueError(f"unknown {field} {value!r}: expected one of {', '.join(choices)}")
