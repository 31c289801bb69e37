"""Re-evaluating a finished run's checkpoint (`experiments.evaluate`): the same numbers as
the run with no override, test-time overrides that change them, nothing of the run
touched, and one-line errors for what cannot be evaluated."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from configs import digit_strings, moving_digits
from experiments.evaluate import config_changes, evaluate_checkpoint, saved_config
from experiments.trainer import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tree_digest(directory):
    """``{relative path: sha256}`` of every file under ``directory``."""
    digests = {}
    for base, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(base, name)
            with open(path, "rb") as file:
                digests[os.path.relpath(path, directory)] = hashlib.sha256(file.read()).hexdigest()
    return digests


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished moving-digits smoke run (checkpoints at steps 2 and 4)."""
    workdir = str(tmp_path_factory.mktemp("run"))
    results = train_and_evaluate(moving_digits.get_config("smoke"), workdir)
    return workdir, results


def test_reevaluation_reproduces_the_runs_test_metrics_and_leaves_the_run_alone(
    trained_run, tmp_path
):
    workdir, trained = trained_run
    before = tree_digest(workdir)
    results = evaluate_checkpoint(saved_config(workdir), workdir, str(tmp_path / "again"))
    assert results["checkpoint_step"] == trained["train_steps"] == 4
    assert results["overrides"] == {}
    assert results["test"].keys() == trained["test"].keys()
    for key, value in trained["test"].items():
        np.testing.assert_allclose(results["test"][key], value, rtol=1e-6, err_msg=key)
    with open(tmp_path / "again" / "results.json") as file:
        assert json.load(file)["test"] == results["test"]
    for name in ("predictions.png", "predictions.gif", "mse_per_frame.png"):
        assert os.path.getsize(tmp_path / "again" / "plots" / name) > 0
    assert tree_digest(workdir) == before  # the run's files, byte for byte


def test_overrides_change_the_evaluation_and_are_recorded(trained_run, tmp_path):
    workdir, trained = trained_run
    config = saved_config(workdir)
    config.model.layer_temperature = 0.25  # a harder layer split, the same weights
    config.dataset.test_seed = 7  # another generated test set
    results = evaluate_checkpoint(config, workdir, str(tmp_path / "sharp"), step=2)
    assert results["checkpoint_step"] == 2
    assert results["overrides"] == {
        "dataset.test_seed": [0, 7],
        "model.layer_temperature": [1.0, 0.25],
    }
    assert results["test"]["baseline_zeros_mse"] != trained["test"]["baseline_zeros_mse"]
    with open(tmp_path / "sharp" / "config.json") as file:
        assert json.load(file)["model"]["layer_temperature"] == 0.25
    # The temperature alone moves the model's error, not the baselines'.
    config.dataset.test_seed = 0
    alone = evaluate_checkpoint(config, workdir, str(tmp_path / "alone"))
    assert alone["test"]["baseline_zeros_mse"] == pytest.approx(
        trained["test"]["baseline_zeros_mse"]
    )
    assert abs(alone["test"]["mse"] - trained["test"]["mse"]) > 1e-4


def test_what_cannot_be_evaluated_is_a_clear_error(trained_run, tmp_path):
    workdir, _ = trained_run
    config = saved_config(workdir)
    for outdir in (workdir, os.path.join(workdir, "checkpoints", "4")):
        with pytest.raises(ValueError, match="would write into the run's workdir"):
            evaluate_checkpoint(config, workdir, outdir)
    for name in ("results.json", "config.json"):  # another evaluation, or a run
        (tmp_path / name).mkdir()
        (tmp_path / name / name).write_text("{}")
        with pytest.raises(ValueError, match=f"already holds a {name}"):
            evaluate_checkpoint(config, workdir, str(tmp_path / name))
    with pytest.raises(ValueError, match=r"no checkpoint at step 3 in .* \(there are: 2, 4\)"):
        evaluate_checkpoint(config, workdir, str(tmp_path / "a"), step=3)
    with pytest.raises(ValueError, match="no config.json in"):
        saved_config(str(tmp_path))
    wider = saved_config(workdir)
    wider.model.hidden_channels = (4, 8)
    with pytest.raises(ValueError, match=r"does not fit the model .*has shape .* here"):
        evaluate_checkpoint(wider, workdir, str(tmp_path / "b"))
    assert not (tmp_path / "b").exists() and not (tmp_path / "a").exists()


def test_a_config_saved_before_a_field_existed_takes_it_from_defaults(trained_run, tmp_path):
    workdir, _ = trained_run
    old = tmp_path / "old_run"  # the run as an older version saved it: no temperature field
    old.mkdir()
    os.symlink(os.path.join(workdir, "checkpoints"), old / "checkpoints")
    with open(os.path.join(workdir, "config.json")) as file:
        saved = json.load(file)
    del saved["model"]["layer_temperature"]
    (old / "config.json").write_text(json.dumps(saved))
    assert "layer_temperature" not in saved_config(str(old)).model
    assert saved_config(str(old)).model.hidden_channels == (4, 4)  # JSON lists: tuples again
    config = saved_config(str(old), moving_digits.get_config())  # the full config's defaults
    assert config.model.layer_temperature == 1.0
    assert config.model.hidden_channels == (4, 4)  # the run's own values win
    config.model.layer_temperature = 0.5
    results = evaluate_checkpoint(config, str(old), str(tmp_path / "eval"))
    assert results["overrides"] == {"model.layer_temperature": [None, 0.5]}
    with pytest.raises(ValueError, match="--defaults is a config of task 'digit_strings'"):
        saved_config(str(old), digit_strings.get_config())


def test_resume_with_a_config_that_does_not_fit_keeps_the_saved_config(trained_run, tmp_path):
    workdir, _ = trained_run
    before = tree_digest(workdir)
    config = moving_digits.get_config("smoke")
    config.model.hidden_channels = (4, 8)
    with pytest.raises(ValueError, match=r"other settings \(model.hidden_channels: \[4, 4\]"):
        train_and_evaluate(config, workdir)
    assert tree_digest(workdir) == before  # config.json included
    # A workdir without a config to compare (an older version's): the shapes are checked.
    older = shutil.copytree(workdir, tmp_path / "older")
    os.remove(older / "config.json")
    with pytest.raises(ValueError, match=r"does not match this config's model .*params\."):
        train_and_evaluate(config, str(older))
    assert not (older / "config.json").exists()


def test_config_changes_lists_changed_and_new_fields():
    trained = ml_collections.ConfigDict({"a": 1, "b": {"c": "x", "d": [1, 2]}})
    evaluated = ml_collections.ConfigDict({"a": 1, "b": {"c": "y", "d": [1, 2], "e": 0.5}})
    assert config_changes(trained, evaluated) == {"b.c": ["x", "y"], "b.e": [None, 0.5]}


def test_command_line_overrides_and_one_line_errors(trained_run, tmp_path):
    workdir, _ = trained_run

    def evaluate(*args, workdir_flag="--workdir"):
        return subprocess.run(
            [sys.executable, "-m", "experiments.evaluate", f"{workdir_flag}={workdir}", *args],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    result = evaluate(f"--outdir={tmp_path / 'cli'}", "--config.plots.num_examples=1",
                      "--config.model.layer_temperature=0.5", "--step=2")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "cli" / "results.json") as file:
        results = json.load(file)
    assert results["checkpoint_step"] == 2
    assert results["overrides"] == {
        "model.layer_temperature": [1.0, 0.5],
        "plots.num_examples": [2, 1],
    }
    errors = {
        "typo": ("--config.model.layer_temprature=1",
                 "error: unknown config field: 'layer_temprature' Did you mean"),
        "shape": ("--config.model.hidden_channels=(4,8)",
                  "error: checkpoint 4 of .* does not fit the model built from this config "
                  r"\(an override that changes a shape\?\): params\..* has shape \(12,\) in "
                  r"the checkpoint, \(24,\) here"),
        "type": ("--config.train.eval_batch_size=many", "error: flag --config.train.eval_batch"),
    }  # fmt: skip
    for name, (override, message) in errors.items():
        # As absl reads flags: with a single dash too (the typo's "did you mean" shows that
        # the run's config was found through it).
        flag = "-workdir" if name == "typo" else "--workdir"
        result = evaluate(f"--outdir={tmp_path / name}", override, workdir_flag=flag)
        assert result.returncode != 0
        assert re.match(message, result.stderr.strip().splitlines()[-1]), result.stderr[-2000:]
        assert not (tmp_path / name).exists()
    result = subprocess.run(
        [sys.executable, "-m", "experiments.evaluate", f"--outdir={tmp_path / 'none'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.stderr.strip().splitlines()[-1] == (
        "error: flag --workdir=None: Flag --workdir must have a value other than None."
    ), result.stderr[-2000:]  # one line, not a config-field error
