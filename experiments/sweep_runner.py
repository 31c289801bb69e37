"""Runs a sweep's training processes, ``parallel`` at a time, each in its own slot.

Every run is ``python -m experiments.train --config <file> --workdir <run dir>
--config.<key>=<value> ...`` in its own process: a crash or a NaN in one run stops only
that run. Output goes to ``<run dir>/train.log`` (appended across attempts). A run that
exits non-zero gets ``<run dir>/failure.txt`` (exit code and the last lines of its log),
and the others carry on. On Linux each run dies with the sweep (``PR_SET_PDEATHSIG``), so
a killed sweep leaves no orphan writing into a run directory; rerunning the sweep
relaunches unfinished runs, and the trainer resumes each from its newest checkpoint.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import os
import signal
import subprocess
import sys
import time

from absl import logging

from experiments.sweep_devices import Slot

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOG_FILE, FAILURE_FILE, RESULTS_FILE = "train.log", "failure.txt", "results.json"
FAILURE_LOG_LINES = 40
POLL_SECONDS = 0.2
PR_SET_PDEATHSIG = 1


@dataclasses.dataclass
class Run:
    """One run of the sweep.

    Attributes:
      name: its directory name under the sweep's workdir.
      directory: absolute path of that directory.
      flags: ``--config.<key>=<value>`` overrides (fixed ones first, then the swept ones).
      status: 'pending', 'done', 'failed (exit N)' or 'failed (signal N)'.
      wall_time_s: seconds its last attempt ran (None if it did not run here).
    """

    name: str
    directory: str
    flags: list[str]
    status: str = "pending"
    wall_time_s: float | None = None

    @property
    def finished(self) -> bool:
        return os.path.exists(os.path.join(self.directory, RESULTS_FILE))


def _child_setup(cpus: frozenset[int] | None):
    """What the child runs between fork and exec: die with the sweep; pin its cores."""

    def setup() -> None:
        if sys.platform.startswith("linux"):
            try:
                ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            except OSError:
                pass
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


def command(config_file: str, run: Run) -> list[str]:
    """The training command of ``run``."""
    return [sys.executable, "-m", "experiments.train", f"--config={config_file}",
            f"--workdir={run.directory}", *run.flags]  # fmt: skip


def _launch(config_file: str, run: Run, slot: Slot) -> tuple[subprocess.Popen, float]:
    os.makedirs(run.directory, exist_ok=True)
    stale = os.path.join(run.directory, FAILURE_FILE)
    if os.path.exists(stale):
        os.remove(stale)
    env = {**os.environ, **slot.env}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PROJECT_ROOT, env.get("PYTHONPATH")]))
    argv = command(config_file, run)
    with open(os.path.join(run.directory, LOG_FILE), "a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} on {slot.label}: ")
        log.write(" ".join(argv) + "\n")
        log.flush()
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env,
            preexec_fn=_child_setup(slot.cpus),
        )  # fmt: skip
    logging.info("launch %s on %s (pid %d)", run.name, slot.label, process.pid)
    return process, time.monotonic()


def _record_failure(run: Run, returncode: int) -> None:
    if returncode == 0:
        how = f"exit 0 without {RESULTS_FILE}"
    else:
        how = f"signal {-returncode}" if returncode < 0 else f"exit {returncode}"
    run.status = f"failed ({how})"
    with open(os.path.join(run.directory, LOG_FILE), errors="replace") as log:
        tail = collections.deque(log, maxlen=FAILURE_LOG_LINES)
    with open(os.path.join(run.directory, FAILURE_FILE), "w") as file:
        file.write(f"{run.status}\n\nlast {len(tail)} lines of {LOG_FILE}:\n")
        file.writelines(tail)
    last = next((line.strip() for line in reversed(tail) if line.strip()), "")
    logging.warning("run %s %s: %s", run.name, run.status, last)


def run_all(config_file: str, runs: list[Run], slots: list[Slot]) -> None:
    """Runs every unfinished run of ``runs`` (finished ones are marked done and skipped),
    ``len(slots)`` at a time; sets each run's status. Blocks until all have ended; on an
    exception (Ctrl-C, SIGTERM) it kills the runs still going and re-raises."""
    for run in runs:
        if run.finished:
            run.status = "done"
            logging.info("skip %s: %s present", run.name, RESULTS_FILE)
    queue = collections.deque(run for run in runs if not run.finished)
    free = list(range(len(slots)))
    running: dict[subprocess.Popen, tuple[Run, int, float]] = {}
    try:
        while queue or running:
            while queue and free:
                run, slot = queue.popleft(), free.pop(0)
                process, started = _launch(config_file, run, slots[slot])
                running[process] = (run, slot, started)
            time.sleep(POLL_SECONDS)
            for process in [p for p in running if p.poll() is not None]:
                run, slot, started = running.pop(process)
                free.append(slot)
                run.wall_time_s = time.monotonic() - started
                if process.returncode == 0 and run.finished:
                    run.status = "done"
                    logging.info("done %s in %.1f s", run.name, run.wall_time_s)
                else:
                    _record_failure(run, process.returncode)
    finally:
        for process in running:
            process.kill()
        for process in running:
            process.wait()
