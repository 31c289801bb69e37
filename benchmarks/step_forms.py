"""Four ways to write one GRU forward (reset-after form) as a ``lax.scan``, timed against
each other: where to project the inputs (all steps before the loop, or inside each step)
and whether the gates share one GEMM or have one each. On XLA CPU the in-loop forms give
each step two independent GEMMs that run concurrently, which is why flax nnx's cell beats
the hoisted per-gate form at the wide shape (see benchmarks/README.md).

    python -m benchmarks.step_forms                       # the wide case, (64, 100, 256, 512)
    python -m benchmarks.step_forms --batch 128 --steps 784 --features 1 --hidden 128

Prints a table of medians (interleaved rounds) and writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np


def _gates(xr, xz, xn, hr, hz, hn, h):
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def _split(a, hidden):
    """The (r, z, n) blocks of the last axis."""
    return a[..., :hidden], a[..., hidden : 2 * hidden], a[..., 2 * hidden :]


def forms(hidden: int):
    """name -> f(x f32[T, B, I], w_i f32[I, 3H], w_h f32[H, 3H], b f32[3H], b_hn f32[H])."""

    def run(step, xs, batch):
        return jax.lax.scan(step, jnp.zeros((batch, hidden), xs[0].dtype), xs)[1]

    def fused_in_loop(x, w_i, w_h, b, b_hn):
        def step(h, xt):
            xr, xz, xn = _split(xt[0] @ w_i + b, hidden)
            hr, hz, hn = _split(h @ w_h, hidden)
            h = _gates(xr, xz, xn, hr, hz, hn + b_hn, h)
            return h, h

        return run(step, (x,), x.shape[1])

    def per_gate_in_loop(x, w_i, w_h, b, b_hn):
        wi, wh, bs = _split(w_i, hidden), _split(w_h, hidden), _split(b, hidden)

        def step(h, xt):
            xt = xt[0]
            pre = [xt @ wi[g] + bs[g] for g in range(3)]
            h = _gates(*pre, h @ wh[0], h @ wh[1], h @ wh[2] + b_hn, h)
            return h, h

        return run(step, (x,), x.shape[1])

    def fused_hoisted(x, w_i, w_h, b, b_hn):
        def step(h, xt):
            xr, xz, xn = _split(xt[0], hidden)
            hr, hz, hn = _split(h @ w_h, hidden)
            h = _gates(xr, xz, xn, hr, hz, hn + b_hn, h)
            return h, h

        return run(step, (x @ w_i + b,), x.shape[1])

    def per_gate_hoisted(x, w_i, w_h, b, b_hn):
        wi, wh, bs = _split(w_i, hidden), _split(w_h, hidden), _split(b, hidden)
        projected = tuple(x @ wi[g] + bs[g] for g in range(3))

        def step(h, xt):
            h = _gates(*xt, h @ wh[0], h @ wh[1], h @ wh[2] + b_hn, h)
            return h, h

        return run(step, projected, x.shape[1])

    return {
        "fused_in_loop": fused_in_loop,
        "per_gate_in_loop": per_gate_in_loop,
        "fused_hoisted": fused_hoisted,
        "per_gate_hoisted": per_gate_hoisted,
    }


def arguments(batch: int, steps: int, features: int, hidden: int, seed: int = 0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 5)
    x = jax.random.normal(keys[0], (steps, batch, features))
    w_i = jax.random.normal(keys[1], (features, 3 * hidden)) / np.sqrt(features)
    w_h = jax.random.normal(keys[2], (hidden, 3 * hidden)) / np.sqrt(hidden)
    b = 0.1 * jax.random.normal(keys[3], (3 * hidden,))
    b_hn = 0.1 * jax.random.normal(keys[4], (hidden,))
    return x, w_i, w_h, b, b_hn


def measure(batch, steps, features, hidden, rounds=7, calls=3):
    args = arguments(batch, steps, features, hidden)
    compiled = {name: jax.jit(f) for name, f in forms(hidden).items()}
    for f in compiled.values():
        jax.block_until_ready(f(*args))
    samples = {name: [] for name in compiled}
    for _ in range(rounds):  # interleaved, so background load hits every form alike
        for name, f in compiled.items():
            start = time.perf_counter()
            for _ in range(calls):
                jax.block_until_ready(f(*args))
            samples[name].append((time.perf_counter() - start) / calls * 1e3)
    return {name: float(np.median(v)) for name, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", default="benchmarks/results/step_forms.json")
    a = parser.parse_args()
    medians = measure(a.batch, a.steps, a.features, a.hidden, a.rounds)
    best = min(medians.values())
    shape = (a.batch, a.steps, a.features, a.hidden)
    print(f"GRU forward step forms, (B, T, I, H) = {shape}, {jax.default_backend()}")
    print(f"{'form':<20} {'median ms':>10} {'vs fastest':>11}")
    for name, ms in medians.items():
        print(f"{name:<20} {ms:>10.1f} {ms / best:>10.2f}x")
    record = {"shape": dict(zip(("batch", "steps", "features", "hidden"), shape)),
              "backend": jax.default_backend(), "jax_version": jax.__version__,
              "median_ms": medians}  # fmt: skip
    with open(a.out, "w") as f:
        json.dump(record, f, indent=1)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
