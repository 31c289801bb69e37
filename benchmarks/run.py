"""gru_jax speed record: GRU training steps and inference against peer implementations.

    python -m benchmarks.run                 # all cases, all peers (make bench)
    python -m benchmarks.run --quick         # fewer repetitions
    python -m benchmarks.run --cases long --peers gru_jax,flax_linen

Peers run in the same process, interleaved round by round, and each number is a median.
Prints a table and writes JSON to ``benchmarks/results/<device>.json``; ``python -m
benchmarks.report`` turns the JSON into the README table. Speed is never asserted in
tests; read the ratios (this machine is noisy).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.peers import ALL_PEERS, PEERS, Case, Runner, best_peer_ms, build_gru_jax

RESULTS = Path(__file__).parent / "results"

SHAPES = {  # (batch, time, features, hidden) and stack options
    "small": dict(batch=128, steps=28, features=28, hidden=128),
    "long": dict(batch=128, steps=784, features=1, hidden=128),
    "wide": dict(batch=64, steps=100, features=256, hidden=512),
    "bidir2_varlen": dict(
        batch=64,
        steps=100,
        features=64,
        hidden=128,
        num_layers=2,
        bidirectional=True,
        variable_lengths=True,
    ),
}


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo is missing)."""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_info() -> dict:
    """What sets a CPU's GEMM speed: model name, cores, and its widest vector ISA."""
    model = ""
    try:
        with open("/proc/cpuinfo") as file:
            model = next((ln.split(":", 1)[1].strip() for ln in file if "model name" in ln), "")
    except OSError:
        pass
    flags = cpu_flags()
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")
    return {"model": model, "flags": [f for f in wanted if f in flags]}


def device_name() -> str:
    """``cpu-<cores>core-<arch>-<isa>`` (the ISA: ``avx512-amx``, ``avx512`` or ``avx2`` on
    x86, whose GEMM rates differ ~1.5x on the same cores), or the accelerator's kind."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
        name = f"cpu-{cores}core-{platform.machine()}"
        flags = cpu_flags()
        isa = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else ""
        if isa == "avx512" and "amx_bf16" in flags:
            isa += "-amx"  # Intel Xeon with matrix tiles: its own host class
        return f"{name}-{isa}" if isa else name
    return device.device_kind.replace(" ", "-").lower()


def median_seconds(fn, argument, repeats: int) -> float:
    """Median wall time of ``fn(argument)`` over ``repeats`` calls after a warm-up call."""
    jax.block_until_ready(fn(argument))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(argument))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def step_gemm_roofline(batch: int, hidden: int, steps: int = 784, repeats: int = 7) -> dict:
    """Rate of the per-step recurrent GEMM ([B,H] @ [H,3H], plus a tanh) inside a scan."""
    rng = np.random.default_rng(0)
    kernel = jnp.asarray(rng.standard_normal((hidden, 3 * hidden)) * 0.05, jnp.float32)
    h0 = jnp.asarray(rng.standard_normal((batch, hidden)), jnp.float32)

    def loop(h):
        def body(h, _):
            return jnp.tanh(h @ kernel)[:, :hidden], None

        return jax.lax.scan(body, h, None, length=steps)[0]

    per_step = median_seconds(jax.jit(loop), h0, repeats) / steps
    flops = 2 * batch * hidden * 3 * hidden
    return {"per_step_us": per_step * 1e6, "gflops": flops / per_step / 1e9}


def gemm_peak(sizes: tuple[int, ...] = (2048, 3072), repeats: int = 5) -> dict:
    """The machine's large-GEMM rate: the fastest median over square f32 matmuls of
    ``sizes`` (XLA's own dot, the best GEMM measured on this CPU). No GRU step can run its
    matmuls faster than this, so it bounds every implementation's achievable speed."""
    rng = np.random.default_rng(0)
    best = {"gflops": 0.0, "size": None}
    for size in sizes:
        a = jnp.asarray(rng.standard_normal((size, size)), jnp.float32)
        gflops = 2 * size**3 / median_seconds(jax.jit(lambda a: a @ a), a, repeats) / 1e9
        if gflops > best["gflops"]:
            best = {"gflops": gflops, "size": size}
    return best


def memory_mb(runner: Runner) -> float | None:
    if runner.compiled is None:
        return None
    try:
        stats = runner.compiled.memory_analysis()
        return (stats.temp_size_in_bytes + stats.output_size_in_bytes) / 2**20
    except Exception:  # some backends do not report memory
        return None


def time_runners(runners: dict[str, Runner], rounds: int, per_round: int) -> dict:
    samples = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            for _ in range(per_round):
                start = time.perf_counter()
                runner.step()
                samples[name].append(time.perf_counter() - start)
    return {name: np.asarray(values) * 1e3 for name, values in samples.items()}


def run_case(
    case: Case, peers: list[str], rounds: int, variants: dict[str, dict] | None = None
) -> list[dict]:
    runners, rows, errors = {}, [], {}
    for name in peers:
        try:
            runners[name] = ALL_PEERS[name](case)
        except Exception as error:  # a peer that cannot run here is reported, not fatal
            errors[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    if case.name == "long" and case.mode == "train" and "gru_jax" in peers:
        runners["gru_jax_remat"] = build_gru_jax(case, remat=True)
    if "gru_jax" in peers:
        for label, options in (variants or {}).items():
            runners[f"gru_jax_{label}"] = build_gru_jax(case, **options)
    probe = time_runners(runners, 1, 1)
    slowest = max(float(np.median(v)) for v in probe.values())
    per_round = max(1, int(300 / max(slowest, 1e-3)))  # ~0.3 s per peer per round
    samples = time_runners(runners, rounds, min(per_round, 20))
    for name, values in samples.items():
        median = float(np.median(values))
        runner = runners[name]
        rows.append(
            dict(
                **dataclasses.asdict(case),
                impl=name,
                median_ms=median,
                p25_ms=float(np.percentile(values, 25)),
                p75_ms=float(np.percentile(values, 75)),
                samples=int(values.size),
                compile_s=runner.first_call_s - median / 1e3,
                memory_mb=memory_mb(runner),
            )
        )
    for name, error in errors.items():
        rows.append(dict(**dataclasses.asdict(case), impl=name, skipped=error))
    return rows


def recurrent_gflop(case: Case) -> float:
    """Recurrent FLOPs of the forward (2*B*H*3H*T per layer and direction); training is
    counted as 3x forward."""
    dirs = 2 if case.bidirectional else 1
    forward = 2 * case.batch * case.hidden * 3 * case.hidden * case.steps * dirs
    forward *= case.num_layers
    return forward * (3 if case.mode == "train" else 1) / 1e9


def matmul_gflop(case: Case) -> float:
    """The matmul FLOPs a step cannot avoid, all layers and directions: the forward's
    recurrent (``R = 2·B·T·H·3H``) and input (``P = 2·B·T·I·3H``, ``I`` the layer's input
    width) products; training adds the state gradient and the recurrent weight gradient
    (2R), the input weight gradient (P), and for layers after the first the gradient to
    their input (P; the benchmark's loss takes no gradient w.r.t. the data). With
    ``loss='last'`` on a bidirectional stack the last layer's forward direction gets no
    gradient, so there the count is an upper bound."""
    dirs = 2 if case.bidirectional else 1
    total = 0.0
    for layer in range(case.num_layers):
        width = case.features if layer == 0 else dirs * case.hidden
        recurrent = 2 * case.batch * case.steps * case.hidden * 3 * case.hidden
        inputs = 2 * case.batch * case.steps * width * 3 * case.hidden
        if case.mode == "train":
            total += dirs * (3 * recurrent + (2 if layer == 0 else 3) * inputs)
        else:
            total += dirs * (recurrent + inputs)
    return total / 1e9


def summarize(rows: list[dict], roofline: dict, peak: dict | None = None) -> None:
    by_case: dict[tuple, list[dict]] = {}
    for row in rows:
        by_case.setdefault((row["name"], row["mode"], row["loss"]), []).append(row)
    header = f"{'case':<16}{'mode':<12}{'impl':<15}{'median ms':>10}{'vs best peer':>13}"
    header += f"{'GFLOP/s':>9}{'roofline':>9}{'all GEMM':>9}{'of peak':>8}"
    print("\n" + header + f"{'mem MB':>8}{'compile s':>10}")
    for (name, mode, loss), group in by_case.items():
        timed = [r for r in group if "median_ms" in r]
        medians = {r["impl"]: r["median_ms"] for r in timed}
        for row in sorted(timed, key=lambda r: r["median_ms"]):
            best_peer = best_peer_ms(row["impl"], medians)
            case = Case(**{k: row[k] for k in Case.__dataclass_fields__})
            gflops = recurrent_gflop(case) / (row["median_ms"] / 1e3)
            row["speedup_vs_best_peer"] = best_peer / row["median_ms"]
            row["recurrent_gflops"] = gflops
            row["roofline_fraction"] = gflops / roofline["gflops"]
            row["matmul_gflops"] = matmul_gflop(case) / (row["median_ms"] / 1e3)
            if peak:
                row["peak_fraction"] = row["matmul_gflops"] / peak["gflops"]
            mem = "" if row["memory_mb"] is None else f"{row['memory_mb']:.0f}"
            label = mode if mode == "infer" else f"{mode}/{loss}"
            print(
                f"{name:<16}{label:<12}{row['impl']:<15}{row['median_ms']:>10.2f}"
                f"{row['speedup_vs_best_peer']:>12.2f}x{gflops:>9.1f}"
                f"{row['roofline_fraction']:>8.0%}{row['matmul_gflops']:>9.1f}"
                f"{row.get('peak_fraction', float('nan')):>8.0%}{mem:>8}{row['compile_s']:>10.2f}"
            )
        for row in group:
            if "skipped" in row:
                print(f"{name:<16}{mode:<12}{row['impl']:<15}  skipped ({row['skipped']})")


def parse_variants(spec: str) -> dict[str, dict]:
    """'unroll1:unroll=1,tm:time_major=true' -> {'unroll1': {'unroll': 1}, 'tm': {...}};
    values are integers, true/false, or else strings ('bf16:dtype=bfloat16')."""
    variants = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        label, _, assignments = item.partition(":")
        options = {}
        for assignment in filter(None, assignments.split(";")):
            key, _, value = assignment.partition("=")
            lowered = value.strip().lower()
            if lowered in ("true", "false"):
                options[key.strip()] = lowered == "true"
            else:
                if not key.strip() or not value.strip():
                    raise SystemExit(f"--variants: {assignment!r} is not option=value")
                try:
                    options[key.strip()] = int(value)
                except ValueError:
                    options[key.strip()] = value.strip()
        variants[label] = options
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(SHAPES), help="comma-separated cases")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated peers")
    parser.add_argument("--modes", default="train,infer")
    parser.add_argument("--losses", default="all,last", help="training losses to time")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 rounds")
    parser.add_argument("--output", default=None, help="JSON path (default: results/<device>)")
    parser.add_argument(
        "--variants",
        default="",
        help="extra gru_jax rows, 'label:option=value;option=value,...' with integer, "
        "true/false or string values, e.g. 'unroll1:unroll=1,bf16:dtype=bfloat16'",
    )
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    peers = args.peers.split(",")
    unknown = sorted(set(peers) - set(ALL_PEERS))
    if unknown:
        known = ", ".join(ALL_PEERS)
        raise SystemExit(f"--peers: unknown {', '.join(unknown)}; known: {known}")
    variants = parse_variants(args.variants)
    roofline = step_gemm_roofline(128, 128)
    peak = gemm_peak()
    print(f"device: {device_name()}  jax {jax.__version__}  backend {jax.default_backend()}")
    print(
        f"per-step GEMM roofline (128x128 @ 128x384 + tanh in a scan): "
        f"{roofline['per_step_us']:.1f} us/step, {roofline['gflops']:.1f} GFLOP/s"
    )
    print(f"large-GEMM peak ({peak['size']}^3 f32 matmul): {peak['gflops']:.1f} GFLOP/s")
    output = Path(args.output) if args.output else RESULTS / f"{device_name()}.json"
    output.parent.mkdir(parents=True, exist_ok=True)

    def write(rows: list[dict]) -> None:
        record = {
            "device": device_name(),
            "jax_version": jax.__version__,
            "backend": jax.default_backend(),
            "cpu": cpu_info(),
            "date": time.strftime("%Y-%m-%d"),
            "roofline": roofline,
            "gemm_peak": peak,
            "case_rooflines": case_rooflines,
            "rows": rows,
        }
        output.write_text(json.dumps(record, indent=1))

    rows, case_rooflines = [], {}
    for name in args.cases.split(","):
        shape = SHAPES[name]
        # This case's own recurrent GEMM ([B, H] @ [H, 3H] + tanh) in a bare loop: what one
        # step's main product runs at when nothing else happens in the step.
        case_rooflines[name] = step_gemm_roofline(
            shape["batch"], shape["hidden"], steps=min(shape["steps"], 200)
        )
        for mode in args.modes.split(","):
            for loss in args.losses.split(",") if mode == "train" else ["all"]:
                case = Case(name=name, mode=mode, loss=loss, **SHAPES[name])
                print(f"running {name} {mode} {loss} ...", flush=True)
                rows.extend(run_case(case, peers, rounds, variants))
                write(rows)  # a run cut short keeps the cases it finished
    # The peak again at the end (the clock of a shared VM drifts over minutes): the higher.
    end_peak = gemm_peak()
    if end_peak["gflops"] > peak["gflops"]:
        peak.update(end_peak)
    summarize(rows, roofline, peak)
    write(rows)
    print(f"\nwrote {output}")


if __name__ == "__main__":
    main()
