"""The fast kernel (batch groups, chunked custom VJP, saved gates, remat, fused directions)
against the reference ``lax.scan`` differentiated by JAX: same outputs, carries and
gradients for every combination of plan options (a fixed, seeded sample of them)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import gru_jax
from gru_jax.ops import GRUWeights, bidirectional_gru_scan, gru_scan
from gru_jax.ops.gru_plan import group_bounds

STEPS, BATCH, FEATURES, HIDDEN = 7, 5, 3, 4
LENGTHS = np.array([7, 0, 3, 5, 1])


def random_weights(rng, reset_after):
    normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
    return GRUWeights(
        normal(FEATURES, 3 * HIDDEN),
        normal(HIDDEN, 3 * HIDDEN),
        normal(3 * HIDDEN),
        normal(3 * HIDDEN) if reset_after else None,
    )


def options_sample(count, seed):
    """(reset_after, reverse, lengths, hoist, time_major, groups, chunk, remat, save_gates)"""
    grid = list(
        itertools.product(
            [True, False],
            [False, True],
            [False, True],
            [False, True],
            [False, True],
            [1, 3],
            [1, 3, 16],
            [False, True],
            [False, True],
        )
    )
    picks = np.random.default_rng(seed).choice(len(grid), size=count, replace=False)
    return [grid[i] for i in picks]


def max_abs_diff(a, b):
    return max(
        float(jnp.max(jnp.abs(u - v)))
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.mark.parametrize("options", options_sample(12, seed=0))
def test_kernel_matches_reference_scan(options):
    reset_after, reverse, use_lengths, hoist, time_major, groups, chunk, remat, save = options
    rng = np.random.default_rng(hash(options) % 2**32)
    weights = random_weights(rng, reset_after)
    shape = (STEPS, BATCH, FEATURES) if time_major else (BATCH, STEPS, FEATURES)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    h0 = jnp.asarray(rng.normal(size=(BATCH, HIDDEN)), jnp.float32)
    cotangent = jnp.asarray(rng.normal(size=shape[:2] + (HIDDEN,)), jnp.float32)
    lengths = jnp.asarray(LENGTHS) if use_lengths else None
    common = dict(
        reset_after=reset_after, reverse=reverse, hoist_inputs=hoist, time_major=time_major
    )
    fast = dict(chunk_size=chunk, batch_groups=groups, remat=remat, save_gates=save)

    def loss(weights, x, h0, custom, outputs_used):
        kernel_options = fast if custom else {}
        carry, y = gru_scan(
            weights, x, h0, lengths, custom_gradient=custom, **common, **kernel_options
        )
        return (jnp.sum(y * cotangent) if outputs_used else 0.0) + jnp.sum(jnp.sin(carry))

    for outputs_used in (True, False):  # False: the outputs' cotangent is a symbolic zero
        value_fast, grads_fast = jax.value_and_grad(loss, argnums=(0, 1, 2))(
            weights, x, h0, True, outputs_used
        )
        value_ref, grads_ref = jax.value_and_grad(loss, argnums=(0, 1, 2))(
            weights, x, h0, False, outputs_used
        )
        assert abs(float(value_fast - value_ref)) < 1e-4
        assert max_abs_diff(grads_fast, grads_ref) < 1e-4
    carry, y = gru_scan(weights, x, h0, lengths, **common, **fast)
    carry_ref, y_ref = gru_scan(weights, x, h0, lengths, custom_gradient=False, **common)
    assert max_abs_diff((carry, y), (carry_ref, y_ref)) < 1e-5


@pytest.mark.parametrize("options", options_sample(6, seed=1))
def test_fused_bidirectional_matches_two_directions(options):
    reset_after, _, use_lengths, hoist, time_major, groups, chunk, remat, save = options
    rng = np.random.default_rng(hash(options) % 2**32)
    w_f, w_b = random_weights(rng, reset_after), random_weights(rng, reset_after)
    shape = (STEPS, BATCH, FEATURES) if time_major else (BATCH, STEPS, FEATURES)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    h0 = tuple(jnp.asarray(rng.normal(size=(BATCH, HIDDEN)), jnp.float32) for _ in range(2))
    cotangent = jnp.asarray(rng.normal(size=shape[:2] + (2 * HIDDEN,)), jnp.float32)
    lengths = jnp.asarray(LENGTHS) if use_lengths else None
    common = dict(reset_after=reset_after, hoist_inputs=hoist, time_major=time_major)

    def loss(w_f, w_b, x, h0, custom):
        fast = dict(chunk_size=chunk, batch_groups=groups, remat=remat, save_gates=save)
        (c_f, c_b), y = bidirectional_gru_scan(
            w_f, w_b, x, h0, lengths, custom_gradient=custom, **common, **(fast if custom else {})
        )
        return jnp.sum(y * cotangent) + jnp.sum(c_f**2) + jnp.sum(jnp.sin(c_b))

    grad = jax.value_and_grad(loss, argnums=(0, 1, 2, 3))
    value_fast, grads_fast = grad(w_f, w_b, x, h0, True)
    value_ref, grads_ref = grad(w_f, w_b, x, h0, False)
    assert abs(float(value_fast - value_ref)) < 1e-4
    assert max_abs_diff(grads_fast, grads_ref) < 1e-4


def test_bidirectional_module_fused_equals_unfused():
    def make(fused):
        forward = gru_jax.GRU(6, 8, rngs=nnx.Rngs(0))
        backward = gru_jax.GRU(6, 8, reverse=True, rngs=nnx.Rngs(1))
        return gru_jax.Bidirectional(forward, backward, fused=fused)

    fused, unfused = make(True), make(False)
    assert fused.fused and not unfused.fused
    x = jax.random.normal(jax.random.key(0), (3, 9, 6))
    lengths = jnp.array([9, 4, 0])
    c1, y1 = fused(x, lengths, return_carry=True)
    c2, y2 = unfused(x, lengths, return_carry=True)
    assert y1.shape == (3, 9, 16)
    assert max_abs_diff((c1, y1), (c2, y2)) < 1e-6
    assert float(jnp.abs(y1[1, 4:]).max()) == 0.0


def test_group_bounds_cover_the_batch():
    assert group_bounds(10, 3) == ((0, 4), (4, 3), (7, 3))
    assert group_bounds(2, 4) == ((0, 1), (1, 1))
    assert sum(size for _, size in group_bounds(129, 4)) == 129


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("directions", [(False,), (False, True)])
def test_in_loop_inference_matches_hoisted_forward_and_keeps_gradients(
    monkeypatch, reset_after, directions
):
    """Forward-only calls may project inputs inside the step with one fused GEMM
    (``in_loop_inference``): same outputs and carries as the hoisted plan, and a
    gradient (which takes the hoisted custom VJP) still matches the reference scan."""
    from gru_jax.ops import gru_kernel_vjp, gru_plan

    rng = np.random.default_rng(7)
    weights = tuple(random_weights(rng, reset_after) for _ in directions)
    x = jnp.asarray(rng.normal(size=(BATCH, STEPS, FEATURES)), jnp.float32)
    h0 = jnp.asarray(rng.normal(size=(len(directions), BATCH, HIDDEN)), jnp.float32)
    lengths = jnp.asarray(LENGTHS, jnp.int32)
    options = dict(
        reset_after=reset_after, time_major=False, unroll=1, compute_dtype=jnp.float32,
        hoist_inputs=None, chunk_size=3, batch_groups=1, remat=False, save_gates=None,
    )  # fmt: skip
    monkeypatch.setattr(gru_plan, "IN_LOOP_INFERENCE_MIN_HIDDEN", 10**9)
    hoisted_plan = gru_plan.make_plan(x.shape, HIDDEN, directions, **options)
    monkeypatch.setattr(gru_plan, "IN_LOOP_INFERENCE_MIN_HIDDEN", 1)
    plan = gru_plan.make_plan(x.shape, HIDDEN, directions, **options)
    assert plan.in_loop_inference and not hoisted_plan.in_loop_inference
    # Explicit hoisting keeps the hoisted forward everywhere.
    explicit = gru_plan.make_plan(x.shape, HIDDEN, directions, **{**options, "hoist_inputs": True})
    assert not explicit.in_loop_inference

    run = jax.jit(gru_kernel_vjp.gru_sequence, static_argnums=4)
    in_loop = run(weights, x, h0, lengths, plan)
    hoisted = run(weights, x, h0, lengths, hoisted_plan)
    assert max_abs_diff(in_loop, hoisted) < 1e-5
    # The in-loop plan really takes the fused path: a [batch, 3H] product per step.
    fused = f"f32[{BATCH},{3 * HIDDEN}] = dot_general"
    assert fused in str(jax.make_jaxpr(run, static_argnums=4)(weights, x, h0, lengths, plan))
    assert fused not in str(
        jax.make_jaxpr(run, static_argnums=4)(weights, x, h0, lengths, hoisted_plan)
    )

    def loss(weights, x, plan):
        h_last, out = gru_kernel_vjp.gru_sequence(weights, x, h0, lengths, plan)
        return jnp.sum(out**2) + jnp.sum(h_last)

    grads = jax.grad(loss, argnums=(0, 1))(weights, x, plan)
    reference = jax.grad(loss, argnums=(0, 1))(weights, x, hoisted_plan)
    assert max_abs_diff(grads, reference) < 1e-4


def test_default_unroll_by_backend_and_in_the_plan():
    from gru_jax.ops.gru_plan import ACCELERATOR_UNROLL, default_unroll, make_plan

    assert default_unroll("cpu") == 1
    assert default_unroll("gpu") == default_unroll("tpu") == ACCELERATOR_UNROLL > 1
    options = dict(
        reset_after=True, time_major=False, compute_dtype=jnp.float32, hoist_inputs=None,
        chunk_size=16, batch_groups=1, remat=False, save_gates=None,
    )  # fmt: skip
    expected = default_unroll()  # this process's backend
    assert make_plan((4, 30, 3), 8, (False,), unroll=None, **options).unroll == expected
    # Never more than the sequence's length; explicit values win.
    assert make_plan((4, 2, 3), 8, (False,), unroll=None, **options).unroll == min(2, expected)
    assert make_plan((4, 30, 3), 8, (False,), unroll=3, **options).unroll == 3
    assert make_plan((4, 30, 3), 8, (False,), unroll=True, **options).unroll == 30
    # The layer's default is None: it follows the backend.
    layer = gru_jax.GRU(3, 8, rngs=nnx.Rngs(0))
    assert layer.unroll is None
