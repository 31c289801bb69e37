"""What the command-line entry points (`experiments.train`, `experiments.sweep`) share:
absl flag parsing that turns a bad ``--config.<field>`` override into a one-line error."""

from __future__ import annotations

from absl import flags

TRACEBACK = "Traceback (most recent call last)"


def first_message(error: BaseException) -> str:
    """The innermost message of an error, on one line (config_flags nests KeyErrors, and
    pastes a whole traceback into the error of a config file's ``get_config``: of that,
    only the raised exception's line is kept)."""
    message = error
    while isinstance(message, BaseException) and message.args:
        message = message.args[0]
    text = str(message)
    if TRACEBACK in text:
        head = text.split(TRACEBACK)[0].replace("Error whilst parsing config file:", "")
        text = head + [line for line in text.splitlines() if line.strip()][-1]
    return " ".join(text.split())


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing with one-line errors: an override of a missing field, a value
    that does not parse as its field's type, a missing or unknown flag, a config file
    that does not exist or whose ``get_config`` refuses its argument."""
    try:
        remaining = flags.FLAGS(argv)
    except (AttributeError, KeyError) as error:  # raised by the locked config's override
        raise SystemExit(f"error: unknown config field: {first_message(error)}") from None
    except (flags.Error, ValueError, OSError) as error:
        raise SystemExit(f"error: {first_message(error)}") from None
    try:  # config_flags defers a file that failed to load until the config is first read
        if "config" in flags.FLAGS and flags.FLAGS["config"].value is not None:
            flags.FLAGS["config"].value.keys()
    except OSError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise SystemExit(f"error: cannot load --config: {lines[-1]}") from None
    return remaining
