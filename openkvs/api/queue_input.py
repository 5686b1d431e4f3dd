"""What the request-queue endpoints accept (API-request-queues.md sections 1-3): the request object as a client
sends it, turned into what storage keeps (``NewRequest``), and the query values of the queue API (``clientKey``,
``lockSecs``, the list cursor). Everything wrong is a 400 in the contract's words, before storage is asked."""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request

from openkvs import errors, jsontext, rules
from openkvs.api.common import iso
from openkvs.requestid import request_id
from openkvs.rules import MAX_BATCH, MAX_QUERY_INT
from openkvs.storage.queues import MAX_LOCK_SECS, NewRequest

MAX_TEXT_BYTES = 65_535  # uniqueKey and url
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"))
_TIMESTAMP = re.compile(  # (ASCII: str's \d takes any script's digits, and int() reads them: "２０２０")
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


class InvalidClientKey(errors.ApiError):
    status, type = 400, "invalid-client-key"
    default_message = "Invalid clientKey: it must be 1 to 32 printable ASCII characters."


class RequestIdInvalid(errors.ApiError):
    status, type, default_message = 400, "request-id-invalid", "Request ID does not match its uniqueKey."


class RequestHandledOrLocked(errors.ApiError):
    status, type = 400, "request-handled-or-locked"


class InvalidContentType(errors.ApiError):
    status, type = 400, "invalid-content-type-header"
    default_message = "Invalid Content-Type header: expected application/json."


def check_content_type(request: Request) -> None:
    """A JSON body's Content-Type: absent, or application/json with any parameters (as for datasets)."""
    raw = request.headers.get("content-type")
    if raw is not None and raw.split(";", 1)[0].strip().lower() != "application/json":
        raise InvalidContentType()


class QueueNotFound(errors.NotFound):
    default_message = "Request queue was not found"


class RequestNotFound(errors.NotFound):
    default_message = "Request was not found"


# -- query values ------------------------------------------------------------------------------------------------


def client_key(request: Request) -> str | None:
    raw = request.query_params.get("clientKey")
    if raw is None:
        return None
    if not rules.CLIENT_KEY.ok(raw):
        raise InvalidClientKey()
    return raw


def lock_secs(request: Request) -> int:
    raw = request.query_params.get("lockSecs")
    if raw is None or raw == "":
        raise errors.InvalidInput('"lockSecs" is required.')
    # (the length first: int() of more than 4,300 digits raises, which was a 500)
    if len(raw) > 40 or not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LOCK_SECS:
        raise errors.InvalidInput(f'"lockSecs" must be an integer from 1 to {MAX_LOCK_SECS}.')
    return int(raw)


def plausible_request_id(raw: str) -> bool:
    """Whether a request of this queue could have this ID (derived IDs are 15 letters and digits)."""
    return rules.REQUEST_ID.ok(raw)


def encode_cursor(last_id: str) -> str:
    text = json.dumps({"requestId": last_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The request ID a cursor of ours carries; 400 for anything this server could not have issued."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise errors.InvalidInput('"cursor" is not a cursor this server issued.') from None
    if not isinstance(value, dict) or not isinstance(value.get("requestId"), str) or not plausible_request_id(
        value["requestId"]
    ):
        raise errors.InvalidInput('"cursor" is not a cursor this server issued.')
    return value["requestId"]  # type: ignore[no-any-return]


# -- the request object ------------------------------------------------------------------------------------------


def normalise_time(raw: str, field: str) -> str:
    """An RFC 3339 timestamp with a zone, as UTC with milliseconds and ``Z``."""
    m = _TIMESTAMP.fullmatch(raw)
    if m is None:
        raise errors.InvalidInput(f'"{field}" must be a timestamp with a time zone (RFC 3339).')
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction = (m.group(7) or "").ljust(6, "0")[:6]
    try:
        when = datetime(year, month, day, hour, minute, second, int(fraction), tzinfo=UTC)
        if m.group(9):
            if int(m.group(10)) > 23 or int(m.group(11)) > 59:  # RFC 3339 offsets: -23:59 to +23:59
                raise ValueError
            offset = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
            when = when - offset if m.group(9) == "+" else when + offset
    except (ValueError, OverflowError):
        raise errors.InvalidInput(f'"{field}" is not a valid date and time.') from None
    return iso(when)


def text_field(obj: dict[str, Any], field: str, where: str) -> str:
    """``uniqueKey`` or ``url``: a non-empty string of at most MAX_TEXT_BYTES UTF-8 bytes, storable."""
    value = obj.get(field)
    if value is None:
        raise errors.InvalidInput(f'"{field}" is required{where}.')
    if not isinstance(value, str) or not value:
        raise errors.InvalidInput(f'"{field}" must be a non-empty string{where}.')
    try:
        jsontext.check_storable(value)
    except jsontext.InvalidJson:
        raise errors.InvalidInput(f'"{field}" holds NUL or a lone UTF-16 surrogate{where}.') from None
    if len(value) > MAX_TEXT_BYTES // 4 and len(value.encode()) > MAX_TEXT_BYTES:
        raise errors.InvalidInput(f'"{field}" must be at most {MAX_TEXT_BYTES} bytes{where}.')
    return value


_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "payload": ((str, dict), "a string, an object or null"),
    "headers": ((dict,), "an object"),
    "userData": ((dict,), "an object"),
    "noRetry": ((bool,), "a boolean"),
    "errorMessages": ((list,), "an array of strings"),
    "loadedUrl": ((str,), "a string"),
}


def parse_request(obj: Any, *, index: int | None = None, path_id: str | None = None) -> NewRequest:
    """Section 3: the request as stored, or 400 naming what is wrong (and ``index`` within a batch). ``path_id``:
    the ID in the path of an update, which the uniqueKey must derive to."""
    where = f" (request at index {index})" if index is not None else ""
    if not isinstance(obj, dict):
        raise errors.InvalidInput(f"a request must be a JSON object{where}.")
    try:
        jsontext.check_storable(obj)
    except jsontext.InvalidJson as exc:
        raise errors.InvalidInput(f"{str(exc).rstrip('.')}{where}.") from None
    unique_key = text_field(obj, "uniqueKey", where)
    url = text_field(obj, "url", where)
    derived = request_id(unique_key)
    given = obj.get("id")
    if (given is not None and given != derived) or (path_id is not None and path_id != derived):
        raise RequestIdInvalid()
    method = obj.get("method")
    if method is None:
        method = "GET"
    elif not isinstance(method, str) or method not in METHODS:
        raise errors.InvalidInput(f'"method" must be one of {", ".join(sorted(METHODS))}{where}.')
    retry_count = obj.get("retryCount")
    if retry_count is None:
        retry_count = 0
    elif type(retry_count) is float and retry_count.is_integer():
        retry_count = int(retry_count)  # JSON has one kind of number: 3.0 is the integer 3
    if type(retry_count) is not int or not 0 <= retry_count <= MAX_QUERY_INT:  # -3.0 and 1e300 too: checked after
        raise errors.InvalidInput(f'"retryCount" must be a non-negative integer{where}.')
    for field, (types, what) in _TYPES.items():
        value = obj.get(field)
        if value is not None and not isinstance(value, types):
            raise errors.InvalidInput(f'"{field}" must be {what}{where}.')
    if obj.get("errorMessages") is not None and not all(isinstance(m, str) for m in obj["errorMessages"]):
        raise errors.InvalidInput(f'"errorMessages" must be an array of strings{where}.')
    handled_at = obj.get("handledAt")
    if handled_at is not None and not isinstance(handled_at, str):
        raise errors.InvalidInput(f'"handledAt" must be a timestamp or null{where}.')
    # ``lockExpiresAt`` is output only (section 3): clients send back what they read (the SDK updates the request it
    # got), and a kept copy would be answered next to the live one, or claim a lock that has ended.
    stored = {k: v for k, v in obj.items() if k not in ("id", "lockExpiresAt") and v is not None}
    stored["method"] = method
    stored["retryCount"] = retry_count
    if handled_at is not None:
        stored["handledAt"] = normalise_time(handled_at, "handledAt")
    body = json.dumps(stored, ensure_ascii=False, separators=(",", ":"))
    return NewRequest(derived, unique_key, url, method, retry_count, handled_at is not None, body)


def parse_batch(body: Any) -> list[Any]:
    if not isinstance(body, list):
        raise errors.InvalidInput("the body must be a JSON array of requests.")
    if not 1 <= len(body) <= MAX_BATCH:
        raise errors.InvalidInput(f"a batch holds 1 to {MAX_BATCH} requests.")
    return body
