"""What the command-line entry points (`experiments.train`, `experiments.sweep`) share:
absl flag parsing that turns a bad ``--config.<field>`` override into a one-line error."""

from __future__ import annotations

from absl import flags


def first_message(error: BaseException) -> str:
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
        raise SystemExit(f"error: unknown config field: {first_message(error)}") from None
