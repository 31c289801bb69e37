"""gru_jax.GRU against a NumPy float64 reference written from the equations of both GRU
forms (a per-step loop with PyTorch PackedSequence semantics for lengths and reverse).

Every fast-path option (input hoisting, chunked custom backward, plain autodiff) must give
the reference's numbers; gradients are checked against autodiff and against central finite
differences of the float64 reference.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import gru_jax

BATCH, STEPS, FEATURES, HIDDEN = 4, 20, 3, 5
LENGTHS = np.array([20, 3, 0, 13], np.int32)  # full, partial, empty, partial


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def gates_of(fused):
    """(r, z, n) blocks of the last axis."""
    return np.split(fused, 3, axis=-1)


def reference_step(p, x_t, h, reset_after):
    """One step, straight from the equations (float64)."""
    w_ir, w_iz, w_in = gates_of(p["input_kernel"])
    w_hr, w_hz, w_hn = gates_of(p["recurrent_kernel"])
    b_ir, b_iz, b_in = gates_of(p["input_bias"])
    if reset_after:
        b_hr, b_hz, b_hn = gates_of(p["recurrent_bias"])
        r = sigmoid(x_t @ w_ir + b_ir + h @ w_hr + b_hr)
        z = sigmoid(x_t @ w_iz + b_iz + h @ w_hz + b_hz)
        n = np.tanh(x_t @ w_in + b_in + r * (h @ w_hn + b_hn))
    else:  # reset before: one bias per gate (b_r, b_z, b_n)
        z = sigmoid(x_t @ w_iz + h @ w_hz + b_iz)
        r = sigmoid(x_t @ w_ir + h @ w_hr + b_ir)
        n = np.tanh(x_t @ w_in + (r * h) @ w_hn + b_in)
    return z * h + (1.0 - z) * n, (r, z, n)


def reference_gru(p, x, h0, lengths=None, reverse=False, reset_after=True):
    """x: [batch, time, features] -> (outputs [B, T, H], final carry [B, H], gates).

    Sequence b uses steps [0, length_b); reverse walks them from length_b - 1 down to 0.
    Outputs and gates at padded steps are zero; the carry is the state after the last
    processed step (the initial carry when length_b == 0).
    """
    batch, steps, _ = x.shape
    hidden = h0.shape[-1]
    lengths = np.full(batch, steps) if lengths is None else lengths
    y = np.zeros((batch, steps, hidden))
    gates = np.zeros((3, batch, steps, hidden))
    carry = np.array(h0, np.float64)
    for b in range(batch):
        order = range(lengths[b] - 1, -1, -1) if reverse else range(lengths[b])
        h = carry[b]
        for t in order:
            h, step_gates = reference_step(p, x[b, t], h, reset_after)
            y[b, t] = h
            gates[:, b, t] = step_gates
        carry[b] = h
    return y, carry, gates


def random_problem(seed, reset_after, features=FEATURES, hidden=HIDDEN, batch=BATCH, steps=STEPS):
    """float32-representable float64 parameters, inputs and initial carry."""
    rng = np.random.default_rng(seed)
    f32 = lambda shape, scale=0.6: rng.normal(0.0, scale, shape).astype(np.float32)
    p = {
        "input_kernel": f32((features, 3 * hidden)),
        "recurrent_kernel": f32((hidden, 3 * hidden)),
        "input_bias": f32((3 * hidden,)),
    }
    if reset_after:
        p["recurrent_bias"] = f32((3 * hidden,))
    x = f32((batch, steps, features), 1.0)
    h0 = f32((batch, hidden), 0.5)
    return (
        {k: v.astype(np.float64) for k, v in p.items()},
        x.astype(np.float64),
        h0.astype(np.float64),
    )


def make_gru(p, reset_after, **options) -> gru_jax.GRU:
    features, hidden = p["input_kernel"].shape[0], p["recurrent_kernel"].shape[0]
    gru = gru_jax.GRU(features, hidden, reset_after=reset_after, rngs=nnx.Rngs(0), **options)
    for name, value in p.items():
        getattr(gru.cell, name)[...] = jnp.asarray(value, jnp.float32)
    return gru


def assert_close(actual, expected, atol=1e-5):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


@functools.partial(jax.jit, static_argnums=(0, 4))
def run(graphdef, state, x, seq_lengths, return_gates, initial_carry):
    gru = nnx.merge(graphdef, state)
    return gru(x, seq_lengths, initial_carry, return_carry=True, return_gates=return_gates)


FORMS = [True, False]


@pytest.mark.parametrize("reset_after", FORMS, ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("hoist_inputs", [False, True], ids=["step_proj", "hoisted"])
def test_forward_and_gates_match_reference(reset_after, reverse, with_lengths, hoist_inputs):
    p, x, h0 = random_problem(0, reset_after)
    lengths = LENGTHS if with_lengths else None
    y_ref, h_ref, gates_ref = reference_gru(p, x, h0, lengths, reverse, reset_after)
    gru = make_gru(p, reset_after, reverse=reverse, hoist_inputs=hoist_inputs)
    graphdef, state = nnx.split(gru)
    seq_lengths = None if lengths is None else jnp.asarray(lengths)
    carry, y, gates = run(
        graphdef,
        state,
        jnp.asarray(x, jnp.float32),
        seq_lengths,
        True,
        jnp.asarray(h0, jnp.float32),
    )
    assert_close(y, y_ref)
    assert_close(carry, h_ref)
    for actual, expected in zip(gates, gates_ref):
        assert_close(actual, expected)
    # The default call (no gates) takes the custom-VJP path: same numbers.
    carry2, y2 = run(
        graphdef,
        state,
        jnp.asarray(x, jnp.float32),
        seq_lengths,
        False,
        jnp.asarray(h0, jnp.float32),
    )
    assert_close(y2, y_ref)
    assert_close(carry2, h_ref)
    if with_lengths:
        assert np.all(np.asarray(y)[LENGTHS == 0] == 0.0)
        assert np.array_equal(np.asarray(carry)[LENGTHS == 0], np.float32(h0)[LENGTHS == 0])


def test_time_major_matches_batch_major():
    p, x, h0 = random_problem(1, True)
    y_ref, h_ref, _ = reference_gru(p, x, h0, LENGTHS, True, True)
    gru = make_gru(p, True, reverse=True, time_major=True)
    carry, y = gru(
        jnp.asarray(x.transpose(1, 0, 2), jnp.float32),
        jnp.asarray(LENGTHS),
        jnp.asarray(h0, jnp.float32),
        return_carry=True,
    )
    assert_close(np.asarray(y).transpose(1, 0, 2), y_ref)
    assert_close(carry, h_ref)


def loss_weights(seed, batch=BATCH, steps=STEPS, hidden=HIDDEN):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, steps, hidden)), rng.normal(size=(batch, hidden))


def jax_gradients(gru, x, h0, seq_lengths, y_weight, h_weight):
    """Gradients of sum(y * y_weight) + sum(h_T * h_weight) w.r.t. (GRUWeights, x, h0)."""
    graphdef, params, rest = nnx.split(gru, nnx.Param, ...)

    @jax.jit
    def grads(params, x, h0):
        def loss(params, x, h0):
            model = nnx.merge(graphdef, params, rest)
            carry, y = model(x, seq_lengths, h0, return_carry=True)
            return jnp.sum(y * y_weight) + jnp.sum(carry * h_weight)

        return jax.grad(loss, argnums=(0, 1, 2))(params, x, h0)

    d_params, dx, dh0 = grads(params, jnp.asarray(x, jnp.float32), jnp.asarray(h0, jnp.float32))
    d_weights = nnx.merge(graphdef, d_params, rest).cell.weights()
    return {k: v for k, v in d_weights._asdict().items() if v is not None}, dx, dh0


@functools.cache
def autodiff_gradients(reset_after, reverse, with_lengths):
    """Plain autodiff of the scan (custom_gradient=False, inputs projected before it)."""
    p, x, h0 = random_problem(2, reset_after)
    y_weight, h_weight = loss_weights(3)
    gru = make_gru(p, reset_after, reverse=reverse, custom_gradient=False, hoist_inputs=True)
    seq_lengths = jnp.asarray(LENGTHS) if with_lengths else None
    return jax_gradients(gru, x, h0, seq_lengths, y_weight, h_weight)


# (reverse, with_lengths, chunk_size): every chunk size on the hardest case (reverse with
# variable lengths, including an empty sequence), the other directions with a ragged chunk.
# STEPS = 20: chunk 3 leaves a partial first chunk, 16 gives one full chunk and a partial,
# 50 is longer than the sequence.
CUSTOM_VJP_CASES = [
    *[(True, True, chunk) for chunk in (1, 3, 16, 50)],
    (False, True, 3),
    (False, False, 3),
]


@pytest.mark.parametrize("reset_after", FORMS, ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("reverse, with_lengths, chunk_size", CUSTOM_VJP_CASES)
def test_custom_vjp_matches_autodiff(reset_after, reverse, with_lengths, chunk_size):
    p, x, h0 = random_problem(2, reset_after)
    y_weight, h_weight = loss_weights(3)
    gru = make_gru(p, reset_after, reverse=reverse, chunk_size=chunk_size, hoist_inputs=False)
    seq_lengths = jnp.asarray(LENGTHS) if with_lengths else None
    custom = jax_gradients(gru, x, h0, seq_lengths, y_weight, h_weight)
    reference = autodiff_gradients(reset_after, reverse, with_lengths)
    for name in reference[0]:
        assert_close(custom[0][name], reference[0][name], atol=1e-5)
    assert_close(custom[1], reference[1], atol=1e-5)
    assert_close(custom[2], reference[2], atol=1e-5)


def reference_loss(p, x, h0, lengths, reverse, reset_after, y_weight, h_weight):
    y, carry, _ = reference_gru(p, x, h0, lengths, reverse, reset_after)
    return np.sum(y * y_weight) + np.sum(carry * h_weight)


def finite_difference(function, value, eps=1e-6):
    """Central differences of a scalar function of one float64 array."""
    grad = np.zeros_like(value)
    for index in np.ndindex(value.shape):
        bumped = value.copy()
        bumped[index] += eps
        plus = function(bumped)
        bumped[index] -= 2 * eps
        grad[index] = (plus - function(bumped)) / (2 * eps)
    return grad


@pytest.mark.parametrize("reset_after", FORMS, ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("custom_gradient", [True, False], ids=["custom_vjp", "autodiff"])
def test_gradients_match_finite_differences(reset_after, custom_gradient):
    batch, steps, features, hidden = 3, 4, 2, 3
    lengths = np.array([4, 1, 3], np.int32)
    p, x, h0 = random_problem(4, reset_after, features, hidden, batch, steps)
    y_weight, h_weight = loss_weights(5, batch, steps, hidden)
    reverse = True
    loss = functools.partial(
        reference_loss,
        lengths=lengths,
        reverse=reverse,
        reset_after=reset_after,
        y_weight=y_weight,
        h_weight=h_weight,
    )
    gru = make_gru(p, reset_after, reverse=reverse, chunk_size=3, custom_gradient=custom_gradient)
    d_weights, dx, dh0 = jax_gradients(
        gru,
        x,
        h0,
        jnp.asarray(lengths),
        jnp.asarray(y_weight, jnp.float32),
        jnp.asarray(h_weight, jnp.float32),
    )
    for name, grad in d_weights.items():
        expected = finite_difference(lambda v, name=name: loss({**p, name: v}, x=x, h0=h0), p[name])
        assert_close(grad, expected, atol=1e-5)
    assert_close(dx, finite_difference(lambda v: loss(p, x=v, h0=h0), x), atol=1e-5)
    assert_close(dh0, finite_difference(lambda v: loss(p, x=x, h0=v), h0), atol=1e-5)


def test_vmap_over_a_batch_of_sequence_batches():
    p, x, h0 = random_problem(6, True)
    xs = np.stack([x, x[::-1] * 0.5])  # [2, batch, time, features]
    lengths = np.stack([LENGTHS, LENGTHS[::-1]])
    gru = make_gru(p, True, reverse=True)
    graphdef, params, rest = nnx.split(gru, nnx.Param, ...)

    def loss_and_grad(x, seq_lengths):
        def loss(params, x):
            model = nnx.merge(graphdef, params, rest)
            return jnp.sum(model(x, seq_lengths) ** 2)

        return jax.value_and_grad(loss, argnums=(0, 1))(params, x)

    def outputs(x, seq_lengths):
        return nnx.merge(graphdef, params, rest)(x, seq_lengths)

    xs32 = jnp.asarray(xs, jnp.float32)
    y = jax.jit(jax.vmap(outputs))(xs32, jnp.asarray(lengths))
    values, (d_params, dx) = jax.jit(jax.vmap(loss_and_grad))(xs32, jnp.asarray(lengths))
    for s in range(2):
        y_ref, _, _ = reference_gru(p, xs[s], h0 * 0, lengths[s], True, True)
        assert_close(y[s], y_ref)
        value, (d_params_s, dx_s) = jax.jit(loss_and_grad)(xs32[s], jnp.asarray(lengths[s]))
        assert abs(float(values[s]) - float(value)) <= 1e-4
        assert_close(dx[s], dx_s, atol=1e-5)
        for a, b in zip(jax.tree.leaves(d_params), jax.tree.leaves(d_params_s)):
            assert_close(a[s], b, atol=1e-5)


def test_jit_and_eager_agree():
    p, x, h0 = random_problem(7, False)
    gru = make_gru(p, False)
    x32 = jnp.asarray(x, jnp.float32)
    eager = gru(x32, jnp.asarray(LENGTHS))
    jitted = nnx.jit(lambda model, x, lengths: model(x, lengths))(gru, x32, jnp.asarray(LENGTHS))
    assert_close(jitted, eager, atol=1e-6)
    assert_close(eager, reference_gru(p, x, h0 * 0, LENGTHS, False, False)[0])


@pytest.mark.parametrize("reset_after", FORMS, ids=["reset_after", "reset_before"])
def test_bfloat16_compute_stays_close_to_float32(reset_after):
    # bfloat16 keeps 8 significant bits (unit roundoff 2**-9 ~ 2e-3). Only the GEMM operands
    # are rounded (gates, state and accumulation stay float32), so each pre-activation of
    # ~(features + hidden) unit-sized terms is off by ~1e-2 at worst, and the sigmoid/tanh
    # slopes (<= 1) and the convex state update keep that from growing over 20 steps. A wrong
    # gate, bias or ordering shows up as O(0.1-1) errors, far above 3e-2.
    p, x, h0 = random_problem(8, reset_after)
    y32 = make_gru(p, reset_after)(jnp.asarray(x, jnp.float32), jnp.asarray(LENGTHS))
    y16 = make_gru(p, reset_after, dtype=jnp.bfloat16)(
        jnp.asarray(x, jnp.float32), jnp.asarray(LENGTHS)
    )
    assert y16.dtype == jnp.float32
    error = float(jnp.max(jnp.abs(y16 - y32)))
    assert 0.0 < error < 3e-2  # > 0: the bfloat16 path really ran


@pytest.mark.parametrize("reset_after", FORMS, ids=["reset_after", "reset_before"])
def test_bfloat16_gradients_stay_close_to_float32(reset_after):
    """The custom backward with bfloat16 GEMM operands (the state, weight and input
    gradients' products, including the deferred weight-gradient GEMMs) against the float32
    gradients and against autodiff of the bfloat16 reference scan: each within 2%
    of the largest gradient, and not equal to float32 (the bfloat16 products really ran). A
    wrong term in any gradient is off by O(1) of that scale."""
    p, x, h0 = random_problem(11, reset_after)
    y_weight, h_weight = loss_weights(12)
    lengths = jnp.asarray(LENGTHS)

    def gradients(**options):
        gru = make_gru(p, reset_after, hoist_inputs=False, **options)
        return jax_gradients(gru, x, h0, lengths, y_weight, h_weight)

    full = gradients()
    low = gradients(dtype=jnp.bfloat16)
    autodiff_low = gradients(dtype=jnp.bfloat16, custom_gradient=False)
    pairs = [(low[0][k], full[0][k], autodiff_low[0][k]) for k in full[0]]
    pairs += [(low[i], full[i], autodiff_low[i]) for i in (1, 2)]
    for ours, exact, theirs in pairs:
        scale = float(np.max(np.abs(exact)))
        assert 0.0 < float(np.max(np.abs(np.asarray(ours) - exact))) < 0.02 * scale
        assert float(np.max(np.abs(np.asarray(ours) - np.asarray(theirs)))) < 0.02 * scale


def test_bfloat16_parameters_can_be_created_and_run():
    gru = gru_jax.GRU(FEATURES, HIDDEN, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    assert gru.cell.recurrent_kernel[...].dtype == jnp.bfloat16
    p = {
        k: np.asarray(v[...].astype(jnp.float32), np.float64)
        for k, v in nnx.state(gru.cell, nnx.Param).items()
    }
    _, x, h0 = random_problem(9, True)
    y = gru(jnp.asarray(x, jnp.float32))
    assert y.dtype == jnp.float32
    assert_close(y, reference_gru(p, x, h0 * 0)[0], atol=3e-2)


@pytest.mark.parametrize("reset_after", FORMS, ids=["reset_after", "reset_before"])
def test_cell_step_and_initialize_carry(reset_after):
    p, x, h0 = random_problem(10, reset_after)
    gru = make_gru(p, reset_after)
    cell = gru.cell
    carry = cell.initialize_carry(x[:, 0].shape)
    assert carry.shape == (BATCH, HIDDEN) and carry.dtype == jnp.float32
    assert np.all(np.asarray(carry) == 0.0)
    assert np.all(np.asarray(gru.initialize_carry(BATCH)) == 0.0)
    assert gru.initialize_carry(BATCH).shape == (BATCH, HIDDEN)
    new_carry, output = cell(jnp.asarray(h0, jnp.float32), jnp.asarray(x[:, 0], jnp.float32))
    expected, (r, z, n) = reference_step(p, x[:, 0], h0, reset_after)
    assert_close(new_carry, expected)
    assert_close(output, expected)
    _, gates = cell.step(jnp.asarray(h0, jnp.float32), jnp.asarray(x[:, 0], jnp.float32))
    for actual, want in zip(gates, (r, z, n)):
        assert_close(actual, want)
