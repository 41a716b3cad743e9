"""The echo baseline: the service's server stack doing nothing but taking the upload and returning it.

Same FastAPI, same uvicorn settings as ``ae-serve``, same multipart parsing (the service's own
``read_uploads``), no middleware, no decoding, no inference. ``/denoise`` can at best match it
while also running the model, so it is the "HTTP share" in the serving-efficiency formula.

    AE_PORT=8001 .venv/bin/python -m bench.echo_app
"""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

from service.config import Settings
from service.intake import read_uploads


def create_echo_app(settings: Settings) -> FastAPI:
    app = FastAPI(title="echo")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        (upload,) = await read_uploads(request, settings, batch=False)
        return Response(upload.data, media_type="image/png")

    return app


def main() -> None:
    settings = Settings()
    # Keep in step with service.main.run: the comparison is only fair on identical server settings.
    uvicorn.run(
        create_echo_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
