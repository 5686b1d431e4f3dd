"""Key-value stores as resources (api/resources.py has what every kind shares): their wire form."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request

from openkvs import console, signing
from openkvs.access import STORES, Access
from openkvs.api.common import iso, public_base
from openkvs.api.resources import ResourceApi
from openkvs.storage.base import Store

PUBLIC_URL_DAYS = 14


async def describe(request: Request, resources: Sequence[tuple[Store, Access]], listing: bool) -> list[dict[str, Any]]:
    # Decision (the contract is silent; the dataset list leaves out a dataset's schema likewise): in a list
    # (GET /v2/key-value-stores) a store object has no ``schema``, which Apify's OpenAPI does not require and the
    # official clients' models take as optional. A schema may be 4 MiB: 40 such stores made one page 160 MiB and
    # 4 lists at once took the server to 2.7 GB; a page of 1,000 would be 4 GB. list_stores does not even read
    # them (Store.schema_read False), so store_json leaves the key out rather than write null for "not read".
    # GET /v2/key-value-stores/{id} has the schema.
    return [store_json(request, store, right) for store, right in resources]


STORES_API = ResourceApi(
    STORES, "/v2/key-value-stores", describe, "Key-value store with this name already exists", takes_schema=True
)


def store_json(request: Request, store: Store, right: Access) -> dict[str, Any]:
    """The wire form of a store; its signing key only for who may write, its schema only if it was read."""
    base = public_base(request)
    expires = int(time.time() * 1000) + PUBLIC_URL_DAYS * 86_400_000
    sig = signing.content_signature(store.url_signing_secret_key, store.id, expires)
    s = store.stats
    data: dict[str, Any] = {
        "id": store.id,
        "name": store.name,
        "userId": store.user_id,
        "username": store.username,
        "createdAt": iso(store.created_at),
        "modifiedAt": iso(store.modified_at),
        "accessedAt": iso(store.accessed_at),
        "actId": None,
        "actRunId": None,
        "consoleUrl": console.url_of(base, "key-value-stores", store.id),
        "generalAccess": store.general_access,
        "stats": {
            "readCount": s.read_count,
            "writeCount": s.write_count,
            "deleteCount": s.delete_count,
            "listCount": s.list_count,
            "storageBytes": s.storage_bytes,
            "recordCount": s.record_count,  # openkvs extension: exact, unlike the four access counters
        },
        "keysPublicUrl": f"{base}/v2/key-value-stores/{store.id}/keys?signature={sig}",
        "recordsPublicUrl": f"{base}/v2/key-value-stores/{store.id}/records?signature={sig}",
    }
    if store.schema_read:  # not in a list (see describe)
        data["schema"] = store.schema
    if right >= Access.WRITE:
        data["urlSigningSecretKey"] = store.url_signing_secret_key
    return data
