"""Sequential image classification: images read as sequences (rows, pixels or permuted
pixels) and classified by a GRU or LSTM (`gru_jax.models.SequenceClassifier`)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx

from experiments import plots
from experiments.tasks.base import Array, Batch, Task, TaskData
from gru_jax import data as gru_data
from gru_jax.models import SequenceClassifier


class SequenceClassificationTask(Task):
    """Config fields used: ``dataset.{spec, view, split_seed, permutation_seed, data_dir}``,
    ``model.{cell, hidden_size, num_layers, bidirectional, dropout, reset_after, readout}``,
    ``train.label_smoothing``, ``plots.num_gate_examples``."""

    main_metric = "accuracy"

    def load_data(self) -> TaskData:
        cfg = self.config.dataset
        dataset = gru_data.load_image_dataset(
            cfg.spec, seed=cfg.split_seed, data_dir=cfg.data_dir or None
        )

        def arrays(images: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
            sequences = gru_data.image_to_sequence(images, cfg.view, seed=cfg.permutation_seed)
            return {"inputs": sequences, "label": labels}

        train = arrays(dataset.x_train, dataset.y_train)
        test = arrays(dataset.x_test, dataset.y_test)
        logging.info(
            "dataset %s: %d train / %d test images %s, view %r -> sequences [T=%d, F=%d], "
            "%d classes",
            dataset.name,
            len(dataset.x_train),
            len(dataset.x_test),
            dataset.image_shape,
            cfg.view,
            *train["inputs"].shape[1:],
            dataset.num_classes,
        )
        info = {"num_classes": dataset.num_classes, "test_images": dataset.x_test}
        return TaskData(train=train, test=test, info=info)

    def build_model(self, data: TaskData, rngs: nnx.Rngs) -> nnx.Module:
        cfg = self.config.model
        return SequenceClassifier(
            in_features=data.train["inputs"].shape[-1],
            num_classes=data.info["num_classes"],
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_layers,
            cell=cfg.cell,
            bidirectional=cfg.bidirectional,
            dropout=cfg.dropout,
            reset_after=cfg.reset_after,
            readout=cfg.readout,
            rngs=rngs,
        )

    def loss(
        self, model: nnx.Module, batch: Batch, progress: Array | None = None
    ) -> tuple[Array, dict[str, Array]]:
        logits = model(batch["inputs"])
        targets = jax.nn.one_hot(batch["label"], logits.shape[-1])
        targets = optax.smooth_labels(targets, self.config.train.label_smoothing)
        loss = optax.softmax_cross_entropy(logits, targets).mean()
        accuracy = (logits.argmax(-1) == batch["label"]).mean()
        return loss, {"accuracy": accuracy}

    def eval_outputs(self, model: nnx.Module, batch: Batch) -> dict[str, Array]:
        logits = model(batch["inputs"])
        prediction = logits.argmax(-1).astype(jnp.int32)
        return {
            "loss": optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]),
            "accuracy": (prediction == batch["label"]).astype(jnp.float32),
            "prediction": prediction,
            "label": batch["label"],
        }

    def summarize(self, outputs: dict[str, np.ndarray]) -> dict[str, float]:
        return {
            "accuracy": float(np.mean(outputs["accuracy"])),
            "loss": float(np.mean(outputs["loss"])),
        }

    def plots(
        self, model: nnx.Module, data: TaskData, outputs: dict[str, np.ndarray], plot_dir: str
    ) -> list[str]:
        paths = [
            plots.confusion_matrix(
                outputs["label"],
                outputs["prediction"],
                data.info["num_classes"],
                os.path.join(plot_dir, "confusion_matrix.png"),
            )
        ]
        count = min(self.config.plots.num_gate_examples, len(data.test["label"]))
        if self.config.model.cell == "gru" and count > 0:
            model.eval()
            gates = model.first_layer_gates(jnp.asarray(data.test["inputs"][:count]))
            paths.append(
                plots.gate_activations(
                    data.info["test_images"][:count],
                    np.asarray(gates.update),
                    data.test["label"][:count],
                    os.path.join(plot_dir, "update_gates.png"),
                )
            )
        return paths
