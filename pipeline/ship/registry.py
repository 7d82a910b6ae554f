"""Promotion into the MLflow Model Registry, and what the registry holds.

`pipeline promote` takes the best complete trial of a study (or a given run), measures its
logged model on the held-out test set (the first time the test set is used), registers it with
its lineage, checks that the registered version loads and answers the same, and only then moves
the alias ``champion`` to it: when there is a champion, only if the candidate is better on the
same test images by McNemar's exact test (ship.significance), not merely a few images ahead.
Moving the alias is the commit point: anything that fails before leaves ``champion`` where it
was. Promoting the same run again finds its version instead of making another.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.core import metric
from pipeline.core.errors import PipelineError, UsageError, first_line
from pipeline.core.keys import (
    ATTR_COST,
    ATTR_DATA_CHECKSUM,
    ATTR_FINGERPRINT,
    ATTR_MODEL_URI,
    ATTR_RUN_ID,
    ATTR_VAL_ACCURACY,
    CHAMPION,
    DEFAULT_ALPHA,
    DEFAULT_MODEL_NAME,
    TAG_STUDY,
    TAG_TRIAL,
    VERSION_TAG_PREFIX,
)
from pipeline.core.stores import require_tracking_store
from pipeline.data.splits import Mnist, to_unit_pixels
from pipeline.ship.models import load_pyfunc
from pipeline.ship.significance import PairedComparison, compare
from pipeline.study.studies import open_existing_study, study_metric
from pipeline.study.trials import best_trial, ranked_trials
from pipeline.track.runs import Tracker, TrackingError
from pipeline.train.diagnostics import DIGITS


class PromotionError(PipelineError):
    """Nothing to promote, or the candidate failed a check; the champion is unchanged."""


@dataclass(frozen=True)
class Candidate:
    run_id: str
    model_uri: str
    study: str
    trial_number: str
    val_accuracy: float
    data_checksum: str
    space_fingerprint: str
    within: str = ""  # the cost limits it was chosen within, and its cost, when there were any
    members: str = ""  # an ensemble's trials (ship.ensemble), e.g. 3+7+1

    def describe(self) -> str:
        if self.members:
            where = f"the ensemble of trials {self.members} of study {self.study!r}"
        elif self.study:
            where = f"trial #{self.trial_number} of study {self.study!r}"
        else:
            where = "a `pipeline train` run"
        within = f"; {self.within}" if self.within else ""
        return f"{where} (run {self.run_id}, validation {self.val_accuracy:.2%}){within}"


@dataclass(frozen=True)
class Promotion:
    name: str
    version: str
    test_accuracy: float
    new_version: bool  # False when the run was registered before
    champion_before: tuple[str, float] | None  # (version, test accuracy)
    is_champion: bool
    comparison: PairedComparison | None  # against the champion before, when there was one


def registry_client(tracker: Tracker | None = None) -> MlflowClient:
    """A client for the registry, checked to answer; an unreachable one is a clear error."""
    # A reading command must not create an empty store.
    require_tracking_store(mlflow.get_tracking_uri())
    tracker = tracker or Tracker()  # a tracking server that does not answer fails here
    try:
        tracker.client.search_registered_models(max_results=1)
    except Exception as e:  # noqa: BLE001 - every store reports failures its own way
        raise TrackingError(f"the MLflow registry at {tracker.uri} is unreachable: "
                            f"{first_line(e)}") from None
    return tracker.client


@dataclass(frozen=True)
class CostLimits:
    """The most a promoted network may cost to run (train.cost); None: no limit."""

    max_params: int | None = None
    max_latency_ms: float | None = None

    def __bool__(self) -> bool:
        return self.max_params is not None or self.max_latency_ms is not None

    def admit(self, trial) -> bool:
        """Within every limit, as measured; a trial without a measured cost is not."""
        cost = trial.user_attrs.get(ATTR_COST, {})
        params, latency = cost.get("params"), cost.get("latency_ms")
        if self.max_params is not None and (params is None or params > self.max_params):
            return False
        return not (self.max_latency_ms is not None
                    and (latency is None or latency > self.max_latency_ms))

    def describe(self) -> str:
        parts = ([f"at most {self.max_params:,} parameters"] if self.max_params is not None
                 else [])
        if self.max_latency_ms is not None:
            parts.append(f"a one-image CPU latency of at most {self.max_latency_ms:g} ms")
        return " and ".join(parts)


def _best_within(study, limits: CostLimits):
    """The best complete trial with a logged model within ``limits`` (the best of all without)."""
    if not limits:
        return best_trial(study)
    ranked = [t for t in ranked_trials(study) if ATTR_MODEL_URI in t.user_attrs]
    within = [t for t in ranked if limits.admit(t)]
    if within:
        return within[0]
    if not ranked:
        return None
    measured = [t.user_attrs[ATTR_COST] for t in ranked if ATTR_COST in t.user_attrs]
    if not measured:
        raise PromotionError(f"no complete trial of study {study.study_name!r} has a measured "
                             "cost to check against the limits; search again with this version "
                             "of pipeline, or promote without --max-params/--max-latency-ms")
    smallest = min(cost["params"] for cost in measured)
    fastest = min(cost["latency_ms"] for cost in measured)
    raise PromotionError(
        f"no complete trial of study {study.study_name!r} has {limits.describe()} (the smallest "
        f"has {smallest:,} parameters, the fastest {fastest:.2f} ms); raise the "
        "limits, or search a smaller space")


def candidate_from_study(storage_url: str, study_name: str | None,
                         limits: CostLimits = CostLimits()) -> Candidate:
    """The study's best complete trial by validation, within ``limits`` when there are any."""
    study = open_existing_study(storage_url, study_name)
    name = study.study_name
    best = _best_within(study, limits)
    if best is None or ATTR_MODEL_URI not in best.user_attrs:
        raise PromotionError(f"study {name!r} has no complete trial with a logged model yet; "
                             "run `pipeline search` first")
    if study_metric(study) == metric.ACCURACY:
        val = best.value
    else:  # a loss-optimising study: its trials record their validation accuracy beside it
        val = best.user_attrs.get(ATTR_VAL_ACCURACY, float("nan"))
    within = ""
    if limits:
        cost = best.user_attrs[ATTR_COST]
        within = (f"{cost['params']:,} parameters, {cost['latency_ms']:.2f} ms, within "
                  f"{limits.describe()}")
    return Candidate(run_id=best.user_attrs[ATTR_RUN_ID],
                     model_uri=best.user_attrs[ATTR_MODEL_URI], study=name,
                     trial_number=str(best.number), val_accuracy=float(val),
                     data_checksum=study.user_attrs.get(ATTR_DATA_CHECKSUM, ""),
                     space_fingerprint=study.user_attrs.get(ATTR_FINGERPRINT, ""),
                     within=within)


def candidate_from_run(client: MlflowClient, run_id: str) -> Candidate:
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise PromotionError(f"no MLflow run {run_id!r} in {mlflow.get_tracking_uri()}") from None
    if run.info.status != "FINISHED":
        raise PromotionError(f"run {run_id} is {run.info.status}, not FINISHED; only complete "
                             "trials and finished `pipeline train` runs can be promoted")
    # A run records the models it logged among its outputs.
    outputs = run.outputs.model_outputs if run.outputs else []
    if not outputs:
        raise PromotionError(f"run {run_id} has no logged model")
    tags, params = run.data.tags, run.data.params
    return Candidate(run_id=run_id, model_uri=f"models:/{outputs[-1].model_id}",
                     study=tags.get(TAG_STUDY, ""), trial_number=tags.get(TAG_TRIAL, ""),
                     val_accuracy=float(run.data.metrics.get("val_accuracy", float("nan"))),
                     data_checksum=params.get("data_checksum", ""),
                     space_fingerprint=params.get("space_fingerprint", ""))


def held_out_images(mnist: Mnist) -> tuple[np.ndarray, np.ndarray]:
    return to_unit_pixels(mnist.test.images).numpy(), mnist.test.labels.numpy()


def predict_digits(model_uri: str, images: np.ndarray, batch: int = 2000) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="pipeline-model-") as scratch:
        model = load_pyfunc(model_uri, dst_path=scratch)
        return np.concatenate([model.predict(images[i:i + batch])
                               for i in range(0, len(images), batch)])


def _log_test_report(client: MlflowClient, run_id: str, labels: np.ndarray,
                     predicted: np.ndarray, echo) -> None:
    """Precision, recall and F1 of every digit on the test set, as scikit-learn reports them,
    logged beside the run's validation confusion matrix; the weakest digit is named."""
    from sklearn.metrics import classification_report

    report = classification_report(labels, predicted, labels=DIGITS,
                                   output_dict=True, zero_division=0)
    client.log_dict(run_id, report, "test_report.json")
    weakest = min(DIGITS, key=lambda d: report[str(d)]["f1-score"])
    scores = report[str(weakest)]
    echo(f"weakest digit on the test set: {weakest} (precision {scores['precision']:.2%}, "
         f"recall {scores['recall']:.2%}); every digit's scores: test_report.json in the run")


def _tag(version, key: str, default: str = "") -> str:
    return version.tags.get(VERSION_TAG_PREFIX + key, default)


def current_champion(client: MlflowClient, name: str):
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def promote(candidate: Candidate, mnist: Mnist, *, client: MlflowClient,
            name: str = DEFAULT_MODEL_NAME, alpha: float = DEFAULT_ALPHA, force: bool = False,
            echo=print) -> Promotion:
    """Measure the candidate on the test set, register it (once), compare it with the champion
    on the same test images, then move the champion alias as the champion rule says
    (decide_champion). The comparison and the decision are tagged on the candidate's version.
    Moving the alias is the commit point."""
    echo(f"candidate: {candidate.describe()}")
    images, labels = held_out_images(mnist)
    version, test_accuracy, new_version, predicted = _register(candidate, images, labels,
                                                               client, name, echo)
    champion = current_champion(client, name)
    before = (None if champion is None
              else (str(champion.version), float(_tag(champion, "test_accuracy", "nan"))))
    comparison = None
    if champion is not None and str(champion.version) != str(version.version):
        if predicted is None:  # registered before
            predicted = _test_predictions(client, candidate.run_id, candidate.model_uri, images,
                                          "the candidate's model")
        champion_predicted = _test_predictions(
            client, champion.run_id, f"models:/{name}/{champion.version}", images,
            f"the {CHAMPION}'s model (version {champion.version})")
        comparison = compare(predicted == labels, champion_predicted == labels)
    decision = decide_champion(str(version.version), test_accuracy, before, comparison,
                               alpha=alpha, force=force)
    for line in decision.lines:
        echo(line)
    if comparison is not None:
        _tag_comparison(client, name, str(version.version), before[0], comparison, alpha,
                        decision.outcome)
    if decision.move:
        client.set_registered_model_alias(name, CHAMPION, version.version)  # the commit point
        echo(f"{name}@{CHAMPION} -> version {version.version}")
    return Promotion(name, version.version, test_accuracy, new_version, before,
                     decision.is_champion, comparison)


TEST_PREDICTIONS = "test_predictions.npy"  # on the run: its model's digit for each test image


def _log_test_predictions(client: MlflowClient, run_id: str, predicted: np.ndarray) -> None:
    """Kept with the run, so that comparing it with another model later reads 10 KB instead of
    loading the model and reading the test set again."""
    from pathlib import Path

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / TEST_PREDICTIONS
        np.save(path, predicted.astype(np.uint8))
        client.log_artifact(run_id, str(path))


def _test_predictions(client: MlflowClient, run_id: str | None, model_uri: str,
                      images: np.ndarray, what: str) -> np.ndarray:
    """The model's digit for each test image: as its run kept them at registration, or, for a
    version registered before runs kept them, read again by the model."""
    if run_id:
        with tempfile.TemporaryDirectory() as scratch:
            try:
                kept = np.load(client.download_artifacts(run_id, TEST_PREDICTIONS, scratch))
            except Exception:  # noqa: BLE001 - not kept (older version), or unreadable
                kept = None
        if kept is not None and len(kept) == len(images):
            return kept.astype(np.int64)
    return _read_test_images(model_uri, images, what)


def _read_test_images(model_uri: str, images: np.ndarray, what: str) -> np.ndarray:
    """The model's digit for each test image, read by the model; one that cannot load is a
    PromotionError naming ``what`` it is."""
    try:
        return predict_digits(model_uri, images)
    except Exception as e:  # noqa: BLE001 - a model that cannot load cannot be promoted
        raise PromotionError(f"{what} {model_uri} does not load: {first_line(e)}; the "
                             f"{CHAMPION} is unchanged") from None


def _tag_comparison(client: MlflowClient, name: str, version: str, champion: str,
                    comparison: PairedComparison, alpha: float, outcome: str) -> None:
    """The comparison with the champion, and what was decided, on the candidate's version."""
    tags = {"compared_with_version": champion,
            "candidate_only_right": str(comparison.candidate_only),
            "champion_only_right": str(comparison.champion_only),
            "mcnemar_p": f"{comparison.p_value:.6g}", "alpha": f"{alpha:g}",
            "decision": outcome}
    for key, value in tags.items():
        client.set_model_version_tag(name, version, VERSION_TAG_PREFIX + key, value)


@dataclass(frozen=True)
class ChampionDecision:
    move: bool  # move the alias to the candidate
    is_champion: bool  # the candidate is the champion afterwards
    lines: tuple[str, ...]  # what the user is told, in order
    outcome: str = ""  # better / forced / kept (tagged on the version), "" without a champion


def decide_champion(candidate: str, accuracy: float, champion: tuple[str, float] | None,
                    comparison: PairedComparison | None = None, *, alpha: float = DEFAULT_ALPHA,
                    force: bool = False) -> ChampionDecision:
    """The champion rule: the candidate version (with its test ``accuracy``) takes the alias
    when there is no ``champion`` (version, test accuracy) yet, or when the ``comparison`` on
    the same test images shows it better at p < ``alpha``; ``force`` moves it anyway. A
    candidate that is the champion already moves nothing."""
    if champion is None:
        return ChampionDecision(True, True, ())
    version, held = champion
    if version == candidate:
        return ChampionDecision(False, True, (f"version {candidate} is already the {CHAMPION}",))
    lines = [f"current {CHAMPION}: version {version}, test accuracy {held:.2%}; "
             f"candidate: version {candidate}, test accuracy {accuracy:.2%}"]
    if comparison is not None:
        lines.append(comparison.describe())
    if comparison is not None and comparison.better_at(alpha):
        lines.append(f"the candidate is better at p < {alpha:g}")
        return ChampionDecision(True, True, tuple(lines), "better")
    if force:
        lines.append(f"moved by --force: the candidate is not shown better at p < {alpha:g}")
        return ChampionDecision(True, True, tuple(lines), "forced")
    lines.append(f"{CHAMPION} stays at version {version}: the candidate is not shown better at "
                 f"p < {alpha:g} (--force to move it anyway)")
    return ChampionDecision(False, False, tuple(lines), "kept")


def _register(candidate: Candidate, images: np.ndarray, labels: np.ndarray,
              client: MlflowClient, name: str, echo):
    """The candidate's registered version, its test accuracy, whether it is new, and its
    predictions on the test images when they were made here (None when found): found when the
    run was registered before, else measured on the test set, registered with its lineage, and
    checked to load and answer like the run's model."""
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{candidate.run_id}'")
    if existing:
        version = max(existing, key=lambda v: int(v.version))
        test_accuracy = float(_tag(version, "test_accuracy", "nan"))
        echo(f"already registered as {name} version {version.version} "
             f"(test accuracy {test_accuracy:.2%}); no new version")
        return version, test_accuracy, False, None
    predicted = _read_test_images(candidate.model_uri, images, "the candidate's model")
    test_accuracy = float((predicted == labels).mean())
    echo(f"test accuracy on the 10,000 held-out images: {test_accuracy:.2%}")
    client.log_metric(candidate.run_id, "test_accuracy", test_accuracy)
    _log_test_report(client, candidate.run_id, labels, predicted, echo)
    _log_test_predictions(client, candidate.run_id, predicted)
    lineage = {"study": candidate.study, "trial_number": candidate.trial_number,
               "run_id": candidate.run_id, "val_accuracy": f"{candidate.val_accuracy:.6f}",
               "test_accuracy": f"{test_accuracy:.6f}", "data_checksum": candidate.data_checksum,
               "space_fingerprint": candidate.space_fingerprint,
               "model_uri": candidate.model_uri}
    if candidate.members:
        lineage["members"] = candidate.members
    tags = {VERSION_TAG_PREFIX + k: v for k, v in lineage.items()}
    version = mlflow.register_model(candidate.model_uri, name, tags=tags)
    client.update_model_version(
        name, version.version,
        description=f"{candidate.describe()}; test accuracy {test_accuracy:.2%}")
    # The registered copy must load and answer exactly as the candidate did.
    check = predict_digits(f"models:/{name}/{version.version}", images[:500])
    if not np.array_equal(check, predicted[:500]):
        raise PromotionError(f"{name} version {version.version} does not answer like its "
                             "run's model; the champion is unchanged")
    client.set_model_version_tag(name, version.version, VERSION_TAG_PREFIX + "verified", "true")
    echo(f"registered {name} version {version.version}; it loads and answers like the run")
    return version, test_accuracy, True, predicted


@dataclass(frozen=True)
class VersionRow:
    version: str
    aliases: list[str]
    test_accuracy: str
    val_accuracy: str
    study: str
    trial: str
    run_id: str
    created: str


def list_versions(client: MlflowClient, name: str) -> list[VersionRow]:
    import datetime

    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        known = [m.name for m in client.search_registered_models()]
        hint = f"; registered models: {', '.join(known)}" if known else ""
        raise UsageError(f"no registered model {name!r} yet{hint}; run `pipeline promote best`")

    def pct(value: str) -> str:
        try:
            return f"{float(value):.2%}"
        except ValueError:
            return "–"

    # Version search results do not carry aliases; the registered model does.
    aliases: dict[str, list[str]] = {}
    for alias, number in client.get_registered_model(name).aliases.items():
        aliases.setdefault(str(number), []).append(alias)
    rows = []
    for v in sorted(versions, key=lambda v: int(v.version), reverse=True):
        created = datetime.datetime.fromtimestamp(v.creation_timestamp / 1000)
        rows.append(VersionRow(
            version=str(v.version), aliases=sorted(aliases.get(str(v.version), [])),
            test_accuracy=pct(_tag(v, "test_accuracy")),
            val_accuracy=pct(_tag(v, "val_accuracy")), study=_tag(v, "study") or "–",
            trial=_tag(v, "trial_number") or "–", run_id=v.run_id or "",
            created=created.strftime("%Y-%m-%d %H:%M")))
    return rows


def versions_table(name: str, rows: list[VersionRow]) -> str:
    header = ["version", "aliases", "test acc", "val acc", "study", "trial", "run", "created"]
    cells = [[r.version, ",".join(r.aliases) or "–", r.test_accuracy, r.val_accuracy, r.study,
              r.trial, r.run_id[:12], r.created] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    lines = [f"registered model {name!r}:",
             "  " + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
              for row in cells]
    return "\n".join(lines)

