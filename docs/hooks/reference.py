"""MkDocs hook: the reference tables, written from the code at build time, never typed.

A page holds ``<!-- generated: NAME -->`` on a line of its own; the build puts the table NAME in its
place, read from the module that decides it: the hyperparameter keys from the settings classes,
the search-space keys from the space parser, how a trial ends from the outcome table, the
environment from the module that lists every variable. (The command reference is mkdocs-click's.)
"""

from __future__ import annotations

import dataclasses
import re

MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.M)


def _row(*cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _table(head: tuple, rows: list) -> str:
    return "\n".join([_row(*head), _row(*["---"] * len(head)), *(_row(*r) for r in rows)])


def _code(value) -> str:
    return "" if value is None or value == "" else f"`{value}`"


def hyperparameters() -> str:
    """Every key of a space's ``fixed`` and ``params`` sections (and of ``pipeline train``)."""
    from pipeline.core.hparams import default_of, field_kind
    from pipeline.core.settings import DataSettings, ModelSpec, TrainSettings

    parts = []
    for title, cls in (("Network", ModelSpec), ("Training", TrainSettings)):
        rows = []
        for f in dataclasses.fields(cls):
            meta = f.metadata
            values = (" · ".join(f"`{c}`" for c in meta["choices"]) if meta.get("choices")
                      else str(meta["bounds"]) if meta.get("bounds") else
                      "true · false" if field_kind(f.name) == "bool" else "")
            rows.append((f"`{f.name}`", field_kind(f.name), _code(default_of(f.name)), values,
                         meta["help"]))
        parts.append(f"**{title}**\n\n" + _table(("key", "type", "default", "values", "meaning"),
                                                 rows))
    data = [(f"`data.{f.name}`", _code(default_of(f.name)), str(f.metadata["bounds"]),
             f.metadata["help"]) for f in dataclasses.fields(DataSettings)]
    parts.append("**Data** (the space's `data` section)\n\n"
                 + _table(("key", "default", "values", "meaning"), data))
    return "\n\n".join(parts)


def space_sections() -> str:
    """The sections of a space file, and the keys of ``study`` and of a parameter."""
    from pipeline.core.metric import DEFAULT, DIRECTIONS
    from pipeline.study.space import (
        PARAM_KEYS,
        PARAM_TYPES,
        PRUNERS,
        REPORTS_PER_EPOCH_MAX,
        SAMPLER_DEFAULTS,
        SAMPLERS,
        SECTIONS,
    )

    sections = _table(("section",), [(f"`{s}`",) for s in SECTIONS])
    study = _table(("key", "values", "default"), [
        ("`study.metric`", " · ".join(f"`{m}` ({d})" for m, d in DIRECTIONS.items()),
         f"`{DEFAULT}`"),
        ("`study.sampler.type`", " · ".join(f"`{s}`" for s in SAMPLERS),
         f"`{SAMPLER_DEFAULTS['type']}`"),
        *((f"`study.sampler.{k}`", "whole number >= 0", f"`{v}`")
          for k, v in SAMPLER_DEFAULTS.items() if k != "type"),
        ("`study.pruner.type`", " · ".join(f"`{p}`" for p in PRUNERS), "`median`"),
        ("`study.pruner.reports_per_epoch`",
         f"whole number from 1 to {REPORTS_PER_EPOCH_MAX}", "`1`"),
        ("`study.pruner.report_val_size`", "whole number from 1 to `data.val_size`; with "
         "`reports_per_epoch` above 1", "every validation image"),
    ])
    pruners = _table(("`study.pruner.type`", "its keys (default; least)"), [
        (f"`{kind}`", ", ".join(f"`{k}` ({v}; {minimums[k]})" for k, v in defaults.items()))
        for kind, (defaults, minimums) in PRUNERS.items()])
    params = _table(("key of a parameter", "for"), [
        (f"`{k}`", {"type": " · ".join(f"`{t}`" for t in PARAM_TYPES),
                    "low": "int, float", "high": "int, float", "step": "int, float",
                    "log": "int, float (not with `step`)", "choices": "categorical",
                    "when": "any: sampled only when another parameter has one of the "
                            "given values"}[k])
        for k in PARAM_KEYS])
    return "\n\n".join(["**Sections of a space file**", sections, "**`study`**", study,
                        "**Pruners**", pruners, "**A parameter** (`params.NAME`)", params])


def outcomes() -> str:
    from pipeline.core.outcomes import TRIAL_OUTCOMES

    return _table(("outcome", "Optuna state", "MLflow status", "runs again", "meaning"),
                  [(f"`{o.name}`", o.trial_state, o.run_status, "yes" if o.requeue else "",
                    o.meaning) for o in TRIAL_OUTCOMES])


def environment() -> str:
    from pipeline.core.env import LIBRARY_DEFAULTS, UI_SERVER_DEFAULTS, VARIABLES

    variables = _table(("variable", "meaning", "Ray workers get it"),
                       [(f"`{v.name}`", v.help, "yes" if v.forwarded else "")
                        for v in VARIABLES])
    defaults = _table(("variable", "set to", "why"),
                      [(f"`{d.name}`", f"`{d.value}`", d.why)
                       for d in (*LIBRARY_DEFAULTS, *UI_SERVER_DEFAULTS)])
    return "\n\n".join([
        "**Read by `pipeline`**", variables,
        "**Set for the libraries it runs**, unless already set (yours win)", defaults])


TABLES = {"hyperparameters": hyperparameters, "space-sections": space_sections,
          "outcomes": outcomes, "environment": environment}


def on_page_markdown(markdown: str, page, config, files) -> str:
    def table(found: re.Match) -> str:
        name = found.group(1)
        if name not in TABLES:
            raise ValueError(f"{page.file.src_path}: no generated table {name!r}; "
                             f"known: {', '.join(TABLES)}")
        return TABLES[name]()

    return MARKER.sub(table, markdown)
