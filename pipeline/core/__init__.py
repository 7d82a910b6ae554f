"""The foundations every stage stands on: the user-error family, the names written into studies
and runs, the outcome table, typed settings and their flat keys, timings, progress lines.

Nothing here imports torch, Optuna or MLflow: the CLI's light commands load only this.
"""

from pipeline.core.exports import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "errors": ["PipelineError", "UsageError", "DataError", "first_line"],
    "faults": ["DEFAULT_OUTAGE_TIMEOUT"],
    "hparams": ["ALL_FIELDS", "ALL_KEYS", "default_of", "field_kind", "make_config",
                "read_yaml_mapping"],
    "keys": ["ATTR_EXPERIMENT", "ATTR_HEARTBEAT", "ATTR_PARENT_RUN", "CHAMPION", "DEFAULT_ALPHA",
             "DEFAULT_MODEL_NAME", "DEFAULT_MODEL_URI"],
})
