"""One training recorded in MLflow: the tracking store, its experiments and runs (runs), what a
trained network leaves in its run (artifacts), a configuration trained while its run records it
(tracked_training), `pipeline train` top to bottom (train_command) and MLflow's UI (mlflow_ui).
Knows no Optuna."""

from pipeline.core.exports import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "runs": ["RunLog", "Tracker", "TrackingError", "ensure_reachable", "existing_tracker",
             "library_versions"],
    "artifacts": ["MODEL_SIGNATURE", "log_diagnostics", "log_model"],
    "tracked_training": ["TrackedFit", "TrainingJob", "tracked_fit"],
    "train_command": ["train_one"],
    "mlflow_ui": ["run_ui"],
})
