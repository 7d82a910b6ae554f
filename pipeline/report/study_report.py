"""The study report: Plotly figures that explain a study, and a table of its best trials.

Written to ``<report dir>/<study>/``: one HTML file per figure (sharing one plotly.min.js, so the
folder works offline), ``index.html``, the one self-contained page a person reads (report.page;
also logged to the study's MLflow run), and ``top_trials.csv``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from pipeline.core.errors import first_line
from pipeline.report.page import best_trial_pictures, learning_curves, page
from pipeline.report.tables import time_breakdown_table, top_trials_table, write_csv

# Parameter importances need several complete trials with differing parameters to mean anything.
MIN_TRIALS_FOR_IMPORTANCE = 4


def _figures(study: optuna.Study, notes: list[str]) -> dict:
    from optuna import visualization as vis

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        notes.append("no complete trial yet, so there is nothing to plot")
        return {}
    # In reading order. Ours first: every trial's curve, coloured by outcome, with the points
    # where pruning cut (it replaces Optuna's intermediate-values plot).
    makers = {"learning_curves": learning_curves,
              "optimization_history": vis.plot_optimization_history}
    if len(complete) >= MIN_TRIALS_FOR_IMPORTANCE:
        makers["param_importances"] = vis.plot_param_importances
    else:
        notes.append(f"parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} complete "
                     f"trials; this study has {len(complete)}")
    makers["parallel_coordinate"] = vis.plot_parallel_coordinate
    makers["slice"] = vis.plot_slice
    figures = {}
    for name, make in makers.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                figures[name] = make(study)
        except Exception as e:  # noqa: BLE001 - a figure that cannot be drawn is a note
            notes.append(f"{name.replace('_', ' ')} could not be drawn: "
                         f"{first_line(e)}")
    return figures


def write_report(study: optuna.Study, report_dir: Path, *, tracker=None, run_id: str | None = None,
                 echo=print) -> list[Path]:
    """Write the report folder; log its page to the study's MLflow run; print the table."""
    folder = Path(report_dir) / study.study_name
    folder.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    figures = _figures(study, notes)
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
    index.write_text(page(study, figures, notes, table, best_trial_pictures(study, client)))
    written = [index, *written, csv_path]
    if tracker is not None and run_id is not None:
        tracker.client.log_artifact(run_id, str(index), "report")
        tracker.client.log_artifact(run_id, str(csv_path), "report")
    echo("")
    echo(table)
    for note in notes:
        echo(f"note: {note}")
    echo(f"report: {index} ({len(figures)} figures)")
    return written
