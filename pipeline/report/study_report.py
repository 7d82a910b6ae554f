"""The study report: Plotly figures that explain a study, and a table of its best trials.

Written to ``<report dir>/<study>/``: one HTML file per figure (sharing one plotly.min.js, so the
folder works offline), ``index.html``, the one self-contained page a person reads (report.page;
also logged to the study's MLflow run), and ``top_trials.csv``.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from pipeline.core.errors import first_line
from pipeline.report.cost_figure import cost_figure, costed_trials
from pipeline.report.page import best_trial_pictures, learning_curves, page
from pipeline.report.rung_figures import (
    history_figure,
    importance_figure,
    parallel_figure,
    slice_figure,
)
from pipeline.report.rungs import (
    Importance,
    finished_trials,
    first_rung,
    importance,
    rung_importance,
    rung_study,
    varying_params,
)
from pipeline.report.tables import time_breakdown_table, top_trials_table, write_csv
from pipeline.study.studies import study_metric

# Figures drawn from complete trials alone need several to say something.
MIN_TRIALS_FOR_IMPORTANCE = 4


def _figures(study: optuna.Study, notes: list[str]) -> tuple[dict, Importance | None]:
    """The report's figures in reading order, and the importance at the first rung; what
    cannot be drawn is a note (one sentence) instead of an empty figure."""
    from optuna import visualization as vis

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    figures: dict = {}
    # Ours first: every trial's curve, coloured by outcome, with the points where pruning cut
    # (it replaces Optuna's intermediate-values plot).
    if finished_trials(study):
        _draw(figures, notes, "learning_curves", lambda: learning_curves(study))
    rung = first_rung(study)
    at_rung, why = rung_importance(study)
    if at_rung is not None:
        params = list(at_rung.shares)
        _draw(figures, notes, "importance_at_the_first_rung",
              lambda: importance_figure(study, rung, params))
    else:
        notes.append(why)
    _final_importance(study, complete, figures, notes)
    if rung is not None:
        params = varying_params(rung_study(study, rung))
        _draw(figures, notes, "history_at_the_first_rung", lambda: history_figure(study, rung))
        if params:
            _draw(figures, notes, "slices_at_the_first_rung",
                  lambda: slice_figure(study, rung, params))
            _draw(figures, notes, "parallel_coordinates_at_the_first_rung",
                  lambda: parallel_figure(study, rung, params))
    if not complete:
        notes.append("no complete trial yet: the figures of complete trials alone wait for one")
        return figures, at_rung
    _draw(figures, notes, "optimization_history", lambda: vis.plot_optimization_history(study))
    if len(costed_trials(study)) >= 2:
        _draw(figures, notes, "cost_of_accuracy", lambda: cost_figure(study))
    else:
        notes.append("accuracy against cost needs 2 complete trials whose cost was measured")
    if len(complete) >= MIN_TRIALS_FOR_IMPORTANCE:
        _draw(figures, notes, "parallel_coordinate", lambda: vis.plot_parallel_coordinate(study))
        _draw(figures, notes, "slice", lambda: vis.plot_slice(study))
    return figures, at_rung


def _final_importance(study: optuna.Study, complete: list, figures: dict,
                      notes: list[str]) -> None:
    """The importance of the final value, over the complete trials, when there are enough."""
    from optuna import visualization as vis

    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        notes.append(f"parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} complete "
                     f"trials; this study has {len(complete)}")
        return
    metric = study_metric(study, default="value")
    rests_on = f"{metric} at the end, {len(complete)} complete trials"
    final, why = importance(study, rests_on)
    if final is None:
        notes.append(why)
        return

    def draw():
        figure = vis.plot_param_importances(study, params=list(final.shares))
        return figure.update_layout(title=f"Parameter importance: {rests_on}")
    _draw(figures, notes, "param_importances", draw)


def _draw(figures: dict, notes: list[str], name: str, make) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            figures[name] = make()
    except Exception as e:  # noqa: BLE001 - a figure that cannot be drawn is a note
        notes.append(f"{name.replace('_', ' ')} could not be drawn: {first_line(e)}")


def write_report(study: optuna.Study, report_dir: Path, *, tracker=None, run_id: str | None = None,
                 echo=print) -> list[Path]:
    """Write the report folder; log its page to the study's MLflow run; print the table."""
    folder = Path(report_dir) / study.study_name
    folder.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    figures, at_rung = _figures(study, notes)
    written = []
    for name, fig in figures.items():
        path = folder / f"{name}.html"
        fig.write_html(path, include_plotlyjs="directory", full_html=True)
        written.append(path)
    table = top_trials_table(study) + "\n\n" + time_breakdown_table(study)
    csv_path = folder / "top_trials.csv"
    write_csv(study, csv_path)
    index = folder / "index.html"
    client = tracker.client if tracker is not None else None
    index.write_text(page(study, figures, notes, table, best_trial_pictures(study, client),
                          at_rung))
    written = [index, *written, csv_path]
    if tracker is not None and run_id is not None:
        tracker.client.log_artifact(run_id, str(index), "report")
        tracker.client.log_artifact(run_id, str(csv_path), "report")
        if at_rung is not None:  # comparable across studies in MLflow's UI
            from mlflow.entities import Metric

            tracker.client.log_batch(run_id, metrics=[
                Metric(f"importance.{name}", share, int(time.time() * 1000), 0)
                for name, share in at_rung.shares.items()])
    echo("")
    echo(table)
    if at_rung is not None:
        echo(at_rung.line())
    for note in notes:
        echo(f"note: {note}")
    echo(f"report: {index} ({len(figures)} figures)")
    return written
