"""How a trial (or a study, or a `pipeline train` run) ended, and what that writes where.

One table. Each outcome names the Optuna trial state, the MLflow run status, the
``pipeline.state`` tag (also the trial's ``outcome`` attribute), whether the trial's parameters
run again, and how its reason reads. The search objective, `pipeline train`, the worker
coordinator and reconcile all close runs and trials through it, so they cannot disagree.

Light on purpose: it imports neither torch nor Optuna (an exception is classified against them
only if its module is already loaded).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from pipeline.core.errors import NonFiniteLossError, first_line
from pipeline.core.faults import DISK, fault_of
from pipeline.core.keys import TAG_PRUNED_EPOCH, TAG_REASON, TAG_STATE


@dataclass(frozen=True)
class Outcome:
    name: str  # the pipeline.state tag and the trial's `outcome` attribute
    trial_state: str  # Optuna's TrialState name
    run_status: str  # MLflow's run status
    requeue: bool  # the trial's parameters are queued to run again as a new trial
    meaning: str

    def tags(self, reason: str = "", pruned_epoch: int | None = None) -> dict[str, str]:
        """The run tags this outcome writes."""
        tags = {TAG_STATE: self.name}
        if reason:
            tags[TAG_REASON] = reason
        if pruned_epoch is not None:
            tags[TAG_PRUNED_EPOCH] = str(pruned_epoch)
        return tags


# Trials (and `pipeline train` runs, which end complete, failed, out of memory or interrupted).
COMPLETE = Outcome("complete", "COMPLETE", "FINISHED", False,
                   "trained to the end; its model is logged")
PRUNED = Outcome("pruned", "PRUNED", "KILLED", False,
                 "stopped early by the pruner: weaker than earlier trials at the same point")
DIVERGED = Outcome("diverged", "PRUNED", "KILLED", False,
                   "its loss became NaN or infinite: bad hyperparameters, not a fault")
FAILED = Outcome("failed", "FAIL", "FAILED", False,
                 "an error in training or logging; the study goes on")
OUT_OF_MEMORY = Outcome("out-of-memory", "FAIL", "FAILED", False,
                        "the network did not fit in memory; the study goes on")
INTERRUPTED = Outcome("interrupted", "FAIL", "KILLED", True,
                      "stopped by Ctrl-C or SIGTERM; its parameters run again on resume")
DEAD_WORKER = Outcome("dead-worker", "FAIL", "KILLED", True,
                      "its worker process died (killed, crashed, lost its machine); runs again")
INFRASTRUCTURE = Outcome("infrastructure", "FAIL", "KILLED", True,
                         "the tracking server or the study's storage was unreachable, or kept "
                         "failing its requests: nothing about its hyperparameters; runs again")
DISK_FULL = Outcome("disk-full", "FAIL", "FAILED", True,
                    "no space left where its run, model or pictures are written; runs again")

TRIAL_OUTCOMES = (COMPLETE, PRUNED, DIVERGED, FAILED, OUT_OF_MEMORY, INTERRUPTED, DEAD_WORKER,
                  INFRASTRUCTURE, DISK_FULL)

# The study's own (parent) run.
STUDY_FINISHED = Outcome("finished", "", "FINISHED", False, "the study reached its target")
STUDY_INTERRUPTED = Outcome("interrupted", "", "KILLED", False, "the search was stopped")
STUDY_FAILED = Outcome("failed", "", "FAILED", False, "a worker process failed")

_BY_NAME = {o.name: o for o in TRIAL_OUTCOMES}


def by_name(name: str | None) -> Outcome | None:
    """A trial outcome from its recorded name (None when nothing was recorded)."""
    return _BY_NAME.get(name or "")


def for_finished_trial(state_name: str, recorded: str | None) -> Outcome:
    """The outcome of a finished trial from its Optuna state and the outcome it recorded.

    A trial that failed without recording why was failed from outside: its worker died (this
    machine's reconcile, or another machine's heartbeat check).
    """
    outcome = by_name(recorded)
    if outcome is not None and outcome.trial_state == state_name:
        return outcome
    return {"COMPLETE": COMPLETE, "PRUNED": PRUNED}.get(state_name, DEAD_WORKER)


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text
                                                or "can't allocate memory" in text)


def outcome_of(error: BaseException | None) -> Outcome:
    """How a run ended, from the exception that ended it (None: it ended normally)."""
    if error is None:
        return COMPLETE
    if isinstance(error, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(error, NonFiniteLossError):
        return DIVERGED
    fault = fault_of(error)
    if fault is not None:
        return DISK_FULL if fault.kind == DISK else INFRASTRUCTURE
    optuna = sys.modules.get("optuna")
    if optuna is not None and isinstance(error, optuna.TrialPruned):
        return PRUNED
    if is_out_of_memory(error):
        return OUT_OF_MEMORY
    return FAILED


def reason_for(outcome: Outcome, error: BaseException | None) -> str:
    """The reason recorded on the trial and its run, in the outcome's own words."""
    if outcome is COMPLETE or error is None:
        return ""
    if outcome is PRUNED:
        return str(error)
    if outcome is DIVERGED:
        return f"diverged: {error}"
    if outcome is INTERRUPTED:
        return "interrupted (Ctrl-C or SIGTERM); queued to run again"
    described = type(error).__name__ + (f": {first_line(error, limit=500)}"
                                        if str(error).strip() else "")
    prefix = {OUT_OF_MEMORY: "out of memory", INFRASTRUCTURE: "infrastructure fault",
              DISK_FULL: "disk full"}.get(outcome)
    return f"{prefix}: {described}" if prefix else described


def dead_worker_reason(worker: str) -> str:
    return f"worker {worker} died while running it; queued to run again"
