"""Neutral shared layer: core <- shared <- pipelines, serve <- cli (enforced by tests/test_import_direction.py).

Code that both the pipelines (data stages, training, evaluation) and the service need, and that does not belong in
the dependency-light ``ldeq_core`` library:

- data I/O: the data errors (:mod:`ldeq_shared.errors`), video reading, checking and writing
  (:mod:`ldeq_shared.video_io`), the WFLW-V clip layout (:mod:`ldeq_shared.wflw_v`) and the ``prepared.json``
  manifest of the prepare stage (:mod:`ldeq_shared.prepared`); atomic writes and file hashes are
  :mod:`ldeq_core.fileio`;
- runtime: getting a Ray session (:mod:`ldeq_shared.ray_session`) and a free TCP port (:mod:`ldeq_shared.net`);
- MLflow: the model-registry resolver (:mod:`ldeq_shared.registry`) and the pyfunc model of a Landmark DEQ
  (:mod:`ldeq_shared.mlflow_model`).

It may import ``ldeq_core`` and third-party packages (Ray and MLflow only inside the modules that need them), never
``pipelines``, ``serve`` or ``ldeq_cli``.
"""
