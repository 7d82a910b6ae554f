"""The study's figures at its first rung: importance, history, slices and parallel coordinates
over every trial that reached it, pruned trials in their own colour, each titled with what it rests
on. Optuna draws the importance; it draws the other three from complete trials only, so they are
drawn here."""

from __future__ import annotations

import math
import warnings

import optuna

from pipeline.report.rungs import Rung, rung_study

# As the learning curves colour them (report.page).
COLOURS = {"COMPLETE": "#2f7ed8", "PRUNED": "#f28f43"}
NAMES = {"COMPLETE": "complete", "PRUNED": "pruned"}


def importance_figure(study: optuna.Study, rung: Rung, params: list[str]):
    """Optuna's importance figure on the study as it stood at ``rung``."""
    from optuna import visualization as vis

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        figure = vis.plot_param_importances(rung_study(study, rung), params=params)
    figure.update_layout(title=f"Parameter importance: {rung.label()}")
    return figure


def _by_state(rung: Rung) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for number in sorted(rung.values):
        groups.setdefault(rung.states[number], []).append(number)
    return groups


def history_figure(study: optuna.Study, rung: Rung):
    """Every trial's value at the rung by trial number, and the best so far."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for state, numbers in _by_state(rung).items():
        figure.add_trace(go.Scatter(
            x=numbers, y=[rung.values[n] for n in numbers], mode="markers",
            name=NAMES.get(state, state.lower()),
            marker={"color": COLOURS.get(state, "#999"), "size": 7}))
    pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    best, numbers = [], sorted(rung.values)
    for number in numbers:
        best.append(pick(best[-1], rung.values[number]) if best else rung.values[number])
    figure.add_trace(go.Scatter(x=numbers, y=best, mode="lines", name="best so far",
                                line={"color": "#111111", "width": 2}))
    figure.update_layout(title=f"History: {rung.label()}", xaxis_title="trial",
                         yaxis_title=rung.metric, template="plotly_white")
    return figure


def slice_figure(study: optuna.Study, rung: Rung, params: list[str]):
    """One panel per parameter: its value against the value at the rung, per trial."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    trials = {t.number: t for t in study.get_trials(deepcopy=False) if t.number in rung.values}
    columns = min(len(params), 3)
    rows = math.ceil(len(params) / columns)
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=params,
                           shared_yaxes=True, horizontal_spacing=0.05)
    for i, name in enumerate(params):
        row, col = i // columns + 1, i % columns + 1
        for state, numbers in _by_state(rung).items():
            shown = [n for n in numbers if name in trials[n].params]
            figure.add_trace(go.Scatter(
                x=[trials[n].params[name] for n in shown], y=[rung.values[n] for n in shown],
                mode="markers", name=NAMES.get(state, state.lower()), legendgroup=state,
                showlegend=i == 0, marker={"color": COLOURS.get(state, "#999"), "size": 6}),
                row=row, col=col)
        distribution = next((trials[n].distributions[name] for n in trials
                             if name in trials[n].distributions), None)
        if getattr(distribution, "log", False):
            figure.update_xaxes(type="log", row=row, col=col)
    figure.update_layout(title=f"Slices: {rung.label()}", template="plotly_white",
                         height=320 * rows, yaxis_title=rung.metric)
    return figure


def parallel_figure(study: optuna.Study, rung: Rung, params: list[str]):
    """Each trial a line through its parameters to its value at the rung; pruned and complete
    trials in their own colours."""
    import plotly.graph_objects as go

    trials = [t for t in study.get_trials(deepcopy=False)
              if t.number in rung.values and all(p in t.params for p in params)]
    dimensions = [_dimension(name, [t.params[name] for t in trials],
                             trials[0].distributions[name]) for name in params]
    dimensions.append({"label": rung.metric, "values": [rung.values[t.number] for t in trials]})
    complete = [1 if rung.states[t.number] == "COMPLETE" else 0 for t in trials]
    figure = go.Figure(go.Parcoords(
        dimensions=dimensions,
        line={"color": complete, "colorscale": [[0, COLOURS["PRUNED"]], [1, COLOURS["COMPLETE"]]],
              "cmin": 0, "cmax": 1}))
    figure.update_layout(title=f"Parallel coordinates: {rung.label()} (complete in blue, "
                               "pruned in orange)", template="plotly_white")
    return figure


def _dimension(name: str, values: list, distribution) -> dict:
    """A parallel-coordinates axis: numbers as they are (log ranges in log10), choices as
    their positions, labelled."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        choices = list(distribution.choices)
        return {"label": name, "values": [choices.index(v) for v in values],
                "tickvals": list(range(len(choices))), "ticktext": [str(c) for c in choices]}
    if getattr(distribution, "log", False):
        return {"label": f"log10 {name}", "values": [math.log10(v) for v in values]}
    return {"label": name, "values": values}
