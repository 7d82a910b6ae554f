"""The study's one-page report: a headline, the learning curves, Optuna's figures, and the best
trial's confusion matrix and mistakes, in one self-contained HTML file (plotly.js and the pictures
inlined: it opens with no network, from a mail attachment or the MLflow run it is logged to)."""

from __future__ import annotations

import base64
import html
import json
import tempfile
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from pipeline.core.keys import ATTR_RUN_ID, ATTR_SPACE, ATTR_TRAIN_SECONDS
from pipeline.core.metric import format_value
from pipeline.report.rungs import Importance
from pipeline.report.seed_reports import seed_rows, seed_table_html
from pipeline.study.studies import study_metric
from pipeline.study.trials import count_trials, epochs_trained, ranked_trials

# Colour by how a trial ended: the eye finds the complete ones, then where pruning cut.
OUTCOME_COLOURS = {"COMPLETE": "#2f7ed8", "PRUNED": "#f28f43", "FAIL": "#c42525",
                   "RUNNING": "#8bbc21", "WAITING": "#999999"}
BEST_COLOUR = "#111111"
# The best trial's pictures, as its run logged them (track.artifacts.log_diagnostics).
PICTURES = {"confusion_matrix.png": "Confusion matrix (validation set)",
            "val_mistakes.png": "Its mistakes on the validation set"}


def _space(study: optuna.Study) -> dict:
    return json.loads(study.user_attrs.get(ATTR_SPACE, "{}"))


def reports_per_epoch(study: optuna.Study) -> int:
    return int((_space(study).get("pruner") or {}).get("reports_per_epoch", 1))


def full_epochs(trial: optuna.trial.FrozenTrial, fixed_epochs: float | None) -> float:
    """The epochs a trial would have trained had nothing stopped it: its own ``epochs``
    parameter, else the space's fixed epochs (``fixed_epochs``), else what it trained."""
    fallback = fixed_epochs if fixed_epochs is not None else epochs_trained(trial)
    return float(trial.params.get("epochs", fallback))


@dataclass(frozen=True)
class Headline:
    best: str
    states: str
    wall_seconds: float
    epochs_trained: float
    epochs_saved: float
    seconds_saved: float

    @property
    def saved_share(self) -> float:
        whole = self.epochs_trained + self.epochs_saved
        return self.epochs_saved / whole if whole else 0.0


def headline(study: optuna.Study) -> Headline:
    """Best value, trials by state, wall time, and what pruning saved: the epochs pruned trials
    did not train, priced at the complete trials' mean training seconds per epoch."""
    metric = study_metric(study, default="value")
    trials = study.get_trials(deepcopy=False)
    ranked = ranked_trials(study)
    best = (f"{format_value(metric, ranked[0].value)} {metric} (trial #{ranked[0].number})"
            if ranked else "no complete trial yet")
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    wall = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    trained = sum(epochs_trained(t) for t in trials if t.state.is_finished())
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    fixed_epochs = (_space(study).get("fixed") or {}).get("epochs")
    saved = sum(max(0.0, full_epochs(t, fixed_epochs) - epochs_trained(t)) for t in pruned)
    timed = [(t.user_attrs[ATTR_TRAIN_SECONDS], epochs_trained(t)) for t in ranked
             if t.user_attrs.get(ATTR_TRAIN_SECONDS) and epochs_trained(t)]
    per_epoch = sum(s for s, _ in timed) / sum(e for _, e in timed) if timed else 0.0
    return Headline(best, count_trials(study).line(), wall, trained, saved, saved * per_epoch)


def learning_curves(study: optuna.Study):
    """Every trial's intermediate values against epochs, coloured by outcome; an x where
    pruning stopped a trial; the best trial drawn last, in black."""
    import plotly.graph_objects as go

    metric = study_metric(study, default="value")
    per_epoch = reports_per_epoch(study)
    ranked = ranked_trials(study)
    best = ranked[0].number if ranked else None
    fig = go.Figure()
    shown: set[str] = set()
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number == best)
    for t in trials:
        if not t.intermediate_values:
            continue
        steps = sorted(t.intermediate_values)
        x = [s / per_epoch for s in steps]
        y = [t.intermediate_values[s] for s in steps]
        state = t.state.name
        is_best = t.number == best
        name = "best trial" if is_best else state.lower()
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="lines", name=name, legendgroup=name,
            showlegend=name not in shown,
            line={"color": BEST_COLOUR if is_best else OUTCOME_COLOURS.get(state, "#999"),
                  "width": 3 if is_best else 1.2},
            opacity=1.0 if is_best else 0.7,
            hovertemplate=f"trial #{t.number} ({state.lower()})<br>epoch %{{x:.2f}}<br>"
                          f"{metric} %{{y:.4f}}<extra></extra>"))
        shown.add(name)
        if state == "PRUNED":
            fig.add_trace(go.Scatter(
                x=[x[-1]], y=[y[-1]], mode="markers", name="pruned here",
                legendgroup="pruned here", showlegend="pruned here" not in shown,
                marker={"symbol": "x", "size": 9, "color": OUTCOME_COLOURS["PRUNED"]},
                hovertemplate=f"trial #{t.number} pruned at epoch %{{x:.2f}}<extra></extra>"))
            shown.add("pruned here")
    fig.update_layout(title="Learning curves: every trial, by how it ended",
                      xaxis_title="epoch", yaxis_title=metric, template="plotly_white",
                      height=520)
    return fig


def best_trial_pictures(study: optuna.Study, client) -> dict[str, str]:
    """The best trial's pictures from its MLflow run, as data: URIs (empty without a store)."""
    ranked = ranked_trials(study)
    run_id = ranked[0].user_attrs.get(ATTR_RUN_ID) if ranked else None
    if client is None or not run_id:
        return {}
    pictures = {}
    # Downloaded into a folder of our own: from a tracking server, MLflow would otherwise make a
    # temporary folder for each file and leave it behind.
    with tempfile.TemporaryDirectory(prefix="pipeline-report-") as scratch:
        for name, title in PICTURES.items():
            try:
                # Two small files, downloaded without MLflow's progress bars (core.env).
                path = client.download_artifacts(run_id, name, scratch)
            except Exception:  # noqa: BLE001 - a picture the run does not have is left out
                continue
            with open(path, "rb") as f:
                pictures[title] = "data:image/png;base64," + base64.b64encode(f.read()).decode()
    return pictures


STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
.cards{display:flex;flex-wrap:wrap;gap:1em;margin:1em 0}
.card{border:1px solid #ddd;border-radius:8px;padding:.8em 1.2em;min-width:200px}
.card b{display:block;font-size:1.4em;margin-top:.2em}
pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:.85em}
img{max-width:100%;border:1px solid #eee}
h2{margin-top:2em;border-bottom:1px solid #eee;padding-bottom:.2em}
table.seeds{border-collapse:collapse;font-size:.9em}
table.seeds td,table.seeds th{border:1px solid #ddd;padding:.3em .6em;text-align:left}
"""


def _card(label: str, value: str, detail: str = "") -> str:
    return (f"<div class='card'>{html.escape(label)}<b>{html.escape(value)}</b>"
            f"<small>{html.escape(detail)}</small></div>")


def page(study: optuna.Study, figures: dict, notes: list[str], table: str,
         pictures: dict[str, str], mattered: Importance | None = None) -> str:
    """The page: headline cards (what ``mattered`` most among them), learning curves, the
    figures, pictures, tables, notes."""
    head = headline(study)
    cards = [
        _card("best", head.best),
        _card("trials", head.states),
        _card("wall time", f"{head.wall_seconds / 60:.1f} min"),
        _card("saved by pruning", f"{head.epochs_saved:.1f} epochs",
              f"{head.saved_share:.0%} of all epochs, ~{head.seconds_saved / 60:.1f} min of "
              "training"),
    ]
    if mattered is not None:
        top = list(mattered.shares.items())[:3]
        cards.append(_card("what mattered most", ", ".join(name for name, _ in top),
                           "importance " + ", ".join(f"{share:.2f}" for _, share in top)
                           + f"; {mattered.rests_on}"))
    parts = ["<div class='cards'>" + "".join(cards) + "</div>"]
    for i, (name, fig) in enumerate(figures.items()):
        parts.append(f"<h2>{html.escape(name.replace('_', ' ').capitalize())}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0),
                                 div_id=f"figure-{name}"))
    seeds = seed_rows(study)
    if seeds:
        parts.append("<h2>The seed reports beside this study</h2>")
        parts.append(seed_table_html(seeds, study_metric(study, default="value")))
    if pictures:
        parts.append("<h2>The best trial</h2>")
        for title, uri in pictures.items():
            parts.append(f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' "
                         f"src='{uri}'>")
    parts.append(f"<h2>Top trials and where the time went</h2><pre>{html.escape(table)}</pre>")
    if notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>study {html.escape(study.study_name)}</title><style>{STYLE}</style>"
            f"</head><body><h1>Study {html.escape(study.study_name)}</h1>"
            + "".join(parts) + "</body></html>")
