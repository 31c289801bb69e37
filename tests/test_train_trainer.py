"""The generic trainer, in process: outputs of a run, checkpoints that restore to the
reported metrics, the npz round trip, the LSTM path, errors, the non-finite guard."""

import json
import os
import shutil
import struct

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import seq_digits
from experiments import optim
from experiments.reporting import Reporter
from experiments.run_config import ConfigChangedError
from experiments.setup import restore_model
from experiments.trainer import NonFiniteLossError, train_and_evaluate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def smoke_config(**overrides):
    """seq_digits:smoke with dotted-key overrides, e.g. ``**{'model.cell': 'lstm'}``."""
    config = seq_digits.get_config("smoke")
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def reevaluate(config, workdir, step=None):
    """Test accuracy and mean loss recomputed from a checkpoint, outside the trainer."""
    model, run = restore_model(config, workdir, step)
    logits = model(jnp.asarray(run.data.test["inputs"]))
    labels = run.data.test["label"]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return float((np.asarray(logits.argmax(-1)) == labels).mean()), float(loss), model


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("digits"))
    config = smoke_config()
    return config, workdir, train_and_evaluate(config, workdir)


def test_run_writes_results_config_plots_events_and_checkpoints(digits_run):
    config, workdir, results = digits_run
    with open(os.path.join(workdir, "results.json")) as file:
        written = json.load(file)
    assert written == json.loads(json.dumps(results))
    assert written["train_steps"] == 6 and written["steps_per_epoch"] == 1437 // 8
    # bidirectional GRU, H=16, F=8: 2 * 3 * (8*16 + 16*16 + 2*16) + 32*10 + 10
    assert written["num_params"] == 2 * 3 * (128 + 256 + 32) + 330
    assert written["compile_time_s"] > 0 and written["wall_time_s"] > written["train_time_s"] > 0
    assert 0.0 <= written["test"]["accuracy"] <= 1.0 and np.isfinite(written["test"]["loss"])
    assert round(written["test"]["accuracy"] * 360, 3).is_integer()  # 360 test images exactly
    with open(os.path.join(workdir, "config.json")) as file:
        assert json.load(file)["model"]["hidden_size"] == 16
    for name in ("learning_curve", "confusion_matrix", "update_gates"):
        with open(os.path.join(workdir, "plots", f"{name}.png"), "rb") as file:
            assert file.read(8) == PNG_MAGIC
    events = os.listdir(os.path.join(workdir, "tensorboard"))
    content = b"".join(open(os.path.join(workdir, "tensorboard", e), "rb").read() for e in events)
    for tag in (b"train/loss", b"train/learning_rate", b"eval/accuracy", b"eval/loss"):
        assert tag in content
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
    with open(os.path.join(workdir, "history.json")) as file:
        history = json.load(file)
    assert [e["step"] for e in history if e["split"] == "train"] == [2, 4, 6]
    assert [e["step"] for e in history if e["split"] == "eval"] == [3, 6]


def test_final_checkpoint_restores_to_the_reported_metrics(digits_run):
    config, workdir, results = digits_run
    accuracy, loss, _ = reevaluate(config, workdir)
    assert accuracy == pytest.approx(results["test"]["accuracy"], abs=1e-6)
    assert loss == pytest.approx(results["test"]["loss"], rel=1e-5)


def test_rerun_of_a_finished_run_resumes_at_the_end(digits_run, tmp_path):
    config, workdir, results = digits_run
    copy = shutil.copytree(workdir, tmp_path / "copy")
    # A setting that does not change what is trained (the log period) may differ.
    again = train_and_evaluate(smoke_config(**{"train.log_every_steps": 3}), str(copy))
    assert again["resumed_from_step"] == 6
    assert again["test"] == pytest.approx(results["test"], abs=1e-6)
    for key in ("train_time_s", "compile_time_s", "steady_step_time_s"):  # trained nothing
        assert again[key] == results[key]
    with open(copy / "history.json") as file:
        history = json.load(file)
    assert [e["step"] for e in history if e["split"] == "eval"] == [3, 6]  # not 6 twice


def test_a_resumed_run_reports_the_training_time_of_all_its_segments(digits_run, tmp_path):
    """Each checkpoint records the training time of the steps it holds; a run resumed
    from it reports that plus its own segment as ``total_train_time_s`` (None when the
    record is missing or belongs to another step)."""
    config, workdir, results = digits_run
    assert results["total_train_time_s"] == results["train_time_s"]  # one segment
    with open(os.path.join(workdir, "train_time.json")) as file:
        record = json.load(file)
    assert record["step"] == 6 and 0 < record["train_time_s"] <= results["train_time_s"]
    for name, written, expected_earlier in (
        ("matching", {"step": 3, "train_time_s": 100.0}, 100.0),
        ("other_step", {"step": 6, "train_time_s": 100.0}, None),
        ("missing", None, None),
    ):
        copy = shutil.copytree(workdir, tmp_path / name)
        shutil.rmtree(copy / "checkpoints" / "6")  # as if killed between steps 3 and 6
        os.remove(copy / "results.json")
        os.remove(copy / "train_time.json")
        if written is not None:
            (copy / "train_time.json").write_text(json.dumps(written))
        resumed = train_and_evaluate(config, str(copy))
        assert resumed["resumed_from_step"] == 3 and resumed["train_time_s"] > 0
        if expected_earlier is None:  # and no record that a later resume could misread
            assert resumed["total_train_time_s"] is None
            assert not (copy / "train_time.json").exists()
        else:
            total = expected_earlier + resumed["train_time_s"]
            assert resumed["total_train_time_s"] == pytest.approx(total)
            with open(copy / "train_time.json") as file:
                after = json.load(file)
            assert after["step"] == 6 and 100 < after["train_time_s"] <= total + 1e-6


def test_rerun_with_other_settings_is_refused_and_leaves_the_run_alone(digits_run, tmp_path):
    _, workdir, _ = digits_run
    copy = shutil.copytree(workdir, tmp_path / "copy")
    record = {name: (copy / name).read_text() for name in ("config.json", "results.json")}
    with pytest.raises(ConfigChangedError) as error:
        train_and_evaluate(smoke_config(**{"dataset.split_seed": 1}), str(copy))
    message = str(error.value)
    assert "\n" not in message and "dataset.split_seed: 0 -> 1" in message
    assert "fresh --workdir" in message
    assert {name: (copy / name).read_text() for name in record} == record
    assert sorted(os.listdir(copy / "checkpoints")) == ["3", "6"]
    # A run of another version's config (no config.json to compare) still may not resume
    # past its own length.
    os.remove(copy / "config.json")
    with pytest.raises(ValueError, match=r"is at step 6, past this run's 4 training steps"):
        train_and_evaluate(smoke_config(**{"train.num_steps": 4}), str(copy))


def _write_npz(path, rng, train=240, test=60):
    """3 classes of 6x6 images: class k has a bright row at 2k (learnable in a few steps)."""

    def split(count):
        labels = rng.integers(0, 3, count)
        images = rng.uniform(0, 60, (count, 6, 6)).astype(np.uint8)
        for index, label in enumerate(labels):
            images[index, 2 * label] = 255
        return images, labels

    (x_train, y_train), (x_test, y_test) = split(train), split(test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def test_npz_dataset_round_trip(tmp_path):
    path = tmp_path / "bright_rows.npz"
    _write_npz(path, np.random.default_rng(0))
    config = smoke_config(
        **{"dataset.spec": f"npz:{path}", "train.num_steps": 60, "train.batch_size": 16},
        **{"optimizer.learning_rate": 1e-2, "train.checkpoint_every_steps": 30},
    )
    results = train_and_evaluate(config, str(tmp_path / "run"))
    # 6 steps of 6 features -> H=16 bidirectional GRU, 3 classes from the labels.
    assert results["num_params"] == 2 * 3 * (6 * 16 + 256 + 32) + 32 * 3 + 3
    assert results["test"]["accuracy"] >= 0.95
    accuracy, _, _ = reevaluate(config, str(tmp_path / "run"))
    assert accuracy == pytest.approx(results["test"]["accuracy"], abs=1e-6)


def test_lstm_cell_runs_through_the_same_trainer(tmp_path):
    config = smoke_config(**{"model.cell": "lstm", "model.readout": "mean"})
    results = train_and_evaluate(config, str(tmp_path))
    assert results["num_params"] == 2 * 4 * (8 * 16 + 256 + 16) + 330
    assert results["plots"] == ["plots/learning_curve.png", "plots/confusion_matrix.png"]
    accuracy, _, _ = reevaluate(config, str(tmp_path))
    assert accuracy == pytest.approx(results["test"]["accuracy"], abs=1e-6)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"dataset.spec": "imagenet_typo"}, r"^unknown dataset 'imagenet_typo'"),
        ({"dataset.view": "columns"}, r"^unknown sequence view 'columns'"),
        ({"task": "segmentation"}, r"^unknown task 'segmentation'"),
        ({"optimizer.schedule": "linear"}, r"^unknown optimizer.schedule 'linear'"),
        ({"train.batch_size": 5000}, r"^train.batch_size=5000 exceeds the 1437 training"),
        ({"train.log_every_steps": 0}, r"^train.log_every_steps must be >= 1; got 0$"),
    ],
)
def test_bad_config_values_are_one_line_errors(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message) as error:
        train_and_evaluate(smoke_config(**overrides), str(tmp_path))
    assert "\n" not in str(error.value)


def test_malformed_npz_is_a_one_line_error(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(ValueError, match=r"broken.npz: not a readable .npz file") as error:
        train_and_evaluate(smoke_config(**{"dataset.spec": f"npz:{path}"}), str(tmp_path / "r"))
    assert "\n" not in str(error.value)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(digits_run, tmp_path):
    config, clean_workdir, _ = digits_run
    workdir = str(tmp_path)
    with pytest.raises(NonFiniteLossError) as error:
        train_and_evaluate(smoke_config(**{"train.debug_nan_step": 4}), workdir)
    message = str(error.value)
    assert "\n" not in message and "training step 4" in message
    assert f"last good checkpoint: step 3 in {os.path.join(workdir, 'checkpoints')}" in message
    assert os.listdir(os.path.join(workdir, "checkpoints")) == ["3"]
    assert not os.path.exists(os.path.join(workdir, "results.json"))
    # Step 3 of the failed run equals step 3 of a clean run (up to float rounding: the
    # NaN-injecting step is a slightly different XLA program), and is usable.
    *_, model = reevaluate(config, workdir, step=3)
    *_, clean = reevaluate(config, clean_workdir, step=3)
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    clean_leaves = jax.tree.leaves(nnx.state(clean, nnx.Param))
    assert all(np.isfinite(leaf).all() for leaf in leaves)
    for leaf, clean_leaf in zip(leaves, clean_leaves, strict=True):
        np.testing.assert_allclose(leaf, clean_leaf, rtol=1e-5, atol=1e-8)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # the 1e39 rate itself
def test_parameters_that_overflow_stop_the_run_before_they_are_saved(tmp_path):
    """Finite loss and gradients, but a learning rate that overflows float32 makes the
    updated parameters infinite: the guard stops at that step and saves none of them."""
    overflow = {
        "optimizer.name": "sgd", "optimizer.b1": 0.0, "optimizer.learning_rate": 1e39,
        "optimizer.warmup_fraction": 0.0, "optimizer.grad_clip_norm": 0.0,
        "train.checkpoint_every_steps": 1, "train.log_every_steps": 1,
    }  # fmt: skip
    with pytest.raises(NonFiniteLossError, match=r"gradients or parameters at training step 0"):
        train_and_evaluate(smoke_config(**overflow), str(tmp_path))
    assert not os.listdir(tmp_path / "checkpoints")


def read_events(directory):
    """Every event in the TensorBoard files of ``directory`` (TFRecord framing: a u64
    length and its crc, the payload, the payload's crc)."""
    from tensorboardX.proto import event_pb2

    events = []
    for name in sorted(os.listdir(directory)):
        data = (directory / name).read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[offset + 12 : offset + 12 + length])
            events.append(event)
            offset += 12 + length + 4
    return events


@pytest.mark.parametrize("start_step", [0, 6])
def test_tensorboard_purges_only_what_came_after_the_resumed_step(tmp_path, start_step):
    """A resumed run's events restart at ``start_step + 1``: TensorBoard then drops what
    a killed run wrote after its checkpoint (or, with none, after step 0) and keeps the
    points at the checkpoint's own step, which were written before it."""
    from tensorboardX.proto.event_pb2 import SessionLog

    reporter = Reporter(str(tmp_path), total_steps=10, start_step=start_step)
    reporter.log_eval(start_step + 2, {"loss": 1.0})
    reporter.close()
    events = read_events(tmp_path / "tensorboard")
    restarts = [e.step for e in events if e.session_log.status == SessionLog.START]
    assert restarts == [start_step + 1]


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_learning_rate_schedules(schedule):
    config = smoke_config(**{"optimizer.schedule": schedule}).optimizer
    config.learning_rate, config.warmup_fraction, config.end_learning_rate_factor = 1.0, 0.1, 0.01
    rate = optim.learning_rate_schedule(config, total_steps=100)
    assert float(rate(0)) == 0.0 and float(rate(5)) == pytest.approx(0.5)
    assert float(rate(10)) == pytest.approx(1.0)
    expected_end = 0.01 if schedule == "cosine" else 1.0
    assert float(rate(100)) == pytest.approx(expected_end, rel=1e-4)
    if schedule == "cosine":  # halfway through the decay: the mean of peak and end
        assert float(rate(55)) == pytest.approx((1.0 + 0.01) / 2, rel=1e-4)


def test_gradient_clipping_bounds_the_update():
    config = smoke_config(**{"optimizer.name": "sgd", "optimizer.b1": 0.0}).optimizer
    config.learning_rate, config.warmup_fraction, config.grad_clip_norm = 1.0, 0.0, 1.0
    config.schedule = "constant"
    tx, _ = optim.make_optimizer(config, total_steps=10)
    params = {"w": jnp.zeros(4)}
    updates, _ = tx.update({"w": jnp.full(4, 10.0)}, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -np.full(4, 0.5), rtol=1e-6)  # norm 20 -> 1


def test_checkpoint_round_trip_restores_params_and_optimizer_state_exactly(tmp_path):
    from experiments.checkpoints import Checkpointer
    from experiments.setup import build_run

    run = build_run(smoke_config())
    # A state with non-trivial optimizer moments and step: perturb every float leaf.
    state = jax.tree.map(
        lambda x: x + 0.25 if jnp.issubdtype(x.dtype, jnp.floating) else x, run.state
    )
    state["step"] = jnp.asarray(7, jnp.int32)
    checkpointer = Checkpointer(str(tmp_path), keep=2)
    assert checkpointer.save(state) == 7
    checkpointer.wait()
    restored = checkpointer.restore(checkpointer.latest_step(), run.state)
    checkpointer.close()
    assert int(restored["step"]) == 7
    expected, actual = jax.tree.leaves(state), jax.tree.leaves(restored)
    assert len(expected) == len(actual) > 10
    for want, got in zip(expected, actual, strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_train_step_hands_the_loss_its_run_progress():
    """The jitted step passes ``progress = step / total_steps`` to the task's loss (what
    ramped loss terms read); without ``total_steps`` it passes 0."""
    from experiments import steps
    from experiments.tasks.base import Task

    class ProgressTask(Task):
        def load_data(self):
            raise NotImplementedError

        def build_model(self, data, rngs):
            raise NotImplementedError

        def loss(self, model, batch, progress=None):
            loss = jnp.mean((model(batch["x"]) - 1.0) ** 2)
            return loss, {"progress": progress}

        def eval_outputs(self, model, batch):
            raise NotImplementedError

    tx = optax.sgd(0.1)
    batch = {"x": jnp.ones((4, 2))}
    for total, expected in ((8, [0.0, 0.125, 0.25]), (None, [0.0, 0.0, 0.0])):
        # A fresh model each round: the step donates the state it is given.
        model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
        graphdef, params, rng_state, model_state = steps.split_model(model)
        state = steps.init_train_state(params, model_state, tx)
        step = steps.make_train_step(
            ProgressTask(seq_digits.get_config("smoke")), graphdef, rng_state, tx,
            optax.constant_schedule(0.1), jax.random.key(0), total_steps=total,
        )  # fmt: skip
        seen = []
        for _ in range(3):
            state, metrics = step(state, batch)
            seen.append(float(metrics["progress"]))
        np.testing.assert_allclose(seen, expected, atol=1e-7)
