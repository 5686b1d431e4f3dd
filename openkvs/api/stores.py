"""Store endpoints: list, get-or-create, get, update, delete; plus the openkvs extensions for rotating the signing
key and sharing a store with other users (grants)."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from openkvs import access, auth, errors, rules, schema, sharing, signing
from openkvs.access import STORES, Access
from openkvs.api.common import (
    check_store_name,
    iso,
    json_response,
    public_base,
    query_bool,
    query_int,
    query_limit,
    read_json_body,
    state,
)
from openkvs.storage.base import Store

PUBLIC_URL_DAYS = 14


async def list_stores(request: Request) -> Response:
    user = await access.signed_in(request)
    offset = query_int(request, "offset", 0, minimum=0)
    limit = query_limit(request)
    desc = query_bool(request, "desc")
    unnamed = query_bool(request, "unnamed")
    ownership = request.query_params.get("ownership") or None
    if ownership not in (None, "ownedByMe", "sharedWithMe"):
        raise errors.InvalidInput("Parameter 'ownership' must be ownedByMe or sharedWithMe.")
    storage = state(request).storage
    total, stores = await storage.list_stores(
        user.id, offset=offset, limit=limit, desc=desc, unnamed=unnamed, ownership=ownership
    )
    # The signing key goes only to who may write: the owner, or a user whose grant allows writing.
    grants = await storage.user_grants(user.id, [s.id for s in stores if s.user_id != user.id])
    items = []
    for s in stores:
        grant = grants.get(s.id)
        items.append(store_json(request, s, access.right_of(s, user, grant.can_write if grant else None)))
    return json_response(
        {
            "total": total,
            "offset": offset,
            "limit": limit,
            "desc": desc,
            "count": len(items),
            "unnamed": unnamed,
            "items": items,
        }
    )


async def get_or_create_store(request: Request) -> Response:
    user = await access.signed_in(request)
    name = request.query_params.get("name")
    body = await read_json_body(request)
    if body is not None and not isinstance(body, dict):
        raise errors.InvalidInput("The request body must be a JSON object.")
    store_schema = await schema.validate_schema_off_loop((body or {}).get("schema"))
    storage = state(request).storage
    if name:
        check_store_name(name)
        store, created = await storage.get_or_create_store(user.id, name, store_schema, auth.new_signing_key())
    else:
        store, created = await storage.create_store(user.id, None, store_schema, auth.new_signing_key()), True
    headers = {"Location": f"{public_base(request)}/v2/key-value-stores/{store.id}"} if created else None
    return json_response(store_json(request, store, Access.WRITE), 201 if created else 200, headers)


# DELETE: only the owner removes a store, even a user who was granted write may not. (HEAD is GET's.)
_STORE_LEVELS = {"GET": Access.READ, "HEAD": Access.READ, "PUT": Access.WRITE, "DELETE": Access.OWNER}


async def store_endpoint(request: Request) -> Response:
    found = await access.decide(request, STORES, request.path_params["store_id"], _STORE_LEVELS[request.method])
    storage = state(request).storage
    if request.method in ("GET", "HEAD"):
        return json_response(store_json(request, found.store, found.access))
    if request.method == "PUT":
        body = await read_json_body(request)
        if not isinstance(body, dict):
            raise errors.InvalidInput("The request body must be a JSON object.")
        changes = _store_changes(body, found.access is Access.OWNER)
        if "schema" in body:
            changes["schema"] = await schema.validate_schema_off_loop(body["schema"])
        store = found.store
        if changes:
            settings = state(request).settings
            changes = sharing.with_rotation(
                store, changes, settings.default_general_access, settings.rotate_signing_key_on_revoke
            )
            store = await storage.update_store(store.id, changes)
        return json_response(store_json(request, store, found.access))
    await storage.delete_store(found.store.id)
    return Response(status_code=204)


def _store_changes(body: dict[str, Any], is_owner: bool) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if body.get("name") is not None:
        if not isinstance(body["name"], str):
            raise errors.InvalidInput("Field 'name' must be a string.")
        changes["name"] = check_store_name(body["name"])
    if "generalAccess" in body:  # null is not a level (Apify: an enum, not nullable)
        if body["generalAccess"] not in rules.GENERAL_ACCESS:
            raise errors.InvalidInput(f"Field 'generalAccess' must be one of {', '.join(rules.GENERAL_ACCESS)}.")
        changes["general_access"] = body["generalAccess"]
    if changes and not is_owner and ("name" in changes or "general_access" in changes):
        raise errors.PermissionDenied()  # renaming and opening a store up are the owner's decisions
    return changes


async def rotate_signing_key(request: Request) -> Response:
    """POST /v2/key-value-stores/{id}/signing-key: a new urlSigningSecretKey voids every signature made before."""
    found = await access.decide(request, STORES, request.path_params["store_id"], Access.OWNER)
    store = await state(request).storage.update_store(
        found.store.id, {"url_signing_secret_key": auth.new_signing_key()}
    )
    return json_response(store_json(request, store, Access.WRITE))


async def grants_endpoint(request: Request) -> Response:
    """GET lists grants of a store; PUT {"username", "access": "READ"|"WRITE"} adds or changes one."""
    found = await access.decide(request, STORES, request.path_params["store_id"], Access.OWNER)
    storage = state(request).storage
    if request.method == "PUT":
        body = await read_json_body(request)
        if not isinstance(body, dict) or body.get("access") not in ("READ", "WRITE"):
            raise errors.InvalidInput('Expected {"username": "...", "access": "READ" or "WRITE"}.')
        username = body.get("username")
        if not isinstance(username, str) or not rules.USERNAME.ok(username):
            raise errors.InvalidInput("Field 'username' must be a valid username.")
        user = await storage.get_user_by_name(username)
        if user is None:
            raise errors.InvalidInput(f"There is no user '{username}'.")
        if user.id == found.store.user_id:
            raise errors.InvalidInput("The owner of a store needs no grant.")
        rotate = state(request).settings.rotate_signing_key_on_revoke
        await sharing.set_grant(storage, found.store.id, user.id, body["access"] == "WRITE", rotate)
    grants = await storage.list_grants(found.store.id)
    items = [
        {"userId": g.user_id, "username": g.username, "access": "WRITE" if g.can_write else "READ"} for g in grants
    ]
    return json_response({"items": items, "count": len(items)})


async def grant_endpoint(request: Request) -> Response:
    """DELETE /v2/key-value-stores/{id}/grants/{username}: take a grant back (204, also when there was none)."""
    found = await access.decide(request, STORES, request.path_params["store_id"], Access.OWNER)
    storage = state(request).storage
    username = request.path_params["username"]
    # No user has a name outside the rule, so don't ask the database (a NUL there was a 500 on PostgreSQL).
    user = await storage.get_user_by_name(username) if rules.USERNAME.ok(username) else None
    if user is not None:
        rotate = state(request).settings.rotate_signing_key_on_revoke
        await sharing.remove_grant(storage, found.store.id, user.id, rotate)
    return Response(status_code=204)


def store_json(request: Request, store: Store, right: Access) -> dict[str, Any]:
    """The wire form of a store; its signing key only for who may write."""
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
        "generalAccess": store.general_access,
        "schema": store.schema,
        "stats": {
            "readCount": s.read_count,
            "writeCount": s.write_count,
            "deleteCount": s.delete_count,
            "listCount": s.list_count,
            "storageBytes": s.storage_bytes,
        },
        "keysPublicUrl": f"{base}/v2/key-value-stores/{store.id}/keys?signature={sig}",
        "recordsPublicUrl": f"{base}/v2/key-value-stores/{store.id}/records?signature={sig}",
    }
    if right >= Access.WRITE:
        data["urlSigningSecretKey"] = store.url_signing_secret_key
    return data
