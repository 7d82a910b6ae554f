"""The five seed reports' published numbers, keyed by the model presets of
``search_spaces/seeds.yaml``, set beside what a study of that space
reached with the same networks."""

from __future__ import annotations

import html
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from pipeline.core.metric import format_value
from pipeline.study.studies import study_metric
from pipeline.study.trials import epochs_trained


@dataclass(frozen=True)
class SeedReport:
    report: str  # the report's letter(s)
    network: str
    settings: str  # how the report trained it
    reported: str  # its published test accuracy


# The model preset a trial chose (its ``model`` parameter) -> what its report published.
REPORTED = {
    "report_a": SeedReport("A", "conv 32-64-64 k3, fc 128-64",
                           "Adam 3e-4, batch 50, 10 epochs", "98.7-99.1%"),
    "report_b": SeedReport("B", "conv 16-32 k5, straight to 10",
                           "Adam 1e-3, batch 64, +-10 deg rotation, 5 epochs",
                           "98.83% at epoch 3, 99.05% at 5"),
    "report_c": SeedReport("C / D", "conv 10-20 k5 valid, fc 50, dropout 0.5",
                           "SGD 0.01 momentum 0.5, 3 epochs (C); no momentum, 10 epochs (D)",
                           "96.71% (C), 96.72% (D)"),
    "report_e": SeedReport("E", "VGG-style [conv 64]x2-[conv 128]x2 BN, fc 256-128",
                           "optimiser not stated, 10 epochs", "99.06%"),
    "report_f": SeedReport("F", "conv 16 k5 + residual, conv 32 k5 + residual, fc 10",
                           "lr 1e-3, 10 epochs", "98.10%"),
    "report_g": SeedReport("G", "LeNet-5-like conv 6-16 k5, fc 120-84",
                           "SGD, 40 epochs, softmax fed to NLLLoss (a bug)", "69.72%"),
    "report_h": SeedReport("H", "MLP 784-300-100-10 with batch norm",
                           "SGD 0.01 momentum 0.5, 20 epochs", "95.5-95.6%"),
}


@dataclass(frozen=True)
class SeedRow:
    preset: str
    seed: SeedReport
    best: str  # the best value here, formatted
    how: str  # the best trial's other choices
    trial: int
    epochs: float
    complete: int  # complete trials of this network


def seed_rows(study: optuna.Study) -> list[SeedRow]:
    """One row per seed network the study trained to completion, best trial first within it;
    empty for a study whose trials do not choose a seed report's network."""
    metric = study_metric(study, default="value")
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    by_preset: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        preset = trial.params.get("model")
        if preset in REPORTED:
            by_preset.setdefault(preset, []).append(trial)
    rows = []
    for preset in sorted(by_preset):
        trials = sorted(by_preset[preset], key=lambda t: t.value, reverse=maximize)
        best = trials[0]
        how = ", ".join(f"{k} {v}" for k, v in best.params.items() if k != "model")
        rows.append(SeedRow(preset, REPORTED[preset], format_value(metric, best.value), how,
                            best.number, epochs_trained(best), len(trials)))
    return rows


def seed_table_html(rows: list[SeedRow], metric: str) -> str:
    """The rows as an HTML table; the reports' figures are test accuracies they selected on the
    test set, ours validation values selected on validation (the test set waits for promotion)."""
    head = ("<tr><th>report</th><th>network</th><th>the report trained it with</th>"
            "<th>reported (test set)</th>"
            f"<th>best here ({html.escape(metric)}, validation)</th><th>with</th>"
            "<th>trials</th></tr>")
    body = "".join(
        f"<tr><td>{html.escape(r.seed.report)}</td><td>{html.escape(r.seed.network)}</td>"
        f"<td>{html.escape(r.seed.settings)}</td><td>{html.escape(r.seed.reported)}</td>"
        f"<td><b>{html.escape(r.best)}</b></td>"
        f"<td>{html.escape(r.how)}; {r.epochs:g} epochs (trial #{r.trial})</td>"
        f"<td>{r.complete}</td></tr>" for r in rows)
    return f"<table class='seeds'>{head}{body}</table>"
