"""Parity with ``torch.nn.GRU`` (weights copied by ``gru_jax.interop.from_torch``): outputs,
final states and gradients, for every layer option and PackedSequence variable lengths."""

from __future__ import annotations

import functools
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import gru_jax
from gru_jax import interop

torch.set_num_threads(1)

BATCH, STEPS, FEATURES, HIDDEN = 3, 5, 4, 6
LENGTHS = np.array([5, 2, 4], np.int32)  # unsorted on purpose (enforce_sorted=False)


def make_torch_gru(seed=0, **options) -> torch.nn.GRU:
    torch.manual_seed(seed)
    options = {"input_size": FEATURES, "hidden_size": HIDDEN, **options}
    return torch.nn.GRU(**options, dtype=torch.float32)


def random_inputs(module: torch.nn.GRU, seed=1):
    """x in the module's layout and h0 [layers*dirs, batch, hidden], as torch tensors."""
    generator = torch.Generator().manual_seed(seed)
    shape = (BATCH, STEPS, FEATURES) if module.batch_first else (STEPS, BATCH, FEATURES)
    dirs = 2 if module.bidirectional else 1
    x = torch.randn(shape, generator=generator)
    h0 = torch.randn((module.num_layers * dirs, BATCH, HIDDEN), generator=generator)
    return x, h0


def torch_run(module, x, h0, lengths=None):
    """(outputs, h_n) of torch; with ``lengths`` through pack/pad_packed_sequence."""
    if lengths is None:
        return module(x, h0)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        x, torch.as_tensor(lengths), batch_first=module.batch_first, enforce_sorted=False
    )
    out, h_n = module(packed, h0)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(
        out, batch_first=module.batch_first, total_length=STEPS
    )
    return out, h_n


def to_jax(tensor):
    return jnp.asarray(tensor.detach().numpy())


@functools.partial(jax.jit, static_argnums=(0, 5))
def _apply(graphdef, state, x, seq_lengths, initial_carry, deterministic):
    model = nnx.merge(graphdef, state)
    return model(x, seq_lengths, initial_carry=initial_carry, return_carry=True)


def apply(stack, x, seq_lengths=None, initial_carry=None):
    """``stack(x, seq_lengths, initial_carry, return_carry=True)`` under ``jax.jit`` (eager
    dispatch of the scan's many small ops costs more than compiling once); modules with
    the same structure share the compiled program."""
    graphdef, state = nnx.split(stack)
    return _apply(graphdef, state, x, seq_lengths, initial_carry, None)


def assert_close(actual, expected, atol=1e-5):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


OPTIONS = [
    {"num_layers": layers, "bidirectional": bidirectional, "bias": bias, "batch_first": first}
    for layers in (1, 2)
    for bidirectional in (False, True)
    for bias in (True, False)
    for first in (True, False)
]


def option_id(options):
    return "-".join(f"{key}={value}" for key, value in options.items())


@pytest.mark.parametrize("options", OPTIONS, ids=option_id)
@pytest.mark.parametrize("variable_lengths", [False, True], ids=["full", "packed"])
def test_forward_matches_torch(options, variable_lengths):
    module = make_torch_gru(**options)
    stack = interop.from_torch(module)
    assert stack.time_major == (not options["batch_first"])
    x, h0 = random_inputs(module)
    lengths = LENGTHS if variable_lengths else None
    with torch.no_grad():
        y_torch, h_torch = torch_run(module, x, h0, lengths)
    seq_lengths = None if lengths is None else jnp.asarray(lengths)
    h, y = apply(stack, to_jax(x), seq_lengths, to_jax(h0))
    assert_close(y, y_torch.numpy())
    assert_close(h, h_torch.numpy())
    if variable_lengths:  # padded outputs are exactly zero, as pad_packed_sequence gives
        time_axis = 1 if options["batch_first"] else 0
        y_np = np.moveaxis(np.asarray(y), time_axis, 1)
        for b, length in enumerate(LENGTHS):
            assert np.all(y_np[b, length:] == 0.0)


def grads_by_torch_name(stack: gru_jax.StackedGRU, param_grads) -> dict[str, np.ndarray]:
    """Gradient state of ``stack``'s params, keyed like torch's parameter names."""
    graphdef, _, rest = nnx.split(stack, nnx.Param, ...)
    grad_module = nnx.merge(graphdef, param_grads, rest)
    return {name: value.numpy() for name, value in interop.to_torch(grad_module).items()}


GRAD_CASES = [
    ({"num_layers": 2, "bidirectional": True, "batch_first": True}, True, True),
    ({"num_layers": 2, "bidirectional": True, "batch_first": False}, True, False),
    ({"num_layers": 1, "bidirectional": False, "batch_first": True}, False, True),
    ({"num_layers": 2, "bidirectional": False, "batch_first": False}, True, True),
]


@pytest.mark.parametrize("options, variable_lengths, custom_gradient", GRAD_CASES)
def test_gradients_match_torch_autograd(options, variable_lengths, custom_gradient):
    module = make_torch_gru(seed=3, **options)
    stack = interop.from_torch(module, custom_gradient=custom_gradient, chunk_size=2)
    x, h0 = random_inputs(module, seed=4)
    x.requires_grad_(True)
    h0.requires_grad_(True)
    lengths = LENGTHS if variable_lengths else None
    y_torch, h_torch = torch_run(module, x, h0, lengths)
    generator = torch.Generator().manual_seed(5)
    y_weight = torch.randn(y_torch.shape, generator=generator)
    h_weight = torch.randn(h_torch.shape, generator=generator)
    loss_torch = (y_torch * y_weight).sum() + (h_torch * h_weight).sum()
    loss_torch.backward()

    graphdef, params, rest = nnx.split(stack, nnx.Param, ...)
    seq_lengths = None if lengths is None else jnp.asarray(lengths)

    def loss_fn(params, x, h0):
        model = nnx.merge(graphdef, params, rest)
        h, y = model(x, seq_lengths, initial_carry=h0, return_carry=True)
        return jnp.sum(y * to_jax(y_weight)) + jnp.sum(h * to_jax(h_weight))

    loss, (d_params, dx, dh0) = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1, 2)))(
        params, to_jax(x), to_jax(h0)
    )
    assert abs(float(loss) - loss_torch.item()) <= 1e-4
    assert_close(dx, x.grad.numpy(), atol=1e-5)
    assert_close(dh0, h0.grad.numpy(), atol=1e-5)
    ours = grads_by_torch_name(stack, d_params)
    torch_grads = dict(module.named_parameters())
    assert set(ours) == set(torch_grads)
    for name, grad in ours.items():
        expected = torch_grads[name].grad.numpy()
        # Weight gradients sum over batch and time: allow the float32 summation order to
        # differ by a few ulps of the largest entry.
        scale = max(1.0, float(np.max(np.abs(expected))))
        assert np.max(np.abs(grad - expected)) <= 1e-5 * scale, name


def test_length_zero_sequences_keep_the_initial_carry():
    # torch's packed sequences reject length 0, so the other rows are compared to torch and
    # the empty row to its definition: zero outputs and the initial carry for every layer.
    module = make_torch_gru(seed=6, num_layers=2, bidirectional=True, batch_first=True)
    stack = interop.from_torch(module)
    x, h0 = random_inputs(module, seed=7)
    lengths = np.array([5, 0, 3], np.int32)
    h, y = apply(stack, to_jax(x), jnp.asarray(lengths), to_jax(h0))
    assert np.all(np.asarray(y)[1] == 0.0)
    assert_close(h[:, 1], h0.numpy()[:, 1], atol=0.0)
    keep = [0, 2]
    with torch.no_grad():
        y_torch, h_torch = torch_run(module, x[keep], h0[:, keep].contiguous(), lengths[keep])
    assert_close(np.asarray(y)[keep], y_torch.numpy())
    assert_close(np.asarray(h)[:, keep], h_torch.numpy())


def test_round_trip_through_torch():
    module = make_torch_gru(seed=8, num_layers=2, bidirectional=True, batch_first=False)
    stack = interop.from_torch(module)
    state = interop.to_torch(stack)
    assert set(state) == set(module.state_dict())
    for name, value in module.state_dict().items():
        assert torch.equal(state[name], value), name
    fresh = make_torch_gru(seed=9, num_layers=2, bidirectional=True, batch_first=False)
    fresh.load_state_dict(state)
    x, h0 = random_inputs(module)
    with torch.no_grad():
        assert torch.equal(fresh(x, h0)[0], module(x, h0)[0])
    back = interop.from_torch(fresh)
    for a, b in zip(
        jax.tree.leaves(nnx.state(back, nnx.Param)), jax.tree.leaves(nnx.state(stack, nnx.Param))
    ):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_to_torch_without_bias_loads_into_bias_free_module():
    module = make_torch_gru(seed=10, num_layers=2, bias=False, batch_first=True)
    stack = interop.from_torch(module)
    state = interop.to_torch(stack, bias=False)
    fresh = make_torch_gru(seed=11, num_layers=2, bias=False, batch_first=True)
    fresh.load_state_dict(state)
    x, h0 = random_inputs(module)
    with torch.no_grad():
        assert torch.equal(fresh(x, h0)[1], module(x, h0)[1])


def test_eval_mode_and_dropout_carry_over():
    module = make_torch_gru(seed=12, num_layers=2, dropout=0.5, batch_first=True).eval()
    stack = interop.from_torch(module)
    x, h0 = random_inputs(module)
    with torch.no_grad():
        y_torch, h_torch = module(x, h0)
    h, y = apply(stack, to_jax(x), None, to_jax(h0))
    assert_close(y, y_torch.numpy())
    assert_close(h, h_torch.numpy())
    assert stack.dropout.rate == 0.5


def test_bfloat16_parameters_stay_bfloat16():
    module = make_torch_gru(seed=13, batch_first=True).to(torch.bfloat16)
    stack = interop.from_torch(module)
    kernel = stack.directions(0)[0].cell.input_kernel[...]
    assert kernel.dtype == jnp.bfloat16
    expected = module.weight_ih_l0.detach().float().numpy().T
    assert np.array_equal(np.asarray(kernel.astype(jnp.float32)), expected)
    assert interop.to_torch(stack)["weight_ih_l0"].dtype == torch.bfloat16


def test_interop_docstring_example_runs():
    example = interop.__doc__.split("Example::", 1)[1]
    exec(textwrap.dedent(example), {})


@nnx.jit
def _train_or_eval_call(stack, x, h0):
    return stack(x, initial_carry=h0, return_carry=True)


def test_dropout_between_layers_only_in_train_mode():
    module = make_torch_gru(seed=14, num_layers=3, dropout=0.5, batch_first=True)
    stack = interop.from_torch(module)  # torch modules start in train mode, so does this
    x, h0 = random_inputs(module)
    x, h0 = to_jax(x), to_jax(h0)
    h_train1, y_train1 = _train_or_eval_call(stack, x, h0)
    h_train2, y_train2 = _train_or_eval_call(stack, x, h0)
    stack.eval()
    h_eval1, y_eval1 = _train_or_eval_call(stack, x, h0)
    h_eval2, y_eval2 = _train_or_eval_call(stack, x, h0)
    with torch.no_grad():
        y_torch, h_torch = module.eval()(*random_inputs(module))
    # eval: deterministic and torch's eval numbers
    assert np.array_equal(y_eval1, y_eval2) and np.array_equal(h_eval1, h_eval2)
    assert_close(y_eval1, y_torch.numpy())
    assert_close(h_eval1, h_torch.numpy())
    # train: fresh masks each call; the first layer's input and state are never dropped
    assert np.max(np.abs(np.asarray(y_train1) - np.asarray(y_train2))) > 1e-2
    assert np.max(np.abs(np.asarray(y_train1) - np.asarray(y_eval1))) > 1e-2
    for h_train in (h_train1, h_train2):
        assert_close(h_train[0], h_eval1[0], atol=1e-6)
        assert np.max(np.abs(np.asarray(h_train[1:]) - np.asarray(h_eval1[1:]))) > 1e-2
    # the same seed reproduces the same masks
    again = interop.from_torch(module.train(), rngs=nnx.Rngs(0))
    assert np.array_equal(_train_or_eval_call(again, x, h0)[1], y_train1)
    other = interop.from_torch(module, rngs=nnx.Rngs(1))
    assert np.max(np.abs(_train_or_eval_call(other, x, h0)[1] - y_train1)) > 1e-2


def test_single_layer_has_no_dropout():
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        module = make_torch_gru(seed=15, num_layers=1, dropout=0.5, batch_first=True)
    stack = interop.from_torch(module)
    x, h0 = random_inputs(module)
    h_train, y_train = _train_or_eval_call(stack, to_jax(x), to_jax(h0))
    with torch.no_grad():
        y_torch, h_torch = module(x, h0)
    assert_close(y_train, y_torch.numpy())
    assert_close(h_train, h_torch.numpy())
