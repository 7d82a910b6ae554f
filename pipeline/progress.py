"""Progress display for long work: a bar per epoch for training.

Bars go to stderr and only on a terminal; where output is a log (CI, a pipe) each epoch prints one
summary line instead, so logs stay readable.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

from pipeline.train import EpochStats


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
