"""The evaluate stage: RwR against per-frame inference and classic filters (NME, NMF, Pareto front, plots).

Modules: :mod:`.methods` (the compared methods), :mod:`.runner` (sequential and Ray Data execution),
:mod:`.tune_filters` (filter parameters from held-out tuning videos), :mod:`.report` (metrics and aggregation),
:mod:`.plots` (figures, DVC plot data, overlay videos) and :mod:`.stage` (``run_evaluate``).
"""

from pipelines.evaluate.stage import EvalSettings, eval_settings, run_evaluate, run_evaluate_from_params

__all__ = ["EvalSettings", "eval_settings", "run_evaluate", "run_evaluate_from_params"]
