"""How one path answers its methods: ``methods(GET=..., PUT=...)`` in the route table."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from openkvs import errors
from openkvs.api.common import ApiRequest

Handler = Callable[[Request], Awaitable[ASGIApp]]  # a Response, or the lighter Bytes

CORS_ALLOW_HEADERS = "Authorization, Content-Type, Content-Encoding, Range, If-Range, If-None-Match"
CORS_EXPOSE_HEADERS = (
    "Content-Length, Content-Range, ETag, Location, X-RateLimit-Limit, Content-Disposition, "
    "X-Apify-Pagination-Offset, X-Apify-Pagination-Limit, X-Apify-Pagination-Count, X-Apify-Pagination-Total, "
    "X-Apify-Pagination-Desc"  # a browser pages through a dataset's items by these (API-datasets.md 1)
)


class Bytes:
    """A response whose body is in memory (a small record, a HEAD, a 304, a PUT's 201): ``status``, the headers
    already encoded and the body, sent as they are, without building a Starlette Response (which re-checks each
    header). ``methods`` sends it itself, without this ASGI app's coroutine."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


class methods:  # reads as a declaration in the route table
    """One endpoint per path, dispatching on the method: unknown methods get the API's exact 405, OPTIONS the
    CORS preflight, and HEAD goes to the GET handler (which sends headers only). An ASGI app rather than a
    function, so that Starlette routes every method here instead of answering 405 itself."""

    def __init__(self, **handlers: Handler) -> None:
        self.handlers = handlers
        self.allowed = list(handlers)
        # What the path serves, HEAD included wherever GET is (RFC 9110 10.2.1); the 405 message keeps Apify's
        # list, which names no HEAD (API.md section 2).
        served = [m for method in self.allowed for m in ((method, "HEAD") if method == "GET" else (method,))]
        self.allow_header = ",".join(["OPTIONS", *dict.fromkeys(served)])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = ApiRequest(scope, receive)
        handler = self.handlers.get(scope["method"])  # the common case without respond()'s coroutine
        response = await (handler(request) if handler is not None else self.respond(request))
        if type(response) is Bytes:  # Bytes.__call__ written out: its coroutine would only pass on two sends
            await send({"type": "http.response.start", "status": response.status, "headers": response.headers})
            await send({"type": "http.response.body", "body": response.body})
        else:  # a method call: calling the instance goes through its type's call slot (__call__ looked up, arguments
            # packed)
            await response.__call__(scope, receive, send)  # type: ignore[operator]

    async def respond(self, request: Request) -> ASGIApp:
        method = request.scope["method"]
        if method == "OPTIONS":
            return Response(
                status_code=204,
                headers={
                    "Allow": self.allow_header,
                    "Access-Control-Allow-Methods": self.allow_header,
                    "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
                    "Access-Control-Max-Age": "3600",
                },
            )
        handler = self.handlers.get(method) or (self.handlers.get("GET") if method == "HEAD" else None)
        if handler is None:
            raise errors.MethodNotAllowed(self.allowed, self.allow_header)
        return await handler(request)
