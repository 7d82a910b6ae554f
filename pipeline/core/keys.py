"""Every name `pipeline` writes into Optuna studies, MLflow runs and the Model Registry, once.

Plain strings and nothing else: any module (the CLI's light commands included) can import this
without loading torch, Optuna or MLflow.
"""

from __future__ import annotations

# MLflow run tags that tie runs to studies and trials; the registry and reconcile read them back.
TAG_ROLE = "pipeline.role"  # "study", "trial", "train" or "ensemble"
TAG_STUDY = "pipeline.study"
TAG_STORAGE = "pipeline.study.storage"
TAG_TRIAL = "pipeline.trial_number"
TAG_TRIAL_ID = "pipeline.optuna_trial_id"
TAG_STATE = "pipeline.state"  # the outcome's name: see outcomes.py
TAG_PRUNED_EPOCH = "pipeline.pruned_epoch"
TAG_REASON = "pipeline.reason"  # why a trial was pruned, failed or interrupted
TAG_SAMPLED = "pipeline.sampled_params"
TAG_WORKER = "pipeline.worker"
TAG_RETRY_OF = "pipeline.retry_of"  # the trial number a retried trial runs again
TAG_MEMBERS = "pipeline.members"  # an ensemble's trials, best first: 3+7+1
TAG_BEST_TRIAL = "pipeline.best_trial"
TAG_BEST_RUN = "pipeline.best_run_id"

# Study user attributes written by `pipeline search`.
ATTR_FINGERPRINT = "space_fingerprint"
ATTR_SPACE = "space"
ATTR_SPACE_FILE = "space_file"
ATTR_SPACE_HISTORY = "space_history"
ATTR_SAMPLER = "sampler"
ATTR_EXPERIMENT = "mlflow_experiment_id"
ATTR_PARENT_RUN = "mlflow_parent_run_id"
ATTR_DATA_CHECKSUM = "data_checksum"
ATTR_TARGET = "target_trials"
ATTR_HEARTBEAT = "heartbeat"  # {"interval": s, "grace": s}: how workers judge each other

# Trial user attributes.
ATTR_RUN_ID = "mlflow_run_id"
ATTR_WORKER = "worker"
ATTR_OUTCOME = "outcome"  # the outcome's name: see outcomes.py
ATTR_REASON = "reason"
ATTR_PRUNED_EPOCH = "pruned_epoch"
ATTR_MODEL_URI = "model_uri"
ATTR_VAL_ACCURACY = "val_accuracy"  # whatever the study's metric, promotion reports this
ATTR_TRAIN_SECONDS = "train_seconds"
# What a trial's network costs to run (train.cost): on the trial one attribute, a dict of these
# keys; on its run, metrics cost_<key>.
ATTR_COST = "cost"
COST_KEYS = ("params", "flops_per_image", "latency_ms", "images_per_second")
ATTR_OVERHEAD_SECONDS = "overhead_seconds"
ATTR_EPOCHS = "epochs_trained"  # passes over the training images, e.g. 0.25 when pruned early
ATTR_SECONDS = "seconds"  # the trial's time by phase (timings.py)

# Trial system attributes of a retried trial; the same names as Optuna's
# RetryHeartbeatStaleTrialCallback writes, so both kinds of retry read alike.
SYS_FAILED_TRIAL = "failed_trial"
SYS_RETRY_HISTORY = "retry_history"

# The Model Registry.
DEFAULT_MODEL_NAME = "mnist-cnn"
CHAMPION = "champion"
DEFAULT_MODEL_URI = f"models:/{DEFAULT_MODEL_NAME}@{CHAMPION}"  # what predict, export, demo read
VERSION_TAG_PREFIX = "pipeline."  # lineage tags on registered versions: pipeline.study, ...
# A candidate takes the champion's alias when better at p < this (ship.significance).
DEFAULT_ALPHA = 0.05
