"""The absl entry point, run as users run it: ``python -m experiments.train ...`` in a
subprocess. Overrides, one-line errors, and resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from configs import seq_digits
from experiments.trainer import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "configs/seq_digits.py:smoke"
# A run long enough to be killed between checkpoints, with dropout (per-step keys matter).
RESUME_OVERRIDES = {
    "train.num_steps": 600,
    "train.checkpoint_every_steps": 100,
    "train.log_every_steps": 50,
    "train.eval_every_steps": 0,
    "model.dropout": 0.2,
}


def command(workdir, *overrides, config=SMOKE):
    return [sys.executable, "-m", "experiments.train", f"--config={config}",
            f"--workdir={workdir}", *overrides]  # fmt: skip


def run(workdir, *overrides, config=SMOKE):
    return subprocess.run(
        command(workdir, *overrides, config=config), cwd=ROOT, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def last_line(text):
    return text.strip().splitlines()[-1]


def test_nested_override_reaches_the_run(tmp_path):
    result = run(tmp_path, "--config.model.hidden_size=24", "--config.train.num_steps=2")
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "config.json") as file:
        config = json.load(file)
    assert config["model"]["hidden_size"] == 24 and config["train"]["num_steps"] == 2
    with open(tmp_path / "results.json") as file:
        results = json.load(file)
    assert results["train_steps"] == 2
    # bidirectional GRU with H=24 on 8 features: 2 * 3 * (8*24 + 24*24 + 2*24) + 48*10 + 10
    assert results["num_params"] == 2 * 3 * (192 + 576 + 48) + 490


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            ["--config.model.hidden_sise=3"],
            "error: unknown config field: 'hidden_sise' Did you mean",
        ),
        (["--config.dataset.spec=mnist_typo"], "error: unknown dataset 'mnist_typo': expected"),
        (
            ["--config.model.hidden_size=abc"],
            "error: flag --config.model.hidden_size=abc: invalid literal for int()",
        ),
        (
            ["--config=configs/seq_digits.py:bogus"],
            "error: flag --config=configs/seq_digits.py:bogus: ValueError: unknown config "
            "variant 'bogus'",
        ),
        (
            ["--config=configs/no_such_file.py"],
            "error: cannot load --config: [Errno 2] No such file or directory",
        ),
        (["--config.optimizer.warmup_fraction=-0.5"], "error: optimizer.warmup_fraction must"),
    ],
)
def test_user_errors_are_one_line(tmp_path, overrides, expected):
    result = run(tmp_path, *overrides)  # a --config among them replaces the smoke config
    assert result.returncode == 1
    assert last_line(result.stderr).startswith(expected)
    assert "Traceback" not in result.stderr


def _complete_checkpoints(workdir):
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def test_sigkill_then_rerun_resumes_and_matches_an_uninterrupted_run(tmp_path):
    baseline_dir, killed_dir = str(tmp_path / "baseline"), str(tmp_path / "killed")
    config = seq_digits.get_config("smoke")
    for key, value in RESUME_OVERRIDES.items():
        group, field = key.split(".")
        config[group][field] = value
    baseline = train_and_evaluate(config, baseline_dir)

    overrides = [f"--config.{key}={value}" for key, value in RESUME_OVERRIDES.items()]
    process = subprocess.Popen(
        command(killed_dir, *overrides), cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not _complete_checkpoints(killed_dir) and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not os.path.exists(os.path.join(killed_dir, "results.json"))
    saved = _complete_checkpoints(killed_dir)
    assert saved and saved[-1] < 600

    result = run(killed_dir, *overrides)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(os.path.join(killed_dir, "results.json")) as file:
        resumed = json.load(file)
    assert resumed["resumed_from_step"] in range(saved[-1], 600)
    assert resumed["train_steps"] == baseline["train_steps"] == 600
    for metric in ("accuracy", "loss"):
        assert resumed["test"][metric] == pytest.approx(baseline["test"][metric], abs=1e-6)
    with open(os.path.join(killed_dir, "history.json")) as file:
        steps = [entry["step"] for entry in json.load(file) if entry["split"] == "train"]
    assert steps == list(range(50, 601, 50))  # no gap, no duplicate across the kill
