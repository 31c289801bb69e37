"""Every experiment config: loads, documents each field, and its smoke variant trains end to
end (TFDS datasets through ``tfds.testing.mock_data``: no download, no tensorflow). The
digits config's smoke run is checked in detail in tests/test_train_trainer.py."""

import importlib
import os
import re

import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments.trainer import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL_CONFIG_NAMES = sorted(
    name[:-3]
    for name in os.listdir(os.path.join(ROOT, "configs"))
    if name.endswith(".py") and name not in ("__init__.py", "common.py")
)


def load(name, arg=None):
    return importlib.import_module(f"configs.{name}").get_config(arg)


# The sequence classification configs; other tasks' configs have their own tests.
CONFIG_NAMES = [name for name in ALL_CONFIG_NAMES if load(name).task == "sequence_classification"]
# (spec, view) of each config, and (T, F) its sequences have for the mock images.
EXPECTED = {
    "seq_digits": ("digits", "rows", (8, 8)),
    "seq_mnist": ("tfds:mnist", "rows", (28, 28)),
    "pixel_mnist": ("tfds:mnist", "pixels", (784, 1)),
    "permuted_mnist": ("tfds:mnist", "permuted_pixels", (784, 1)),
    "seq_fashion_mnist": ("tfds:fashion_mnist", "rows", (28, 28)),
    "seq_cifar10": ("tfds:cifar10", "rows", (32, 96)),
}
MOCK_EXAMPLES = 20  # per split; eval batches of 32 -> one padded batch


def test_every_config_is_known():
    assert CONFIG_NAMES == sorted(EXPECTED)


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_fields_and_smoke_variant(name):
    full, smoke = load(name), load(name, "smoke")
    spec, view, _ = EXPECTED[name]
    assert (full.dataset.spec, full.dataset.view) == (spec, view)
    assert full.task == smoke.task == "sequence_classification"
    assert full.train.num_steps == -1 and full.train.num_epochs > 0  # steps derived at run time
    assert smoke.train.num_steps == 6 and smoke.model.hidden_size == 16
    assert set(full.to_dict()) == set(smoke.to_dict())  # same fields, smaller values
    with pytest.raises(ValueError, match="unknown config variant 'tiny'"):
        load(name, "tiny")


def test_mnist_configs_use_the_standard_hyperparameters():
    for name in ("seq_mnist", "pixel_mnist", "permuted_mnist"):
        config = load(name)
        assert config.optimizer.name == "adam" and config.optimizer.learning_rate == 1e-3
        assert config.optimizer.grad_clip_norm == 1.0 and config.train.batch_size == 128
    assert load("seq_mnist").model.hidden_size == 128
    assert load("pixel_mnist").model.hidden_size == load("permuted_mnist").model.hidden_size == 150


def test_every_config_field_is_commented():
    """Each ``config.<field> = value`` line in the config files carries a comment."""
    for name in [*ALL_CONFIG_NAMES, "common"]:
        with open(os.path.join(ROOT, "configs", f"{name}.py")) as file:
            for line in file:
                if re.match(r"\s*config\.\w+(\.\w+)* = ", line) and "ConfigDict()" not in line:
                    assert "#" in line, f"configs/{name}.py: field without a comment: {line}"


@pytest.mark.parametrize("name", [name for name in CONFIG_NAMES if name != "seq_digits"])
def test_tfds_config_smoke_runs_end_to_end(name, tmp_path):
    config = load(name, "smoke")
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        results = train_and_evaluate(config, str(tmp_path))
    _, _, (steps, features) = EXPECTED[name]
    hidden, directions = 16, 2 if config.model.bidirectional else 1
    per_direction = 3 * (features * hidden + hidden * hidden + 2 * hidden)
    layers = per_direction * directions
    if config.model.num_layers == 2:  # layer 2 reads both directions of layer 1
        layers += directions * 3 * (directions * hidden * hidden + hidden * hidden + 2 * hidden)
    assert results["num_params"] == layers + directions * hidden * 10 + 10
    assert results["train_steps"] == 6
    accuracy = results["test"]["accuracy"]
    assert float(accuracy * MOCK_EXAMPLES) == pytest.approx(round(accuracy * MOCK_EXAMPLES))
    assert np.isfinite(results["test"]["loss"]) and results["test"]["loss"] > 0
    assert os.path.exists(tmp_path / "plots" / "update_gates.png")
    assert steps == (784 if "pixel" in name else steps)
