"""Neutral shared layer: core <- shared <- pipelines, serve <- cli.

Code that both the pipelines (training, evaluation) and the service need, and that does not belong in the
dependency-light ``ldeq_core`` library: the MLflow model-registry resolver (:mod:`ldeq_shared.registry`) and the
MLflow pyfunc model of a Landmark DEQ (:mod:`ldeq_shared.mlflow_model`). It may import ``ldeq_core``, ``mlflow``,
``torch`` and ``numpy``, never ``pipelines`` or ``serve``.
"""
