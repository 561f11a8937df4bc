"""Per-process state shared by the replica and its ASGI middleware.

Ray Serve pickles the ingress FastAPI app (and may pickle the classes of ``serve.app`` by value), so a module-level
object in ``serve/app.py`` seen by the middleware can be a copy of the one the replica's constructor sets. Modules
are always pickled by reference, so state kept here, read as ``runtime.STATE.x``, is the same object for both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from serve.settings import ServeSettings


@dataclass
class RuntimeState:
    """The replica's settings and bearer token (None: auth off)."""

    settings: ServeSettings = field(default_factory=ServeSettings)
    token: str | None = None


STATE = RuntimeState()
