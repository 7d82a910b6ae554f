"""Networks and their training, knowing neither MLflow nor Optuna: the CNN family built from a
spec (model), where and how it trains (plan), the training loop and evaluation (trainer, steps),
and what a trained network gets wrong (diagnostics)."""

from pipeline.core.exports import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "model": ["DigitReader", "build_model", "describe", "parameter_count"],
    "plan": ["ExecutionPlan", "choose_device", "plan_execution"],
    "trainer": ["EpochStats", "FitResult", "Report", "evaluate", "fit"],
    "diagnostics": ["Diagnostics", "diagnose"],
})
