"""The study's sampler and pruner, made from its search space: seeded per trial, so that every
process that resumes or joins a study draws differently and the study stays reproducible."""

from __future__ import annotations

import warnings

import optuna

from pipeline.study.space import SearchSpace


def _tpe_options(space: SearchSpace) -> dict:
    # Conditional parameters (`when`) make the space dynamic; group=True lets multivariate TPE
    # model each sub-space instead of falling back to independent sampling.
    return {"n_startup_trials": space.sampler["n_startup_trials"], "multivariate": True,
            "group": any(p.when for p in space.params), "constant_liar": True}


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler for ask-and-tell: after a trial, Optuna's would call study.stop()
    once the grid is used up, which is allowed only inside study.optimize. The search asks
    is_exhausted() itself before it claims a trial (search.claim.claim_next_trial)."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def make_sampler(space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    kind = space.sampler["type"]
    if kind == "grid":
        return GridSampler(space.grid(), seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, **_tpe_options(space))


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Seeds the sampler afresh for every trial, from the study's seed and the trial number.

    A sampler seeded once per process replays its first random draws in every process that
    resumes the study or joins it. Seeding by trial number keeps a study reproducible, and no two
    trials (in any process, on any machine) draw alike.
    """

    def __init__(self, factory, seed: int) -> None:
        self._factory = factory
        self._seed = seed
        self._inner = factory(seed)

    def before_trial(self, study, trial) -> None:
        self._inner = self._factory(self._seed + trial.number)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()

    def is_exhausted(self, study) -> bool:
        """For a grid: every combination has run."""
        check = getattr(self._inner, "is_exhausted", None)
        return bool(check and check(study))


def seeded_sampler(space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    if space.sampler["type"] == "grid":
        # The grid sampler maps grid ids through one seeded shuffle: every process and every
        # trial must share that seed, or ids would name different points.
        return make_sampler(space, seed)
    return TrialSeededSampler(lambda s: make_sampler(space, s), seed)


def sampler_settings(space: SearchSpace, seed: int) -> dict:
    settings = {"type": space.sampler["type"], "seed": seed,
                "seeding": "seed" if space.sampler["type"] == "grid" else "seed + trial number"}
    if settings["type"] == "tpe":
        settings.update(_tpe_options(space))
    return settings


def make_pruner(space: SearchSpace) -> optuna.pruners.BasePruner:
    """The space's pruner. Its steps are reports: epochs, or fractions of one
    (``reports_per_epoch``), which the resources of the multi-fidelity pruners count too."""
    p = space.pruner
    if p["type"] == "none":
        return optuna.pruners.NopPruner()
    if p["type"] == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=p["min_resource"], reduction_factor=p["reduction_factor"],
            min_early_stopping_rate=p["min_early_stopping_rate"],
            bootstrap_count=p.get("bootstrap_count", 0))
    if p["type"] == "hyperband":
        # The most a trial can report: the space's largest epoch count, in reports.
        return optuna.pruners.HyperbandPruner(
            min_resource=p["min_resource"], max_resource=space.max_reports(),
            reduction_factor=p["reduction_factor"])
    return optuna.pruners.MedianPruner(n_startup_trials=p["n_startup_trials"],
                                       n_warmup_steps=p["n_warmup_steps"],
                                       interval_steps=p["interval_steps"])


