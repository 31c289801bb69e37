"""The GRU implementations the benchmark compares, each built the same way.

Every builder takes a :class:`Case` and returns a :class:`Runner` whose ``step()`` runs one
training step (forward + backward w.r.t. the parameters) or one forward pass and blocks
until the result is ready. The loss is the same everywhere: ``sum(outputs * cotangent) /
outputs.size`` over all outputs (``loss='all'``), or ``sum(final_state**2)`` over the last
layer's final state only (``loss='last'``: the sequence-classification case).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    batch: int
    steps: int
    features: int
    hidden: int
    num_layers: int = 1
    bidirectional: bool = False
    variable_lengths: bool = False
    mode: str = "train"  # train | infer
    loss: str = "all"  # all | last

    def lengths(self) -> np.ndarray | None:
        if not self.variable_lengths:
            return None
        rng = np.random.default_rng(1)
        lengths = rng.integers(self.steps // 2, self.steps + 1, size=self.batch)
        lengths[0] = self.steps
        return lengths.astype(np.int32)

    def inputs(self) -> np.ndarray:
        rng = np.random.default_rng(0)
        return rng.standard_normal((self.batch, self.steps, self.features)).astype(np.float32)

    def cotangent(self) -> np.ndarray:
        rng = np.random.default_rng(2)
        dirs = 2 if self.bidirectional else 1
        shape = (self.batch, self.steps, dirs * self.hidden)
        return rng.standard_normal(shape).astype(np.float32)


@dataclasses.dataclass
class Runner:
    step: Callable[[], object]
    compiled: object = None  # a jax Compiled, for memory analysis
    first_call_s: float = float("nan")
    module: object = None  # the torch module (torch peers), for inspection


def _jax_runner(apply: Callable, params, case: Case) -> Runner:
    """apply(params, x, lengths) -> (outputs [B,T,F], last_state [B,H])."""
    x = jnp.asarray(case.inputs())
    lengths = None if case.lengths() is None else jnp.asarray(case.lengths())
    ct = jnp.asarray(case.cotangent())

    def loss_fn(params, x):
        outputs, last = apply(params, x, lengths)
        if case.loss == "last":
            return jnp.sum(last**2)
        return jnp.sum(outputs * ct) / outputs.size

    if case.mode == "train":
        fn = jax.jit(jax.value_and_grad(loss_fn))
    else:
        fn = jax.jit(lambda p, x: apply(p, x, lengths)[0])
    start = time.perf_counter()
    compiled = fn.lower(params, x).compile()
    jax.block_until_ready(compiled(params, x))
    first = time.perf_counter() - start
    return Runner(lambda: jax.block_until_ready(compiled(params, x)), compiled, first)


def build_gru_jax(case: Case, **options) -> Runner:
    from flax import nnx

    import gru_jax

    model = gru_jax.StackedGRU(
        case.features,
        case.hidden,
        case.num_layers,
        bidirectional=case.bidirectional,
        rngs=nnx.Rngs(0),
        **options,
    )
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    time_major = options.get("time_major", False)

    def apply(params, x, lengths):
        if time_major:  # the caller's batch-major data, transposed around the layer
            x = jnp.swapaxes(x, 0, 1)
        carry, y = nnx.merge(graphdef, params, rest)(x, lengths, return_carry=True)
        return (jnp.swapaxes(y, 0, 1) if time_major else y), carry[-1]

    return _jax_runner(apply, params, case)


def build_flax_linen(case: Case, dtype=None) -> Runner:
    """flax linen ``nn.RNN(nn.GRUCell)``; ``dtype``: its computation dtype (None: float32)."""
    import flax.linen as nn

    class Stack(nn.Module):
        @nn.compact
        def __call__(self, x, lengths):
            last = None
            for _ in range(case.num_layers):
                fwd = nn.RNN(nn.GRUCell(case.hidden, dtype=dtype), return_carry=True)
                if case.bidirectional:
                    # nn.Bidirectional runs this one with reverse=True, keep_order=True.
                    bwd = nn.RNN(nn.GRUCell(case.hidden, dtype=dtype), return_carry=True)
                    (c_f, c_b), x = nn.Bidirectional(fwd, bwd, return_carry=True)(
                        x, seq_lengths=lengths
                    )
                    last = c_b
                else:
                    last, x = fwd(x, seq_lengths=lengths)
            return x, last

    model = Stack()
    x = jnp.asarray(case.inputs())
    params = model.init(jax.random.key(0), x, None)
    return _jax_runner(lambda p, x, lengths: model.apply(p, x, lengths), params, case)


def build_flax_nnx(case: Case, dtype=None) -> Runner:
    """``nnx.RNN(nnx.GRUCell)``; ``dtype``: its computation dtype (None: float32)."""
    from flax import nnx

    if case.num_layers != 1 or case.bidirectional or case.variable_lengths:
        raise NotImplementedError("nnx.RNN peer: single-layer, unidirectional cases only")
    cell = nnx.GRUCell(case.features, case.hidden, dtype=dtype, rngs=nnx.Rngs(0))
    model = nnx.RNN(cell, return_carry=True)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def apply(params, x, lengths):
        # A zero initial carry passed in: nnx.RNN would otherwise draw it from an Rngs
        # stream, which cannot be advanced inside jax.jit's trace.
        carry0 = jnp.zeros((x.shape[0], case.hidden), x.dtype)
        rnn = nnx.merge(graphdef, params, rest)
        carry, y = rnn(x, initial_carry=carry0, seq_lengths=lengths)
        return y, carry

    return _jax_runner(apply, params, case)


def build_keras(case: Case) -> Runner:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    if keras.backend.backend() != "jax":
        raise NotImplementedError("Keras peer needs KERAS_BACKEND=jax")
    if case.num_layers != 1 or case.bidirectional or case.variable_lengths:
        raise NotImplementedError("Keras peer: single-layer, unidirectional cases only")
    layer = keras.layers.GRU(case.hidden, return_sequences=True, return_state=True)
    layer.build((case.batch, case.steps, case.features))
    trainable = [v.value for v in layer.trainable_variables]
    others = [v.value for v in layer.non_trainable_variables]

    def apply(params, x, lengths):
        (y, last), _ = layer.stateless_call(params, others, x)
        return y, last

    return _jax_runner(apply, trainable, case)


def build_torch(case: Case, dtype: str = "float32") -> Runner:
    """``torch.nn.GRU`` on CUDA when available (cuDNN), else the CPU; ``dtype='bfloat16'``:
    parameters and inputs in bfloat16 (torch then runs the whole cell in bfloat16, on CPUs
    with AMX through oneDNN), the loss formed in float32."""
    import torch

    torch.set_num_threads(
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = torch.nn.GRU(
        case.features,
        case.hidden,
        case.num_layers,
        batch_first=True,
        bidirectional=case.bidirectional,
    ).to(device, getattr(torch, dtype))
    x = torch.from_numpy(case.inputs()).to(device, getattr(torch, dtype))
    ct = torch.from_numpy(case.cotangent()).to(device)
    lengths = case.lengths()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward():
        if lengths is None:
            y, h_n = model(x)
            return y, h_n
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, torch.from_numpy(lengths), batch_first=True, enforce_sorted=False
        )
        y, h_n = model(packed)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=case.steps)
        return y, h_n

    def train_step():
        model.zero_grad(set_to_none=True)
        y, h_n = forward()
        y, h_n = y.float(), h_n.float()
        loss = (h_n[-1] ** 2).sum() if case.loss == "last" else (y * ct).sum() / y.numel()
        loss.backward()
        sync()

    def infer_step():
        with torch.no_grad():
            forward()
        sync()

    step = train_step if case.mode == "train" else infer_step
    start = time.perf_counter()
    step()
    return Runner(step, None, time.perf_counter() - start, model)


PEERS: dict[str, Callable[[Case], Runner]] = {
    "gru_jax": build_gru_jax,
    "flax_linen": build_flax_linen,
    "flax_nnx": build_flax_nnx,
    "torch": build_torch,
    "keras_jax": build_keras,
}
# Not in a default run (the speed record compares float32 math): bfloat16-operand peers,
# for comparing against gru_jax's ``dtype=bfloat16`` variant ('bf16:dtype=bfloat16').
OPTIONAL_PEERS: dict[str, Callable[[Case], Runner]] = {
    "flax_linen_bf16": lambda case: build_flax_linen(case, jnp.bfloat16),
    "flax_nnx_bf16": lambda case: build_flax_nnx(case, jnp.bfloat16),
    "torch_bf16": lambda case: build_torch(case, "bfloat16"),
}
ALL_PEERS = {**PEERS, **OPTIONAL_PEERS}


def best_peer_ms(impl: str, medians: dict[str, float]) -> float:
    """The fastest peer's median for ``impl`` (``{impl: median ms}``): peers of the same
    operand precision only, so a bfloat16 row (its name contains 'bf16') is compared with
    the bfloat16 peers and a float32 row with the float32 peers; nan if there are none."""
    peers = [
        ms
        for name, ms in medians.items()
        if not name.startswith("gru_jax") and ("bf16" in name) == ("bf16" in impl)
    ]
    return min(peers) if peers else float("nan")
