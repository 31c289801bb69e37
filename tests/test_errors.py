"""Bad input gets a one-line ValueError that names what is wrong, before XLA sees it."""

from __future__ import annotations

import contextlib
import sys

import jax
import jax.numpy as jnp
import pytest
import torch
from flax import nnx

import gru_jax
from gru_jax import interop

BATCH, STEPS, FEATURES, HIDDEN = 2, 5, 3, 4


@contextlib.contextmanager
def one_line_error(match: str, error=ValueError):
    with pytest.raises(error, match=match) as info:
        yield
    message = str(info.value)
    assert "\n" not in message, message


@pytest.fixture(scope="module")
def gru():
    return gru_jax.GRU(FEATURES, HIDDEN, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def stack():
    return gru_jax.StackedGRU(FEATURES, HIDDEN, 2, bidirectional=True, rngs=nnx.Rngs(0))


X = jnp.ones((BATCH, STEPS, FEATURES))


@pytest.mark.parametrize("model", ["gru", "stack"])
def test_input_rank_and_feature_size(model, request):
    model = request.getfixturevalue(model)
    with one_line_error(r"rank 3 \[batch, time, features\]; got shape \(5, 3\)"):
        model(jnp.ones((STEPS, FEATURES)))
    with one_line_error(r"rank 3 \[batch, time, features\]; got shape \(1, 2, 5, 3\)"):
        model(jnp.ones((1, BATCH, STEPS, FEATURES)))
    with one_line_error(r"feature size must equal in_features=3; got shape \(2, 5, 7\)"):
        model(jnp.ones((BATCH, STEPS, 7)))


def test_time_major_layout_is_named():
    gru = gru_jax.GRU(FEATURES, HIDDEN, time_major=True, rngs=nnx.Rngs(0))
    with one_line_error(r"rank 3 \[time, batch, features\]; got shape \(3,\)"):
        gru(jnp.ones((FEATURES,)))


@pytest.mark.parametrize("model", ["gru", "stack"])
def test_empty_time_axis_and_complex_inputs(model, request):
    model = request.getfixturevalue(model)
    with one_line_error(r"at least one time step; got shape \(2, 0, 3\)"):
        model(jnp.ones((BATCH, 0, FEATURES)))
    with one_line_error(r"real \(float or integer\) dtype; got complex64"):
        model(jnp.ones((BATCH, STEPS, FEATURES), jnp.complex64))


def test_python_lists_of_lengths_work_like_arrays(gru, stack):
    for model in (gru, stack):
        listed = model(X, [5, 2])
        assert jnp.array_equal(listed, model(X, jnp.array([5, 2])))
    with one_line_error(r"seq_lengths must have shape \(2,\) \[batch\]; got shape \(3,\)"):
        gru(X, [5, 5, 5])
    with one_line_error(r"initial_carry must have shape \(2, 4\); got shape \(2, 3\)"):
        gru(X, initial_carry=[[0.0] * 3] * 2)


def test_checks_run_under_jit(gru):
    graphdef, state = nnx.split(gru)
    apply = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
    with one_line_error(r"feature size must equal in_features=3; got shape \(2, 5, 6\)"):
        apply(state, jnp.ones((BATCH, STEPS, 6)))


@pytest.mark.parametrize("model", ["gru", "stack"])
def test_seq_lengths(model, request):
    model = request.getfixturevalue(model)
    with one_line_error(r"seq_lengths must have shape \(2,\) \[batch\]; got shape \(3,\)"):
        model(X, jnp.array([5, 5, 5]))
    with one_line_error(r"seq_lengths must have shape \(2,\) \[batch\]; got shape \(2, 1\)"):
        model(X, jnp.array([[5], [5]]))
    with one_line_error(r"seq_lengths must have an integer dtype; got float32"):
        model(X, jnp.array([5.0, 2.0]))
    with one_line_error(r"seq_lengths must lie in \[0, 5\] \(the time length\); got -1"):
        model(X, jnp.array([5, -1]))
    with one_line_error(r"seq_lengths must lie in \[0, 5\] \(the time length\); got 6"):
        model(X, jnp.array([6, 2]))


def test_initial_carry_shapes(gru, stack):
    with one_line_error(r"initial_carry must have shape \(2, 4\); got shape \(2, 5\)"):
        gru(X, initial_carry=jnp.zeros((BATCH, 5)))
    with one_line_error(r"initial_carry must have shape \(4, 2, 4\); got shape \(2, 2, 4\)"):
        stack(X, initial_carry=jnp.zeros((2, BATCH, HIDDEN)))


def test_cell_step_shapes(gru):
    with one_line_error(r"carry must have shape \(2, 4\); got shape \(2, 3\)"):
        gru.cell(jnp.zeros((BATCH, 3)), jnp.ones((BATCH, FEATURES)))
    with one_line_error(r"feature size must equal in_features=3; got shape \(2, 2\)"):
        gru.cell(jnp.zeros((BATCH, HIDDEN)), jnp.ones((BATCH, 2)))


def test_module_options():
    rngs = nnx.Rngs(0)
    with one_line_error(r"in_features and hidden_size must be positive; got 0, 4"):
        gru_jax.GRU(0, HIDDEN, rngs=rngs)
    with one_line_error(r"num_layers must be >= 1; got 0"):
        gru_jax.StackedGRU(FEATURES, HIDDEN, 0, rngs=rngs)
    with one_line_error(r"dropout must lie in \[0, 1\); got 1.5"):
        gru_jax.StackedGRU(FEATURES, HIDDEN, 2, dropout=1.5, rngs=rngs)


def test_bidirectional_layer_directions():
    rngs = nnx.Rngs(0)
    forward = gru_jax.GRU(FEATURES, HIDDEN, rngs=rngs)
    backward = gru_jax.GRU(FEATURES, HIDDEN, reverse=True, rngs=rngs)
    with one_line_error(r"backward_layer must process time in reverse; got reverse=False"):
        gru_jax.Bidirectional(forward, forward)
    with one_line_error(r"forward_layer must process time forwards; got reverse=True"):
        gru_jax.Bidirectional(backward, backward)
    time_major_backward = gru_jax.GRU(FEATURES, HIDDEN, reverse=True, time_major=True, rngs=rngs)
    with one_line_error(r"must agree on time_major; got False and True"):
        gru_jax.Bidirectional(forward, time_major_backward)
    with one_line_error(r"must agree on in_features; got 3 and 5"):
        gru_jax.Bidirectional(forward, gru_jax.GRU(5, HIDDEN, reverse=True, rngs=rngs))
    layer = gru_jax.Bidirectional(forward, backward)
    with one_line_error(r"initial_carry must be a pair \(forward_carry, backward_carry\); got"):
        layer(X, initial_carry=jnp.zeros((BATCH, HIDDEN)))
    with one_line_error(r"must be a pair .*; got a 3-tuple"):
        layer(X, initial_carry=(jnp.zeros((BATCH, HIDDEN)),) * 3)


def test_kernel_options():
    rngs = nnx.Rngs(0)
    with one_line_error(r"chunk_size must be an int >= 1; got 0"):
        gru_jax.GRU(FEATURES, HIDDEN, chunk_size=0, rngs=rngs)
    with one_line_error(r"unroll must be None, True/False or an int >= 1; got 0"):
        gru_jax.GRU(FEATURES, HIDDEN, unroll=0, rngs=rngs)
    with one_line_error(r"batch_groups must be None or an int >= 1; got -2"):
        gru_jax.StackedGRU(FEATURES, HIDDEN, batch_groups=-2, rngs=rngs)


def test_torch_interop_errors():
    module = torch.nn.GRU(FEATURES, HIDDEN, num_layers=2)
    module.proj_size = 2  # torch refuses proj_size for GRU at construction; set it after
    with one_line_error(r"does not support proj_size > 0; got proj_size=2"):
        interop.from_torch(module)
    module = torch.nn.GRU(FEATURES, HIDDEN, num_layers=2)
    module.weight_hh_l1 = torch.nn.Parameter(torch.zeros(3 * HIDDEN, HIDDEN + 1))
    with one_line_error(r"weight_hh_l1 must have shape \(12, 4\); got shape \(12, 5\)"):
        interop.from_torch(module)
    with one_line_error(r"expects a torch.nn.GRU; got LSTM", TypeError):
        interop.from_torch(torch.nn.LSTM(FEATURES, HIDDEN))
    reset_before = gru_jax.StackedGRU(FEATURES, HIDDEN, reset_after=False, rngs=nnx.Rngs(0))
    with one_line_error(r"needs reset_after=True \(torch.nn.GRU's form\); got reset_after"):
        interop.to_torch(reset_before)
    biased = gru_jax.StackedGRU(
        FEATURES, HIDDEN, bias_init=nnx.initializers.ones_init(), rngs=nnx.Rngs(0)
    )
    with one_line_error(r"to_torch\(bias=False\) needs zero biases; bias_ih_l0 has max"):
        interop.to_torch(biased, bias=False)


def test_flax_linen_interop_errors():
    cell = {
        name: {"kernel": jnp.zeros((FEATURES if name[0] == "i" else HIDDEN, HIDDEN))}
        for name in ("ir", "iz", "in", "hr", "hz", "hn")
    }
    for name in ("ir", "iz", "in", "hn"):
        cell[name]["bias"] = jnp.zeros((HIDDEN,))
    interop.from_flax_linen({"params": {"cell": cell}})  # well-formed
    bad = {**cell, "in": {"kernel": jnp.zeros((FEATURES, HIDDEN)), "bias": jnp.zeros((5,))}}
    with one_line_error(r"flax linen 'in' bias must have shape \(4,\); got shape \(5,\)"):
        interop.from_flax_linen(bad)
    with one_line_error(r"params need 'ir' with \['kernel', 'bias'\]; got keys \[\]"):
        interop.from_flax_linen({"params": {}})


def test_missing_optional_dependency_names_the_install_command(monkeypatch):
    module = torch.nn.GRU(FEATURES, HIDDEN)
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with one_line_error(r'install it with pip install "gru_jax\[dev\]"', ImportError):
        interop.from_torch(module)
    monkeypatch.setitem(sys.modules, "keras", None)
    with one_line_error(r"optional package 'keras'", ImportError):
        interop.from_keras(object())
