"""ConvGRU speed on the local backend: one training step's fwd+bwd and the forward alone.

Variants (all through :func:`gru_jax.ops.conv_gru.conv_gru_scan`, same process, rounds
interleaved so that background load hits all of them alike, medians reported):

* ``xla``: autodiff of ``lax.scan`` over ``lax.conv_general_dilated`` (the baseline);
* ``stepwise``: autodiff of the scan, convolutions with a layout-safe backward;
* ``deferred``: custom VJP of the recurrence, kernel gradients formed after the reverse
  scan from the stacked gate gradients;
* each rolled (``unroll=1``) and fully unrolled (``unroll=True``); ``in-step`` convolves the
  inputs inside the step instead of all frames at once;
* ``torch``: the same ConvGRU written with ``torch.nn.functional.conv2d`` (a peer).

The loss is ``sum(outputs ** 2)``; gradients are taken w.r.t. the parameters only, as in
a training step. Run ``python -m benchmarks.bench_convgru [--video] [--rounds N]``; prints
a table and writes ``benchmarks/results/convgru_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from gru_jax.ops.conv_gru import ConvGRUWeights, conv_gru_scan

RESULTS = os.path.join(os.path.dirname(__file__), "results", "convgru_cpu.json")

# (name, batch, time, height, width, in_channels, hidden_channels, kernel)
CASES = {
    "small": (16, 10, 16, 16, 32, 32, 3),
    "video": (16, 20, 64, 64, 1, 32, 3),
    # The moving-digits predictor's first layer: 8x8 patches of 64 pixels + 16 motion
    # channels, 64-channel states, a batch of 8.
    "predictor": (8, 10, 8, 8, 80, 64, 3),
}

# (label, options of conv_gru_scan); the first is the baseline of the ratio column.
VARIANTS = [
    ("xla rolled (baseline)", dict(gradient="xla", unroll=1, hoist_inputs=False)),
    ("xla unroll=True", dict(gradient="xla", unroll=True, hoist_inputs=False)),
    ("stepwise rolled", dict(gradient="stepwise", unroll=1, hoist_inputs=False)),
    ("stepwise rolled, hoisted input conv", dict(gradient="stepwise", unroll=1, hoist_inputs=True)),
    ("stepwise unroll=True (default, T<=20)", dict(gradient="stepwise", unroll=True)),
    ("deferred rolled", dict(gradient="deferred", unroll=1)),
    ("deferred unroll=True", dict(gradient="deferred", unroll=True)),
    ("im2col rolled", dict(gradient="im2col", unroll=1)),
    ("im2col unroll=True", dict(gradient="im2col", unroll=True)),
]


def make_weights(key, in_channels, hidden, kernel):
    k1, k2 = jax.random.split(key)
    scale = 1.0 / np.sqrt(kernel * kernel * max(in_channels, hidden))
    return ConvGRUWeights(
        jax.random.normal(k1, (kernel, kernel, in_channels, 3 * hidden)) * scale,
        jax.random.normal(k2, (kernel, kernel, hidden, 3 * hidden)) * scale,
        jnp.zeros((3 * hidden,)),
        jnp.zeros((3 * hidden,)),
    )


def jax_functions(options):
    def loss(weights, x, h0):
        _, y = conv_gru_scan(weights, x, h0, **options)
        return jnp.sum(y**2)

    return jax.jit(jax.value_and_grad(loss)), jax.jit(loss)


def torch_functions(weights, batch, steps, size, hidden):
    import torch
    import torch.nn.functional as F

    def to_torch(kernel):  # HWIO -> OIHW
        return torch.tensor(np.asarray(kernel).transpose(3, 2, 0, 1).copy(), requires_grad=True)

    w_in, w_rec = to_torch(weights.input_kernel), to_torch(weights.recurrent_kernel)
    b_in = torch.zeros(3 * hidden, requires_grad=True)
    b_rec = torch.zeros(3 * hidden, requires_grad=True)
    pad = weights.input_kernel.shape[0] // 2

    def run(x):  # x: [B, T, C, H, W]
        h = torch.zeros(batch, hidden, size[0], size[1])
        frames = x.reshape(batch * steps, *x.shape[2:])
        x_pre = F.conv2d(frames, w_in, b_in, padding=pad).reshape(batch, steps, 3 * hidden, *size)
        total = 0.0
        for t in range(steps):
            x_r, x_z, x_n = x_pre[:, t].chunk(3, dim=1)
            h_r, h_z, h_n = F.conv2d(h, w_rec, b_rec, padding=pad).chunk(3, dim=1)
            r = torch.sigmoid(x_r + h_r)
            z = torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + r * h_n)
            h = n + z * (h - n)
            total = total + (h**2).sum()
        return total

    def train_step(x):
        for p in (w_in, w_rec, b_in, b_rec):
            p.grad = None
        run(x).backward()

    def forward(x):
        with torch.no_grad():
            run(x)

    return train_step, forward


def time_call(fn, *args):
    """(wall ms, process CPU ms): CPU time is steadier when other jobs share the cores."""
    start, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn(*args))
    return (time.perf_counter() - start) * 1e3, (time.process_time() - cpu) * 1e3


def run_case(name, rounds, slow_rounds, with_torch):
    batch, steps, height, width, cin, hidden, kernel = CASES[name]
    key = jax.random.PRNGKey(0)
    weights = make_weights(key, cin, hidden, kernel)
    x = jax.random.normal(jax.random.fold_in(key, 1), (batch, steps, height, width, cin))
    h0 = jnp.zeros((batch, height, width, hidden))
    entries = {}
    for label, options in VARIANTS:
        train, fwd = jax_functions(options)
        compile_ms = time_call(train, weights, x, h0)[0]
        entries[label] = dict(train=train, fwd=fwd, compile_ms=compile_ms, times=[], ftimes=[])
        time_call(fwd, weights, x, h0)
    if with_torch:
        import torch

        train, fwd = torch_functions(weights, batch, steps, (height, width), hidden)
        xt = torch.tensor(np.asarray(x).transpose(0, 1, 4, 2, 3).copy())
        train(xt)
        entries["torch (F.conv2d)"] = dict(
            train=lambda *_: train(xt), fwd=lambda *_: fwd(xt), compile_ms=0.0, times=[], ftimes=[]
        )
    for r in range(rounds):
        for label, e in entries.items():
            if label.startswith("xla rolled") and r >= slow_rounds:
                continue
            e["times"].append(time_call(e["train"], weights, x, h0))
            e["ftimes"].append(time_call(e["fwd"], weights, x, h0))
    base = statistics.median(t[0] for t in entries[VARIANTS[0][0]]["times"])
    rows = []
    for label, e in entries.items():
        wall = [t[0] for t in e["times"]]
        med = statistics.median(wall)
        rows.append(
            dict(
                variant=label,
                train_step_ms=round(med, 2),
                train_step_min_ms=round(min(wall), 2),
                train_step_cpu_ms=round(statistics.median(t[1] for t in e["times"]), 2),
                forward_ms=round(statistics.median(t[0] for t in e["ftimes"]), 2),
                speedup_vs_baseline=round(base / med, 2),
                first_call_ms=round(e["compile_ms"], 1),
                repeats=len(e["times"]),
            )
        )
    shape = dict(
        batch=batch,
        time=steps,
        height=height,
        width=width,
        in_channels=cin,
        hidden_channels=hidden,
        kernel=kernel,
    )
    return dict(case=name, shape=shape, rows=rows)


def print_table(result):
    s = result["shape"]
    print(
        f"\n{result['case']}: B={s['batch']} T={s['time']} {s['height']}x{s['width']} "
        f"C_in={s['in_channels']} C_hidden={s['hidden_channels']} {s['kernel']}x{s['kernel']}"
    )
    print(
        f"{'variant':38s} {'fwd+bwd ms':>10s} {'min':>7s} {'cpu ms':>7s} {'fwd ms':>7s} "
        f"{'x base':>6s} {'1st call s':>10s}"
    )
    for row in result["rows"]:
        print(
            f"{row['variant']:38s} {row['train_step_ms']:10.1f} {row['train_step_min_ms']:7.1f} "
            f"{row['train_step_cpu_ms']:7.1f} {row['forward_ms']:7.1f} "
            f"{row['speedup_vs_baseline']:6.2f} {row['first_call_ms'] / 1e3:10.1f}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--slow-rounds", type=int, default=3, help="rounds for the (slow) rolled xla baseline"
    )
    parser.add_argument("--video", action="store_true", help="also the 64x64, T=20 case")
    parser.add_argument("--cases", default=None, help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args()
    cases = ["small", "video"] if args.video else ["small"]
    if args.cases:
        cases = args.cases.split(",")
        unknown = sorted(set(cases) - set(CASES))
        if unknown:
            raise SystemExit(f"--cases: unknown {', '.join(unknown)}; known: {', '.join(CASES)}")
    results = []
    for name in cases:
        # The rolled xla baseline takes minutes per call at 64x64: one round there.
        slow_rounds = args.slow_rounds if name != "video" else 1
        result = run_case(name, args.rounds, slow_rounds, not args.no_torch)
        print_table(result)
        results.append(result)
    meta = dict(
        backend=jax.default_backend(),
        device=str(jax.devices()[0]),
        cpu_count=os.cpu_count(),
        jax=jax.__version__,
        machine=platform.machine(),
        load_average=os.getloadavg(),
    )
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(dict(meta=meta, results=results), f, indent=2)
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
