"""The echo baseline: a raw ASGI app (no framework) that reads the upload and returns it.

It reads the body and takes the image out of it with the service's own intake
(``service.intake.read_uploads``), and runs under uvicorn with ``ae-serve``'s server settings, so it
costs what HTTP and the upload cost on this machine and nothing else: the "HTTP share" in the
serving-efficiency formula of docs/benchmarks.md.

    AE_PORT=8001 .venv/bin/python -m bench.echo_app
"""

from __future__ import annotations

from typing import Any

import uvicorn

from service.config import Settings
from service.intake import read_uploads


def create_echo_app(settings: Settings) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/healthz":
            body, media = b'{"status":"ok"}', b"application/json"
        else:
            chunks = []
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            (upload,) = read_uploads(
                b"".join(chunks), headers.get("content-type"), None, batch=False, max_items=1
            )
            body, media = upload.data, b"image/png"
        start = [(b"content-type", media), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": start})
        await send({"type": "http.response.body", "body": body})

    return app


def echo_app() -> Any:
    """The echo app with the ``AE_*`` settings, for servers that take a factory (granian --factory)."""
    return create_echo_app(Settings())


def main() -> None:
    settings = Settings()
    # Keep in step with service.main.run: the comparison is only fair on identical server settings.
    uvicorn.run(
        create_echo_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        proxy_headers=False,
        http="httptools",
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
