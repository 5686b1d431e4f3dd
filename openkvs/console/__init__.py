"""The web console: plain static files (HTML, CSS, JavaScript modules in ``static/``) served by the API server
itself, with no build step. The console talks to the public ``/v2`` API like any client, with the user's token in
an ``Authorization`` header, so the server needs only these routes for its files.

Every answer here carries a strict Content-Security-Policy (scripts and styles from this origin only, no inline
code, nothing from other origins, frames only of this origin: record previews from the API's own sandboxed
responses), ``nosniff``, ``Referrer-Policy: no-referrer`` (signed links in the page never leak through a
Referer), and ``Cache-Control: no-cache`` with an ``ETag``: the file names carry no version, so a browser asks
again each time and gets 304 until the server's files change."""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from openkvs import errors

STATIC = Path(__file__).parent / "static"
PREFIX = "/console/"

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",  # images are records, by their signed URLs on this origin
        "connect-src 'self'",
        "frame-src 'self' blob:",  # HTML: the API's sandboxed response in a sandboxed frame; PDF: a blob we typed
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_TYPES = {".js": "text/javascript; charset=utf-8", ".html": "text/html; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".txt": "text/plain; charset=utf-8"}


@dataclass(frozen=True)
class _File:
    body: bytes
    content_type: str
    etag: str


def _load() -> dict[str, _File]:
    """Every file of the console, read once: a request can only name one of these (no path reaches the disk)."""
    files = {}
    for path in sorted(STATIC.rglob("*")):
        if path.is_file():
            body = path.read_bytes()
            kind = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            files[path.relative_to(STATIC).as_posix()] = _File(body, kind, etag)
    return files


FILES = _load()


async def page(request: Request) -> Response:
    """GET /console/{path}: a file of the console; the folder itself is its index.html."""
    name = request.path_params.get("path", "") or "index.html"
    file = FILES.get(name)
    if file is None:
        raise errors.PageNotFound()
    headers = {**HEADERS, "ETag": file.etag}
    if file.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    body = b"" if request.method == "HEAD" else file.body
    return Response(body, media_type=file.content_type, headers={**headers, "Content-Length": str(len(file.body))})


async def to_console(request: Request) -> Response:
    """GET / and /console: the console's address."""
    return RedirectResponse(PREFIX, status_code=302, headers=HEADERS)


def url_of(base: str, kind: str, resource_id: str) -> str:
    """Where the console shows one resource (the ``consoleUrl`` of key-value stores, datasets and request queues):
    ``kind`` is the path of its kind's pages (static/js/kinds/), routed by the URL's fragment (static/js/main.js)."""
    return f"{base}{PREFIX}#/{kind}/{resource_id}"
