"""The benchmark harness runs every peer (a tiny case, so a broken peer shows up here rather
than halfway through `make bench`). Nothing here is about speed."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.peers import OPTIONAL_PEERS, PEERS, Case, best_peer_ms
from benchmarks.report import markdown
from benchmarks.run import matmul_gflop, parse_variants, recurrent_gflop, run_case

TINY = dict(batch=4, steps=3, features=2, hidden=8)


@pytest.mark.parametrize("mode", ["train", "infer"])
def test_every_peer_runs_a_tiny_case(mode):
    case = Case(name="long", mode=mode, loss="all", **TINY)
    rows = run_case(case, list(PEERS), rounds=1)
    by_impl = {row["impl"]: row for row in rows}
    expected = set(PEERS) | ({"gru_jax_remat"} if mode == "train" else set())
    assert set(by_impl) == expected
    for impl, row in by_impl.items():
        assert "skipped" not in row, f"{impl}: {row.get('skipped')}"
        assert row["median_ms"] > 0 and row["samples"] >= 1
        assert {k: row[k] for k in dataclasses.asdict(case)} == dataclasses.asdict(case)
    assert by_impl["gru_jax"]["memory_mb"] is not None


def test_unsupported_cases_are_reported_as_skipped_not_dropped():
    case = Case(name="bidir", mode="infer", num_layers=2, bidirectional=True, **TINY)
    rows = {row["impl"]: row for row in run_case(case, ["gru_jax", "flax_nnx"], rounds=1)}
    assert "NotImplementedError" in rows["flax_nnx"]["skipped"]
    assert rows["gru_jax"]["median_ms"] > 0


def test_variants_parse_integers_booleans_and_strings():
    parsed = parse_variants("u8:unroll=8;remat=true, bf16:dtype=bfloat16,plain:")
    assert parsed == {
        "u8": {"unroll": 8, "remat": True},
        "bf16": {"dtype": "bfloat16"},
        "plain": {},
    }
    with pytest.raises(SystemExit, match="is not option=value"):
        parse_variants("bad:unroll")


def test_rows_are_compared_with_peers_of_their_precision():
    medians = {"gru_jax": 9.0, "gru_jax_bf16": 5.0, "flax_linen": 10.0, "torch": 12.0,
               "flax_linen_bf16": 6.0}  # fmt: skip
    assert best_peer_ms("gru_jax", medians) == 10.0
    assert best_peer_ms("gru_jax_bf16", medians) == 6.0
    assert np.isnan(best_peer_ms("gru_jax_bf16", {"gru_jax_bf16": 5.0, "torch": 12.0}))


@pytest.mark.parametrize("name", sorted(OPTIONAL_PEERS))
def test_bfloat16_peers_run_in_bfloat16(name):
    case = Case("tiny", 4, 5, 3, 8, mode="infer")
    rows = run_case(case, ["gru_jax", name], rounds=1, variants={"bf16": {"dtype": "bfloat16"}})
    assert {r["impl"] for r in rows} == {"gru_jax", name, "gru_jax_bf16"}
    assert all(r["median_ms"] > 0 for r in rows)
    low, full = OPTIONAL_PEERS[name](case), PEERS[name.removesuffix("_bf16")](case)
    if name.startswith("torch"):
        import torch

        assert {p.dtype for p in low.module.parameters()} == {torch.bfloat16}
        assert {p.dtype for p in full.module.parameters()} == {torch.float32}
    else:
        assert "bf16[" in low.compiled.as_text()  # bfloat16 operands
        assert "bf16[" not in full.compiled.as_text()


def test_recurrent_flops_count():
    case = Case(name="x", mode="infer", batch=2, steps=5, features=1, hidden=3)
    assert np.isclose(recurrent_gflop(case) * 1e9, 2 * 2 * 3 * 9 * 5)
    both = dataclasses.replace(case, mode="train", num_layers=2, bidirectional=True)
    assert np.isclose(recurrent_gflop(both) * 1e9, 2 * 2 * 3 * 9 * 5 * 2 * 2 * 3)


def test_matmul_flops_count_every_unavoidable_product():
    case = Case(name="x", mode="infer", batch=2, steps=5, features=4, hidden=3)
    recurrent, inputs = 2 * 2 * 5 * 3 * 9, 2 * 2 * 5 * 4 * 9  # 2·B·T·H·3H, 2·B·T·I·3H
    assert np.isclose(matmul_gflop(case) * 1e9, recurrent + inputs)
    train = dataclasses.replace(case, mode="train")
    assert np.isclose(matmul_gflop(train) * 1e9, 3 * recurrent + 2 * inputs)
    # Two bidirectional layers: the second reads 2H features and passes a gradient back.
    stack = dataclasses.replace(train, num_layers=2, bidirectional=True)
    second_inputs = 2 * 2 * 5 * 6 * 9
    expected = 2 * (3 * recurrent + 2 * inputs) + 2 * (3 * recurrent + 3 * second_inputs)
    assert np.isclose(matmul_gflop(stack) * 1e9, expected)


def test_report_says_what_rate_the_speed_goal_would_need():
    case = dict(name="wide", batch=64, steps=100, features=256, hidden=512, num_layers=1,
                bidirectional=False, variable_lengths=False, mode="infer", loss="all")  # fmt: skip
    gflop = matmul_gflop(Case(**case))
    rows = [  # gru_jax at 100 ms; the fastest peer at 110 ms: 1.1x, short of 1.3x
        dict(case, impl="gru_jax", median_ms=100.0, matmul_gflops=gflop / 0.1),
        dict(case, impl="flax_nnx", median_ms=110.0, matmul_gflops=gflop / 0.11),
    ]
    data = dict(device="cpu", jax_version="0", date="d", rows=rows,
                roofline={"gflops": 100.0, "per_step_us": 1.0},
                gemm_peak={"gflops": 150.0, "size": 2048},
                case_rooflines={"wide": {"gflops": 140.0, "per_step_us": 1.0}})  # fmt: skip
    table = markdown(data)
    assert "its recurrent GEMM alone runs at 140 in a bare loop" in table
    needed = gflop / (0.110 / 1.3)  # the FLOPs in the fastest peer's time over 1.3
    assert f"needs {needed:.0f} GFLOP/s of matmul = {needed / 150:.0%} of the large-GEMM" in table
    assert "Large-GEMM peak: 150 GFLOP/s" in table
    faster = [dict(row) for row in rows]
    faster[1]["median_ms"] = 140.0  # now 1.4x: no line for the case
    for row in faster:
        row.pop("speedup_vs_best_peer", None)
    assert "needs" not in markdown(dict(data, rows=faster))


def test_step_forms_compute_the_same_gru_as_a_numpy_loop():
    """The four forms timed by benchmarks/step_forms.py are one GRU (reset-after form),
    equal to the equations evaluated step by step in NumPy."""
    from benchmarks.step_forms import arguments, forms

    x, w_i, w_h, b, b_hn = (np.asarray(a, np.float64) for a in arguments(3, 5, 4, 6))
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    h, reference = np.zeros((3, 6)), []
    for xt in x:
        xi, hh = xt @ w_i + b, h @ w_h
        r = sigmoid(xi[:, :6] + hh[:, :6])
        z = sigmoid(xi[:, 6:12] + hh[:, 6:12])
        n = np.tanh(xi[:, 12:] + r * (hh[:, 12:] + b_hn))
        h = (1 - z) * n + z * h
        reference.append(h)
    for name, f in forms(6).items():
        y = np.asarray(f(*(np.float32(a) for a in (x, w_i, w_h, b, b_hn))))
        np.testing.assert_allclose(y, np.stack(reference), atol=2e-5, err_msg=name)


def test_video_step_variants_build_and_the_matching_reference_agrees():
    """``benchmarks.video_step``: every variant's overrides reach a model of that form, and
    the unrolled block matching it times against equals the library's."""
    from benchmarks import video_step
    from experiments.setup import build_run
    from gru_jax.models.video_ops import matching_costs

    for name, overrides in video_step.VARIANTS.items():
        run = build_run(video_step.variant_config(name, num_videos=8))
        cells = name.startswith("cells")
        assert run.model.motions == overrides.get("advection_motions", 0 if cells else 8), name
        assert run.task.config.model.advection_source == ("previous" if cells else "splat"), name
        assert run.model.layer_fade == overrides.get("layer_fade", False), name
        assert run.task.config.train.loss == overrides.get("loss", "bce" if cells else "mse"), name
        assert run.task.config.model.dtype == overrides.get("dtype", "float32"), name
        for key, value in overrides.items():
            if key.startswith("train."):
                assert run.task.config.train[key.removeprefix("train.")] == value, name
    frames = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 3, 16, 16, 1)), jnp.float32)
    np.testing.assert_allclose(
        video_step.matching_costs_unrolled(frames, 4, 2), matching_costs(frames, 4, 2), atol=1e-7
    )
