"""The search: open or resume the study, close what dead workers left (orphans), claim and run
trials until the study holds its target (loop), one trial from sampled parameters to its closed
run (trial)."""

from pipeline.core.exports import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "loop": ["SearchInterrupted", "SearchOutcome", "choose_space", "open_search", "run_search"],
    "request": ["SearchRequest"],
    "orphans": ["reconcile"],
    "trial": ["TrialRunner"],
})
