"""Ray Serve application for scoring videos with LDEQ + RwR over HTTP.

Modules: ``app`` (FastAPI ingress on a Serve deployment), ``settings`` (typed settings), ``batching`` (the
frame-synchronous cross-video batcher), ``detector`` (Haar detection + landmark tracking), ``inputs`` (upload
validation from the bytes), ``scoring`` (one video end to end), ``jobs`` (batch jobs on disk), ``model_source``
(checkpoint / MLflow registry), ``errors`` and ``runtime``. Only ``app`` imports Ray.
"""
