"""How well can splatting the last context frame fit the future, given free parameters?

A diagnostic for the layered splatting form of the video predictor (docs/video_experiments.md,
round 9): no network. For each of a few moving-digits test videos, Adam fits, directly to
the 10 true future frames, ``K`` per-step moves and a per-pixel assignment logit for each
of ``K`` motions, in two forms of the same model:

* ``averaged``: each pixel moves by its assignment-weighted mean of the ``K``
  displacements, and the last context frame is splatted once
  (:func:`gru_jax.models.video_ops.splat`);
* ``layered``: each pixel's share of each layer moves with that layer
  (:func:`gru_jax.models.advection.move_layers`), the layers summed.

Each from zero moves, or from the true per-digit moves plus Gaussian noise (the digits'
trajectories are regenerated from the seed). Prints the per-frame MSE (summed over
pixels, averaged over the videos) of each fit, and of copying the last frame::

    python -m experiments.layer_fit --num_videos=8 --steps=1500
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from gru_jax.data.moving_digits import make_moving_digits, moving_digit_corners
from gru_jax.models.advection import move_layers
from gru_jax.models.video_ops import splat

_VIDEOS = flags.DEFINE_integer("num_videos", 8, "test videos to fit")
_STEPS = flags.DEFINE_integer("steps", 1500, "Adam steps per fit")
_SEED = flags.DEFINE_integer("seed", 1, "seed of the generated test videos")
_NOISE = flags.DEFINE_float("noise", 1.0, "std of the noise on the true moves (pixels)")

CONTEXT, FUTURE = 10, 10


def true_moves(num_videos: int, seed: int) -> np.ndarray:
    """f32[N, FUTURE, 2 digits, 2]: each digit's whole-pixel move per predicted frame in
    the test videos :func:`make_moving_digits` draws with this seed."""
    corners = moving_digit_corners(num_videos, seed=seed, split="test", num_frames=CONTEXT + FUTURE)
    return np.diff(np.rint(corners)[:, CONTEXT - 1 :], axis=1).astype(np.float32)


def predict(form: str, moves: jax.Array, logits: jax.Array, last: jax.Array) -> jax.Array:
    """f32[N, FUTURE, H, W, 1] from per-step moves f32[N, FUTURE, K, 2] and assignment
    logits f32[N, H, W, K]."""
    assignment = jax.nn.softmax(logits, axis=-1)
    frames = []
    for total in jnp.moveaxis(jnp.cumsum(moves, axis=1), 1, 0):  # [N, K, 2] per frame
        if form == "layered":
            frame = move_layers(last, assignment, total).sum(axis=1)
        else:
            frame = splat(last, jnp.einsum("nhwk,nkc->nhwc", assignment, total))
        frames.append(jnp.clip(frame, 0, 1))
    return jnp.stack(frames, axis=1)


def per_frame_mse(prediction, truth) -> np.ndarray:
    return np.asarray(((prediction - truth) ** 2).sum(axis=(2, 3, 4)).mean(axis=0))


def fit(form: str, init: jax.Array, last: jax.Array, truth: jax.Array, steps: int):
    """Per-frame MSE after ``steps`` Adam steps (learning rate 0.05) from moves ``init``
    and assignment logits drawn small at random (seed 0)."""
    logits = 0.1 * jax.random.normal(jax.random.PRNGKey(0), (*last.shape[:3], init.shape[2]))
    params = (init, logits)
    optimizer = optax.adam(0.05)
    state = optimizer.init(params)

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(
            lambda p: jnp.mean((predict(form, *p, last) - truth) ** 2)
        )(params)
        updates, state = optimizer.update(grads, state)
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
    return per_frame_mse(predict(form, *params, last), truth)


def run(num_videos: int, steps: int, seed: int, noise: float) -> dict:
    videos = make_moving_digits(num_videos, seed=seed, split="test")
    last = jnp.asarray(videos[:, CONTEXT - 1])
    truth = jnp.asarray(videos[:, CONTEXT:])
    moves = true_moves(num_videos, seed)
    noisy = moves + np.random.default_rng(0).normal(0.0, noise, moves.shape)
    inits = {"zero": jnp.zeros_like(moves), "true+noise": jnp.asarray(noisy, jnp.float32)}
    results = {"copy_last": per_frame_mse(jnp.repeat(last[:, None], FUTURE, axis=1), truth)}
    for form in ("averaged", "layered"):
        for name, init in inits.items():
            results[f"{form}, {name}"] = fit(form, init, last, truth, steps)
    return {key: value.tolist() for key, value in results.items()}


def main(argv):
    del argv
    results = run(_VIDEOS.value, _STEPS.value, _SEED.value, _NOISE.value)
    print(f"{'fit':<24} {'mean':>7}  per frame")
    for key, per_frame in results.items():
        print(f"{key:<24} {np.mean(per_frame):7.1f}  " + " ".join(f"{v:.0f}" for v in per_frame))
    print(json.dumps({key: float(np.mean(value)) for key, value in results.items()}))


if __name__ == "__main__":
    app.run(main)
