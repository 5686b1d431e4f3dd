"""The endpoints every kind of resource has alike (key-value stores, datasets, request queues): list the caller's,
get or create by name, read, change and delete one, rotate its signing key, and share it (grants). A kind is a
``ResourceApi``: its access row, its path and how its wire form is written; ``routes()`` gives its Routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openkvs import access, auth, errors, rules, schema, sharing
from openkvs.access import Access, Kind
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
from openkvs.api.dispatch import methods
from openkvs.storage import base as storage
from openkvs.storage.base import Store

# The wire forms of resources, with the caller's right to each (the signing key goes only to who may write). A
# list, so that a kind whose wire form needs more than the row (a dataset's item count) asks storage once per page.
# ``listing``: for GET /v2/<kind> (datasets and queues write an unnamed one's name as "" there).
Describe = Callable[[Request, Sequence[tuple[Store, Access]], bool], Awaitable[list[dict[str, Any]]]]

# DELETE: only the owner removes a resource, even a user who was granted write may not. (HEAD is GET's.)
_LEVELS = {"GET": Access.READ, "HEAD": Access.READ, "PUT": Access.WRITE, "DELETE": Access.OWNER}
TITLE_MAX = 200


def _storable(text: str) -> bool:
    """Whether both backends can keep ``text``: no NUL (PostgreSQL's text can't) and no lone surrogate (no UTF-8)."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def titled_fields(store: Store, *, listed: bool) -> dict[str, Any]:
    """The fields a dataset's and a request queue's wire forms open with. ``listed``: in a list, an unnamed one's
    name is "" (the Python client's list models require a string); the object itself keeps null."""
    return {
        "id": store.id,
        "name": store.name if store.name is not None or not listed else "",
        "title": store.title,
        "userId": store.user_id,
        "username": store.username,
        "createdAt": iso(store.created_at),
        "modifiedAt": iso(store.modified_at),
        "accessedAt": iso(store.accessed_at),
    }


@dataclass(frozen=True, slots=True)
class ResourceApi:
    kind: Kind
    path: str  # "/v2/key-value-stores"
    describe: Describe
    name_taken: str  # the message of 400 name-not-unique
    takes_schema: bool  # whether create and update accept a key-value store's ``schema`` (validated as one)
    # Datasets and queues: a ``title``, and a PUT with ``"name": null`` makes the resource unnamed.
    titled: bool = False
    # A kind whose schema is its own (datasets, API-datasets.md 9.1): checked by this, set only at creation (its
    # takes_schema is False: a PUT with a schema took it, null or a store's, and a writer could turn validation off).
    create_schema: Callable[[Any], Awaitable[dict[str, Any] | None]] | None = None
    # How one resource's wire form is answered: a dataset's holds its schema, as large as a body.
    respond: Callable[..., Response] = json_response

    def routes(self) -> list[Route]:
        p = self.path
        return [
            Route(p, methods(GET=self.list, POST=self.get_or_create)),
            Route(f"{p}/{{store_id}}", methods(GET=self.endpoint, PUT=self.endpoint, DELETE=self.endpoint)),
            Route(f"{p}/{{store_id}}/signing-key", methods(POST=self.rotate_signing_key)),
            Route(f"{p}/{{store_id}}/grants", methods(GET=self.grants, PUT=self.grants)),
            Route(f"{p}/{{store_id}}/grants/{{username}}", methods(DELETE=self.grant)),
        ]

    async def one(self, request: Request, resource: Store, right: Access) -> dict[str, Any]:
        return (await self.describe(request, [(resource, right)], False))[0]

    async def list(self, request: Request) -> Response:
        user = await access.signed_in(request)
        offset = query_int(request, "offset", 0, minimum=0)
        limit = query_limit(request)
        desc = query_bool(request, "desc")
        unnamed = query_bool(request, "unnamed")
        ownership = request.query_params.get("ownership") or None
        if ownership not in (None, "ownedByMe", "sharedWithMe"):
            raise errors.InvalidInput("Parameter 'ownership' must be ownedByMe or sharedWithMe.")
        st = state(request).storage
        total, found = await st.list_stores(
            user.id,
            offset=offset,
            limit=limit,
            desc=desc,
            unnamed=unnamed,
            ownership=ownership,
            kind=self.kind.storage_kind,
        )
        grants = await st.user_grants(user.id, [r.id for r in found if r.user_id != user.id])
        rights = []
        for r in found:
            grant = grants.get(r.id)
            rights.append((r, access.right_of(r, user, grant.can_write if grant else None)))
        items = await self.describe(request, rights, True)
        body = {"total": total, "offset": offset, "limit": limit, "desc": desc, "count": len(items)}
        return json_response({**body, "unnamed": unnamed, "items": items})

    async def get_or_create(self, request: Request) -> Response:
        user = await access.signed_in(request)
        name = request.query_params.get("name")
        body = await read_json_body(request)
        if body is not None and not isinstance(body, dict):
            raise errors.InvalidInput("The request body must be a JSON object.")
        given = (body or {}).get("schema")
        if self.create_schema is not None:
            new_schema = await self.create_schema(given)
        else:
            new_schema = await schema.validate_schema_off_loop(given) if self.takes_schema else None
        st = state(request).storage
        kind = self.kind.storage_kind
        try:
            if name:
                check_store_name(name)
                resource, created = await st.get_or_create_store(
                    user.id, name, new_schema, auth.new_signing_key(), kind=kind
                )
            else:
                resource = await st.create_store(user.id, None, new_schema, auth.new_signing_key(), kind=kind)
                created = True
        except storage.NameNotUnique as exc:  # a concurrent rename took the name
            raise errors.NameNotUnique(self.name_taken) from exc
        headers = {"Location": f"{public_base(request)}{self.path}/{resource.id}"} if created else None
        return self.respond(await self.one(request, resource, Access.WRITE), 201 if created else 200, headers)

    async def endpoint(self, request: Request) -> Response:
        found = await access.decide(request, self.kind, request.path_params["store_id"], _LEVELS[request.method])
        st = state(request).storage
        if request.method in ("GET", "HEAD"):
            return self.respond(await self.one(request, found.store, found.access))
        if request.method == "PUT":
            body = await read_json_body(request)
            if not isinstance(body, dict):
                raise errors.InvalidInput("The request body must be a JSON object.")
            changes = self.changes(body, found.access is Access.OWNER)
            if "schema" in body and self.takes_schema:
                changes["schema"] = await schema.validate_schema_off_loop(body["schema"])
            resource = found.store
            if changes:
                settings = state(request).settings
                changes = sharing.with_rotation(
                    resource, changes, settings.default_general_access, settings.rotate_signing_key_on_revoke
                )
                try:
                    resource = await st.update_store(resource.id, changes)
                except storage.NameNotUnique as exc:
                    raise errors.NameNotUnique(self.name_taken) from exc
            return self.respond(await self.one(request, resource, found.access))
        await st.delete_store(found.store.id)
        return Response(status_code=204)

    def changes(self, body: dict[str, Any], is_owner: bool) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if body.get("name") is not None:
            if not isinstance(body["name"], str):
                raise errors.InvalidInput("Field 'name' must be a string.")
            changes["name"] = check_store_name(body["name"])
        elif self.titled and "name" in body:
            changes["name"] = None  # unnamed from now on
        if self.titled and "title" in body:
            title = body["title"]
            if title is not None and (not isinstance(title, str) or len(title) > TITLE_MAX or not _storable(title)):
                raise errors.InvalidInput(
                    f"Field 'title' must be a string of at most {TITLE_MAX} characters (no NUL, no lone surrogate), "
                    "or null."
                )
            changes["title"] = title
        if "generalAccess" in body:  # null is not a level (Apify: an enum, not nullable)
            if body["generalAccess"] not in rules.GENERAL_ACCESS:
                raise errors.InvalidInput(f"Field 'generalAccess' must be one of {', '.join(rules.GENERAL_ACCESS)}.")
            changes["general_access"] = body["generalAccess"]
        if changes and not is_owner and ("name" in changes or "general_access" in changes):
            raise errors.PermissionDenied()  # renaming and opening a resource up are the owner's decisions
        return changes

    async def rotate_signing_key(self, request: Request) -> Response:
        """POST {path}/{id}/signing-key: a new urlSigningSecretKey voids every signature made before."""
        found = await access.decide(request, self.kind, request.path_params["store_id"], Access.OWNER)
        resource = await state(request).storage.update_store(
            found.store.id, {"url_signing_secret_key": auth.new_signing_key()}
        )
        return self.respond(await self.one(request, resource, Access.WRITE))

    async def grants(self, request: Request) -> Response:
        """GET lists the grants; PUT {"username", "access": "READ"|"WRITE"} adds or changes one."""
        found = await access.decide(request, self.kind, request.path_params["store_id"], Access.OWNER)
        st = state(request).storage
        if request.method == "PUT":
            body = await read_json_body(request)
            if not isinstance(body, dict) or body.get("access") not in ("READ", "WRITE"):
                raise errors.InvalidInput('Expected {"username": "...", "access": "READ" or "WRITE"}.')
            username = body.get("username")
            if not isinstance(username, str) or not rules.USERNAME.ok(username):
                raise errors.InvalidInput("Field 'username' must be a valid username.")
            user = await st.get_user_by_name(username)
            if user is None:
                raise errors.InvalidInput(f"There is no user '{username}'.")
            if user.id == found.store.user_id:
                raise errors.InvalidInput(f"The owner of a {self.kind.name} needs no grant.")
            rotate = state(request).settings.rotate_signing_key_on_revoke
            await sharing.set_grant(st, found.store.id, user.id, body["access"] == "WRITE", rotate)
        grants = await st.list_grants(found.store.id)
        items = [
            {"userId": g.user_id, "username": g.username, "access": "WRITE" if g.can_write else "READ"} for g in grants
        ]
        return json_response({"items": items, "count": len(items)})

    async def grant(self, request: Request) -> Response:
        """DELETE {path}/{id}/grants/{username}: take a grant back (204, also when there was none)."""
        found = await access.decide(request, self.kind, request.path_params["store_id"], Access.OWNER)
        st = state(request).storage
        username = request.path_params["username"]
        # No user has a name outside the rule, so don't ask the database (a NUL there was a 500 on PostgreSQL).
        user = await st.get_user_by_name(username) if rules.USERNAME.ok(username) else None
        if user is not None:
            rotate = state(request).settings.rotate_signing_key_on_revoke
            await sharing.remove_grant(st, found.store.id, user.id, rotate)
        return Response(status_code=204)
