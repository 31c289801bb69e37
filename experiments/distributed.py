"""Multi-process (multi-host) start-up: ``jax.distributed.initialize`` from flags or the
environment, before anything touches a JAX backend.

Where the three settings come from, first match wins:

==================  ==========================  ==============================
setting             flag of experiments.train   environment variable
==================  ==========================  ==============================
coordinator         ``--coordinator_address``   ``JAX_COORDINATOR_ADDRESS``
process count       ``--num_processes``         ``JAX_NUM_PROCESSES``
this process's id   ``--process_id``            ``JAX_PROCESS_ID``
==================  ==========================  ==============================

If none is set the run is single-process, unless ``--distributed`` asks JAX to detect a
cluster itself (SLURM, Open MPI, Cloud TPU pods, Kubernetes: whatever
``jax.distributed.initialize()`` detects); then unset values come from that detection.
On CPU the cross-process collectives use gloo.
"""

from __future__ import annotations

import os

import jax
from absl import logging

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def _env_int(name: str) -> int | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} is not an integer") from None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    auto_detect: bool = False,
) -> bool:
    """Joins the process group when any setting is given (or ``auto_detect``); returns
    whether it did. Must run before the first JAX computation.

    Raises:
      ValueError: settings that are incomplete or inconsistent (one line).
    """
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    given = (coordinator_address, num_processes, process_id)
    if not auto_detect and all(value is None for value in given):
        return False
    if not auto_detect and None in given:
        missing = [
            name
            for name, value in zip(("coordinator_address", "num_processes", "process_id"), given)
            if value is None
        ]
        raise ValueError(
            f"multi-process run needs --coordinator_address, --num_processes and --process_id "
            f"(or {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}); missing: "
            f"{', '.join(missing)} (or pass --distributed to let JAX detect the cluster)"
        )
    if num_processes is not None and process_id is not None:
        if not 0 <= process_id < num_processes:
            raise ValueError(f"process_id={process_id} must be in [0, {num_processes})")
    # gloo is the default CPU implementation in current JAX; set it explicitly so CPU runs
    # get cross-process collectives whatever the default (it does not affect GPU/TPU).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
    logging.info(
        "process %d of %d (coordinator %s): %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        coordinator_address or "auto-detected",
        jax.local_device_count(),
        jax.device_count(),
    )
    return True
