"""One family of exceptions for problems the user can cause and fix.

The CLI turns any of these into a single line on stderr and an exit status; everything else is a
bug and keeps its traceback.
"""

from __future__ import annotations


class PipelineError(Exception):
    """A problem the user can fix. The message must say what is wrong and how to fix it."""

    exit_code = 1


class UsageError(PipelineError):
    """Bad input: an option, a configuration file, a search-space file (exit status 2)."""

    exit_code = 2


class DataError(PipelineError):
    """MNIST could not be fetched, or a file on disk failed verification."""


class ArchitectureError(UsageError):
    """A combination of model hyperparameters that cannot make a network for 28x28 inputs."""


class DeviceError(UsageError):
    """A training device that was asked for but is not available."""


class NonFiniteLossError(Exception):
    """Training diverged: the loss became NaN or infinite. Not the user's error and not a fault:
    the hyperparameters were bad, and a search prunes the trial (outcomes.DIVERGED)."""

    def __init__(self, epoch: int, lr: float) -> None:
        super().__init__(f"loss became non-finite in epoch {epoch} (learning rate {lr:.3g})")
        self.epoch = epoch


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an error's message (its type name when it has none), for one-line
    reports of errors raised by libraries, whose messages can run to pages."""
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else type(error).__name__
