"""Administration straight on the storage: users, tokens, grants and stores."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import click

from openkvs import rules  # (auth and sharing, for the storage's commands only, are imported by them)
from openkvs.cli.common import load_settings, one_of, storage_options, use
from openkvs.plural import counted


@click.group()
def users() -> None:
    """Manage users."""


@users.command("create")
@click.argument("name")
@storage_options
def users_create(name: str, **flags: Any) -> None:
    """Create user NAME and print an API token for it. The token is alone on the last line."""
    from openkvs.storage.base import UsernameTaken

    if not rules.USERNAME.ok(name):
        raise click.UsageError("A username has 3 to 30 characters: letters, digits, '_', '.' or '-'.")

    async def work(storage: Any) -> str:
        from openkvs import auth

        try:
            user = await storage.create_user(name)
        except UsernameTaken:
            raise click.ClickException(f"User '{name}' exists already; use 'openkvs tokens create {name}'.") from None
        token = auth.new_token()
        await storage.add_token(user.id, auth.hash_token(token))
        return token

    click.echo(use(load_settings(**flags), work))


@users.command("list")
@storage_options
def users_list(**flags: Any) -> None:
    """List the users: name, created."""

    async def work(storage: Any) -> list[Any]:
        return await storage.list_users()

    for u in use(load_settings(**flags), work):
        click.echo(f"{u.username}\t{_when(u.created_at)}")


def _when(dt: Any) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC")


@click.group()
def tokens() -> None:
    """Manage API tokens."""


@tokens.command("create")
@click.argument("name")
@storage_options
def tokens_create(name: str, **flags: Any) -> None:
    """Print a new API token for user NAME."""

    async def work(storage: Any) -> str:
        from openkvs import auth

        user = await storage.get_user_by_name(name)
        if user is None:
            raise click.ClickException(f"There is no user '{name}'.")
        token = auth.new_token()
        await storage.add_token(user.id, auth.hash_token(token))
        return token

    click.echo(use(load_settings(**flags), work))


@tokens.command("list")
@click.argument("name", required=False)
@storage_options
def tokens_list(name: str | None, **flags: Any) -> None:
    """List the API tokens, of user NAME or all. User, created, and an ID (the start of the token's SHA-256; the
    tokens themselves are not kept, only their hashes)."""

    async def work(storage: Any) -> list[Any]:
        return [t for t in await storage.list_tokens() if name is None or t.username == name]

    for t in use(load_settings(**flags), work):
        click.echo(f"{t.username}\t{_when(t.created_at)}\t{t.id}")


@tokens.command("revoke")
@click.argument("token")
@storage_options
def tokens_revoke(token: str, **flags: Any) -> None:
    """Revoke TOKEN (the token, or its ID). The ID is what `tokens list` shows: an admin revoking a user's token
    never saw the token. Running servers stop accepting it within a few seconds."""
    from openkvs import auth
    from openkvs.storage.base import TokenInfo

    by_id = re.fullmatch(f"[0-9a-f]{{{TokenInfo.ID_LENGTH}}}", token) is not None
    if not by_id and not token.startswith(auth.TOKEN_PREFIX):
        raise click.BadParameter(
            f"give the token ({auth.TOKEN_PREFIX}...) or its ID ({TokenInfo.ID_LENGTH} hex digits, "
            "from `openkvs tokens list`)", param_hint="TOKEN"
        )

    async def work(storage: Any) -> bool:
        if not by_id:
            return bool(await storage.revoke_token(auth.hash_token(token)))
        hashes = await storage.token_hashes(token)
        if len(hashes) > 1:  # (48 bits of a hash alike: all but never; the token itself tells them apart)
            raise click.ClickException(f"{len(hashes)} tokens have the ID {token}: revoke the token itself.")
        return bool(hashes) and bool(await storage.revoke_token(hashes[0]))

    if not use(load_settings(**flags), work):
        raise click.ClickException("No such token." if not by_id else f"No token has the ID {token}.")
    click.echo("revoked")


async def _store(storage: Any, ref: str, any_kind: bool = False, kind: str | None = None) -> Any:
    """The store ``ref`` names: an ID, OWNER~NAME, or ~NAME (the one store of that name, whoever owns it). With
    ``any_kind``, a dataset or request queue too (sharing works alike for all of them); ``kind`` (storage's "kvs",
    "dataset" or "queue", from --kvs, --dataset or --queue) looks for that kind only."""
    from openkvs import access  # local: the HTTP layer is not needed by most commands

    if kind is not None:
        kinds = tuple(k for k in access.KINDS if k.storage_kind == kind)
    else:
        kinds = access.KINDS if any_kind else (access.STORES,)
    owners = await storage.list_users() if ref.startswith("~") else [None]
    found = [await access.find(storage, k, ref, owner=u) for k in kinds for u in owners]
    stores = [s for s in found if s is not None]
    if len(stores) > 1:
        names = ", ".join(f"the {_KIND_NAMES[s.kind]} {s.username}~{s.name} ({s.id})" for s in stores)
        raise click.ClickException(f"'{ref}' could be any of {names}: {_which(stores)}.")
    if not stores and not any_kind:  # a dataset or queue named where a key-value store is meant: say which it is
        others = [s for k in access.KINDS if k != access.STORES for u in owners
                  if (s := await access.find(storage, k, ref, owner=u)) is not None]
        if others:
            raise click.ClickException(
                f"'{ref}' is a {_KIND_NAMES[others[0].kind]}, not a key-value store: 'openkvs stores' handles "
                "key-value stores only (the API and the web console handle datasets and request queues)."
            )
    if not stores:
        if kind is not None:
            what = _KIND_NAMES[kind]
        else:
            what = "key-value store, dataset or request queue" if any_kind else "key-value store"
        raise click.ClickException(f"There is no {what} '{ref}' (give an ID, OWNER~NAME or ~NAME).")
    return stores[0]


def _which(stores: list[Any]) -> str:
    """How to name one of several stores a name fits: OWNER~NAME tells owners apart, the kind's flag kinds (a
    key-value store, a dataset and a request queue of one owner may share a name); an ID always works."""
    kinds = list(dict.fromkeys(s.kind for s in stores))
    flags = [_KIND_FLAGS[k] for k in kinds]
    flags_text = ", ".join(flags[:-1]) + " or " + flags[-1] if len(flags) > 1 else ""
    several_owners = len({s.user_id for s in stores}) > 1
    if len(kinds) == 1:
        return "give its ID or OWNER~NAME"
    if several_owners:
        return f"give its ID, or OWNER~NAME with {flags_text}"
    return f"give its ID, or {flags_text}"


_KIND_NAMES = {"kvs": "key-value store", "dataset": "dataset", "queue": "request queue"}
_KIND_FLAGS = {"kvs": "--kvs", "dataset": "--dataset", "queue": "--queue"}


def _kind_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--kvs, --dataset, --queue: which kind STORE is, for a name that a key-value store, a dataset and a request
    queue share (as `openkvs export` says it with --dataset and --queue)."""
    return one_of("kind", {flag: (kind, f"STORE is a {_KIND_NAMES[kind]}.") for kind, flag in _KIND_FLAGS.items()})(f)


@click.group()
def grants() -> None:
    """Share a store, dataset or queue with a user. Read only, or read and write."""


@grants.command("add")
@click.argument("store")
@click.argument("username")
@one_of("level", {"--read": ("read", "Read only (default)."), "--write": ("write", "Read and write.")}, default="read")
@_kind_options
@storage_options
def grants_add(store: str, username: str, level: str, kind: str | None, **flags: Any) -> None:
    """Let USERNAME read (or read and write) STORE. STORE may be a key-value store, a dataset or a request queue
    (--kvs, --dataset or --queue says which, where they share a name)."""

    async def work(storage: Any) -> Any:
        from openkvs import sharing

        s = await _store(storage, store, any_kind=True, kind=kind)
        user = await storage.get_user_by_name(username)
        if user is None:
            raise click.ClickException(f"There is no user '{username}'.")
        if user.id == s.user_id:
            raise click.ClickException(f"That user owns the {_KIND_NAMES[s.kind]}.")
        await sharing.set_grant(storage, s.id, user.id, level == "write", settings.rotate_signing_key_on_revoke)
        return s

    settings = load_settings(**flags)
    s = use(settings, work)
    # (which one it was: a key-value store, a dataset and a queue may share the name given)
    what = f"the {_KIND_NAMES[s.kind]} {s.username}~{s.name}" if s.name else f"the {_KIND_NAMES[s.kind]} {s.id}"
    click.echo(f"{username} may now {'read and write' if level == 'write' else 'read'} {what}")


@grants.command("list")
@click.argument("store")
@_kind_options
@storage_options
def grants_list(store: str, kind: str | None, **flags: Any) -> None:
    """List who STORE is shared with."""

    async def work(storage: Any) -> tuple[Any, list[Any]]:
        s = await _store(storage, store, any_kind=True, kind=kind)
        return s, list(await storage.list_grants(s.id))

    s, found = use(load_settings(**flags), work)
    for g in found:
        click.echo(f"{g.username}\t{'write' if g.can_write else 'read'}")
    if not found:  # (on stderr: the listing, for scripts, stays empty)
        click.echo(f"The {_KIND_NAMES[s.kind]} {s.username}~{s.name or s.id} is not shared with anyone.", err=True)


@grants.command("remove")
@click.argument("store")
@click.argument("username")
@_kind_options
@storage_options
def grants_remove(store: str, username: str, kind: str | None, **flags: Any) -> None:
    """Take back USERNAME's access to STORE."""

    async def work(storage: Any) -> tuple[bool, str]:
        from openkvs import sharing

        s = await _store(storage, store, any_kind=True, kind=kind)
        user = await storage.get_user_by_name(username)
        removed = user and await sharing.remove_grant(storage, s.id, user.id, settings.rotate_signing_key_on_revoke)
        return bool(removed), _KIND_NAMES[s.kind]

    settings = load_settings(**flags)
    removed, kind = use(settings, work)
    if removed and settings.rotate_signing_key_on_revoke:
        click.echo(f"removed; the {kind} has a new URL-signing key (signed links made before stop working)")
    else:
        click.echo("removed" if removed else "there was no such grant")



@click.group()
def stores() -> None:
    """Administer key-value stores (not datasets or request queues)."""


@stores.command("list")
@click.option("--user", "username", help="Only the stores this user owns.")
@storage_options
def stores_list(username: str | None, **flags: Any) -> None:
    """List the key-value stores. ID, OWNER~NAME, bytes stored, last modified."""

    async def work(storage: Any) -> list[Any]:
        found = []
        for user in await storage.list_users():
            if username is not None and user.username != username:
                continue
            offset = 0
            while True:
                _, page = await storage.list_stores(
                    user.id, offset=offset, limit=1000, desc=False, unnamed=True, ownership="ownedByMe"
                )
                found += page
                offset += len(page)
                if len(page) < 1000:
                    break
        return found

    for st in use(load_settings(**flags), work):
        name = f"{st.username}~{st.name}" if st.name else f"{st.username} (unnamed)"
        click.echo(f"{st.id}\t{name}\t{st.stats.storage_bytes}\t{_when(st.modified_at)}")


@stores.command("delete")
@click.argument("store")
@click.option("--yes", is_flag=True, help="Don't ask.")
@storage_options
def stores_delete(store: str, yes: bool, **flags: Any) -> None:
    """Delete STORE with all its records and grants."""

    async def find(storage: Any) -> Any:
        return await _store(storage, store)

    settings = load_settings(**flags)
    st = use(settings, find)
    label = f"{st.username}~{st.name}" if st.name else st.id
    if not yes:
        click.confirm(f"Delete {label} ({st.id}, {counted(st.stats.storage_bytes, 'byte')}) and all its records?",
                      abort=True)

    async def work(storage: Any) -> bool:
        return bool(await storage.delete_store(st.id))

    if not use(settings, work):
        raise click.ClickException(f"There is no store '{store}' any more.")
    click.echo(f"deleted {label}")


@stores.command("rotate-signing-key")
@click.argument("store")
@storage_options
def stores_rotate(store: str, **flags: Any) -> None:
    """Give STORE a new URL-signing key. Every signed URL made before stops working."""

    async def work(storage: Any) -> None:
        from openkvs import auth

        s = await _store(storage, store)
        await storage.update_store(s.id, {"url_signing_secret_key": auth.new_signing_key()})

    use(load_settings(**flags), work)
    click.echo(f"{store} has a new URL-signing key: the signed URLs made before no longer work")
