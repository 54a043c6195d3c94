"""What the user sees during `nnc train`: a rich progress bar per epoch (loss, accuracy,
samples/s) and one line per epoch. Updates are throttled so the bar costs nothing per step."""

from __future__ import annotations

import sys
import time


class EpochProgress:
    REFRESH = 0.2  # seconds between bar updates

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.progress = None
        self._last = 0.0
        self._pending = 0  # steps since the last bar update (rich's advance takes a lock: not per step)
        if not quiet:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.console = Console(stderr=True, highlight=False)
            self.progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[stats]}"), TimeRemainingColumn(),
                                     console=self.console, transient=True,
                                     disable=not (self.console.is_terminal or self.console.is_jupyter))
            self.progress.start()

    def start(self, epoch: int, epochs: int, steps: int):
        self._pending = 0
        if self.progress is None:
            return None
        return self.progress.add_task("train", total=steps, epoch=f"{epoch + 1}/{epochs}", stats="")

    def advance(self, task, loss: float, seen: int, elapsed: float, lr: float) -> None:
        if task is None:
            return
        self._pending += 1
        now = time.perf_counter()
        if now - self._last < self.REFRESH:
            return
        self._last = now
        self.progress.update(task, advance=self._pending,
                             stats=f"loss {loss:.4f}  lr {lr:.2e}  {seen / max(elapsed, 1e-9):,.0f} samples/s")
        self._pending = 0

    def epoch_line(self, rec: dict) -> None:
        if self.quiet:
            return
        acc = lambda v: f"{100 * v:5.1f}%" if v is not None else "   -  "
        val = f"val loss {rec['val_loss']:.4f} acc {acc(rec['val_accuracy'])}" if rec.get("val_loss") is not None else ""
        extra = "".join(f"  {w}" for w in rec.get("warnings", []))
        line = (f"epoch {rec['epoch']:>3}  train loss {rec['train_loss']:.4f} acc {acc(rec.get('train_accuracy'))}  "
                f"{val}  lr {rec['lr']:.2e}  {rec['samples_per_s']:,.0f} samples/s{extra}")
        if self.progress is not None and self.console.is_terminal:
            for t in list(self.progress.task_ids):
                self.progress.remove_task(t)
            self.progress.console.print(line, markup=False)
        else:
            print(line, file=sys.stderr, flush=True)

    def note(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
