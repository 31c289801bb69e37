"""The layered splatting form of the video predictor (``advection_source='splat'`` with
``advection_motions=K``): the context frame split into soft layers that move rigidly
(by hand, and the assignment's gradient that compares where the layers put a pixel), the
pooling of each layer's motion where its content is and of its prior, and whole rollouts
with the heads pinned by hand or left to the matching prior."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gru_jax.models import VideoPredictor
from gru_jax.models.advection import FADE_BIAS, layer_gains, layer_moves, move_layers, pool_prior
from gru_jax.models.video_ops import shift, space_to_depth, splat
from gru_jax.models.video_predictor import ADVECTION_EPS


def shifted(frame: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``frame [B, H, W, C]`` moved by whole pixels, zeros where nothing lands."""
    out = np.zeros_like(frame)
    height, width = frame.shape[1:3]
    src_r = slice(max(0, -rows), min(height, height - rows))
    dst_r = slice(max(0, rows), min(height, height + rows))
    src_c = slice(max(0, -cols), min(width, width - cols))
    dst_c = slice(max(0, cols), min(width, width + cols))
    out[:, dst_r, dst_c] = frame[:, src_r, src_c]
    return out


def test_move_layers_splits_the_frame_and_moves_each_layer_rigidly():
    rng = np.random.default_rng(0)
    frame = rng.uniform(size=(2, 6, 8, 2)).astype(np.float32)
    logits = rng.standard_normal((2, 6, 8, 3)).astype(np.float32)
    assignment = np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=-1))
    still = move_layers(jnp.asarray(frame), jnp.asarray(assignment), jnp.zeros((2, 3, 2)))
    assert still.shape == (2, 3, 6, 8, 2)
    np.testing.assert_allclose(np.asarray(still).sum(axis=1), frame, atol=1e-6)
    moves = np.float32([[1, 0], [0, -2], [-1, 3]])
    moved = move_layers(
        jnp.asarray(frame), jnp.asarray(assignment), jnp.asarray(np.stack([moves, -moves]))
    )
    for m in range(3):
        layer = np.asarray(moved[:, m])
        share = frame * assignment[..., m : m + 1]
        np.testing.assert_allclose(layer[:1], shifted(share[:1], *moves[m].astype(int)), atol=1e-6)
        np.testing.assert_allclose(layer[1:], shifted(share[1:], *-moves[m].astype(int)), atol=1e-6)


def test_shift_is_splat_with_one_displacement_per_frame():
    """Fractional moves, some taking content partly or wholly off the frame: values and
    both gradients as :func:`splat` with the displacement at every pixel."""
    rng = np.random.default_rng(5)
    frames = jnp.asarray(rng.uniform(size=(6, 7, 9, 2)), jnp.float32)
    moves = jnp.asarray(rng.uniform(-5.0, 5.0, size=(6, 2)), jnp.float32)
    moves = moves.at[4].set(jnp.asarray([0.0, 2.0])).at[5].set(jnp.asarray([-8.25, 12.5]))
    probe = jnp.asarray(rng.standard_normal(frames.shape), jnp.float32)

    def by_splat(moves, frames):
        return splat(frames, jnp.broadcast_to(moves[:, None, None], (*frames.shape[:3], 2)))

    np.testing.assert_allclose(shift(frames, moves), by_splat(moves, frames), atol=1e-6)
    np.testing.assert_allclose(np.asarray(shift(frames, moves))[5], 0.0)  # all off the frame
    grads = [
        jax.grad(lambda m, f, fn=fn: jnp.sum(fn(m, f) * probe), argnums=(0, 1))(moves, frames)
        for fn in (lambda m, f: shift(f, m), by_splat)
    ]
    assert np.abs(grads[0][0]).max() > 0.1
    for got, expected in zip(*grads):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_the_assignment_gradient_compares_where_the_layers_put_a_pixel():
    """One bright pixel shared half-half by two layers that move it 3 columns right and 3
    left; the target has it on the right. The assignment's gradient favours the right-hand
    layer, though the two destinations are 6 pixels apart (far beyond the reach of a
    bilinear gradient of one pixel's displacement)."""
    frame = np.zeros((1, 5, 11, 1), np.float32)
    frame[0, 2, 5] = 1.0
    target = jnp.asarray(shifted(frame, 0, 3))
    moves = jnp.asarray([[[0.0, 3.0], [0.0, -3.0]]])

    def loss(logits):
        assignment = jax.nn.softmax(logits, axis=-1)
        moved = move_layers(jnp.asarray(frame), assignment, moves).sum(axis=1)
        return jnp.sum((moved - target) ** 2)

    logits = jnp.zeros((1, 5, 11, 2))
    grad = np.asarray(jax.grad(loss)(logits))
    assert grad[0, 2, 5, 0] < -0.1 and grad[0, 2, 5, 1] > 0.1
    step = 1e-3
    numeric = float(loss(logits.at[0, 2, 5, 0].add(step)) - loss(logits)) / step
    np.testing.assert_allclose(grad[0, 2, 5, 0], numeric, rtol=1e-2)


def test_layer_moves_are_read_where_each_layers_content_is():
    """Two motions over a 2x2 grid of patches with 3-tap kernels. Layer 0's content is in
    patch (0, 0), layer 1's in patch (1, 1); each patch's logits pin a different tap, so
    each motion is the one of the patch that holds its content."""
    k, motions = 3, 2
    logits = np.zeros((1, 2, 2, motions, 2 * k + 1), np.float32)
    logits[0, 0, 0, 0, [0, k + 2]] = 30.0  # motion 0 at patch (0, 0): pulls from (-1, +1)
    logits[0, 1, 1, 0, [2, k + 2]] = 30.0  # ... at patch (1, 1) it would pull from (+1, +1)
    logits[0, 1, 1, 1, [2, k + 0]] = 30.0  # motion 1 at patch (1, 1): pulls from (+1, -1)
    content = np.zeros((1, 2, 2, motions), np.float32)
    content[0, 0, 0, 0] = 0.6
    content[0, 1, 1, 1] = 0.3
    moves = layer_moves(jnp.asarray(logits.reshape(1, 2, 2, -1)), motions, jnp.asarray(content))
    # A move is where content goes: minus where a pixel's content comes from.
    np.testing.assert_allclose(moves, [[[1.0, -1.0], [-1.0, 1.0]]], atol=2e-3)
    # The prior is added to the pooled logits: zero logits, a prior pinning taps.
    prior = np.full((1, motions, 2, k), -30.0, np.float32)
    prior[0, 0, 0, 1] = prior[0, 0, 1, 2] = 0.0  # motion 0: pulls from (0, +1)
    prior[0, 1, 0, 0] = prior[0, 1, 1, 1] = 0.0  # motion 1: pulls from (-1, 0)
    moves = layer_moves(
        jnp.zeros((1, 2, 2, motions * (2 * k + 1))), motions, jnp.asarray(content),
        jnp.asarray(prior),
    )  # fmt: skip
    np.testing.assert_allclose(moves, [[[0.0, -1.0], [1.0, 0.0]]], atol=1e-6)


def test_layer_gains_are_read_where_each_layers_content_is_and_start_near_one():
    """The fade layout ``[vertical k | horizontal k | fade | score]``: each layer's gain is
    the sigmoid of its fade logit pooled where its content is, plus ``FADE_BIAS``; the
    moves read the kernel logits alone, as in the layout without the fade logit."""
    k, motions = 3, 2
    rng = np.random.default_rng(7)
    plain = rng.standard_normal((1, 2, 2, motions, 2 * k + 1)).astype(np.float32)
    fade = np.zeros((1, 2, 2, motions, 1), np.float32)
    fade[0, 0, 0, 0] = -FADE_BIAS  # layer 0's content is here: gain 0.5
    fade[0, 1, 1, 0] = 9.0  # ... not here (its attention weight there is ~1e-3 / 0.6)
    fade[0, 1, 1, 1] = -FADE_BIAS - 2.0  # layer 1's: gain sigmoid(-2)
    with_fade = np.concatenate([plain[..., :-1], fade, plain[..., -1:]], axis=-1)
    content = np.zeros((1, 2, 2, motions), np.float32)
    content[0, 0, 0, 0] = 0.6
    content[0, 1, 1, 1] = 0.3
    plain[..., -1] = with_fade[..., -1] = 0.0  # equal scores: the content decides
    gains = layer_gains(jnp.asarray(with_fade.reshape(1, 2, 2, -1)), motions, jnp.asarray(content))
    np.testing.assert_allclose(gains, [[0.5, 1 / (1 + np.exp(2.0))]], atol=0.02)
    moves = layer_moves(
        jnp.asarray(with_fade.reshape(1, 2, 2, -1)), motions, jnp.asarray(content), fade=True
    )
    expected = layer_moves(jnp.asarray(plain.reshape(1, 2, 2, -1)), motions, jnp.asarray(content))
    np.testing.assert_allclose(moves, expected, atol=1e-6)
    zero = layer_gains(jnp.zeros((1, 2, 2, motions * (2 * k + 2))), motions, jnp.asarray(content))
    np.testing.assert_allclose(zero, 1 / (1 + np.exp(-FADE_BIAS)), rtol=1e-6)


def test_pool_prior_is_the_content_weighted_mean_per_layer():
    rng = np.random.default_rng(2)
    prior_y, prior_x = rng.standard_normal((2, 1, 2, 3, 5)).astype(np.float32)
    content = rng.uniform(size=(1, 2, 3, 2)).astype(np.float32)
    content[..., 1] = 0.0  # an empty layer: the plain mean
    prior = (jnp.asarray(prior_y), jnp.asarray(prior_x))
    pooled = np.asarray(pool_prior(prior, jnp.asarray(content)))
    assert pooled.shape == (1, 2, 2, 5)
    w = content[0, ..., 0] / content[0, ..., 0].sum()
    np.testing.assert_allclose(pooled[0, 0, 0], np.einsum("hw,hwk->k", w, prior_y[0]), rtol=1e-4)
    np.testing.assert_allclose(pooled[0, 0, 1], np.einsum("hw,hwk->k", w, prior_x[0]), rtol=1e-4)
    np.testing.assert_allclose(pooled[0, 1, 0], prior_y[0].mean(axis=(0, 1)), rtol=1e-4)


def layered_model(hidden_channels=(4, 3), **options) -> VideoPredictor:
    """Two layers, patches of 4, 9-tap kernels (unless ``options`` say otherwise)."""
    return VideoPredictor(
        1, patch_size=4, hidden_channels=hidden_channels, output="advection",
        advection_source="splat", advection_motions=2, rngs=nnx.Rngs(0), **options,
    )  # fmt: skip


def pin_heads(model: VideoPredictor, assignment_logit: float) -> None:
    """Heads that ignore the states (a model of :func:`layered_model`'s shape): the mask
    head gives the even columns of every patch ``assignment_logit`` for layer 0 and the odd
    ones the same for layer 1; the kernel head moves layer 0 one row down and layer 1 two
    columns left per frame."""
    mask_bias = np.zeros((4, 4, 2), np.float32)  # channel (row, column, layer) of a patch
    mask_bias[:, 0::2, 0] = mask_bias[:, 1::2, 1] = assignment_logit
    model.mask_head.kernel.value = jnp.zeros_like(model.mask_head.kernel.value)
    model.mask_head.bias.value = jnp.asarray(mask_bias.reshape(-1))
    kernel_bias = np.full((2, 19), -40.0, np.float32)  # per motion [vertical | horizontal | score]
    kernel_bias[:, 18] = 0.0
    kernel_bias[0, [3, 9 + 4]] = 40.0  # layer 0 pulls from one row above: moves down
    kernel_bias[1, [4, 9 + 6]] = 40.0  # layer 1 pulls from two columns right: moves left
    model.kernel_head.kernel.value = jnp.zeros_like(model.kernel_head.kernel.value)
    model.kernel_head.bias.value = jnp.asarray(kernel_bias.reshape(-1))


def record_forecaster_inputs(monkeypatch) -> list:
    """The inputs every forecaster layer's input convolution reads, in call order (the
    first layer's are every other entry for a two-layer stack)."""
    import gru_jax.models.video_forecast as forecast_module

    inputs = []
    original_project = forecast_module.project_frames

    def recording_project(x, *args):
        inputs.append(x)
        return original_project(x, *args)

    monkeypatch.setattr(forecast_module, "project_frames", recording_project)
    return inputs


def pinned_rollout(model: VideoPredictor):
    """``(context, predicted, even, odd)``: random context frames f32[2, 3, 16, 16, 1],
    the model's three predicted intensities, and the last context frame's even and odd
    columns (the two layers :func:`pin_heads` splits it into)."""
    rng = np.random.default_rng(3)
    context = jnp.asarray(rng.uniform(size=(2, 3, 16, 16, 1)), jnp.float32)
    predicted = np.asarray(jax.nn.sigmoid(model(context, 3)))
    last = np.asarray(context[:, -1])
    even = np.zeros_like(last)
    even[:, :, 0::2] = last[:, :, 0::2]
    return context, predicted, even, last - even


def test_layered_rollout_with_pinned_heads(monkeypatch):
    """Heads that ignore the states: the mask head puts the even columns of every patch in
    layer 0 and the odd ones in layer 1; the kernel head moves layer 0 one row down and
    layer 1 two columns left per frame. Every predicted frame is the two layers of the
    last context frame moved by the summed moves; the forecaster reads the moved layers."""
    inputs = record_forecaster_inputs(monkeypatch)
    model = layered_model()
    assert model.forecaster[0].in_channels == 2 * 16  # two layers' 4x4 patches
    assert model.mask_head.out_features == 2 * 16  # per pixel of a patch, two layers
    pin_heads(model, 40.0)
    _, predicted, even, odd = pinned_rollout(model)
    first_layer = inputs[::2]
    assert len(first_layer) == 3
    for k in range(3):
        layer_0, layer_1 = shifted(even, k + 1, 0), shifted(odd, 0, -2 * (k + 1))
        expected = np.clip(layer_0 + layer_1, 0, 1)
        np.testing.assert_allclose(
            predicted[:, k], ADVECTION_EPS + (1 - 2 * ADVECTION_EPS) * expected, atol=1e-5
        )
        before_0, before_1 = shifted(even, k, 0), shifted(odd, 0, -2 * k)
        reads = np.concatenate(
            [space_to_depth(jnp.asarray(before_0), 4), space_to_depth(jnp.asarray(before_1), 4)],
            axis=-1,
        )
        np.testing.assert_allclose(first_layer[k], reads, atol=1e-5)


def test_layered_rollout_with_fade_dims_each_layer_by_its_gain(monkeypatch):
    """As the pinned rollout above, with ``layer_fade=True`` and fade logits pinned so
    that layer 0 has gain 1/4 and layer 1 gain ~1: every predicted frame is
    ``clip(gain_0 · layer 0 + gain_1 · layer 1)`` moved, while the forecaster still reads
    the moved layers at full intensity; the gain's gradient dims a layer the target lacks."""
    inputs = record_forecaster_inputs(monkeypatch)
    model = layered_model(layer_fade=True)
    assert model.kernel_head.out_features == 2 * 20  # per motion: 9 + 9 taps, fade, score
    pin_heads(model, 40.0)
    bias = np.asarray(model.kernel_head.bias.value).reshape(2, 19)
    gain_0 = 0.25
    fade = np.float32([[np.log(gain_0 / (1 - gain_0)) - FADE_BIAS], [40.0]])
    model.kernel_head.bias.value = jnp.asarray(
        np.concatenate([bias[:, :18], fade, bias[:, 18:]], axis=1).reshape(-1)
    )
    context, predicted, even, odd = pinned_rollout(model)
    for k in range(3):
        layer_0, layer_1 = shifted(even, k + 1, 0), shifted(odd, 0, -2 * (k + 1))
        expected = np.clip(gain_0 * layer_0 + layer_1, 0, 1)
        np.testing.assert_allclose(
            predicted[:, k], ADVECTION_EPS + (1 - 2 * ADVECTION_EPS) * expected, atol=1e-5
        )
        before = [jnp.asarray(shifted(even, k, 0)), jnp.asarray(shifted(odd, 0, -2 * k))]
        reads = np.concatenate([space_to_depth(b, 4) for b in before], axis=-1)
        np.testing.assert_allclose(inputs[::2][k], reads, atol=1e-5)

    # A target with layer 1's content alone: the gradient lowers layer 0's fade logit.
    target = jnp.asarray(np.stack([shifted(odd, 0, -2 * (k + 1)) for k in range(3)], 1))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params):
        out = nnx.merge(graphdef, params, rest)(context, 3)
        return jnp.mean((jax.nn.sigmoid(out) - target) ** 2)

    grad = np.asarray(jax.grad(loss)(params)["kernel_head"]["bias"].value).reshape(2, 20)
    assert grad[0, 18] > 1e-6  # gradient descent lowers it: layer 0 dims


@pytest.mark.parametrize("temperature", [1.0, 0.5, 0.02])
def test_layer_temperature_sharpens_the_assignment(temperature):
    """Assignment logits of 2 (each pixel 88% in its own layer at temperature 1, the rest in
    the other layer, which moves elsewhere: a faint copy) divided by the temperature: the
    prediction is the frame's share in each layer moved by that layer's motion, so at
    0.02 every pixel moves with its own layer alone (no copy)."""
    model = layered_model(layer_temperature=temperature)
    pin_heads(model, 2.0)
    rng = np.random.default_rng(5)
    context = jnp.asarray(rng.uniform(size=(2, 3, 16, 16, 1)), jnp.float32)
    predicted = np.asarray(jax.nn.sigmoid(model(context, 2)))
    last = np.asarray(context[:, -1])
    share = 1.0 / (1.0 + np.exp(-2.0 / temperature))  # softmax of (2, 0) / temperature
    even_columns = np.zeros_like(last)
    even_columns[:, :, 0::2] = 1.0
    layer_0 = last * (share * even_columns + (1 - share) * (1 - even_columns))
    layer_1 = last - layer_0
    for k in range(2):
        expected = np.clip(shifted(layer_0, k + 1, 0) + shifted(layer_1, 0, -2 * (k + 1)), 0, 1)
        np.testing.assert_allclose(
            predicted[:, k], ADVECTION_EPS + (1 - 2 * ADVECTION_EPS) * expected, atol=1e-5
        )
    if temperature < 0.1:  # the hard split: even columns move down, odd ones left
        even = last * even_columns
        np.testing.assert_allclose(
            predicted[:, 0],
            ADVECTION_EPS
            + (1 - 2 * ADVECTION_EPS)
            * np.clip(shifted(even, 1, 0) + shifted(last - even, 0, -2), 0, 1),
            atol=1e-5,
        )


def test_layers_with_the_matching_prior_keep_the_context_motion():
    """Kernel head zeroed: each layer's motion is the matching of the last two context
    frames pooled over its content, so a square moving one row down per frame keeps
    doing so; one context frame predicts it unmoved."""
    model = layered_model(advection_prior="matching", matching_radius=2, advection_kernel_size=5)
    model.kernel_head.kernel.value = jnp.zeros_like(model.kernel_head.kernel.value)
    model.kernel_head.bias.value = jnp.zeros_like(model.kernel_head.bias.value)
    square = np.zeros((3, 24, 24, 1), np.float32)
    for t in range(3):
        square[t, 4 + t : 8 + t, 10:14] = 1.0
    graphdef, params = nnx.split(model)
    run = jax.jit(lambda c, n: jax.nn.sigmoid(nnx.merge(graphdef, params)(c, n)), static_argnums=1)
    predicted = np.asarray(run(jnp.asarray(square[None]), 3))[0, ..., 0]
    rows = np.arange(24)[:, None]
    for k in range(3):
        centre = (predicted[k] * rows).sum() / predicted[k].sum()
        assert centre == pytest.approx(7.5 + k + 1, abs=0.1)
    still = np.asarray(run(jnp.asarray(square[None, -1:]), 2))[0, ..., 0]
    for k in range(2):
        np.testing.assert_allclose(
            still[k], ADVECTION_EPS + (1 - 2 * ADVECTION_EPS) * square[-1, ..., 0], atol=1e-3
        )


def test_layered_options_and_gradients():
    with pytest.raises(ValueError, match="'splat' needs.*forecaster_motion=False, got .* True"):
        layered_model(forecaster_motion=True, motion_input="matching")
    with pytest.raises(ValueError, match="advection_temperature=0.5 needs"):
        layered_model(advection_temperature=0.5)
    with pytest.raises(ValueError, match="layer_temperature must be a finite number > 0"):
        layered_model(layer_temperature=0.0)
    with pytest.raises(ValueError, match="layer_temperature=0.5 needs the layered form"):
        VideoPredictor(1, patch_size=4, output="advection", advection_source="splat",
                       layer_temperature=0.5, rngs=nnx.Rngs(0))  # fmt: skip
    with pytest.raises(ValueError, match="layer_fade=True needs the layered form"):
        VideoPredictor(1, patch_size=4, output="advection", advection_motions=2,
                       layer_fade=True, rngs=nnx.Rngs(0))  # fmt: skip
    model = layered_model(
        (3,), advection_prior="matching", matching_radius=2, advection_kernel_size=5
    )
    rng = np.random.default_rng(4)
    context = jnp.asarray(rng.uniform(size=(1, 2, 8, 8, 1)), jnp.float32)
    target = jnp.asarray(rng.uniform(size=(1, 2, 8, 8, 1)), jnp.float32)
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(params):
        out = nnx.merge(graphdef, params)(context, 2)
        return jnp.mean((jax.nn.sigmoid(out) - target) ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    for name in ("mask_head", "kernel_head"):
        norm = float(sum(jnp.abs(g).sum() for g in jax.tree.leaves(grads[name])))
        assert np.isfinite(norm) and norm > 0, name


def test_layer_fit_diagnostic_reproduces_the_videos_moves():
    """``experiments.layer_fit`` with no fitting steps: the layered form with the digits'
    true moves (regenerated from the seed) beats copying the last frame on every frame
    from the second on, which moves regenerated out of step with the videos would not."""
    from experiments import layer_fit

    results = layer_fit.run(num_videos=4, steps=0, seed=1, noise=0.0)
    assert set(results) == {
        "copy_last", "averaged, zero", "averaged, true+noise", "layered, zero",
        "layered, true+noise",
    }  # fmt: skip
    for per_frame in results.values():
        assert len(per_frame) == 10 and np.all(np.isfinite(per_frame))
    np.testing.assert_allclose(results["layered, zero"], results["copy_last"], rtol=1e-5)
    assert np.all(
        np.asarray(results["layered, true+noise"][1:]) < 0.9 * np.asarray(results["copy_last"][1:])
    )


def test_default_config_trains_the_layered_form_end_to_end(tmp_path):
    """``configs/moving_digits.py``: the full config is the run measured in the docs
    (2,775 steps of 8, squared error plus an absolute error ramped in from mid-run, 8
    layers with the matching prior); its smoke variant trains, evaluates and saves that
    model form, and the trainer ramps the absolute error in only in the run's second half."""
    from configs import moving_digits
    from experiments.setup import total_train_steps
    from experiments.trainer import train_and_evaluate

    full = moving_digits.get_config()
    assert total_train_steps(full, full.dataset.num_train)[0] == 2775
    assert (full.model.advection_source, full.model.advection_motions) == ("splat", 8)
    assert (full.model.advection_prior, full.train.loss) == ("matching", "mse")
    assert (full.train.absolute_loss_weight, full.train.ramp_start) == (1.0, 0.5)
    smoke = moving_digits.get_config("smoke")
    results = train_and_evaluate(smoke, str(tmp_path))
    assert results["train_steps"] == 4 and np.isfinite(results["test"]["mse"])
    with open(tmp_path / "config.json") as file:
        saved = json.load(file)
    assert saved["model"]["advection_motions"] == 8 and saved["train"]["loss"] == "mse"
    with open(tmp_path / "history.json") as file:
        train_rows = [row for row in json.load(file) if row["split"] == "train"]
    # Rows average two steps. Steps 1-2 run at progress 0 and 1/4 (ramp 0); steps 3-4 at
    # 1/2 and 3/4 (ramp 0 and 1/2), so that row's loss exceeds its future loss by a
    # quarter of step 4's absolute error: more than 0, less than the row's mean.
    first, last = train_rows[0], train_rows[-1]
    assert (first["step"], last["step"]) == (2, 4)
    np.testing.assert_allclose(first["loss"], first["future_loss"], rtol=1e-6)
    assert 1e-5 < last["loss"] - last["future_loss"] < last["absolute_loss"]


def test_return_assignment_gives_the_pinned_split_and_the_same_rollout():
    model = layered_model()
    pin_heads(model, 2.0)
    context = jnp.asarray(np.random.default_rng(6).uniform(size=(2, 3, 16, 16, 1)), jnp.float32)
    logits, assignment = model(context, 2, return_assignment=True)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(model(context, 2)), atol=1e-6)
    share = 1.0 / (1.0 + np.exp(-2.0))
    expected = np.zeros((2, 16, 16, 2), np.float32)
    expected[:, :, 0::2, 0] = expected[:, :, 1::2, 1] = share
    expected[:, :, 1::2, 0] = expected[:, :, 0::2, 1] = 1 - share
    np.testing.assert_allclose(np.asarray(assignment), expected, atol=1e-6)
    plain = VideoPredictor(1, patch_size=4, hidden_channels=(4,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="return_assignment needs the layered form"):
        plain(context, 2, return_assignment=True)


def test_split_entropy_weighs_each_pixels_entropy_by_its_intensity():
    from experiments.tasks.video_prediction import split_entropy

    frame = np.zeros((2, 2, 2, 1), np.float32)
    frame[:, 0, 0], frame[:, 1, 1] = 1.0, 0.5  # two content pixels; the rest is background
    assignment = np.zeros((2, 2, 2, 4), np.float32)
    assignment[..., 0] = 1.0  # every pixel wholly in layer 0 ...
    assignment[1, 1, 1] = 0.25  # ... but in example 1 the dim pixel is spread over all 4
    assignment[1, 0, 1] = 0.25  # and so is a background pixel, which does not count
    got = np.asarray(split_entropy(jnp.asarray(assignment), jnp.asarray(frame)))
    np.testing.assert_allclose(got, [0.0, 0.5 * np.log(4) / 1.5], rtol=1e-6)


def test_ramp_weight_is_zero_then_linear_to_one():
    from experiments.tasks.video_prediction import ramp_weight

    got = [float(ramp_weight(jnp.float32(p), 0.5)) for p in (0.0, 0.5, 0.75, 0.999)]
    np.testing.assert_allclose(got, [0.0, 0.0, 0.5, 0.998], atol=1e-6)
    assert float(ramp_weight(jnp.float32(0.1), 0.0)) == 1.0
    assert float(ramp_weight(None, 0.5)) == 1.0


def layered_task(**train_fields):
    from configs import moving_digits
    from experiments.tasks import video_prediction

    config = moving_digits.get_config("smoke")
    config.train.update(train_fields)
    return config, video_prediction.VideoPredictionTask(config)


def test_split_penalty_and_absolute_error_enter_the_loss_with_the_ramp():
    from experiments.tasks.video_prediction import split_entropy

    config, task = layered_task(
        assignment_entropy_weight=0.3, absolute_loss_weight=2.0, ramp_start=0.5
    )
    model = VideoPredictor(
        1, patch_size=4, hidden_channels=(4, 4), output="advection", advection_source="splat",
        advection_motions=8, advection_prior="matching", rngs=nnx.Rngs(0),
    )  # fmt: skip
    steps = config.dataset.context_frames + config.dataset.future_frames
    frames = np.random.default_rng(7).integers(0, 256, (2, steps, 16, 16, 1), dtype=np.uint8)
    batch = {"frames": jnp.asarray(frames)}
    video = jnp.asarray(frames.astype(np.float32) / 255.0)
    context, future = video[:, :3], video[:, 3:]
    logits, assignment = model(context, 2, return_assignment=True)
    predicted = np.asarray(jax.nn.sigmoid(logits), np.float64)
    squared = float(np.mean((predicted - np.asarray(future)) ** 2))
    absolute = float(np.mean(np.abs(predicted - np.asarray(future))))
    split = float(split_entropy(assignment, context[:, -1]).mean())
    assert split > 0.5  # an untrained model splits its pixels
    for progress, ramp in ((0.25, 0.0), (0.75, 0.5)):
        loss, metrics = task.loss(model, batch, jnp.float32(progress))
        np.testing.assert_allclose(float(metrics["split_entropy"]), split, rtol=1e-5)
        np.testing.assert_allclose(float(metrics["absolute_loss"]), absolute, rtol=1e-5)
        expected = squared + ramp * (0.3 * split + 2.0 * absolute)
        np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"assignment_entropy_weight": -1.0}, r"train.assignment_entropy_weight must be >= 0"),
        ({"absolute_loss_weight": -0.5}, r"train.absolute_loss_weight must be >= 0"),
        ({"ramp_start": 1.0}, r"train.ramp_start must be in \[0, 1\)"),
        (
            {"assignment_entropy_weight": 0.1, "one_step_loss_weight": 1.0},
            "cannot be combined with",
        ),
    ],
)
def test_bad_penalty_settings_are_one_line_errors(fields, message):
    with pytest.raises(ValueError, match=message):
        layered_task(**fields)


def test_split_penalty_needs_the_layered_model():
    from configs import moving_digits_cells
    from experiments.tasks import video_prediction

    config = moving_digits_cells.get_config("smoke")
    config.train.assignment_entropy_weight = 0.1
    with pytest.raises(ValueError, match="needs the layered model"):
        video_prediction.VideoPredictionTask(config)
