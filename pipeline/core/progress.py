"""Progress display for long work: a bar per epoch for training.

Bars go to stderr and only on a terminal; where output is a log (CI, a pipe) each epoch prints one
summary line instead, so logs stay readable.
"""

from __future__ import annotations

import sys
from typing import Protocol

from tqdm import tqdm

from pipeline.core.metric import format_value


class EpochStats(Protocol):
    """What the view shows of an epoch: the trainer's EpochStats has it (core knows no
    trainer)."""

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    images_per_second: float
    seconds: float


def is_interactive() -> bool:
    return sys.stderr.isatty()


def epoch_line(stats: EpochStats, epochs: int) -> str:
    return (f"epoch {stats.epoch}/{epochs}  loss {stats.train_loss:.4f}  "
            f"val loss {stats.val_loss:.4f}  val acc {stats.val_accuracy:.2%}  "
            f"{stats.images_per_second:,.0f} img/s  {stats.seconds:.1f}s")


class TrainProgress:
    """``on_step``/``on_epoch_end`` callbacks for ``fit`` that draw one bar per epoch."""

    def __init__(self, epochs: int, *, echo=print) -> None:
        self.epochs = epochs
        self.echo = echo
        self.bar: tqdm | None = None
        self.epoch = 1
        self.interactive = is_interactive()

    def on_step(self, step: int, steps: int) -> None:
        if not self.interactive:
            return
        if self.bar is None:
            self.bar = tqdm(total=steps, desc=f"epoch {self.epoch}/{self.epochs}",
                            unit="batch", leave=True, dynamic_ncols=True)
        self.bar.update(step - self.bar.n)

    def on_epoch_end(self, stats: EpochStats) -> None:
        if self.bar is not None:
            self.bar.update(self.bar.total - self.bar.n)
            self.bar.set_postfix_str(
                f"loss {stats.train_loss:.4f}, val acc {stats.val_accuracy:.2%}, "
                f"{stats.images_per_second:,.0f} img/s")
            self.bar.close()
            self.bar = None
        else:
            self.echo(epoch_line(stats, self.epochs))
        self.epoch = stats.epoch + 1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class SearchProgress:
    """A bar over trials: best so far, the running trial's epoch, complete/pruned/failed counts.

    Off a terminal, one line per finished trial instead.
    """

    def __init__(self, target: int, done: int, metric: str, *, echo=print,
                 enabled: bool = True) -> None:
        self.target = target
        self.metric = metric
        self.echo = echo
        self.best: str = "—"
        self.counts: str = ""
        self.running: str = ""
        self._epochs = 0
        self.interactive = enabled and is_interactive()
        self.bar = None
        if self.interactive:
            self.bar = tqdm(total=target, initial=min(done, target), desc="trials", unit="trial",
                            dynamic_ncols=True,
                            bar_format="{desc} {n_fmt}/{total_fmt} |{bar}| {elapsed}<{remaining}"
                                       "{postfix}")
            self.refresh()

    def set_best(self, value: float | None, number: int | None) -> None:
        if value is not None:
            self.best = f"{format_value(self.metric, value)} (#{number})"

    def trial_started(self, number: int, epochs: int) -> None:
        self.running = f"#{number} starting"
        self._epochs = epochs
        self.refresh()

    def epoch_done(self, number: int, stats: EpochStats) -> None:
        self.running = (f"#{number} epoch {stats.epoch}/{self._epochs} "
                        f"val acc {stats.val_accuracy:.2%}")
        self.refresh()

    def trial_finished(self, number: int, state: str, value: float | None, counts,
                       seconds: float, note: str = "") -> None:
        self.counts = f"✓{counts.complete} ✂{counts.pruned} ✗{counts.failed}"
        self.running = ""
        shown = format_value(self.metric, value) if value is not None else ""
        if self.bar is not None:
            self.bar.update(1)
            self.refresh()
        else:
            self.echo(f"trial {number:>3} {state:<9}{shown:>8}  {seconds:5.0f}s   best {self.best}"
                      f"   [{counts.line()}]" + (f"  {note}" if note else ""))

    def note(self, line: str) -> None:
        """A line about the search, above the bar on a terminal."""
        if self.bar is not None:
            self.bar.write(line)
        else:
            self.echo(line)

    def refresh(self) -> None:
        if self.bar is not None:
            parts = [f"best {self.best}", self.running, self.counts]
            self.bar.set_postfix_str(" | ".join(p for p in parts if p))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
