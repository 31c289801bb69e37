"""Turns benchmark JSON into markdown tables (and updates README.md between markers).

python -m benchmarks.report benchmarks/results/<device>.json            # print
python -m benchmarks.report benchmarks/results/<device>.json --readme   # rewrite README
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from benchmarks.peers import best_peer_ms

BEGIN = "<!-- benchmark-table:begin -->"
END = "<!-- benchmark-table:end -->"
ORDER = ["gru_jax", "gru_jax_remat", "flax_linen", "flax_nnx", "torch", "keras_jax"]


def markdown(data: dict) -> str:
    rows = [r for r in data["rows"] if "median_ms" in r]
    present = {r["impl"] for r in rows}
    variants = sorted(i for i in present if i not in ORDER)  # e.g. gru_jax_unroll8
    impls = [i for i in ORDER[:2] + variants + ORDER[2:] if i in present]
    cases: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        key = (row["name"], row["mode"], row["loss"])
        cases.setdefault(key, {})[row["impl"]] = row
    for by_impl in cases.values():  # a run cut short before its summary has no ratios
        medians = {i: r["median_ms"] for i, r in by_impl.items()}
        for impl, row in by_impl.items():
            best = best_peer_ms(impl, medians)
            if "speedup_vs_best_peer" not in row and not math.isnan(best):  # nan: no peer
                row["speedup_vs_best_peer"] = best / row["median_ms"]
    roof = data["roofline"]
    peak = data.get("gemm_peak")
    peak_text = (
        f" Large-GEMM peak: {peak['gflops']:.0f} GFLOP/s ({peak['size']}³ f32 matmul)."
        if peak
        else ""
    )
    cpu = data.get("cpu") or {}
    cpu_text = f" ({cpu['model']}; {', '.join(cpu['flags'])})" if cpu.get("model") else ""
    lines = [
        f"Device: `{data['device']}`{cpu_text}, jax {data['jax_version']}, {data['date']}. "
        "Median ms per "
        "call (lower is better); **speedup** = fastest peer / gru_jax. Per-step GEMM "
        f"roofline: {roof['gflops']:.0f} GFLOP/s ({roof['per_step_us']:.0f} us per "
        f"128x128 @ 128x384 step).{peak_text}",
        "",
        "| case (B,T,I,H) | mode | " + " | ".join(impls) + " | speedup |",
        "|---|---|" + "---|" * len(impls) + "---|",
    ]
    for (name, mode, loss), by_impl in cases.items():
        any_row = next(iter(by_impl.values()))
        shape = f"{name} ({any_row['batch']},{any_row['steps']},{any_row['features']},"
        shape += f"{any_row['hidden']})"
        label = "inference" if mode == "infer" else f"train, loss on {loss}"
        cells = []
        for impl in impls:
            row = by_impl.get(impl)
            cells.append("–" if row is None else f"{row['median_ms']:.1f}")
        ours = by_impl.get("gru_jax")
        speedup = "–" if ours is None else f"**{ours.get('speedup_vs_best_peer', 0):.2f}x**"
        lines.append(f"| {shape} | {label} | " + " | ".join(cells) + f" | {speedup} |")
    extra = []
    for (name, mode, loss), by_impl in cases.items():
        ours, remat = by_impl.get("gru_jax"), by_impl.get("gru_jax_remat")
        if ours and ours.get("roofline_fraction") and mode == "train" and name == "long":
            extra.append(
                f"- {name}, train/{loss}: {ours['recurrent_gflops']:.0f} GFLOP/s "
                f"recurrent = {ours['roofline_fraction']:.0%} of the per-step GEMM "
                "roofline."
            )
        if ours and remat and ours.get("memory_mb") and remat.get("memory_mb"):
            extra.append(
                f"- {name}, train/{loss}, remat: {remat['memory_mb']:.0f} MB vs "
                f"{ours['memory_mb']:.0f} MB working memory "
                f"({remat['memory_mb'] / ours['memory_mb']:.2f}x) at "
                f"{remat['median_ms'] / ours['median_ms']:.2f}x the time."
            )
    if peak:
        extra.extend(_goal_lines(cases, peak["gflops"], data.get("case_rooflines", {})))
    return "\n".join(lines + ([""] + extra if extra else []))


def _goal_lines(
    cases: dict, peak_gflops: float, case_rooflines: dict, goal: float = 1.3
) -> list[str]:
    """For each case where gru_jax is below ``goal`` x the fastest peer: the matmul rate
    that ``goal`` would take (the case's unavoidable matmul FLOPs in the fastest peer's
    time / goal), against the large-GEMM peak and the case's bare recurrent-GEMM loop."""
    lines = []
    for (name, mode, loss), by_impl in cases.items():
        ours = by_impl.get("gru_jax")
        if (
            not ours
            or ours.get("speedup_vs_best_peer", goal) >= goal
            or "matmul_gflops" not in ours
        ):
            continue
        best = ours["median_ms"] * ours["speedup_vs_best_peer"]  # the fastest peer's ms
        needed = ours["matmul_gflops"] * ours["median_ms"] / (best / goal)
        label = "inference" if mode == "infer" else f"train/{loss}"
        bare = case_rooflines.get(name)
        bare_text = (
            f"; its recurrent GEMM alone runs at {bare['gflops']:.0f} in a bare loop"
            if bare
            else ""
        )
        lines.append(
            f"- {name}, {label}: {goal}x the fastest peer needs {needed:.0f} GFLOP/s of "
            f"matmul = {needed / peak_gflops:.0%} of the large-GEMM peak (gru_jax now: "
            f"{ours['matmul_gflops']:.0f} = {ours['matmul_gflops'] / peak_gflops:.0%}"
            f"{bare_text})."
        )
    return lines


def update_readme(table: str, readme: Path) -> None:
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme} has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_path")
    parser.add_argument("--readme", action="store_true", help="rewrite README.md's table")
    args = parser.parse_args()
    table = markdown(json.loads(Path(args.json_path).read_text()))
    print(table)
    if args.readme:
        update_readme(table, Path(__file__).resolve().parent.parent / "README.md")


if __name__ == "__main__":
    main()
