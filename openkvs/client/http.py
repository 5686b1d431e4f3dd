"""Where the server is, who the caller is, and how to talk to it: store and record paths, error messages a user
can act on, and retries of what the API says is worth retrying (429 and 5xx, with Retry-After)."""

from __future__ import annotations

import contextlib
import json
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote
from urllib.request import getproxies

import httpx

import openkvs
from openkvs.client import DEFAULT_URL
from openkvs.redact import redacted

RETRIES = 6  # attempts after the first: at most about a minute of waiting with the backoff below
CONNECT_RETRIES = 2  # nobody listening: a server restarting is back within a second or two, a wrong URL never
MAX_WAIT = 30.0
# The most of an API answer held in memory. The largest the API gives is far below: a page of 1000 keys is under
# 0.3 MB, a dataset item at most rules.MAX_JSON_BODY (9 MiB), a queue's page of requests ~1 KB each (a page of
# 10,000 requests averaging over 6.7 KB each would not fit: such a page is asked in smaller ones).
MAX_ANSWER = 64 << 20
MAX_ERROR_BODY = 64 << 10  # of an error's body: its JSON is a type and a message
MAX_SHOWN = 1000  # characters of a server's text shown in a message


class ClientError(Exception):
    """A failure explained in one line for the user (the command exits 1 with it)."""


def cannot_connect(client: httpx.Client, exc: Exception) -> str:
    """What every client command says when nothing answers at the server's address (a connection refused, a name
    that does not resolve): it never connected, so nothing was "lost"."""
    return f"cannot connect to {redacted(str(client.base_url).rstrip('/'))} ({str(exc) or type(exc).__name__})"


class BadAnswer(ClientError):
    """A server answered what the API never gives (not JSON, a field missing or of another type, too large):
    what is wrong, in one line, after the call's ``what``."""

    def __init__(self, what: str, problem: str | BaseException) -> None:
        if isinstance(problem, BaseException):
            problem = f"{type(problem).__name__}: {problem}" if str(problem) else type(problem).__name__
        super().__init__(f"{what}: the server's answer is not what the API gives: {shown(problem)}")


# What parsing a server's answer raises when the answer is not what the API gives (a JSONDecodeError, a 5000-digit
# number, a missing field, a field of another type, nesting deeper than the parser goes)
ANSWER_ERRORS = (ValueError, LookupError, TypeError, AttributeError, RecursionError)


@contextlib.contextmanager
def parsing(what: str) -> Iterator[None]:
    """Reading a server's answer: any of ANSWER_ERRORS becomes a BadAnswer saying which call it was."""
    try:
        yield
    except ANSWER_ERRORS as exc:
        raise BadAnswer(what, exc) from None


def shown(text: str, limit: int = MAX_SHOWN) -> str:
    """A server's text as one line on a terminal: control characters (newlines, escape sequences, bidi overrides)
    written as escapes (ESC as \\x1b), at most ``limit`` characters of it."""
    cut = len(text) > limit
    text = text[:limit]
    if not text.isprintable():
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return text + ("..." if cut else "")


def data(response: httpx.Response, what: str) -> Any:
    """The ``data`` of an API answer's JSON."""
    with parsing(what):
        value = json.loads(response.content)
        if not isinstance(value, dict) or "data" not in value:
            raise BadAnswer(what, "no data in it")
        return value["data"]


def resource(response: httpx.Response, what: str) -> dict[str, Any]:
    """The ``data`` of an answer that describes one store, dataset or queue: an object with its ``id``."""
    found = data(response, what)
    if not isinstance(found, dict) or not isinstance(found.get("id"), str):
        raise BadAnswer(what, "no id in it")
    return found


class Unreachable(ClientError):
    """The last attempt could not connect either: most often the wrong address or port, or a server not started."""

    def __init__(self, what: str, client: httpx.Client, exc: Exception) -> None:
        super().__init__(f"{what}: {cannot_connect(client, exc)}; is the server running? (--url or OPENKVS_URL)")


def gave_up(what: str, client: httpx.Client, exc: httpx.TransportError, failures: int,
            retries: int = RETRIES) -> ClientError | None:
    """After ``failures`` attempts in a row that failed in transport, the last with ``exc``: None while another is
    due, else the error the command ends with. Every command decides here, alike: a refused connection is tried
    CONNECT_RETRIES times more (a wrong address never answers), a lost one ``retries`` times more."""
    refused = isinstance(exc, httpx.ConnectError)
    if failures <= (min(retries, CONNECT_RETRIES) if refused else retries):
        return None
    if refused:
        return Unreachable(what, client, exc)
    return ClientError(f"{what}: {lost(exc)}")


def lost(exc: httpx.TransportError) -> str:
    """A lost connection as messages name it: ``ReadError: <httpx's text>`` (an OS error may have none)."""
    return f"{type(exc).__name__}: {str(exc) or 'connection failed'}"


@dataclass(frozen=True)
class Endpoint:
    url: str  # scheme and host, with no /v2
    token: str | None

    def client(self, timeout: float = 60.0) -> httpx.Client:
        headers = {"User-Agent": f"openkvs/{openkvs.__version__}"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        # One pool for all threads of a command; a connection per parallel job.
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout, limits=limits, verify=self._tls())

    def _tls(self) -> ssl.SSLContext | bool:
        """True (httpx's default: certifi's CAs) when TLS may be spoken, else a context that trusts no one. Loading
        the CAs takes 15-20 ms of CPU, a tenth of a client command's start; a plain http:// server with no proxy in
        the environment never needs them (the client follows no redirects), and were TLS spoken after all, this
        context would refuse every certificate rather than accept any."""
        if self.url.startswith("http://") and not getproxies():
            return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        return True


def endpoint(url: str | None, token: str | None) -> Endpoint:
    base = (url or DEFAULT_URL).rstrip("/")
    if base.endswith("/v2"):  # APIFY_API_BASE_URL is sometimes given with it
        base = base[: -len("/v2")]
    return Endpoint(base, token or None)


def store_path(store: str) -> str:
    """STORE as the API takes it: an ID, ``~NAME`` (the caller's store) or ``USER~NAME``."""
    return "/v2/key-value-stores/" + quote(store, safe="~")


def record_path(store: str, key: str) -> str:
    return f"{store_path(store)}/records/{quote(key, safe='')}"


def store_name(store: str) -> str:
    """What a file made from STORE is called: the name without its owner, or the ID."""
    return store.rpartition("~")[2] or store


def explain(response: httpx.Response, what: str) -> ClientError:
    """The API's error (``{"error": {"type", "message"}}``) as one line, with a hint for the usual mistakes."""
    detail = ""
    try:
        error = json.loads(_error_body(response)).get("error") or {}
        detail = shown(f"{error.get('type', '')}: {error.get('message', '')}".strip(": "))
    except (*ANSWER_ERRORS, httpx.HTTPError, httpx.StreamError):
        pass
    hint = ""
    if response.status_code == 401:
        hint = " (give a token with --token or OPENKVS_TOKEN)"
    elif response.status_code == 404 and "~" not in what and "record" not in what:
        hint = " (a store is an ID, ~NAME for one of yours or USER~NAME)"
    return ClientError(f"{what}: HTTP {response.status_code} {detail or response.reason_phrase}{hint}")


def _error_body(response: httpx.Response) -> bytes:
    """The first MAX_ERROR_BODY bytes of an error's body, and one more when there are more (not JSON then): the
    rest is never read."""
    try:
        return response.content[: MAX_ERROR_BODY + 1]
    except httpx.ResponseNotRead:
        return _read_upto(response, MAX_ERROR_BODY)


def _read_upto(response: httpx.Response, limit: int) -> bytes:
    """A streamed ``response``'s body (decoded), or its first chunks past ``limit`` bytes: the rest is not read."""
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > limit:
            break
    return bytes(body)


def read_answer(response: httpx.Response, what: str, limit: int | None = None) -> httpx.Response:
    """A streamed ``response`` read whole, refused past ``limit`` bytes (MAX_ANSWER; decoded) without reading on."""
    limit = limit or MAX_ANSWER
    body = _read_upto(response, limit)
    if len(body) > limit:
        response.close()
        raise BadAnswer(what, f"over {limit:,} bytes")
    response._content = body  # (what Response.read() keeps: .content and .json() read it)
    return response


def retryable(status: int) -> bool:
    return status == 429 or status >= 500 and status != 501


def wait_time(response: httpx.Response | None, attempt: int) -> float:
    """Retry-After when the server gives one, else exponential backoff from 0.5 s."""
    if response is not None:
        try:
            return min(MAX_WAIT, max(0.0, float(response.headers.get("retry-after", ""))))
        except ValueError:
            pass
    return min(MAX_WAIT, 0.5 * 2**attempt)


def request(
    client: httpx.Client,
    method: str,
    path: str,
    what: str,
    *,
    ok: tuple[int, ...] = (200, 201, 204),
    content: Callable[[], Any] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    limit: int | None = None,
    **kw: Any,
) -> httpx.Response:
    """One API call, retried on 429, 5xx and lost connections; any other answer not in ``ok`` is a ClientError.
    ``content`` makes the body anew for each attempt (a file opened again from its start). The answer's body is
    read, at most ``limit`` (MAX_ANSWER) bytes of it (a BadAnswer past that); an error's, at most MAX_ERROR_BODY."""
    for attempt in range(RETRIES + 1):
        response = None
        try:
            if content is not None:
                kw["content"] = content()
            response = client.send(client.build_request(method, path, **kw), stream=True)
            try:
                if response.status_code in ok:
                    return read_answer(response, what, limit or MAX_ANSWER)
                if not retryable(response.status_code) or attempt == RETRIES:
                    raise explain(response, what)
            finally:
                response.close()
        except httpx.TransportError as exc:
            if (error := gave_up(what, client, exc, attempt + 1)) is not None:
                raise error from None
        finally:
            body = kw.get("content")
            if body is not None and hasattr(body, "close"):
                body.close()
        sleep(wait_time(response, attempt))
    raise AssertionError("unreachable")
