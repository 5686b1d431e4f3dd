"""API errors: each carries its HTTP status and Apify error ``type``; one renderer turns them into the wire shape
``{"error": {"type": ..., "message": ...}}`` (API.md section 2).

    ApiError
     ├── InvalidInput (400 invalid-input)         ├── TokenNotProvided (401)   ├── NotFound (404 record-not-found)
     ├── InvalidRecordKey (400)                   ├── TokenNotValid (401)      ├── PageNotFound (404 page-not-found)
     ├── StoreSchemaInvalid (400)                 ├── PermissionDenied (403)   ├── MethodNotAllowed (405)
     ├── SchemaValidationFailed (400)             ├── RequestTooLarge (413)    ├── RateLimitExceeded (429)
     ├── NameNotUnique (400)                      ├── UnsupportedEncoding (415)├── ServiceUnavailable (503)
     ├── InvalidRange (416)                       ├── InternalError (500)      ├── StorageDamaged (503)
     └── InsufficientStorage (507)
    and, answered by the connection itself (openkvs/server.py): RequestTimeout (408), HeaderFieldsTooLarge (431),
    TransferCodingNotImplemented (501).

Storage exceptions become API errors in one place, ``from_storage_error``, so routes never catch driver errors.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

from openkvs.storage import base as storage

log = logging.getLogger("openkvs")


class ApiError(Exception):
    status = 500
    type = "internal-server-error"
    default_message = "Internal server error."

    def __init__(self, message: str | None = None, headers: dict[str, str] | None = None) -> None:
        self.message = message or self.default_message
        self.headers = headers or {}
        super().__init__(self.message)

    def body(self) -> bytes:
        return json.dumps({"error": {"type": self.type, "message": self.message}}, separators=(",", ":")).encode()


class InvalidInput(ApiError):
    status, type = 400, "invalid-input"

    def __init__(
        self, what: str = "The request body contains invalid data.", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"Invalid input: {what}", headers)


class InvalidRecordKey(ApiError):
    status, type, default_message = 400, "invalid-record-key", "Record key contains invalid character"


class StoreSchemaInvalid(ApiError):
    status, type = 400, "store-schema-invalid"


class SchemaValidationFailed(ApiError):
    status, type = 400, "schema-validation-failed"


class NameNotUnique(ApiError):
    status, type = 400, "name-not-unique"
    default_message = "Key-value store with this name already exists"


class TokenNotProvided(ApiError):
    status, type, default_message = 401, "token-not-provided", "Authentication token was not provided"


class TokenNotValid(ApiError):
    status, type, default_message = 401, "token-not-valid", "Authentication token is not valid."


class PermissionDenied(ApiError):
    status, type = 403, "permission-denied"
    default_message = "You do not have permission to perform this action."


class NotFound(ApiError):
    status, type, default_message = 404, "record-not-found", "Key-value Store was not found"


class RecordNotFound(NotFound):
    default_message = "Record was not found"


class PageNotFound(ApiError):
    status, type, default_message = 404, "page-not-found", "We have bad news: there is no API endpoint at this URL."


class MethodNotAllowed(ApiError):
    status, type = 405, "method-not-allowed"

    def __init__(self, allowed: list[str], allow: str | None = None) -> None:
        """``allowed``: the path's methods as Apify's message lists them; ``allow``: the ``Allow`` header, every
        method served (the message's list when not given)."""
        methods = ",".join(["OPTIONS", *allowed])
        super().__init__(
            f"This API end-point can only be accessed using the following HTTP methods: {methods}",
            headers={"Allow": allow or methods},
        )


class RequestTooLarge(ApiError):
    status, type = 413, "request-too-large"

    def __init__(self, limit: int, actual: int) -> None:
        super().__init__(f"The POST payload is too large (limit: {limit} bytes, actual length: {actual} bytes).")


class UnsupportedEncoding(ApiError):
    status, type = 415, "unsupported-content-encoding"

    def __init__(self, encoding: str) -> None:
        super().__init__(f'Content-Encoding "{encoding}" is not supported.')


class InvalidRange(ApiError):
    status, type, default_message = 416, "invalid-range", "The requested range is not satisfiable."

    def __init__(self, size: int) -> None:
        super().__init__(headers={"Content-Range": f"bytes */{size}"})


# Dataset exports (API-datasets.md sections 2, 5 and 6.2).
class DatasetDoesNotHaveSchema(ApiError):
    status, type, default_message = 400, "dataset-does-not-have-schema", "Dataset does not have a schema."


class RequestedDatasetViewDoesNotExist(ApiError):
    status, type = 400, "requested-dataset-view-does-not-exist"

    def __init__(self, view: str) -> None:
        super().__init__(f"Requested dataset view does not exist: {view}")


class NoColumnsInExportedDataset(ApiError):
    status, type, default_message = 400, "no-columns-in-exported-dataset", "The exported dataset has no columns."


# Dataset pushes and schemas (API-datasets.md sections 1, 2, 4.4 and 9).
class InvalidContentTypeHeader(ApiError):
    status, type = 400, "invalid-content-type-header"
    default_message = "Invalid Content-Type header: expected application/json."


class DatasetSchemaInvalid(ApiError):
    status, type = 400, "dataset-schema-invalid"


class ItemsInvalid(ApiError):
    """A push refused by the dataset's ``fields`` schema: one entry per failing item in ``error.data``."""

    status, type, default_message = 400, "schema-validation-error", "Schema validation failed"

    def __init__(self, invalid_items: list[dict[str, Any]]) -> None:
        super().__init__()
        self.invalid_items = invalid_items

    def body(self) -> bytes:
        error = {"type": self.type, "message": self.message, "data": {"invalidItems": self.invalid_items}}
        return json.dumps({"error": error}, separators=(",", ":"), ensure_ascii=False).encode()


class RateLimitExceeded(ApiError):
    status, type = 429, "rate-limit-exceeded"
    default_message = "You have exceeded the rate limit. Please try again later."


class ServiceUnavailable(ApiError):
    status, type = 503, "service-unavailable"
    default_message = "The storage is unavailable right now. Please try again later."


class StorageDamaged(ApiError):
    """Stored bytes are missing or damaged: permanent until an operator repairs the storage, so no Retry-After
    and no "try again"; the request id finds the log line that names the record."""

    status, type = 503, "storage-damaged"

    def __init__(self, request_id: str) -> None:
        super().__init__(
            "The stored data needed for this request is missing or damaged; retrying will not help until the "
            f"server's storage is repaired (request id {request_id})."
        )


class InsufficientStorage(ApiError):
    """The disk is full or read-only: nothing new can be stored (reads and deletes still work)."""

    status, type = 507, "insufficient-storage"
    default_message = "The server has no space left to store this; delete records or try again later."


class InternalError(ApiError):
    pass


class RequestTimeout(ApiError):
    status, type, default_message = 408, "request-timeout", "The request headers were not received in time."


class BodyTimeout(RequestTimeout):
    default_message = "The request body was not received in time: the client sent nothing for too long."


class HeaderFieldsTooLarge(ApiError):
    status, type = 431, "request-header-fields-too-large"

    def __init__(self, limit: int, trailers: bool = False) -> None:
        what = "The trailer fields after the chunked body are" if trailers else "The request line and headers are"
        super().__init__(f"{what} too large (limit: {limit} bytes).")


class TransferCodingNotImplemented(ApiError):
    status, type = 501, "not-implemented"

    def __init__(self, coding: str) -> None:
        super().__init__(f'Transfer-Encoding "{coding}" is not supported (only chunked).')


def from_storage_error(exc: storage.StorageError, method: str = "", path: str = "") -> ApiError:
    """The single place where storage errors become API errors. Damage is logged here, one line naming the
    request (so the record) and what is damaged, under the request id the answer gives."""
    if isinstance(exc, storage.NameNotUnique):
        return NameNotUnique()
    if isinstance(exc, storage.NotFound):
        return NotFound()
    if isinstance(exc, storage.StorageUnavailable):
        return ServiceUnavailable(headers={"Retry-After": "1"})
    if isinstance(exc, storage.StorageFull):
        return InsufficientStorage(headers={"Retry-After": "60"})
    if isinstance(exc, storage.StorageDamaged):
        request_id = secrets.token_hex(6)
        log.error("request %s: %s %s: storage damaged: %s (run openkvs check)", request_id, method, path, exc)
        return StorageDamaged(request_id)
    return InternalError()
