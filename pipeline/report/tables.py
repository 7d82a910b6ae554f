"""A study in text: its best trials with the parameters that set them apart, where its trials'
time went by phase, and every trial as a CSV row."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import optuna

from pipeline.core.keys import (
    ATTR_COST,
    ATTR_MODEL_URI,
    ATTR_REASON,
    ATTR_RUN_ID,
    ATTR_SECONDS,
    COST_KEYS,
)
from pipeline.core.metric import format_value
from pipeline.core.timings import PHASES, WORK, overhead
from pipeline.study.studies import study_metric
from pipeline.study.trials import count_trials, epochs_trained, ranked_trials


def time_breakdown_table(study: optuna.Study) -> str:
    """Where the finished trials' time went, by phase (core.timings): the total over all of them
    and the mean per complete and per pruned trial."""
    groups = {"complete": [], "pruned": []}
    timed = []
    for t in study.get_trials(deepcopy=False):
        seconds = t.user_attrs.get(ATTR_SECONDS)
        if not t.state.is_finished() or not isinstance(seconds, dict):
            continue
        timed.append(seconds)
        if t.state.name.lower() in groups:
            groups[t.state.name.lower()].append(seconds)
    if not timed:
        return "Where the time went: no trial recorded its time by phase"
    total = sum(sum(s.values()) for s in timed) or 1.0

    def mean(rows, phase, width):  # a dash where no trial of the kind finished
        if not rows:
            return f"{'–':>{width}} "
        return f"{sum(r.get(phase, 0.0) for r in rows) / len(rows):>{width}.3f}s"

    lines = [f"Where the time went ({len(timed)} finished trials, {total:,.0f} s):",
             f"  {'phase':<17}{'total s':>9}{'share':>7}{'per complete':>14}{'per pruned':>12}"]
    for phase in PHASES:
        spent = sum(s.get(phase, 0.0) for s in timed)
        lines.append(f"  {phase:<17}{spent:>9.1f}{spent / total:>7.1%}"
                     f"{mean(groups['complete'], phase, 13)}{mean(groups['pruned'], phase, 11)}")
    # The median beside the mean: a worker's first complete trial also pays one-time costs
    # (torch.export's first trace), which a search of few complete trials would spread thin.
    per = [f"{statistics.mean(map(overhead, rows)):.3f} s "
           f"({statistics.median(map(overhead, rows)):.3f} s) per {kind} trial" if rows
           else f"no {kind} trial" for kind, rows in groups.items()]
    lines.append(f"  overhead (all but {' and '.join(WORK)}), mean (median): {', '.join(per)}")
    return "\n".join(lines)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _params(trial: optuna.trial.FrozenTrial) -> str:
    """The network's size (train.cost), e.g. ``422k``; a dash where it was not measured."""
    count = trial.user_attrs.get(ATTR_COST, {}).get("params")
    if count is None:
        return "–"
    return f"{count / 1e6:.2f}M" if count >= 1e6 else f"{count / 1e3:.0f}k"


def _latency(trial: optuna.trial.FrozenTrial) -> str:
    latency = trial.user_attrs.get(ATTR_COST, {}).get("latency_ms")
    return "–" if latency is None else f"{latency:.2f}"


def top_trials_table(study: optuna.Study, limit: int = 10) -> str:
    """The best trials, one row each, with a column for every parameter that differs among them;
    then the best trial's full settings."""
    metric = study_metric(study, default="value")
    rows = ranked_trials(study)[:limit]
    counts = count_trials(study)
    head = f"Top trials of {study.study_name!r} by {metric} ({counts.line()}):"
    if not rows:
        return head + "\n  no complete trial yet"
    names = list(dict.fromkeys(k for t in rows for k in t.params))
    varying = [n for n in names if len({_short(t.params.get(n, "")) for t in rows}) > 1]
    cells = [[_short(t.params.get(n, "–")) for n in varying] for t in rows]
    widths = [max(len(n), *(len(c[i]) for c in cells)) for i, n in enumerate(varying)]
    # What each network costs to run beside how well it reads (train.cost): its size and its
    # one-image latency on one CPU thread, in milliseconds.
    header = (f"  {'rank':>4} {'trial':>5} {metric:>12} {'epochs':>6} {'time':>6} "
              f"{'params':>7} {'cpu ms':>6}  "
              + "  ".join(n.rjust(w) for n, w in zip(varying, widths, strict=True)))
    lines = [head, header]
    for rank, (t, row) in enumerate(zip(rows, cells, strict=True), 1):
        seconds = t.duration.total_seconds() if t.duration else 0.0
        lines.append(f"  {rank:>4} {t.number:>5} {format_value(metric, t.value):>12} "
                     f"{epochs_trained(t):>6g} {seconds:>5.0f}s {_params(t):>7} "
                     f"{_latency(t):>6}  "
                     + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    best = rows[0]
    lines.append(f"best trial #{best.number} ({format_value(metric, best.value)}): "
                 + ", ".join(f"{k}={_short(v)}" for k, v in best.params.items()))
    if best.user_attrs.get(ATTR_RUN_ID):
        lines.append(f"  MLflow run {best.user_attrs[ATTR_RUN_ID]}; "
                     f"model {best.user_attrs.get(ATTR_MODEL_URI, '')}")
    return "\n".join(lines)


def write_csv(study: optuna.Study, path: Path) -> None:
    metric = study_metric(study, default="value")
    trials = study.get_trials(deepcopy=False)
    names = sorted({k for t in trials for k in t.params})
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trial", "state", metric, "epochs", "seconds", "mlflow_run_id",
                         "reason", *(f"cost_{k}" for k in COST_KEYS), *names])
        for t in sorted(trials, key=lambda t: t.number):
            writer.writerow([t.number, t.state.name, "" if t.value is None else t.value,
                             epochs_trained(t),
                             round(t.duration.total_seconds(), 1) if t.duration else "",
                             t.user_attrs.get(ATTR_RUN_ID, ""),
                             t.user_attrs.get(ATTR_REASON, ""),
                             *[t.user_attrs.get(ATTR_COST, {}).get(k, "") for k in COST_KEYS],
                             *[t.params.get(n, "") for n in names]])
