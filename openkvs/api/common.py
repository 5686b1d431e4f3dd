"""What every endpoint shares: the app's state, query parsing, key and name checks, rate limits and JSON
responses. Who may do what is openkvs/access.py."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import anyio.to_thread
import orjson
from starlette.datastructures import URL
from starlette.requests import Request, empty_receive, empty_send
from starlette.responses import Response
from starlette.types import Receive, Scope

from openkvs import auth, errors, httprange, jsontext, rules
from openkvs.config import Settings
from openkvs.ratelimit import client_ip
from openkvs.storage.base import KeySelection, Storage, Store, User

if TYPE_CHECKING:
    from openkvs.ratelimit.policy import Verdict

MAX_JSON_BODY = rules.MAX_JSON_BODY
INLINE_JSON_BODY = 16 * 1024  # JSON bodies up to this size are parsed on the event loop (read_json_body)


class ApiRequest(Request):
    """Starlette's Request with the headers and the query parameters as plain dicts, made once per request:
    Starlette's Headers scans and re-encodes the raw list on every lookup, and a record GET looks up half a
    dozen. Handlers ask for lowercase header names; as with Starlette, the first of repeated headers wins and
    the last of repeated query parameters does."""

    # Class-level None until made: a first lookup that raised AttributeError would cost an exception per request.
    _raw_headers: dict[bytes, bytes] | None = None
    _plain_headers: dict[str, str] | None = None
    _plain_query: dict[str, str] | None = None
    # Request.__init__'s other attributes, as they start, at class level: set per instance only once changed
    # (an HTTP request's; the route table's ``methods`` makes one per request, with the server's receive).
    _send = staticmethod(empty_send)
    _stream_consumed = False
    _is_disconnected = False
    _form = None

    def __init__(self, scope: Scope, receive: Receive = empty_receive) -> None:
        self.scope = scope
        self._receive = receive

    def raw_header(self, name: bytes) -> bytes | None:
        """The value of header ``name`` (lowercase) as sent, the first of repeated ones: what a record GET asks
        (the token, a range or a condition) without decoding every header into ``headers``."""
        raw = self._raw_headers
        if raw is None:
            raw = self._raw_headers = _raw_header_dict(self.scope["headers"])
        return raw.get(name)

    @property
    def headers(self) -> dict[str, str]:  # type: ignore[override]
        plain = self._plain_headers
        if plain is None:
            raw = self._raw_headers
            if raw is None:
                raw = self._raw_headers = _raw_header_dict(self.scope["headers"])
            plain = self._plain_headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw.items()}
        return plain

    @property
    def query_params(self) -> dict[str, str]:  # type: ignore[override]
        plain = self._plain_query
        if plain is None:
            qs = self.scope["query_string"]
            plain = self._plain_query = dict(parse_qsl(qs.decode("latin-1"), keep_blank_values=True)) if qs else {}
        return plain


# Header names known to be in lower case: the same few come with every request, and a set lookup of each (their
# hashes are kept from the dict) costs less than testing them. Bounded: past it, names are tested as they come.
_LOWER_NAMES: set[bytes] = set()
LOWER_NAMES_KEPT = 256


def _raw_header_dict(raw: Any) -> dict[bytes, bytes]:
    """Header name -> value, the first of repeated headers winning, names in lower case: built in C (``dict`` of
    the reversed pairs). ASGI servers send names in lower case already; a name that is not is lowered here."""
    found = dict(reversed(raw))
    if _LOWER_NAMES.issuperset(found):
        return found
    if found and not b"".join(found).islower():
        found = {k.lower(): v for k, v in reversed(raw)}
    if len(_LOWER_NAMES) < LOWER_NAMES_KEPT:
        _LOWER_NAMES.update(found)  # (each one now equal to its lower case)
    return found


def raw_headers(request: Request) -> dict[bytes, bytes]:
    """``request``'s headers by lowercase name, as bytes, the first of repeated ones (made once per ApiRequest):
    for a handler that asks for several, one call instead of a ``header_bytes`` for each."""
    if isinstance(request, ApiRequest):
        raw = request._raw_headers
        if raw is None:
            raw = request._raw_headers = _raw_header_dict(request.scope["headers"])
        return raw
    return _raw_header_dict(request.scope["headers"])


def header_bytes(request: Request, name: bytes) -> bytes | None:
    """``request``'s header ``name`` (lowercase) as bytes, None if absent: ApiRequest's without decoding."""
    if isinstance(request, ApiRequest):
        return request.raw_header(name)
    value = request.headers.get(name.decode("latin-1"))
    return value.encode("latin-1") if value is not None else None


@dataclass
class AppState:
    settings: Settings
    storage: Storage
    tokens: auth.TokenCache
    limits: Any = None  # openkvs.ratelimit policy, or None when rate limits are off
    trusted_proxies: list[Any] = field(default_factory=list)  # networks whose X-Forwarded-For is believed
    downloads: Any = None  # openkvs.api.download_slots.DownloadSlots, made with the state in the lifespan


def state(request: Request) -> AppState:
    return state_of(request.scope)


def state_of(scope: Scope) -> AppState:
    return scope["state"]["openkvs"]  # type: ignore[no-any-return]


def count_returned(request: Request, storage: Any, store_id: str, *, reads: int = 0, lists: int = 0) -> None:
    """The reads and lists of what a GET returns (the contracts' statistics count those); a HEAD returns none of it
    and counts none (as the ZIP's and the items' HEADs, which return before their counts)."""
    if request.method != "HEAD":
        storage.count_access(store_id, reads=reads, lists=lists)


def slot_holder(request: Request, user: User | None) -> str:
    """Whose download slot a request takes (api/download_slots.py): its user's, or its client IP's without one."""
    return f"user:{user.id}" if user is not None else "ip:" + client_ip(request.scope, state(request).trusted_proxies)


def to_json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(to_json({"data": data}), status, headers, media_type="application/json; charset=utf-8")


def fast_json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """json_response for data that may be as large as a body (a dataset's schema, up to MAX_JSON_BODY): encoded by
    orjson, a tenth of json.dumps's CPU, which is one call on the event loop that nothing else interrupts (64 ms for
    a schema of 2.7 MB, 6 ms here). The same JSON values; a float may be written otherwise ("1e100" for "1e+100").
    What orjson refuses (an integer past 64 bits) is encoded by json, as before."""
    try:
        body = orjson.dumps({"data": data})
    except orjson.JSONEncodeError:
        body = to_json({"data": data})
    return Response(body, status, headers, media_type="application/json; charset=utf-8")


def iso(dt: datetime) -> str:
    """UTC with milliseconds and ``Z``; the year always four digits (strftime's %Y writes the year 38 as "38", which
    is no RFC 3339 date: a queue request's handledAt may be any date a client sends)."""
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}."
        f"{dt.microsecond // 1000:03d}Z"
    )


def public_base(request: Request) -> str:
    configured = state(request).settings.public_url
    if configured:
        return configured.rstrip("/")
    scope = request.scope
    host = next((v for k, v in scope["headers"] if k == b"host"), None)  # the first, as Starlette's URL takes
    server = scope.get("server")
    return _origin(scope.get("scheme", "http"), host, tuple(server) if server else None)


@functools.lru_cache(maxsize=256)
def _origin(scheme: str, host: bytes | None, server: tuple[str, int] | None) -> str:
    """``scheme://netloc`` of Starlette's ``request.url`` for these parts of the scope (the same few every time:
    a URL object and its parse per request cost more than the rest of a PUT's answer)."""
    url = URL(scope={"type": "http", "scheme": scheme, "server": server, "path": "/", "query_string": b"",
                     "headers": [] if host is None else [(b"host", host)]})
    return f"{url.scheme}://{url.netloc}"


# -- query parameters --------------------------------------------------------------------------------------------


def query_bool(request: Request, name: str, default: bool = False) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    value = rules.QUERY_BOOLEANS.get(raw)
    if value is None:
        raise errors.InvalidInput(f"Parameter '{name}' must be a boolean (true, false, 1 or 0).")
    return value


_QUERY_INT = re.compile("-?[0-9]+")


def query_int(request: Request, name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    # ASCII digits, '-' for the negative values the contracts answer with "at least" (API.md 4.1): int() alone
    # would also take a '+', spaces, '_' between digits and any Unicode digit (API-datasets.md section 1).
    if _QUERY_INT.fullmatch(raw) is None:
        raise errors.InvalidInput(f"Parameter '{name}' must be an integer.")
    try:
        value = int(raw)
    except ValueError:  # past int()'s 4,300 digits
        raise errors.InvalidInput(f"Parameter '{name}' must be an integer.") from None
    if value < minimum:
        raise errors.InvalidInput(f"Parameter '{name}' must be at least {minimum}.")
    if maximum is not None:
        return min(value, maximum)
    if value > rules.MAX_QUERY_INT:  # past what the databases' 64-bit integers hold (a 500 otherwise)
        raise errors.InvalidInput(f"Parameter '{name}' must be at most {rules.MAX_QUERY_INT}.")
    return value


def query_limit(request: Request, default: int = 1000) -> int:
    """A page size: 1 up to ``default`` (larger is clamped). 0 means the default too (API.md 4.1, 4.4):
    apify-client's ``iterate()`` sends ``limit=0`` when the caller gave no limit."""
    return query_int(request, "limit", default, minimum=0, maximum=default) or default


def query_text(request: Request, name: str) -> str | None:
    """A free-text query value (a prefix, a start key); None if absent or empty. No key holds a NUL character,
    and PostgreSQL text can't either, so one is refused rather than sent to the database."""
    raw = request.query_params.get(name)
    if not raw:
        return None
    if "\x00" in raw:
        raise errors.InvalidInput(f"Parameter '{name}' must not contain a NUL character.")
    return raw


def valid_key(key: str) -> bool:
    return rules.RECORD_KEY.ok(key)


def check_key(key: str) -> str:
    if len(key) > rules.RECORD_KEY.max_length:
        raise errors.InvalidRecordKey(f"Record key is too long (maximum is {rules.RECORD_KEY.max_length} characters)")
    if not valid_key(key):
        raise errors.InvalidRecordKey()
    return key


def check_store_name(name: str) -> str:
    if not rules.STORE_NAME.ok(name):
        raise errors.InvalidInput(
            "Store name must be 1 to 63 characters: letters, digits and dashes, not starting or ending with a dash."
        )
    return name


def selection(request: Request, store: Store) -> KeySelection:
    """Fold ``prefix`` and ``collection`` into one KeySelection (an impossible one selects nothing)."""
    prefix = query_text(request, "prefix")
    collection = request.query_params.get("collection")
    exact: str | None = None
    if collection:
        collections = (store.schema or {}).get("collections") or {}
        if not store.schema:
            raise errors.InvalidInput("The key-value store has no schema, so it has no collections.")
        spec = collections.get(collection)
        if not isinstance(spec, dict):
            raise errors.InvalidInput(f"Collection '{collection}' is not defined in the key-value store schema.")
        if spec.get("key") is not None:
            exact = spec["key"]  # with a prefix it doesn't start with, storage selects nothing
        else:
            other = spec.get("keyPrefix") or ""
            if prefix is None or other.startswith(prefix):
                prefix = other or prefix
            elif not prefix.startswith(other):
                return KeySelection(prefix=prefix, exact="")  # disjoint prefixes: no key is "" so nothing
    return KeySelection(prefix=prefix, exact=exact)


def select_range(request: Request, etag: str, size: int, headers: dict[str, str]) -> tuple[int, int, int]:
    """(start, end, status) of a response to a request that may carry Range/If-Range; sets Content-Range."""
    try:
        start, end, content_range = httprange.select(
            request.headers.get("range"), request.headers.get("if-range"), etag, size
        )
    except httprange.RangeNotSatisfiable:
        raise errors.InvalidRange(size) from None
    if content_range is None:
        return start, end, 200
    headers["Content-Range"] = content_range
    return start, end, 206


# -- store IDs (the access decision is openkvs/access.py) ---------------------------------------------------


def plausible_store_id(store_id: str) -> bool:
    return rules.STORE_ID.ok(store_id)


# -- rate limits -------------------------------------------------------------------------------------------------


QUEUE_REQUESTS = "queue-requests"  # single-request add/get/update/delete, prolong and delete of a lock
QUEUE_BATCH = "queue-batch"  # batch add and delete, head/lock
DATASET_PUSH = "dataset-push"  # pushes of dataset items


def budgets(settings: Settings) -> dict[str, int]:
    """The named per-store budgets a second (openkvs/ratelimit/policy.py): request queues' and datasets' own."""
    return {
        QUEUE_REQUESTS: settings.rate_limit_queue_requests_per_second,
        QUEUE_BATCH: settings.rate_limit_queue_batch_per_second,
        DATASET_PUSH: settings.rate_limit_push_per_second,
    }


def limits_off(scope: Scope, store_id: str | None, record_op: bool, budget: str | None = None) -> None:
    """``rate_limit`` with --rate-limits off, without a coroutine: nothing is spent, but the header still names
    the configured limit (without a store, ApiMiddleware's default is the per-user limit)."""
    if store_id is not None:
        s = state_of(scope).settings
        if budget is not None:
            limit = budgets(s)[budget]
        else:
            limit = s.rate_limit_records_per_second if record_op else s.rate_limit_store_per_second
        scope["openkvs.ratelimit_limit"] = limit


async def rate_limit(
    scope: Scope, user: User | None, store_id: str | None, record_op: bool, budget: str | None = None
) -> None:
    """Charge this request to the budgets of ``user`` (else of the client's IP) and of the store (its ``budget``
    if named). Records the limit for the X-RateLimit-Limit header."""
    st = state_of(scope)
    policy = st.limits
    if policy is None:
        limits_off(scope, store_id, record_op, budget)
        return
    _apply(scope, await policy.check(_caller(scope, st, user), store_id, record_op, budget))


def rate_limit_now(scope: Scope, user: User | None, store_id: str | None, record_op: bool,
                   budget: str | None = None) -> bool:
    """``rate_limit`` without a coroutine when rate limits are off or held in memory: True when done (or raised
    429), False when the limiter must be awaited (Redis: call ``rate_limit``)."""
    st: AppState = scope["state"]["openkvs"]  # (state_of, without its call: this runs on every request)
    policy = st.limits
    if policy is None:
        limits_off(scope, store_id, record_op, budget)
        return True
    # (a policy may offer ``check`` alone: tests' recording one)
    if user is not None:  # the user's budget, the policy's chain found by the user id (_caller's text not made)
        check_user_now = getattr(policy, "check_user_now", None)
        verdict = check_user_now(user.id, store_id, record_op, budget) if check_user_now is not None else None
    else:
        check_now = getattr(policy, "check_now", None)
        verdict = check_now(_caller(scope, st, None), store_id, record_op, budget) if check_now is not None else None
    if verdict is None:
        return False
    scope["openkvs.ratelimit_limit"] = verdict.limit  # _apply's, without its call (this runs on every request)
    if not verdict.allowed:
        raise errors.RateLimitExceeded(headers={"Retry-After": str(verdict.retry_after)})
    return True


def _caller(scope: Scope, st: AppState, user: User | None) -> str:
    """Whose budget a request spends: the user's, else the client IP's."""
    return "user:" + user.id if user is not None else "ip:" + client_ip(scope, st.trusted_proxies)


def _apply(scope: Scope, verdict: Verdict) -> None:
    scope["openkvs.ratelimit_limit"] = verdict.limit
    if not verdict.allowed:
        raise errors.RateLimitExceeded(headers={"Retry-After": str(verdict.retry_after)})


MAX_LENGTH_DIGITS = 19  # a Content-Length past this is past any body a setting allows (and past int()'s guard)


def declared_length(request: Request) -> int | None:
    """The request's Content-Length, or None when it has none (a chunked body). ASCII digits only: ``str.isdigit``
    also takes "\u00b2" (which ``int`` refuses) and "\u0661\u0662" (which ``int`` reads as 12). The HTTP server's parser
    refuses such a header before the app does; this holds behind any other."""
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    if not (declared.isascii() and declared.isdigit() and len(declared) <= MAX_LENGTH_DIGITS):
        raise errors.InvalidInput("Content-Length must be a number of bytes in ASCII digits.")
    return int(declared)


async def read_json_body(
    request: Request, max_depth: int = jsontext.MAX_DEPTH, check: Callable[[Any], Any] | None = None
) -> Any:
    """A JSON request body (any Content-Encoding we accept), capped at MAX_JSON_BODY decoded bytes, at
    ``max_depth`` levels, through ``check`` if given (rules that walk the whole value: run with the parse, in the
    same place, so a large body is walked off the event loop too). Every endpoint that takes a JSON body reads it
    here (a dataset push parses the bytes of ``read_json_bytes`` itself). (Strings that storage can't hold, NUL and
    lone surrogates, are refused where a value is stored: members the API ignores may hold them.)"""
    raw = await read_json_bytes(request)

    def parse() -> Any:
        value = jsontext.loads(raw, max_depth=max_depth) if raw.strip() else None
        return value if check is None else check(value)

    try:  # parsing up to 9 MiB and walking it is CPU work: not on the event loop, unless it is small (a few
        # microseconds, less than the hop to a thread: a queue's requests and batches)
        if len(raw) <= INLINE_JSON_BODY:
            return parse()
        return await anyio.to_thread.run_sync(parse)
    except jsontext.InvalidJson as exc:
        raise errors.InvalidInput(str(exc)) from None


async def read_json_bytes(request: Request) -> bytes:
    """The decoded bytes of a JSON request body, read as ``read_json_body`` reads them."""
    from openkvs import codec  # local: codec imports errors, which is fine, but keep common light to import

    encoding = codec.normalize_encoding(request.headers.get("content-encoding"))
    declared = declared_length(request)
    kept: list[bytes] = []

    async def keep(decoded: bytes) -> None:  # UploadBody decodes and bounds the body once; this keeps the result
        kept.append(decoded)

    body = codec.UploadBody(
        request.stream(), encoding, MAX_JSON_BODY, declared,
        check=keep, check_limit=MAX_JSON_BODY,  # the limit itself answers first: 413, as for any body
    )
    try:
        async for _ in body:
            pass
    except codec.DecodeError:
        raise errors.InvalidInput(f"The request body is not valid {encoding}.") from None
    return kept[0] if kept else b""
