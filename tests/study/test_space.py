"""Search-space files: the shipped ones load; every malformed one is refused clearly, early."""

from __future__ import annotations

import itertools
import textwrap

import optuna
import pytest
from helpers import assert_one_line_error, run_cli

from pipeline.core.errors import UsageError
from pipeline.study.space import load_space

GOOD = textwrap.dedent("""\
    study:
      metric: val_accuracy
      sampler: {type: tpe, seed: 0, n_startup_trials: 2}
      pruner: {type: median, n_startup_trials: 1, n_warmup_steps: 0}
    data: {val_size: 500, train_subset: 1000}
    fixed: {epochs: 2, fc_width: 16}
    params:
      width: {type: categorical, choices: [4, 8]}
      optimizer: {type: categorical, choices: [adamw, sgd]}
      lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
      momentum: {type: float, low: 0.8, high: 0.95, when: {optimizer: [sgd]}}
""")


def test_shipped_spaces_load_and_default_falls_back_to_cpu():
    default, cpu, seeds = load_space("default"), load_space("cpu"), load_space("seeds")
    assert default.cpu_fallback == "cpu.yaml"
    assert cpu.cpu_fallback is None
    assert default.direction == cpu.direction == "maximize"
    assert seeds.sampler["type"] == "grid" and len(seeds.grid()["model"]) == 7
    assert len({default.fingerprint, cpu.fingerprint, seeds.fingerprint}) == 3


def test_seed_presets_expand_to_the_reports_networks():
    seeds = load_space("seeds")
    flat = seeds.hyperparameters({"model": "report_b", "optimiser": "adam_1e-3",
                                  "rotation": 10.0})
    assert flat["width"] == 16 and flat["kernel_size"] == 5 and flat["fc_layers"] == 0
    assert flat["optimizer"] == "adam" and flat["lr"] == 1e-3 and flat["rotation"] == 10.0
    assert flat["batch_size"] == 64 and flat["epochs"] == 3
    # Reports F (residual) and H (MLP) are points of the space too: every report has its row.
    assert len(list(itertools.product(*seeds.grid().values()))) == 56
    residual = seeds.hyperparameters({"model": "report_f", "optimiser": "adam_1e-3",
                                      "rotation": 0.0})
    assert residual["residual"] is True and residual["padding"] == "valid"
    mlp = seeds.hyperparameters({"model": "report_h", "optimiser": "sgd_0.01_m0.5",
                                 "rotation": 0.0})
    assert mlp["depth"] == 0 and mlp["fc_shrink"] == 3 and mlp["fc_batch_norm"] is True


def test_fingerprint_ignores_comments_and_layout_but_not_values(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text(GOOD)
    b = tmp_path / "b.yaml"
    b.write_text("# a comment\n" + GOOD.replace("{type: categorical, choices: [4, 8]}",
                                               "\n    type: categorical\n    choices: [4, 8]"))
    c = tmp_path / "c.yaml"
    c.write_text(GOOD.replace("high: 1.0e-1", "high: 2.0e-1"))
    assert load_space(a).fingerprint == load_space(b).fingerprint
    assert load_space(a).fingerprint != load_space(c).fingerprint


def test_reporting_once_per_epoch_spelled_out_keeps_the_fingerprint(tmp_path):
    """Studies made before reports_per_epoch existed resume without --force."""
    plain, spelled, quarters = (tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml")
    plain.write_text(GOOD)
    spelled.write_text(GOOD.replace("n_warmup_steps: 0}", "n_warmup_steps: 0, "
                                                          "reports_per_epoch: 1}"))
    quarters.write_text(GOOD.replace("n_warmup_steps: 0}", "n_warmup_steps: 0, "
                                                           "reports_per_epoch: 4}"))
    assert load_space(plain).fingerprint == load_space(spelled).fingerprint
    assert load_space(plain).fingerprint != load_space(quarters).fingerprint
    assert load_space(quarters).reports_per_epoch == 4
    halving = tmp_path / "d.yaml"
    halving.write_text(GOOD.replace("{type: median, n_startup_trials: 1, n_warmup_steps: 0}",
                                    "{type: successive_halving}"))
    with_default = tmp_path / "e.yaml"
    with_default.write_text(GOOD.replace("{type: median, n_startup_trials: 1, n_warmup_steps: 0}",
                                         "{type: successive_halving, bootstrap_count: 0}"))
    assert load_space(halving).fingerprint == load_space(with_default).fingerprint
    assert "bootstrap_count" not in load_space(halving).pruner


@pytest.mark.parametrize("pruner, kind, settings", [
    ("{type: successive_halving, reduction_factor: 2, reports_per_epoch: 4}",
     optuna.pruners.SuccessiveHalvingPruner,
     {"_min_resource": 1, "_reduction_factor": 2, "_min_early_stopping_rate": 0,
      "_bootstrap_count": 0}),  # Optuna's default, left out of the file
    ("{type: successive_halving, bootstrap_count: 3, reports_per_epoch: 4, "
     "report_val_size: 200}",
     optuna.pruners.SuccessiveHalvingPruner, {"_bootstrap_count": 3}),
    # Hyperband's largest resource: the space's most epochs (a parameter's top), in reports.
    ("{type: hyperband, min_resource: 2, reports_per_epoch: 4}",
     optuna.pruners.HyperbandPruner,
     {"_min_resource": 2, "_max_resource": 5 * 4, "_reduction_factor": 3}),
    ("{type: none}", optuna.pruners.NopPruner, {}),
])
def test_each_pruner_type_makes_optunas_own_pruner(tmp_path, pruner, kind, settings):
    from pipeline.study.samplers import make_pruner

    path = tmp_path / "s.yaml"
    path.write_text(GOOD.replace("{type: median, n_startup_trials: 1, n_warmup_steps: 0}", pruner)
                    + "  epochs: {type: int, low: 1, high: 5}\n")
    made = make_pruner(load_space(path))
    assert type(made) is kind
    for name, value in settings.items():  # Optuna keeps them in private fields
        assert getattr(made, name) == value, name


def test_conditional_parameters_are_only_sampled_when_their_condition_holds(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(GOOD)
    space = load_space(path)
    adam = space.suggest(optuna.trial.FixedTrial({"width": 4, "optimizer": "adamw", "lr": 0.01}))
    assert "momentum" not in adam
    sgd = space.suggest(optuna.trial.FixedTrial({"width": 4, "optimizer": "sgd", "lr": 0.01,
                                                 "momentum": 0.9}))
    assert sgd["momentum"] == 0.9


def test_another_studys_values_or_a_runs_params_fit_the_space_as_it_samples_them(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(GOOD)
    space = load_space(path)
    # MLflow logs params as strings; an inactive parameter and keys the space lacks are left out.
    assert space.fit({"width": "8", "optimizer": "adamw", "lr": "0.01", "momentum": "0.9",
                      "epochs": "2"}) == {"width": 8, "optimizer": "adamw", "lr": 0.01}
    assert space.fit({"width": 4, "optimizer": "sgd", "lr": 1e-3, "momentum": 0.95}) == {
        "width": 4, "optimizer": "sgd", "lr": 1e-3, "momentum": 0.95}


@pytest.mark.parametrize("values, reason", [
    ({"width": 16, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9},
     "width=16 is not one of its choices [4, 8]"),
    ({"width": 4, "optimizer": "adamw", "lr": 0.2}, "lr=0.2 is outside its range [0.001, 0.1]"),
    ({"width": 4, "optimizer": "sgd", "lr": 0.01}, "it has no momentum"),
    ({"width": 4, "optimizer": "adamw", "lr": "fast"}, "lr='fast' is not a number"),
])
def test_values_that_do_not_fit_name_the_key(tmp_path, values, reason):
    path = tmp_path / "s.yaml"
    path.write_text(GOOD)
    with pytest.raises(ValueError) as refused:
        load_space(path).fit(values)
    assert str(refused.value) == reason


BAD = [
    # (what to do to GOOD, fragment of the error)
    (lambda s: s + "  depth: {type: int, low: 1\n", "not valid YAML at line"),
    (lambda s: s + "budget: 3\n", "budget: unknown key"),
    # A key with a line break (found by Hypothesis) is escaped: the error stays one line.
    (lambda s: s + '"bud\\nget": 3\n', "bud\\nget: unknown key"),
    (lambda s: s.replace("  width:", "  widht:"), "unknown key 'widht'; did you mean 'width'?"),
    (lambda s: s.replace("log: true}", "log: true, hgih: 3}"), "params.lr.hgih: unknown key"),
    (lambda s: s.replace("type: float, low: 1.0e-3", "low: 1.0e-3"), "params.lr.type: must be"),
    (lambda s: s.replace("low: 0.8, high: 0.95", "low: 0.95, high: 0.8"),
     "params.momentum: low 0.95 is above high 0.8; swap them"),
    (lambda s: s + "  dropout: {type: float, low: 0.0, high: 1.5}\n",
     "params.dropout.high: 1.5 is out of range: dropout must be in [0, 1)"),
    (lambda s: s.replace("[adamw, sgd]", "[adamw, sgd, lamb]"),
     "params.optimizer.choices: 'lamb' is out of range: unknown optimizer 'lamb'"),
    (lambda s: s.replace("low: 1.0e-3, high: 1.0e-1, log: true", "low: 0.0, high: 0.1, log: true"),
     "params.lr.low: a log range must start above 0"),
    (lambda s: s.replace("log: true}", "log: true, step: 0.01}"),
     "params.lr.step: Optuna cannot combine step with log"),
    (lambda s: s + "  depth: {type: int, low: 1, high: 4, step: 2}\n",
     "params.depth.step: high - low (3) must be a multiple of step 2"),
    (lambda s: s + "  depth: {type: int, low: 1, high: 5}\n",
     "params.depth.high: 5 is out of range: impossible architecture"),
    # Each value alone is fine; together (3 blocks of 7x7 'valid' convs) they cannot work.
    (lambda s: s + "  depth: {type: int, low: 1, high: 3}\n"
                   "  kernel_size: {type: categorical, choices: [3, 7]}\n"
                   "  padding: {type: categorical, choices: [same, valid]}\n",
     "the space can sample a network that cannot be built (width=4, depth=3, kernel_size=7, "
     "padding=valid)"),
    (lambda s: s + "  batch_norm: {type: categorical, choices: [on, maybe]}\n",
     "params.batch_norm.choices"),
    (lambda s: s.replace("when: {optimizer: [sgd]}", "when: {optimiser: [sgd]}"),
     "params.momentum.when.optimiser: must name a categorical parameter declared above"),
    (lambda s: s + "  val_size: {type: int, low: 100, high: 200}\n",
     "params.val_size: data keys cannot be searched"),
    (lambda s: s.replace("metric: val_accuracy", "metric: test_accuracy"),
     "study.metric: unknown metric 'test_accuracy'"),
    (lambda s: s.replace("type: median", "type: hyperbolic"),
     "study.pruner.type: unknown pruner 'hyperbolic'; use one of median, successive_halving, "
     "hyperband, none"),
    (lambda s: s.replace("type: median", "type: median, reports_per_epoch: 0"),
     "study.pruner.reports_per_epoch: must be a whole number from 1 to 100, got 0"),
    (lambda s: s.replace("type: median", "type: median, reports_per_epoch: 4, "
                                          "report_val_size: 600"),
     "study.pruner.report_val_size: must be a whole number from 1 to data.val_size (500), "
     "got 600"),
    (lambda s: s.replace("type: median", "type: median, report_val_size: 100"),
     "study.pruner.report_val_size: applies to reports inside an epoch; set "
     "reports_per_epoch above 1 too"),
    (lambda s: s.replace("{type: median, n_startup_trials: 1, n_warmup_steps: 0}",
                         "{type: successive_halving, bootstrap_count: -1}"),
     "study.pruner.bootstrap_count: must be a whole number >= 0, got -1"),
    (lambda s: s.replace("pruner: {type: median, n_startup_trials: 1, n_warmup_steps: 0}",
                         "pruner: {type: hyperband, reduction_factor: 1}"),
     "study.pruner.reduction_factor: must be a whole number >= 2, got 1"),
    # Each pruner takes its own keys: the median's warm-up means nothing to Hyperband.
    (lambda s: s.replace("pruner: {type: median, n_startup_trials: 1, n_warmup_steps: 0}",
                         "pruner: {type: hyperband, n_warmup_steps: 1}"),
     "study.pruner.n_warmup_steps: unknown key; expected one of type, min_resource, "
     "reduction_factor"),
    (lambda s: s.replace("type: tpe", "type: grid"), "the grid sampler needs int or categorical"),
    (lambda s: s.replace("train_subset: 1000", "train_subset: 60000"),
     "data: train_subset must be a whole number between 1 and 59,500 (60,000 minus val_size)"),
    (lambda s: s.replace("fixed: {epochs: 2, fc_width: 16}", "fixed: {epochs: 0}"),
     "fixed: epochs must be a whole number >= 1"),
    (lambda s: s + "constraints: {size: {max: 3}}\n",
     "constraints.size: unknown key; expected one of params, flops, latency_ms"),
    (lambda s: s + "constraints: {params: {max: 0}}\n",
     "constraints.params.max: expected a number above 0, got 0"),
    (lambda s: s + "constraints: {latency_ms: {min: 1}}\n",
     "constraints.latency_ms.min: unknown key; expected one of max"),
]


def test_constraints_are_part_of_the_fingerprint(tmp_path):
    plain, limited, looser = (tmp_path / f"{n}.yaml" for n in ("plain", "limited", "looser"))
    plain.write_text(GOOD)
    limited.write_text(GOOD + "constraints: {params: {max: 50000}, latency_ms: {max: 0.5}}\n")
    looser.write_text(GOOD + "constraints: {params: {max: 60000}, latency_ms: {max: 0.5}}\n")
    assert load_space(limited).constraints == {"params": 50000.0, "latency_ms": 0.5}
    fingerprints = {load_space(p).fingerprint for p in (plain, limited, looser)}
    assert len(fingerprints) == 3


@pytest.mark.parametrize("damage, fragment", BAD, ids=[f for _, f in BAD])
def test_a_malformed_space_is_one_error_naming_file_and_key(tmp_path, damage, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(damage(GOOD))
    with pytest.raises(UsageError) as caught:
        load_space(path)
    message = str(caught.value)
    assert str(path) in message
    assert fragment in message, message


@pytest.mark.parametrize("damage, fragment", [BAD[2], BAD[5], BAD[12]],
                         ids=["unknown key", "inverted", "impossible network"])
def test_cli_refuses_a_bad_space_before_creating_any_study_or_run(tmp_path, damage, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(damage(GOOD))
    result = run_cli("search", "--space", str(path), "--trials", "1", cwd=tmp_path)
    assert_one_line_error(result, str(path), fragment, code=2)
    assert not (tmp_path / "optuna.db").exists()
    assert not (tmp_path / "mlflow.db").exists()


def test_unknown_space_name_lists_the_shipped_ones(tmp_path):
    result = run_cli("search", "--space", "nonesuch", cwd=tmp_path)
    assert_one_line_error(result, "no search space 'nonesuch'", "cpu", "default", "seeds", code=2)
