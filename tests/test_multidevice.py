"""Data parallelism, checked against the single-device run of the same config.

The pytest process has one CPU device; runs on 4 devices happen in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``, and the multi-process run is two
``experiments.train`` processes on localhost (2 CPU devices each, gloo collectives).

Tolerances: the same global batch gives the same update up to the order of floating-point
reductions (the gradient is summed per device, then across devices), which moves float32
results by ~1e-7 relative per step. Metrics and parameters after 6 Adam steps must agree
to 1e-5 relative (errors of data parallelism, such as a wrong gradient scale or a device
seeing the wrong rows, show at 1e-2 or more); accuracy may differ by at most one of the
360 test images (a prediction on a near tie).
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from configs import seq_digits
from experiments.setup import restore_model
from experiments.trainer import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "configs/seq_digits.py:smoke"
TEST_IMAGES = 360

# In a 4-device process: a fresh run, a run resumed from a 1-device checkpoint, and a run
# with the train state sharded over the devices instead of replicated.
FOUR_DEVICE_SCRIPT = """
import json, sys, jax
from configs import seq_digits
from experiments.setup import build_run
from experiments.sharding import DataParallel
from experiments.trainer import train_and_evaluate
fresh, resumed, sharded = sys.argv[1:4]
assert jax.device_count() == 4, jax.devices()
train_and_evaluate(seq_digits.get_config("smoke"), fresh)
train_and_evaluate(seq_digits.get_config("smoke"), resumed)
config = seq_digits.get_config("smoke")
config.train.param_sharding = "sharded"
layout = DataParallel.create(rule="sharded").state_shardings(build_run(config).state)
split = [s.spec for s in jax.tree.leaves(layout) if not s.is_fully_replicated]
train_and_evaluate(config, sharded)
print(json.dumps({"devices": jax.device_count(), "sharded_leaves": len(split)}))
"""


def device_env(count):
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={count}"}


def read(workdir, name):
    with open(os.path.join(workdir, name)) as file:
        return json.load(file)


def checkpoint_at(source, destination, step):
    """A copy of run ``source`` as it was when checkpoint ``step`` was its newest."""
    shutil.copytree(source, destination)
    for name in os.listdir(os.path.join(destination, "checkpoints")):
        if name.isdigit() and int(name) > step:
            shutil.rmtree(os.path.join(destination, "checkpoints", name))
    os.remove(os.path.join(destination, "results.json"))


def params(workdir):
    model, _ = restore_model(seq_digits.get_config("smoke"), workdir)
    return jax.tree.leaves(nnx.state(model, nnx.Param))


def assert_same_run(workdir, reference, resumed_at=None):
    """Test metrics, logged train metrics and final parameters of two runs agree. A run
    resumed at step 3 logs at step 4 the mean of step 4 alone (step 3's metrics were
    pending in the run that saved the checkpoint), so that entry is not compared."""
    got, want = read(workdir, "results.json"), read(reference, "results.json")
    assert abs(got["test"]["accuracy"] - want["test"]["accuracy"]) <= 1.01 / TEST_IMAGES
    assert got["test"]["loss"] == pytest.approx(want["test"]["loss"], rel=1e-5)
    history = [e for e in read(workdir, "history.json") if e["split"] == "train"]
    expected = [e for e in read(reference, "history.json") if e["split"] == "train"]
    assert [e["step"] for e in history] == [e["step"] for e in expected] == [2, 4, 6]
    for entry, reference_entry in zip(history, expected, strict=True):
        if resumed_at is not None and entry["step"] - 2 < resumed_at < entry["step"]:
            continue
        for key in ("loss", "grad_norm", "accuracy", "learning_rate"):
            assert entry[key] == pytest.approx(reference_entry[key], rel=1e-5), key
    for leaf, reference_leaf in zip(params(workdir), params(reference), strict=True):
        np.testing.assert_allclose(leaf, reference_leaf, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def one_device_run(tmp_path_factory):
    """The reference: seq_digits:smoke on the pytest process's single device."""
    assert jax.device_count() == 1
    workdir = str(tmp_path_factory.mktemp("one_device"))
    train_and_evaluate(seq_digits.get_config("smoke"), workdir)
    return workdir


def test_four_devices_match_one_device_and_checkpoints_move_between_device_counts(
    one_device_run, tmp_path
):
    """One test (the runs are shared; separate tests would redo them on every xdist
    worker): on 4 devices a fresh run, a run resumed from the 1-device run's step-3
    checkpoint and a run with a sharded train state; then, on 1 device, the 4-device run
    resumed from its step-3 checkpoint. All match the 1-device run."""
    dirs = {name: str(tmp_path / name) for name in ("fresh", "resumed", "sharded")}
    checkpoint_at(one_device_run, dirs["resumed"], step=3)
    # The resumed run compiles what the fresh one did: share it through the on-disk cache.
    env = {**device_env(4), "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "compilation_cache")}
    result = subprocess.run(
        [sys.executable, "-c", FOUR_DEVICE_SCRIPT, dirs["fresh"], dirs["resumed"], dirs["sharded"]],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["devices"] == 4 and read(dirs["fresh"], "results.json")["num_devices"] == 4
    assert read(one_device_run, "results.json")["num_devices"] == 1
    assert_same_run(dirs["fresh"], one_device_run)

    assert info["sharded_leaves"] > 10  # kernels and their Adam moments split over devices
    assert_same_run(dirs["sharded"], one_device_run)

    results = read(dirs["resumed"], "results.json")  # saved on 1 device, resumed on 4
    assert results["resumed_from_step"] == 3 and results["num_devices"] == 4
    assert_same_run(dirs["resumed"], one_device_run, resumed_at=3)

    back_on_one = str(tmp_path / "resumed_on_one")  # saved on 4 devices, resumed on 1
    checkpoint_at(dirs["fresh"], back_on_one, step=3)
    results = train_and_evaluate(seq_digits.get_config("smoke"), back_on_one)
    assert results["resumed_from_step"] == 3 and results["num_devices"] == 1
    assert_same_run(back_on_one, one_device_run, resumed_at=3)


def test_batch_not_divisible_by_the_devices_is_a_one_line_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "experiments.train", f"--config={SMOKE}",
         f"--workdir={tmp_path}", "--config.train.batch_size=6"],
        cwd=ROOT, env=device_env(4), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: train.batch_size=6 is not divisible by the 4 devices of the data-parallel "
        "mesh; use a multiple of 4"
    )


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_on_localhost_match_one_process(one_device_run, tmp_path):
    workdir, port = str(tmp_path / "two_processes"), free_port()
    processes, logs = [], []
    for process_id in range(2):
        logs.append(open(tmp_path / f"process_{process_id}.log", "w+"))
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "experiments.train", f"--config={SMOKE}",
             f"--workdir={workdir}", f"--coordinator_address=127.0.0.1:{port}",
             "--num_processes=2", f"--process_id={process_id}"],
            cwd=ROOT, env=device_env(2), stdout=logs[-1], stderr=subprocess.STDOUT,
        ))  # fmt: skip
    try:
        codes = [process.wait(timeout=600) for process in processes]
    finally:
        for process in processes:
            process.kill()
    text = []
    for log in logs:
        log.seek(0)
        text.append(log.read())
        log.close()
    assert codes == [0, 0], text[0][-2000:] + text[1][-2000:]
    results = read(workdir, "results.json")
    assert results["num_processes"] == 2 and results["num_devices"] == 4
    # Only process 0 reports; both evaluate the same test metrics.
    assert "eval at step 6" in text[0] and "eval at step" not in text[1]
    final = [line for line in text[1].splitlines() if "test accuracy:" in line]
    assert float(final[-1].split()[-1]) == pytest.approx(results["test"]["accuracy"], abs=1e-9)
    assert len(os.listdir(os.path.join(workdir, "tensorboard"))) == 1
    assert_same_run(workdir, one_device_run)  # restores the 2-process checkpoint on 1 device
