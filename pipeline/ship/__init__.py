"""Shipping a model: promotion into the MLflow Model Registry and what it holds (registry),
McNemar's test of a candidate against the champion (significance), the average of a study's
top networks as one model (ensemble), the logged and registered
models loaded as MLflow serves them (models), any picture made MNIST-like (imaging), `pipeline
predict` (predict), ONNX export (export) and the drawing pad (demo)."""

from pipeline.core.exports import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "registry": ["CostLimits", "candidate_from_run", "candidate_from_study", "held_out_images",
                 "list_versions", "promote", "registry_client", "versions_table"],
    "ensemble": ["DEFAULT_TOP", "ensemble_candidate", "experiment_of", "members_of"],
    "models": ["DigitModel", "load_pyfunc"],
    "predict": ["predict_files", "serving_request"],
    "export": ["export_onnx"],
    "demo": ["run_demo"],
})
