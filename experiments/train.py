"""Command-line entry point of every experiment.

    python -m experiments.train --config configs/seq_digits.py --workdir workdirs/seq_digits \
        [--config.model.hidden_size=64 ...]

``--config path.py:arg`` passes ``arg`` to the file's ``get_config`` (e.g. ``:smoke``). The
config is locked: overriding a field that does not exist is an error. Everything else
happens in `experiments.trainer.train_and_evaluate`, data-parallel over every local device.

Several processes (hosts): run the same command on each, adding
``--coordinator_address=HOST0:PORT --num_processes=N --process_id=I`` (or the
``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` environment
variables, or ``--distributed`` on a cluster JAX detects); see `experiments.distributed`.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import distributed
from experiments.cli import first_message, parse_flags
from experiments.reporting import quiet_library_logs
from experiments.trainer import NonFiniteLossError, train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file (configs/<name>.py[:arg]).", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory: checkpoints, TensorBoard events, plots, results.json."
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-process: host:port of process 0's coordinator."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process: process count.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process: this process's index.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Let JAX detect the cluster (SLURM, Open MPI, TPU pod, Kubernetes)."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    quiet_library_logs()
    try:
        distributed.initialize(
            _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, _DISTRIBUTED.value
        )
        train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (ValueError, NonFiniteLossError) as error:  # user errors: one line, no traceback
        logging.debug("traceback of the error below", exc_info=True)
        raise SystemExit(f"error: {first_message(error)}") from None


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
