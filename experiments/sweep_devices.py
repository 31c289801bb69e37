"""Which devices each concurrent run of a sweep may use, set through the environment of
its process (so the sweep itself never initialises a JAX backend, which on a GPU would
reserve memory that the runs need).

* GPU: ``CUDA_VISIBLE_DEVICES`` (ids from the sweep's own ``CUDA_VISIBLE_DEVICES``, else
  ``nvidia-smi -L``).
* TPU: ``TPU_VISIBLE_CHIPS`` with single-chip process bounds and a port per run (the
  usual recipe for independent single-chip processes on one TPU VM).
* CPU: separate processes; each gets its own share of the cores (``sched_setaffinity``)
  when there are at least as many cores as concurrent runs.

More concurrent runs than device groups share them round-robin; GPU runs that share a GPU
get ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` so that they do not each reserve most of it.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import subprocess

TPU_BASE_PORT = 8476


@dataclasses.dataclass(frozen=True)
class Slot:
    """One concurrent run's share of the machine.

    Attributes:
      label: what it holds, for logs (``gpu 0,1``, ``cpu 2-3``, ``cpu``).
      env: environment variables set for the run's process.
      cpus: CPU cores it is pinned to, or None (not pinned).
    """

    label: str
    env: dict[str, str]
    cpus: frozenset[int] | None = None


def detect_platform() -> tuple[str, list[str]]:
    """``(platform, device ids)`` without initialising JAX: 'gpu', 'tpu' or 'cpu'."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() not in ("", "-1"):
        return "gpu", [part.strip() for part in visible.split(",") if part.strip()]
    if visible is None and shutil.which("nvidia-smi"):
        try:
            listing = subprocess.run(
                ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True
            ).stdout
            count = sum(line.startswith("GPU ") for line in listing.splitlines())
            if count:
                return "gpu", [str(index) for index in range(count)]
        except (OSError, subprocess.SubprocessError):
            pass
    chips = sorted(glob.glob("/dev/accel*")) or sorted(
        path for path in glob.glob("/dev/vfio/*") if os.path.basename(path).isdigit()
    )
    if chips:
        return "tpu", [str(index) for index in range(len(chips))]
    return "cpu", []


def _cpu_label(cpus: list[int]) -> str:
    return f"cpu {cpus[0]}-{cpus[-1]}" if len(cpus) > 1 else f"cpu {cpus[0]}"


def make_slots(
    parallel: int,
    devices_per_run: int = 1,
    platform: str = "auto",
    device_ids: list[str] | None = None,
    pin_cpus: bool = True,
) -> list[Slot]:
    """``parallel`` slots over the detected (or given) devices.

    Args:
      parallel: runs at once.
      devices_per_run: accelerators each run sees (data-parallel inside the run).
      platform: 'auto', 'gpu', 'tpu' or 'cpu'.
      device_ids: accelerator ids to use (default: all detected).
      pin_cpus: on CPU, pin each run to its own cores when there are enough.
    """
    if parallel < 1 or devices_per_run < 1:
        raise ValueError(f"--parallel and --devices_per_run must be >= 1; got {parallel}, "
                         f"{devices_per_run}")  # fmt: skip
    detected, ids = detect_platform() if platform == "auto" else (platform, [])
    ids = list(device_ids) if device_ids else ids
    if detected in ("gpu", "tpu") and not ids:
        raise ValueError(f"--platform={detected} but no {detected.upper()} ids were found; "
                         "pass --devices")  # fmt: skip
    if detected == "cpu":
        return _cpu_slots(parallel, pin_cpus)
    if detected == "tpu" and devices_per_run != 1:
        raise ValueError("on TPU the sweep pins one chip per run; for more chips per run set "
                         "the TPU_* topology variables yourself and use --parallel=1")  # fmt: skip
    groups = [ids[i : i + devices_per_run] for i in range(0, len(ids), devices_per_run)]
    groups = [group for group in groups if len(group) == devices_per_run]
    if not groups:
        raise ValueError(f"--devices_per_run={devices_per_run} exceeds the {len(ids)} "
                         f"{detected.upper()}s")  # fmt: skip
    shared = parallel > len(groups)
    slots = []
    for index in range(parallel):
        group = groups[index % len(groups)]
        if detected == "gpu":
            env = {"CUDA_VISIBLE_DEVICES": ",".join(group)}
            if shared:
                env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        else:
            port = str(TPU_BASE_PORT + index)
            env = {
                "TPU_VISIBLE_CHIPS": group[0],
                "TPU_CHIPS_PER_PROCESS_BOUNDS": "1,1,1",
                "TPU_PROCESS_BOUNDS": "1,1,1",
                "TPU_PROCESS_ADDRESSES": f"localhost:{port}",
                "TPU_PROCESS_PORT": port,
                "CLOUD_TPU_TASK_ID": "0",
                "ALLOW_MULTIPLE_LIBTPU_LOAD": "1",
            }
        slots.append(Slot(f"{detected} {','.join(group)}", env))
    return slots


def _cpu_slots(parallel: int, pin_cpus: bool) -> list[Slot]:
    """Plain processes; with enough cores, each pinned to a contiguous share of them."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not pin_cpus or parallel == 1 or len(cores) < parallel:
        return [Slot("cpu", {}) for _ in range(parallel)]
    share = len(cores) // parallel
    slots = []
    for index in range(parallel):
        mine = cores[index * share : (index + 1) * share]
        slots.append(Slot(_cpu_label(mine), {}, frozenset(mine)))
    return slots
