"""The baseline for bench/records.py: a bare Starlette endpoint on the same path as a record.

GET answers 1 KiB of bytes; PUT reads the whole body and answers 201 with ``{}``. Served by uvicorn with the
settings ``openkvs serve`` uses (1 worker, loop and http auto = uvloop/httptools, no server header, no proxy
headers, same log level, no access log), so the ratio openkvs/bare is what openkvs itself costs per request.
"""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

PAYLOAD = b"x" * 1024


async def record(request: Request) -> Response:
    if request.method == "PUT":
        async for _ in request.stream():
            pass
        return Response(b"{}", status_code=201, media_type="application/json")
    return Response(PAYLOAD, media_type="application/octet-stream")


app = Starlette(routes=[Route("/v2/key-value-stores/{store}/records/{key}", record, methods=["GET", "PUT"])])
