"""The study report: Plotly figures and the written folder (study_report), the one self-contained
page a person reads (page), the tables of best trials and time by phase (tables), and the seed
reports' published numbers beside the study (seed_reports). Reads studies; loads no torch."""

from pipeline.core.exports import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "study_report": ["write_report"],
    "tables": ["time_breakdown_table", "top_trials_table"],
})
