"""The search: what it is asked (request), its study opened and closed (session), its first
trials taken from an earlier study or model (warm_start), trials claimed under the study lock
(claim) and run until the study holds its target (loop), one trial from sampled parameters to its
closed run (trial), and what dead workers left closed (orphans)."""

from pipeline.core.exports import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "loop": ["SearchOutcome", "choose_space", "run_search"],
    "session": ["SearchInterrupted", "open_search"],
    "request": ["SearchRequest"],
    "orphans": ["reconcile"],
    "trial": ["TrialRunner"],
})
