"""Command-line entry point of every experiment.

    python -m experiments.train --config configs/seq_digits.py --workdir workdirs/seq_digits \
        [--config.model.hidden_size=64 ...]

``--config path.py:arg`` passes ``arg`` to the file's ``get_config`` (e.g. ``:smoke``). The
config is locked: overriding a field that does not exist is an error. Everything else
happens in `experiments.trainer.train_and_evaluate`.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from experiments.reporting import quiet_library_logs
from experiments.trainer import NonFiniteLossError, train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file (configs/<name>.py[:arg]).", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory: checkpoints, TensorBoard events, plots, results.json."
)
flags.mark_flags_as_required(["config", "workdir"])


def _first_message(error: BaseException) -> str:
    """The innermost message of an error, on one line (config_flags nests KeyErrors)."""
    message = error
    while isinstance(message, BaseException) and message.args:
        message = message.args[0]
    return " ".join(str(message).split())


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a one-line error for an override of a missing field."""
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError) as error:  # raised by the locked config's override
        raise SystemExit(f"error: unknown config field: {_first_message(error)}") from None


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    quiet_library_logs()
    try:
        train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (ValueError, NonFiniteLossError) as error:  # user errors: one line, no traceback
        logging.debug("traceback of the error below", exc_info=True)
        raise SystemExit(f"error: {_first_message(error)}") from None


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
