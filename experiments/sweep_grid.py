"""The grid of a sweep: which runs, each a dict of config overrides, checked against the
config before anything runs.

A grid comes from ``--sweep key=v1,v2`` flags (their product) or from the config file's
``get_sweep()``, which returns either a list of override dicts (the runs, as given) or a
dict ``{key: [values]}`` (their product). Keys are dotted config paths
(``model.hidden_size``); values are converted to the type of the field they override, and
an unknown key or an unconvertible value is a one-line `SweepError`.
"""

from __future__ import annotations

import ast
import copy
import difflib
import hashlib
import importlib.util
import inspect
import itertools
import re
import types
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

Overrides = dict[str, Any]
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
MAX_NAME_LENGTH = 120


class SweepError(ValueError):
    """A sweep definition that cannot run (bad key, value or grid); one-line message."""


def load_config_file(spec: str) -> tuple[types.ModuleType, ml_collections.ConfigDict]:
    """``(module, config)`` of ``path.py[:arg]``, as ``experiments.train --config`` reads
    it: ``get_config(arg)`` when an ``arg`` is given, else ``get_config()``."""
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("sweep_config", path)
    if module_spec is None or module_spec.loader is None:
        raise SweepError(f"cannot load config file {path!r}")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except FileNotFoundError:
        raise SweepError(f"config file {path!r} not found") from None
    config = module.get_config(arg) if arg else module.get_config()
    return module, config


def _unknown(key: str, part: str, node: ml_collections.ConfigDict, where: str) -> SweepError:
    close = difflib.get_close_matches(part, list(node.keys()), n=1)
    hint = f" (did you mean '{where}{close[0]}'?)" if close else ""
    return SweepError(f"unknown sweep key {key!r}: the config has no field {part!r}{hint}")


def field_type(config: ml_collections.ConfigDict, key: str) -> type:
    """The type of the leaf field ``key`` (dotted) of ``config``."""
    node: Any = config
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            if not isinstance(node, ml_collections.ConfigDict):
                raise SweepError(f"unknown sweep key {key!r}: {'.'.join(parts[:depth])} is a value")
            raise _unknown(key, part, node, ".".join(parts[:depth] + [""]))
        if depth == len(parts) - 1:
            kind = node.get_type(part)
            if isinstance(kind, type) and issubclass(kind, ml_collections.ConfigDict):
                raise SweepError(f"sweep key {key!r} is a group of fields, not a field")
            return kind
        node = node[part]
    raise SweepError(f"empty sweep key {key!r}")


def parse_value(key: str, text: str, kind: type) -> Any:
    """The command-line ``text`` of a sweep value as the field's ``kind``."""
    stripped = text.strip()
    try:
        if kind is bool:
            if stripped.lower() in TRUE_WORDS + FALSE_WORDS:
                return stripped.lower() in TRUE_WORDS
            raise ValueError
        if kind is int:
            return int(stripped)
        if kind is float:
            return float(stripped)
        if kind is str:
            return text
        return coerce_value(key, ast.literal_eval(stripped), kind)
    except (ValueError, SyntaxError):
        raise SweepError(f"sweep value {text!r} for {key} is not a valid {kind.__name__}") from None


def coerce_value(key: str, value: Any, kind: type) -> Any:
    """A Python ``value`` (from ``get_sweep``) as the field's ``kind``: ints widen to
    floats, tuples and lists interchange; anything else must already match."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in (tuple, list) and isinstance(value, (tuple, list)):
        return kind(value)
    if value is None or isinstance(value, kind):
        return value
    raise SweepError(
        f"sweep value {value!r} for {key} is a {type(value).__name__}, not a {kind.__name__}"
    )


def grid_from_flags(specs: Sequence[str], config: ml_collections.ConfigDict) -> list[Overrides]:
    """The product of ``key=v1,v2`` specs (one per ``--sweep`` flag)."""
    axes: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise SweepError(f"--sweep {spec!r} is not of the form key=value1,value2,...")
        if key in axes:
            raise SweepError(f"sweep key {key!r} is given twice")
        kind = field_type(config, key)
        axes[key] = [parse_value(key, text, kind) for text in _split_values(values, kind)]
    return [dict(zip(axes, combination)) for combination in itertools.product(*axes.values())]


def _split_values(values: str, kind: type) -> list[str]:
    """Values separated by commas; tuple/list values are bracketed and may contain commas
    (anything else between them, such as an unbracketed value, is an error)."""
    if kind in (tuple, list):
        pattern = r"[\[(][^\])]*[\])]"
        pieces = [piece.strip(", ") for piece in re.split(pattern, values)]
        leftover = ", ".join(piece for piece in pieces if piece)
        if leftover:
            raise SweepError(
                f"sweep values {values!r} of a {kind.__name__} field must each be bracketed, "
                f"e.g. '(4, 4),(8, 8)'; {leftover!r} is not"
            )
        return [match.group(0) for match in re.finditer(pattern, values)]
    return values.split(",")


def grid_from_function(
    module: types.ModuleType, arg: str, config: ml_collections.ConfigDict
) -> list[Overrides]:
    """The runs of the config file's ``get_sweep([arg])``, values converted."""
    function = module.get_sweep
    takes_arg = bool(inspect.signature(function).parameters)
    grid = function(arg or None) if takes_arg else function()
    if isinstance(grid, Mapping):
        keys = list(grid)
        grid = [dict(zip(keys, values)) for values in itertools.product(*grid.values())]
    if not isinstance(grid, Sequence) or not all(isinstance(run, Mapping) for run in grid):
        raise SweepError("get_sweep() must return a list of override dicts or a dict of lists")
    return [
        {key: coerce_value(key, value, field_type(config, key)) for key, value in run.items()}
        for run in grid
    ]


def check_grid(grid: list[Overrides], config: ml_collections.ConfigDict) -> None:
    """Applies every run's overrides to a locked copy of ``config`` (type checks of
    ml_collections included) and rejects an empty grid or duplicate runs."""
    if not grid:
        raise SweepError("the sweep has no runs")
    names = [run_name(run) for run in grid]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise SweepError(f"the sweep lists the same run twice: {duplicates[0]}")
    for run in grid:
        apply_overrides(config, run)


def apply_overrides(config: ml_collections.ConfigDict, run: Overrides) -> ml_collections.ConfigDict:
    """A locked copy of ``config`` with ``run``'s overrides (ml_collections' type checks
    included): the config that run trains with."""
    trial = copy.deepcopy(config)
    trial.lock()
    for key, value in run.items():
        *parents, leaf = key.split(".")
        node = trial
        for parent in parents:
            node = node[parent]
        try:
            node[leaf] = value
        except TypeError as error:
            raise SweepError(f"sweep value {value!r} for {key}: {error}") from None
    return trial


def format_value(value: Any) -> str:
    """``value`` as ``experiments.train`` parses it back from ``--config.key=...``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return repr(tuple(value))
    return str(value)


def override_flags(run: Overrides) -> list[str]:
    """``['--config.model.hidden_size=64', ...]`` for one run."""
    return [f"--config.{key}={format_value(value)}" for key, value in run.items()]


def run_name(run: Overrides) -> str:
    """A readable directory name: ``hidden_size=64,learning_rate=0.001`` (leaf names; the
    full dotted key where two leaves share a name), safe for file systems."""
    leaves = [key.rsplit(".", 1)[-1] for key in run]
    parts = []
    for key, leaf in zip(run, leaves):
        label = leaf if leaves.count(leaf) == 1 else key
        parts.append(f"{label}={format_value(run[key])}")
    name = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", ",".join(parts)) or "base"
    if len(name) > MAX_NAME_LENGTH:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]  # stable across processes
        name = f"{name[:MAX_NAME_LENGTH]}-{digest}"
    return name
