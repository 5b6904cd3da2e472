"""The ceiling the ingest figures are measured against: the same server stack with an empty handler.

    python tests/benchmarks/ceiling.py app PORT    # gpuledger's app (middleware, error handlers,
                                                   # routing), POST /v1/ingest reads the body and acks
    python tests/benchmarks/ceiling.py asgi PORT   # a bare ASGI callable under the same uvicorn

Both run under ``uvicorn.run`` with the arguments ``gpuledger server`` gives it (so the same
event loop and HTTP parser: uvloop and httptools where installed). ``real ÷ ceiling`` is then
the share of a request's cost that is the request itself, not ingest.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

ACK = b'{"applied":true,"intervals":8}'


async def bare(scope, receive, send):  # noqa: ANN001, ANN201 - the minimal ASGI app
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(ACK)).encode())]})
    await send({"type": "http.response.body", "body": ACK})


def empty_handler_app(db_dir: str):  # noqa: ANN201
    """gpuledger's app on an empty SQLite file, /v1/ingest answered without decoding or writing."""
    from fastapi import Request, Response

    from api.accounting.rates import LedgerConfig
    from api.http.app import create_app
    from api.http.routes.ingest import IngestRoute
    from collector.db import make_engine
    from collector.schema import upgrade

    async def empty(request: Request) -> Response:
        await request.body()
        return Response(ACK, media_type="application/json")

    IngestRoute.get_route_handler = lambda self: empty  # type: ignore[method-assign]  # before the app includes it
    engine = make_engine(f"sqlite:///{db_dir}/ceiling.db")
    upgrade(engine)
    return create_app(engine, LedgerConfig(), scheduler=False)


def main() -> None:
    import uvicorn

    kind, port = sys.argv[1], int(sys.argv[2])
    with tempfile.TemporaryDirectory(prefix="ceiling_") as tmp:
        app = bare if kind == "asgi" else empty_handler_app(tmp)
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
