"""Where metrics go: TensorBoard events (tensorboardX), a progress bar or periodic line,
and an in-memory history that is saved next to the checkpoints (for the learning curve of
a resumed run). With several processes only process 0 writes (``enabled``)."""

from __future__ import annotations

import datetime
import json
import os
import sys
import time

from absl import logging
from tensorboardX import SummaryWriter
from tqdm import tqdm

HISTORY_FILE = "history.json"
QUIET_LIBRARIES = ("orbax",)  # their INFO lines (one per checkpoint file) drown the progress


def quiet_library_logs() -> None:
    """Hides INFO/DEBUG records of ``QUIET_LIBRARIES`` from the absl handler (warnings and
    errors still show)."""
    import logging as std_logging

    def keep(record: std_logging.LogRecord) -> bool:
        noisy = any(f"{os.sep}{name}{os.sep}" in record.pathname for name in QUIET_LIBRARIES)
        return record.levelno >= std_logging.WARNING or not noisy

    logging.get_absl_handler().addFilter(keep)


def _format(metrics: dict[str, float]) -> str:
    return " ".join(f"{key} {value:.4g}" for key, value in sorted(metrics.items()))


class Reporter:
    """Writes train/eval metrics and shows progress.

    A tqdm bar (steps/s and ETA built in) when stderr is a terminal; otherwise one log line
    per ``log`` call with step, loss, steps/s and ETA.

    Args:
      workdir: run directory; events go to ``<workdir>/tensorboard``.
      total_steps: steps of the whole run.
      start_step: the step this process starts at (> 0 when resuming).
      enabled: False on every process but the first of a multi-process run: it keeps the
        history in memory and writes nothing (no events, files, bar or log lines).
    """

    def __init__(self, workdir: str, total_steps: int, start_step: int, enabled: bool = True):
        self.workdir = workdir
        self.total_steps = total_steps
        self.enabled = enabled
        # purge_step drops the events a killed run wrote after its last checkpoint (or, with
        # none, after step 0); those at the checkpoint's step were written before it.
        self.writer = (
            SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=start_step + 1)
            if enabled
            else None
        )
        self.history = self._load_history(start_step)
        self.bar = tqdm(
            total=total_steps,
            initial=start_step,
            unit="step",
            dynamic_ncols=True,
            disable=not (enabled and sys.stderr.isatty()),
        )
        self._last_time = time.perf_counter()
        self._last_step = start_step

    def _load_history(self, start_step: int) -> list[dict]:
        path = os.path.join(self.workdir, HISTORY_FILE)
        if start_step == 0 or not os.path.exists(path):
            return []
        with open(path) as file:
            return [entry for entry in json.load(file) if entry["step"] <= start_step]

    def save_history(self) -> None:
        """Writes the history (called together with each checkpoint save)."""
        if not self.enabled:
            return
        path = os.path.join(self.workdir, HISTORY_FILE)
        with open(path + ".tmp", "w") as file:
            json.dump(self.history, file)
        os.replace(path + ".tmp", path)

    def log_train(self, step: int, metrics: dict[str, float]) -> None:
        """Records averaged training metrics at ``step`` (steps completed)."""
        now = time.perf_counter()
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, step
        self.history.append({"step": step, "split": "train", **metrics})
        if not self.enabled:
            return
        for key, value in metrics.items():
            self.writer.add_scalar(f"train/{key}", value, step)
        self.writer.add_scalar("train/steps_per_second", rate, step)
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
        if self.bar.disable:
            eta = datetime.timedelta(seconds=round((self.total_steps - step) / max(rate, 1e-9)))
            logging.info(
                "step %d/%d  loss %.4f  %.1f steps/s  ETA %s",
                step,
                self.total_steps,
                metrics["loss"],
                rate,
                eta,
            )

    def log_eval(self, step: int, metrics: dict[str, float]) -> None:
        """Records test-set metrics at ``step`` (replacing an evaluation recorded at that
        step before, as a rerun of a finished run evaluates its last step again)."""
        self.history = [e for e in self.history if (e["step"], e["split"]) != (step, "eval")]
        self.history.append({"step": step, "split": "eval", **metrics})
        if not self.enabled:
            return
        for key, value in metrics.items():
            self.writer.add_scalar(f"eval/{key}", value, step)
        message = f"eval at step {step}: {_format(metrics)}"
        if self.bar.disable:
            logging.info(message)
        else:
            self.bar.write(message)

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
