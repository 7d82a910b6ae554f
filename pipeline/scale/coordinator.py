"""Coordinating a search whose trials run elsewhere (worker processes, Ray actors): one progress
view drawn from the study itself, Ctrl-C and SIGTERM passed on, failures reported, the study
closed and reported once at the end."""

from __future__ import annotations

import contextlib
import signal
import time

from optuna.trial import TrialState

from pipeline.core.errors import PipelineError
from pipeline.core.faults import TRACKING
from pipeline.core.outcomes import STUDY_FAILED
from pipeline.core.progress import SearchProgress
from pipeline.core.signals import interrupt_on_signals
from pipeline.search.loop import SearchOutcome, show_best, show_finished
from pipeline.search.outage import OutageTooLong
from pipeline.search.session import Session, close_search, interrupted, stop_now
from pipeline.study.trials import count_trials

# How often the coordinator asks the tracking server whether it answers (the workers find out on
# their own, and hold what they log; the coordinator is the one that says so).
TRACKING_CHECK_SECONDS = 10.0


class WorkerFailed(PipelineError):
    """A worker ended with an error (its own message is printed above, or named here)."""


class WorkerGroup:
    """The workers of one search, however they run."""

    def running(self) -> bool:
        """Whether any worker is still at work."""
        raise NotImplementedError

    def wait(self, seconds: float) -> None:
        """Wait up to ``seconds`` for workers to end (the progress view redraws after)."""
        raise NotImplementedError

    def stop(self, signum: int) -> None:
        """Ask every worker still running to stop as Ctrl-C would (it fails and queues again the
        trial it runs), wait for them, and make sure none is left behind."""
        raise NotImplementedError

    def failures(self) -> list[str]:
        """One description per worker that ended with an error."""
        raise NotImplementedError


class StudyWatcher:
    """Feeds the progress view from the study: finished trials, best value, running epochs."""

    def __init__(self, study, progress: SearchProgress) -> None:
        self.study = study
        self.progress = progress
        self.seen = {t.number for t in study.get_trials(deepcopy=False)
                     if t.state.is_finished()}
        show_best(progress, study)

    def poll(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        running = [t for t in trials if t.state == TrialState.RUNNING]
        # "3 running: #7@2 #8@1 #9@0": trial numbers and the reports each has made (epochs, or
        # fractions of one when the space reports more often).
        self.progress.running = f"{len(running)} running: " + " ".join(
            f"#{t.number}@{len(t.intermediate_values)}" for t in running[:6]) if running else ""
        for t in trials:
            if t.state.is_finished() and t.number not in self.seen:
                self.seen.add(t.number)
                show_finished(self.progress, self.study, t)
        self.progress.refresh()


def _judge_failures(session: Session, failed: list[str], echo) -> None:
    """Workers that ended with an error: a store down past the timeout, failing or full stops
    the search (75); a dead worker whose trial the others ran again is a note; anything else,
    an error."""
    req = session.req
    if any("exited 75" in f or "OutageTooLong" in f or "StoreFailing" in f or "DiskFull" in f
           for f in failed):
        stop_now(session)
        raise OutageTooLong(f"{'; '.join(failed)}: a store stayed unreachable past "
                            f"--outage-timeout ({req.outage_timeout:g}s), kept failing, or its "
                            "disk filled (each worker said which); the search stopped: run the "
                            "same command once it is back, and it resumes")
    counts = count_trials(session.study)
    if failed and counts.finished >= req.trials and counts.running == 0:
        for failure in failed:  # the others ran its trial again: nothing is missing
            echo(f"note: {failure}; the study holds its {req.trials} trials all the same")
        return
    if failed:
        if counts.running == 0:
            session.parent.close(STUDY_FAILED)
        raise WorkerFailed(f"{'; '.join(failed)}; the others finished; run the same command "
                           "to resume")


def coordinate(session: Session, workers: WorkerGroup, *, echo=print) -> SearchOutcome:
    """Watch ``workers`` work on the session's study until they are done; then close it."""
    req = session.req
    progress = SearchProgress(req.trials, session.counts_at_start.finished, req.space.metric,
                              echo=echo)
    watcher = StudyWatcher(session.study, progress)
    waiter, checked = session.waiter, time.monotonic()
    with interrupt_on_signals() as received:
        try:
            while workers.running():
                waiter.retrying(watcher.poll)  # a storage outage: said once, waited out
                if time.monotonic() - checked > TRACKING_CHECK_SECONDS:
                    waiter.check(TRACKING)  # the workers hold their logs meanwhile
                    checked = time.monotonic()
                workers.wait(1.0)
        except KeyboardInterrupt:
            signum = received.get("signal", signal.SIGINT)
            workers.stop(signum)
            raise interrupted(session, signum) from None
        except OutageTooLong:
            workers.stop(signal.SIGTERM)
            stop_now(session)
            raise
        finally:
            workers.stop(signal.SIGTERM)  # whatever happened here, leave no worker behind
            with contextlib.suppress(Exception):  # a storage that is down: no last look
                watcher.poll()
            progress.close()
    _judge_failures(session, workers.failures(), echo)
    files = session.waiter.retrying(close_search, session, echo=echo)
    return SearchOutcome(session.study, session.parent.run_id, session.experiment_id, files)
