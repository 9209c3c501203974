"""One progress line per epoch on the driver's console, however many workers, restarts or Ray logs there are.

Rank 0 logs each epoch's metrics to the run's MLflow store (pipelines/train/worker.py). The driver follows that run
from a background thread and prints each new epoch once: worker output stays in Ray's log files (or on the console
with --verbose) and the job's own console reads like a training log.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from mlflow.tracking import MlflowClient

from pipelines.train.worker import epoch_line


class EpochLines:
    """Prints `epoch_line` for every epoch the MLflow run gains while the block runs, and any left at its end."""

    def __init__(self, tracking_uri: str, run_id: str, epochs: int, echo: Callable[[str], None] = print,
                 every_s: float = 2.0) -> None:
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.run_id, self.epochs, self.echo, self.every_s = run_id, epochs, echo, every_s
        self.printed = {int(m.step) for m in self.client.get_metric_history(run_id, "epoch")}  # a resumed run's
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="epoch-lines", daemon=True)

    def __enter__(self) -> EpochLines:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()

    def _follow(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.poll()
            except Exception:  # a busy store must not end training; the next poll or the final one catches up
                continue

    def poll(self) -> None:
        """Prints the epochs logged since the last poll, in order."""
        steps = sorted({int(m.step) for m in self.client.get_metric_history(self.run_id, "epoch")} - self.printed)
        if not steps:
            return
        keys = self.client.get_run(self.run_id).data.metrics
        values: dict[int, dict[str, float]] = {step: {"epoch": step} for step in steps}  # MLflow keeps floats
        for key in keys.keys() - {"epoch"}:
            for metric in self.client.get_metric_history(self.run_id, key):
                if int(metric.step) in values:
                    values[int(metric.step)][key] = metric.value
        for step in steps:
            self.echo(epoch_line(values[step], self.epochs))
            self.printed.add(step)
