"""`pipeline promote ensemble`: the average of a study's top networks, shipped as one model.

A search trains many good networks and keeps one. Averaging the probabilities of the best few
is the cheapest known step past the best single network on MNIST. The members are the top K
complete trials by validation (choosing still sees validation only); the ensemble is measured on
the validation images its members were, logged as one MLflow model (the same signature and
metadata as a single network's, so `predict`, `mlflow models serve`, the demo and `export` take
it unchanged) in a run of its own in the study's experiment, and then promoted as any candidate
is: the test set, the registry, McNemar's test against the champion (ship.registry).
"""

from __future__ import annotations

import json

import optuna
import torch
from mlflow import MlflowClient

from pipeline.core.errors import first_line
from pipeline.core.keys import (
    ATTR_DATA_CHECKSUM,
    ATTR_EXPERIMENT,
    ATTR_FINGERPRINT,
    ATTR_MODEL_URI,
    ATTR_RUN_ID,
    ATTR_SPACE,
    ATTR_VAL_ACCURACY,
    TAG_MEMBERS,
    TAG_ROLE,
    TAG_STUDY,
)
from pipeline.core.outcomes import COMPLETE, FAILED
from pipeline.core.settings import DataSettings, ModelSpec
from pipeline.data.splits import Mnist, Split, split_train_val
from pipeline.ship.models import DigitModel
from pipeline.ship.registry import Candidate, PromotionError
from pipeline.study.trials import ranked_trials
from pipeline.track.artifacts import log_model
from pipeline.track.runs import Tracker
from pipeline.train.cost import measure_cost
from pipeline.train.model import Ensemble
from pipeline.train.trainer import evaluate

ROLE = "ensemble"  # the TAG_ROLE of an ensemble's run
DEFAULT_TOP = 3


def members_of(study: optuna.Study, top: int) -> list[optuna.trial.FrozenTrial]:
    """The study's ``top`` best complete trials with a logged model, best first."""
    ranked = [t for t in ranked_trials(study) if ATTR_MODEL_URI in t.user_attrs]
    if len(ranked) < top:
        fix = (f"use --top {len(ranked)}, or search more" if len(ranked) >= 2
               else "search more, or promote the best single network with `promote best`")
        raise PromotionError(f"study {study.study_name!r} has {len(ranked)} complete trial(s) "
                             f"with a logged model; an ensemble of {top} needs {top}: {fix}")
    return ranked[:top]


def member_label(members: list[optuna.trial.FrozenTrial]) -> str:
    """How an ensemble's members are named in its run and its registered version: 3+7+1."""
    return "+".join(str(t.number) for t in members)


def experiment_of(study: optuna.Study) -> str:
    """The MLflow experiment the study's trials are in, where its ensembles go too."""
    experiment = study.user_attrs.get(ATTR_EXPERIMENT)
    if experiment is None:
        raise PromotionError(f"study {study.study_name!r} records no MLflow experiment; "
                             "search it with this version of pipeline first")
    return experiment


def ensemble_candidate(study: optuna.Study, top: int, mnist: Mnist, *, tracker: Tracker,
                       echo=print) -> Candidate:
    """The ensemble of the study's ``top`` best trials as a promotion candidate: made, measured
    on validation and logged once; asking again for the same members finds that run."""
    members = members_of(study, top)
    label = member_label(members)
    experiment = experiment_of(study)
    member_runs = ",".join(t.user_attrs[ATTR_RUN_ID] for t in members)
    checksum = study.user_attrs.get(ATTR_DATA_CHECKSUM, "")
    fingerprint = study.user_attrs.get(ATTR_FINGERPRINT, "")
    found = _logged_before(tracker.client, experiment, study.study_name, member_runs)
    if found is not None:
        echo(f"ensemble of trials {label} logged before: run {found.info.run_id}")
        return _candidate(study.study_name, found, label, checksum, fingerprint)
    echo(f"ensemble of the {top} best trials of study {study.study_name!r}: {label}")
    networks, specs = networks_of(members)
    ensemble = Ensemble(networks).eval()
    val = validation_split(study, mnist)
    _, val_accuracy, _ = evaluate(ensemble, val)
    best = members[0].user_attrs.get(ATTR_VAL_ACCURACY, members[0].value)
    echo(f"validation accuracy {val_accuracy:.2%} (the best member alone: {best:.2%})")
    run = tracker.start_run(experiment, f"ensemble-{label}",
                            tags={TAG_ROLE: ROLE, TAG_STUDY: study.study_name,
                                  TAG_MEMBERS: label})
    try:
        run.log_params({"members": label, "top": top, "member_run_ids": member_runs,
                        "data_checksum": checksum, "space_fingerprint": fingerprint})
        run.log_metrics({"val_accuracy": val_accuracy, **measure_cost(ensemble).metrics()})
        log_model(run, ensemble, specs, val.images)
    except BaseException as e:  # a run left RUNNING would look like one still being made
        run.close(FAILED, first_line(e))
        raise
    run.close(COMPLETE)
    return _candidate(study.study_name, tracker.client.get_run(run.run_id), label, checksum,
                      fingerprint)


def _candidate(study: str, run, label: str, checksum: str, fingerprint: str) -> Candidate:
    return Candidate(run_id=run.info.run_id,
                     model_uri=f"models:/{run.outputs.model_outputs[-1].model_id}",
                     study=study, trial_number=label,
                     val_accuracy=float(run.data.metrics["val_accuracy"]),
                     data_checksum=checksum, space_fingerprint=fingerprint, members=label)


def _logged_before(client: MlflowClient, experiment: str, study: str, member_runs: str):
    """The finished run of the same ensemble (the same members' runs), logged by an earlier
    promotion, if there is one."""
    runs = client.search_runs(
        [experiment], max_results=1, order_by=["attributes.start_time DESC"],
        filter_string=(f"attributes.status = 'FINISHED' and tags.`{TAG_ROLE}` = '{ROLE}' and "
                       f"tags.`{TAG_STUDY}` = '{study}' and "
                       f"params.member_run_ids = '{member_runs}'"))
    if not runs or not runs[0].outputs or not runs[0].outputs.model_outputs:
        return None
    return runs[0]


def networks_of(members: list[optuna.trial.FrozenTrial]
                ) -> tuple[list[torch.nn.Module], list[ModelSpec]]:
    """Each member's trained network, rebuilt from its logged model, and its architecture."""
    networks, specs = [], []
    for trial in members:
        model = DigitModel(trial.user_attrs[ATTR_MODEL_URI])
        if model.network is None:
            raise PromotionError(f"trial #{trial.number}'s model carries no architecture to "
                                 "rebuild its network from; it cannot be a member")
        networks.append(model.network)
        specs.append(ModelSpec(**model.pyfunc.metadata.metadata["pipeline_architecture"]))
    return networks, specs


def validation_split(study: optuna.Study, mnist: Mnist) -> Split:
    """The validation images the study's trials were measured on, from the space it recorded."""
    space = json.loads(study.user_attrs.get(ATTR_SPACE, "{}"))
    if "data" not in space:
        raise PromotionError(f"study {study.study_name!r} records no search space to find its "
                             "validation images in; search it with this version of pipeline")
    return split_train_val(mnist, DataSettings(**space["data"])).val
