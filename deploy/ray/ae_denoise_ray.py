"""ae-denoise as a Ray Serve application: each replica runs the service's own app.

``serve.ingress`` is given a builder, not an app: Ray calls :func:`build_app` inside each replica's
process, so every replica builds its own models, batchers and metrics with
``service.main.create_app``; no FastAPI app is ever pickled. Settings come from the ``AE_*``
variables of the application's ``runtime_env`` (serve.yaml beside this file); each replica adds
``AE_SERVED_BY`` = ``<replica id>@<node id>``, so every response says who answered it.

Replica health is the app's own readiness (``/readyz``): Serve calls :meth:`AeDenoise.check_health`
every ``health_check_period_s`` and replaces a replica that fails it.

    serve deploy deploy/ray/serve.yaml     # on a running cluster (make ray-up), docs/scale-out.md
"""

from __future__ import annotations

import ray
from fastapi import FastAPI
from ray import serve

from service.config import Settings
from service.main import create_app


def served_by() -> str:
    """``<replica id>@<node id>`` of the replica this runs in (the X-Served-By header)."""
    replica = serve.get_replica_context().replica_id.unique_id
    return f"{replica}@{ray.get_runtime_context().get_node_id()}"


def build_app() -> FastAPI:
    """The service's app for this replica: the ``AE_*`` settings of its environment, plus who it is."""
    return create_app(Settings(served_by=served_by()))


@serve.deployment
@serve.ingress(build_app)
class AeDenoise:
    """One replica: the whole service app (REST, /v2, the demo page) behind Ray Serve's proxy."""

    def check_health(self) -> None:
        # The app's lifespan has loaded and warmed every model once this is true (service.state).
        state = self.app.state.service  # type: ignore[attr-defined]
        if not state.ready:
            raise RuntimeError("not ready: the models are not loaded")


app = AeDenoise.bind()
