"""Image to sequence: read the 1–5 digit number in a generated digit-string image
(`gru_jax.data.make_digit_strings`) with `gru_jax.models.ImageToSequence` (CNN column
encoder, GRU decoder with additive attention).

Training: teacher-forced token cross-entropy; PAD positions are masked out, EOS counts.
Evaluation (``results.json['test']``): ``sequence_accuracy`` and ``cer`` of beam search,
``greedy_sequence_accuracy`` and ``greedy_cer`` of greedy decoding, and the teacher-forced
``loss`` and ``token_accuracy``.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx

from experiments import attention_plots
from experiments.tasks.base import Array, Batch, Task, TaskData
from experiments.text_metrics import character_error_rate, sequence_accuracy
from gru_jax import data as gru_data
from gru_jax.models import ImageToSequence


def shift_right(tokens: Array) -> Array:
    """Teacher-forcing decoder inputs: i32[B, L] targets -> [BOS, t_1, ..., t_{L-1}]."""
    start = jnp.full((tokens.shape[0], 1), gru_data.BOS_ID, tokens.dtype)
    return jnp.concatenate([start, tokens[:, :-1]], axis=1)


def masked_token_loss(
    logits: Array, tokens: Array, label_smoothing: float = 0.0
) -> tuple[Array, Array]:
    """Per-example mean cross-entropy over non-PAD positions (digits and EOS).

    Args:
      logits: f32[B, L, vocab]; tokens: i32[B, L] targets.

    Returns:
      (loss f32[B], mask f32[B, L]): PAD positions contribute nothing, whatever the logits.
    """
    mask = (tokens != gru_data.PAD_ID).astype(jnp.float32)
    targets = optax.smooth_labels(jax.nn.one_hot(tokens, logits.shape[-1]), label_smoothing)
    per_token = optax.softmax_cross_entropy(logits, targets)
    return (per_token * mask).sum(-1) / jnp.maximum(mask.sum(-1), 1.0), mask


def texts(tokens: np.ndarray) -> list[str]:
    """Digit strings of i32[N, L] token rows (up to the first EOS/PAD)."""
    return gru_data.tokens_to_text(tokens)


class DigitStringsTask(Task):
    """Config fields used: ``dataset.*`` (`make_digit_strings` arguments, ``num_train``,
    ``num_test``, ``seed``), ``model.*`` (`ImageToSequence` sizes), ``decode.{beam_width,
    length_penalty}``, ``train.label_smoothing``, ``plots.num_attention_examples``."""

    main_metric = "sequence_accuracy"

    def _generate(self, num: int, split: str) -> dict[str, np.ndarray]:
        cfg = self.config.dataset
        return gru_data.make_digit_strings(
            num,
            seed=cfg.seed,
            split=split,
            min_len=cfg.min_len,
            max_len=cfg.max_len,
            height=cfg.height,
            width=cfg.width,
            digit_size=cfg.digit_size,
            min_gap=cfg.min_gap,
            max_gap=cfg.max_gap,
            noise_std=cfg.noise_std,
            source=cfg.source,
            split_seed=cfg.split_seed,
            data_dir=cfg.data_dir or None,
        )

    def load_data(self) -> TaskData:
        cfg = self.config.dataset
        started = time.perf_counter()
        train = self._generate(cfg.num_train, "train")
        test = self._generate(cfg.num_test, "test")
        logging.info(
            "digit strings: %d train / %d test images %s, %d-%d digits, generated in %.1f s",
            cfg.num_train, cfg.num_test, train["images"].shape[1:], cfg.min_len, cfg.max_len,
            time.perf_counter() - started,
        )  # fmt: skip
        return TaskData(train=train, test=test, info={"image_shape": train["images"].shape[1:]})

    def build_model(self, data: TaskData, rngs: nnx.Rngs) -> nnx.Module:
        cfg = self.config.model
        return ImageToSequence(
            tuple(data.info["image_shape"]),
            gru_data.VOCAB_SIZE,
            start_token=gru_data.BOS_ID,
            eos_token=gru_data.EOS_ID,
            pad_token=gru_data.PAD_ID,
            forbidden_tokens=(gru_data.PAD_ID, gru_data.BOS_ID),
            conv_channels=tuple(cfg.conv_channels),
            width_pooling=tuple(cfg.width_pooling),
            encoder_hidden_size=cfg.encoder_hidden_size,
            embedding_size=cfg.embedding_size,
            decoder_hidden_size=cfg.decoder_hidden_size,
            attention_size=cfg.attention_size,
            dropout=cfg.dropout,
            reset_after=cfg.reset_after,
            rngs=rngs,
        )

    def loss(
        self, model: nnx.Module, batch: Batch, progress: Array | None = None
    ) -> tuple[Array, dict[str, Array]]:
        tokens = batch["tokens"]
        logits = model(batch["images"], shift_right(tokens))
        per_example, mask = masked_token_loss(logits, tokens, self.config.train.label_smoothing)
        # Mean over tokens (not examples), so long strings weigh by their length.
        loss = (per_example * mask.sum(-1)).sum() / mask.sum()
        correct = (logits.argmax(-1) == tokens) * mask
        return loss, {"token_accuracy": correct.sum() / mask.sum()}

    def eval_outputs(self, model: nnx.Module, batch: Batch) -> dict[str, Array]:
        images, tokens = batch["images"], batch["tokens"]
        logits = model(images, shift_right(tokens))
        loss, mask = masked_token_loss(logits, tokens)
        cfg = self.config.decode
        max_length = tokens.shape[1]
        beam = model.beam_decode(images, max_length, cfg.beam_width, cfg.length_penalty)
        greedy = model.greedy_decode(images, max_length)
        correct = ((logits.argmax(-1) == tokens) * mask).sum(-1)
        return {
            "loss": loss,
            "token_accuracy": correct / mask.sum(-1),
            "tokens": tokens,
            "beam_tokens": beam.tokens[:, 0],
            "greedy_tokens": greedy.tokens,
        }

    def summarize(self, outputs: dict[str, np.ndarray]) -> dict[str, float]:
        references = texts(outputs["tokens"])
        beam, greedy = texts(outputs["beam_tokens"]), texts(outputs["greedy_tokens"])
        return {
            "sequence_accuracy": sequence_accuracy(beam, references),
            "cer": character_error_rate(beam, references),
            "greedy_sequence_accuracy": sequence_accuracy(greedy, references),
            "greedy_cer": character_error_rate(greedy, references),
            "loss": float(np.mean(outputs["loss"])),
            "token_accuracy": float(np.mean(outputs["token_accuracy"])),
        }

    def plots(
        self, model: nnx.Module, data: TaskData, outputs: dict[str, np.ndarray], plot_dir: str
    ) -> list[str]:
        count = min(self.config.plots.num_attention_examples, len(outputs["beam_tokens"]))
        if count == 0:
            return []
        # The first test strings; the last panel shows the first misread string, if any.
        index = np.arange(count)
        misread = np.flatnonzero(np.any(outputs["beam_tokens"] != outputs["tokens"], axis=1))
        if misread.size and misread[0] >= count:
            index[-1] = misread[0]
        images, decoded = data.test["images"][index], outputs["beam_tokens"][index]
        model.eval()
        attention = nnx.jit(lambda m, x, y: m.attention(x, y))(
            model, jnp.asarray(images), shift_right(jnp.asarray(decoded))
        )
        predictions, references = texts(decoded), texts(data.test["tokens"][index])
        labels = [[*prediction, "EOS"][: decoded.shape[1]] for prediction in predictions]
        titles = [
            f"read {p or '(empty)'}" + ("" if p == r else f" (true {r})")
            for p, r in zip(predictions, references)
        ]
        return [
            attention_plots.attention_maps(
                images,
                np.asarray(attention),
                labels,
                titles,
                model.encoder.column_width,
                os.path.join(plot_dir, "attention_maps.png"),
            )
        ]
