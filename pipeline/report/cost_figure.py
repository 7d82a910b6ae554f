"""What accuracy costs: every complete trial's value against its network's size and against its
one-image CPU latency (train.cost), with the Pareto front marked, the trials no other beats on
both value and cost: the networks worth shipping at each price."""

from __future__ import annotations

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from pipeline.core.keys import ATTR_COST
from pipeline.core.metric import format_value
from pipeline.study.studies import study_metric

AXES = (("params", "parameters", "log"), ("latency_ms", "one-image CPU latency (ms)", "linear"))


def pareto_front(points: list[tuple[float, float, int]], maximize: bool) -> list[int]:
    """The trial numbers of ``points`` (cost, value, number) that no other point beats: as cheap
    or cheaper and strictly better, or cheaper and as good. Cheapest first."""
    front, best = [], None
    for _cost, value, number in sorted(points,
                                       key=lambda p: (p[0], -p[1] if maximize else p[1])):
        if best is None or (value > best if maximize else value < best):
            front.append(number)
            best = value
    return front


def costed_trials(study: optuna.Study) -> list:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if isinstance(t.user_attrs.get(ATTR_COST), dict)]


def cost_figure(study: optuna.Study):
    """Two panels, value against size and against latency; the front in its own colour."""
    from plotly import graph_objects as go
    from plotly.subplots import make_subplots

    trials = costed_trials(study)
    metric = study_metric(study, default="value")
    maximize = study.direction == StudyDirection.MAXIMIZE
    figure = make_subplots(rows=1, cols=2, shared_yaxes=True,
                           subplot_titles=[title for _, title, _ in AXES])
    for column, (key, title, scale) in enumerate(AXES, 1):
        points = [(t.user_attrs[ATTR_COST][key], t.value, t.number) for t in trials]
        front = set(pareto_front(points, maximize))
        for on_front, colour, name in ((False, "#9aa5b1", "other trials"),
                                       (True, "#d62728", "Pareto front")):
            chosen = sorted((p for p in points if (p[2] in front) == on_front),
                            key=lambda p: p[0])
            figure.add_trace(go.Scatter(
                x=[p[0] for p in chosen], y=[p[1] for p in chosen],
                mode="lines+markers" if on_front else "markers", name=name,
                legendgroup=name, showlegend=column == 1,
                line={"shape": "hv", "color": colour}, marker={"color": colour, "size": 8},
                text=[f"trial #{p[2]}: {format_value(metric, p[1])}" for p in chosen],
                hovertemplate="%{text}<br>" + title + ": %{x:,}<extra></extra>"),
                row=1, col=column)
        figure.update_xaxes(title_text=title, type=scale, row=1, col=column)
    figure.update_yaxes(title_text=metric, row=1, col=1)
    return figure.update_layout(
        title=f"What {metric} costs: {len(trials)} complete trials, the Pareto front in red "
              "(no other trial is both cheaper and better)")
