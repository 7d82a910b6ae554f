"""Optuna studies, and nothing of torch or MLflow: search-space files (space), storages and their
URLs (storage), samplers and pruners (samplers), creating, resuming and finding studies (studies),
counting and ranking their trials (trials), the study-wide lock (locking), which worker runs a
trial and whether it lives (liveness), and the few private Optuna names used (optuna_private)."""

from pipeline.core.exports import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "space": ["SearchSpace", "SpaceError", "load_space"],
    "storage": ["default_storage", "open_storage", "redact"],
    "studies": ["StudyError", "create_or_resume", "open_existing_study"],
    "trials": ["TrialCounts", "best_trial", "count_trials", "ranked_trials"],
})
