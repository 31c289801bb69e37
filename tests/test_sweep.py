"""The sweep runner, run as users run it (``python -m experiments.sweep`` in a subprocess):
a 4-run sweep killed after its first run, resumed, ranked and rerun; one-line errors for
bad keys and values; the grid parsing in process."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from configs import seq_digits
from experiments import sweep_devices, sweep_grid, sweep_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "configs/seq_digits.py:smoke"
# Light runs: one direction, no gate plot. The split seed changes only the data, so runs
# that differ in it alone compile the same programs (shared through the compilation cache).
FIXED = ["--config.model.bidirectional=false", "--config.plots.num_gate_examples=0"]
GRID = ["--sweep=optimizer.learning_rate=0.003,0.03", "--sweep=dataset.split_seed=0,1"]
NAMES = sorted(
    f"learning_rate={rate},split_seed={seed}" for rate in ("0.003", "0.03") for seed in (0, 1)
)


def sweep_command(workdir, *extra):
    return [sys.executable, "-m", "experiments.sweep", f"--config={SMOKE}",
            f"--workdir={workdir}", *extra]  # fmt: skip


def environment(cache_dir):
    return {
        **os.environ,
        "JAX_COMPILATION_CACHE_DIR": str(cache_dir),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }


def launches(text):
    """Run names the sweep launched, from its log lines."""
    return re.findall(r"launch (\S+) on ", text)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as file:  # a zombie is not running
        return file.read().split(") ")[1][0] != "Z"


def kill_resume_rerun(base):
    """Starts the 4-run sweep (2 at a time), SIGKILLs it once a run has finished, reruns it
    to completion, then reruns it once more; returns what each phase left."""
    workdir, env = base / "sweep", environment(base / "cache")
    argv = sweep_command(workdir, *GRID, *FIXED, "--parallel=2", "--pin_cpus=false")
    log_path = base / "first.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 240
        while not list(workdir.glob("*/results.json")) and process.poll() is None:
            assert time.monotonic() < deadline, "no run finished"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    first_log = log_path.read_text()
    assert process.returncode == -signal.SIGKILL, first_log[-2000:]
    finished = {
        path.parent.name: path.stat().st_mtime_ns for path in workdir.glob("*/results.json")
    }
    checkpointed = {}  # run -> newest complete checkpoint at the kill
    for path in workdir.glob("*/checkpoints"):
        steps = [int(step.name) for step in path.iterdir() if step.name.isdigit()]
        if steps:
            checkpointed[path.parent.name] = max(steps)
    pids = [int(pid) for pid in re.findall(r"\(pid (\d+)\)", first_log)]
    time.sleep(1.0)
    orphans = [pid for pid in pids if pid_alive(pid)]
    second = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    completed = {
        path.parent.name: path.stat().st_mtime_ns for path in workdir.glob("*/results.json")
    }
    third = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    changed = subprocess.run(  # the same sweep with another fixed setting: refused
        [*argv, "--config.train.num_steps=60"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    return {
        "workdir": workdir, "first_log": first_log, "finished": finished,
        "checkpointed": checkpointed, "orphans": orphans, "second": second, "third": third,
        "completed": completed, "changed": changed,
    }  # fmt: skip


def test_sweep_killed_resumed_ranked_and_rerun(tmp_path):
    """One scenario (the phases share their runs; separate tests would each rerun them on
    every xdist worker)."""
    state = kill_resume_rerun(tmp_path)
    check_resumed_without_redoing_finished_runs(state)
    check_every_run_has_its_directory_config_and_results(state["workdir"])
    check_table_ranks_runs_by_the_task_metric(state["workdir"])
    check_rerun_of_a_finished_sweep_runs_nothing(state)
    check_other_settings_in_the_same_workdir_are_refused(state)


def check_other_settings_in_the_same_workdir_are_refused(state):
    changed, workdir = state["changed"], state["workdir"]
    assert changed.returncode == 1
    message = changed.stderr.strip().splitlines()[-1]
    assert message.startswith("error: ") and "holds a run with other settings" in message
    assert "train.num_steps: 6 -> 60" in message and "fresh --workdir" in message
    assert launches(changed.stderr) == []
    for name in NAMES:  # the finished runs are untouched
        mtime = (workdir / name / "results.json").stat().st_mtime_ns
        assert mtime == state["completed"][name]


def check_resumed_without_redoing_finished_runs(state):
    workdir, second = state["workdir"], state["second"]
    assert second.returncode == 0, second.stderr[-3000:]
    assert state["orphans"] == [], "runs outlived the killed sweep"
    assert state["finished"] and set(launches(state["first_log"])) <= set(NAMES)
    relaunched = launches(second.stderr)
    assert sorted(relaunched + list(state["finished"])) == NAMES  # each run exactly once more
    for name, mtime in state["finished"].items():
        assert f"skip {name}: results.json present" in second.stderr
        assert (workdir / name / "results.json").stat().st_mtime_ns == mtime
        assert (workdir / name / "train.log").read_text().count("\n=== ") == 1
    for name, step in state["checkpointed"].items():
        if name not in state["finished"]:  # interrupted mid-run: resumed, not restarted
            results = json.loads((workdir / name / "results.json").read_text())
            assert results["resumed_from_step"] == step


def check_every_run_has_its_directory_config_and_results(workdir):
    for name in NAMES:
        rate, seed = re.fullmatch(r"learning_rate=(.+),split_seed=(\d)", name).groups()
        config = json.loads((workdir / name / "config.json").read_text())
        assert config["optimizer"]["learning_rate"] == float(rate)
        assert config["dataset"]["split_seed"] == int(seed)
        assert config["model"]["bidirectional"] is False  # the fixed override reached it
        results = json.loads((workdir / name / "results.json").read_text())
        assert results["train_steps"] == 6 and 0 <= results["test"]["accuracy"] <= 1


def check_table_ranks_runs_by_the_task_metric(workdir):
    accuracy = {
        name: json.loads((workdir / name / "results.json").read_text())["test"]["accuracy"]
        for name in NAMES
    }
    with open(workdir / "sweep_results.csv") as file:
        rows = list(csv.DictReader(file))
    assert sorted(row["run"] for row in rows) == NAMES
    ranked = [accuracy[row["run"]] for row in rows]
    assert ranked == sorted(ranked, reverse=True) and ranked[0] > ranked[-1]
    assert list(rows[0])[:5] == [
        "run", "optimizer.learning_rate", "dataset.split_seed", "test.accuracy", "test.loss"
    ]  # fmt: skip
    for row in rows:
        assert float(row["test.accuracy"]) == pytest.approx(accuracy[row["run"]], rel=1e-12)
        assert row["status"] == "done" and float(row["wall_time_s"]) > 0
    table = (workdir / "sweep_results.md").read_text().splitlines()
    assert "best first by test.accuracy (max)" in table[0]
    assert table[4].startswith(f"| 1 | {rows[0]['run']} |")
    for key in ("optimizer.learning_rate", "dataset.split_seed"):
        assert (workdir / f"sweep_{key}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def check_rerun_of_a_finished_sweep_runs_nothing(state):
    third, workdir = state["third"], state["workdir"]
    assert third.returncode == 0, third.stderr[-2000:]
    assert launches(third.stderr) == []
    assert third.stderr.count("results.json present") == 4
    assert sorted(state["completed"]) == NAMES
    for name, mtime in state["completed"].items():
        assert (workdir / name / "results.json").stat().st_mtime_ns == mtime


@pytest.mark.parametrize(
    "sweep, expected",
    [
        ("model.hidden_sise=8,16", "error: unknown sweep key 'model.hidden_sise': the config "
         "has no field 'hidden_sise' (did you mean 'model.hidden_size'?)"),
        ("model.hidden_size=8,sixteen", "error: sweep value 'sixteen' for model.hidden_size "
         "is not a valid int"),
        ("model.bidirectional=maybe", "error: sweep value 'maybe' for model.bidirectional "
         "is not a valid bool"),
        ("model=8", "error: sweep key 'model' is a group of fields, not a field"),
    ],
)  # fmt: skip
def test_bad_sweep_is_a_one_line_error_and_nothing_runs(tmp_path, sweep, expected):
    workdir = tmp_path / "sweep"
    result = subprocess.run(
        sweep_command(workdir, f"--sweep={sweep}", "--sweep=seed=0,1"), cwd=ROOT,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == expected
    assert "Traceback" not in result.stderr and "launch" not in result.stderr
    assert not workdir.exists()


def test_flag_values_take_the_field_type_and_form_a_product():
    config = seq_digits.get_config("smoke")
    grid = sweep_grid.grid_from_flags(
        ["optimizer.learning_rate=1e-3,2", "model.bidirectional=True,no", "dataset.spec=a,b"],
        config,
    )
    assert len(grid) == 8
    assert grid[0] == {"optimizer.learning_rate": 0.001, "model.bidirectional": True,
                       "dataset.spec": "a"}  # fmt: skip
    assert (
        type(grid[-1]["optimizer.learning_rate"]) is float
        and grid[-1]["model.bidirectional"] is False
    )
    assert sweep_grid.override_flags(grid[-1]) == [
        "--config.optimizer.learning_rate=2.0", "--config.model.bidirectional=false",
        "--config.dataset.spec=b",
    ]  # fmt: skip


def test_get_sweep_as_a_list_or_a_product(tmp_path):
    path = tmp_path / "swept.py"
    path.write_text(
        "from configs.seq_digits import get_config\n"
        "def get_sweep(arg):\n"
        "    if arg == 'smoke':\n"
        "        return {'model.hidden_size': [8, 16], 'optimizer.learning_rate': [1, 0.1]}\n"
        "    return [{'seed': 1}, {'seed': 2, 'model.readout': 'mean'}]\n"
    )
    module, config = sweep_grid.load_config_file(f"{path}:smoke")
    product = sweep_grid.grid_from_function(module, "smoke", config)
    assert product[1] == {"model.hidden_size": 8, "optimizer.learning_rate": 0.1}
    assert len(product) == 4 and type(product[0]["optimizer.learning_rate"]) is float
    listed = sweep_grid.grid_from_function(module, "", config)
    assert [sweep_grid.run_name(run) for run in listed] == ["seed=1", "seed=2,readout=mean"]
    with pytest.raises(sweep_grid.SweepError, match=r"^the sweep lists the same run twice"):
        sweep_grid.check_grid([{"seed": 1}, {"seed": 1}], config)


def test_sort_puts_failed_runs_last_and_respects_the_mode():
    rows = [{"run": "a", "m": 0.5}, {"run": "b"}, {"run": "c", "m": 0.9}, {"run": "d", "m": 0.1}]
    assert [r["run"] for r in sweep_report.sort_rows(rows, "m", "max")] == ["c", "a", "d", "b"]
    assert [r["run"] for r in sweep_report.sort_rows(rows, "m", "min")] == ["d", "a", "c", "b"]
    assert sweep_report.default_mode("test.loss") == "min"
    assert sweep_report.default_mode("test.accuracy") == "max"
    assert sweep_report.default_mode("test.mse_reduction") == "max"  # 1 - mse / baseline
    assert sweep_report.default_mode("test.mse_frame_3") == "min"
    assert sweep_report.default_mode("test.greedy_sequence_accuracy") == "max"
    assert sweep_report.default_mode("wall_time_s") == "min"


def test_tuple_values_must_each_be_bracketed():
    from configs import moving_digits

    config = moving_digits.get_config("smoke")
    grid = sweep_grid.grid_from_flags(["model.hidden_channels=(4, 4),[8, 8]"], config)
    assert [run["model.hidden_channels"] for run in grid] == [(4, 4), (8, 8)]
    for spec, leftover in (("(4, 4),8,[8, 8", "'8,[8, 8'"), ("4,8", "'4,8'")):
        match = f"must each be bracketed.*{re.escape(leftover)}"
        with pytest.raises(sweep_grid.SweepError, match=match):
            sweep_grid.grid_from_flags([f"model.hidden_channels={spec}"], config)


def test_failed_runs_are_recorded_and_do_not_stop_the_others(tmp_path):
    # Runs of unknown tasks: they fail early (before loading data), one after the other.
    workdir = tmp_path / "sweep"
    result = subprocess.run(
        sweep_command(workdir, "--sweep=task=nope,nada", "--parallel=1"), cwd=ROOT,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: 2 of 2 runs failed: task=nope (failed (exit 1)), task=nada (failed (exit 1))"
    )
    assert launches(result.stderr) == ["task=nope", "task=nada"]
    for task in ("nope", "nada"):
        failure = (workdir / f"task={task}" / "failure.txt").read_text().splitlines()
        assert failure[0] == "failed (exit 1)"
        assert failure[2] == f"last {len(failure) - 3} lines of train.log:"  # at most 40
        assert failure[-1].startswith(f"error: unknown task '{task}': expected one of ")
    with open(workdir / "sweep_results.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["status"] for row in rows] == ["failed (exit 1)"] * 2
    assert [row["test.accuracy"] for row in rows] == ["", ""]


def test_device_slots_pin_each_run_to_its_own_devices(monkeypatch):
    gpu = sweep_devices.make_slots(2, devices_per_run=2, platform="gpu", device_ids=list("0123"))
    assert [slot.env for slot in gpu] == [{"CUDA_VISIBLE_DEVICES": "0,1"},
                                          {"CUDA_VISIBLE_DEVICES": "2,3"}]  # fmt: skip
    shared = sweep_devices.make_slots(3, platform="gpu", device_ids=["0", "1"])
    assert [slot.env["CUDA_VISIBLE_DEVICES"] for slot in shared] == ["0", "1", "0"]
    assert all(slot.env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" for slot in shared)
    tpu = sweep_devices.make_slots(2, platform="tpu", device_ids=["0", "1", "2", "3"])
    assert [slot.env["TPU_VISIBLE_CHIPS"] for slot in tpu] == ["0", "1"]
    assert tpu[0].env["TPU_PROCESS_PORT"] != tpu[1].env["TPU_PROCESS_PORT"]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    cpu = sweep_devices.make_slots(2, platform="cpu")
    assert [slot.cpus for slot in cpu] == [frozenset({0, 1}), frozenset({2, 3})]
    assert [slot.cpus for slot in sweep_devices.make_slots(2, platform="cpu", pin_cpus=False)] == [
        None, None
    ]  # fmt: skip
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert sweep_devices.detect_platform() == ("gpu", ["3", "5"])
