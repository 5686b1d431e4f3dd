"""Where the server is, who the caller is, and how to talk to it: store and record paths, error messages a user
can act on, and retries of what the API says is worth retrying (429 and 5xx, with Retry-After)."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable
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


class ClientError(Exception):
    """A failure explained in one line for the user (the command exits 1 with it)."""


def cannot_connect(client: httpx.Client, exc: Exception) -> str:
    """What every client command says when nothing answers at the server's address (a connection refused, a name
    that does not resolve): it never connected, so nothing was "lost"."""
    return f"cannot connect to {redacted(str(client.base_url).rstrip('/'))} ({str(exc) or type(exc).__name__})"


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
        error = json.loads(response.read()).get("error") or {}
        detail = f"{error.get('type', '')}: {error.get('message', '')}".strip(": ")
    except (ValueError, AttributeError, httpx.HTTPError):
        pass
    hint = ""
    if response.status_code == 401:
        hint = " (give a token with --token or OPENKVS_TOKEN)"
    elif response.status_code == 404 and "~" not in what and "record" not in what:
        hint = " (a store is an ID, ~NAME for one of yours or USER~NAME)"
    return ClientError(f"{what}: HTTP {response.status_code} {detail or response.reason_phrase}{hint}")


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
    **kw: Any,
) -> httpx.Response:
    """One API call, retried on 429, 5xx and lost connections; any other answer not in ``ok`` is a ClientError.
    ``content`` makes the body anew for each attempt (a file opened again from its start)."""
    for attempt in range(RETRIES + 1):
        response = None
        try:
            if content is not None:
                kw["content"] = content()
            response = client.request(method, path, **kw)
            if response.status_code in ok:
                return response
            if not retryable(response.status_code) or attempt == RETRIES:
                raise explain(response, what)
        except httpx.TransportError as exc:
            if (error := gave_up(what, client, exc, attempt + 1)) is not None:
                raise error from None
        finally:
            body = kw.get("content")
            if body is not None and hasattr(body, "close"):
                body.close()
        sleep(wait_time(response, attempt))
    raise AssertionError("unreachable")
