"""The command line: a thin shell over config, storage and the app.

    openkvs serve [--host] [--port] [--data-dir] [--database-url] ...   start the server
    openkvs users create NAME                                          new user; prints its token last
    openkvs tokens create NAME | tokens revoke TOKEN
    openkvs grants add STORE USER --read|--write | grants list STORE | grants remove STORE USER
    openkvs stores rotate-signing-key STORE
    openkvs migrate                                                    create or upgrade the database schema
    openkvs check                                                      verify the storage (changes nothing)
    openkvs settings [--markdown]                                      every setting, its variable and default
    openkvs backup DEST | restore SRC --data-dir DIR                   SQLite: a consistent copy while serving

STORE is a store ID or OWNER~NAME.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import click

from openkvs import auth, rules, sharing
from openkvs.config import BY_NAME, SETTINGS, Setting, Settings, markdown_table

T = TypeVar("T")
DEFAULT_USER = "admin"
_METAVAR = {str: "TEXT", int: "INTEGER", float: "NUMBER"}


class _SettingType(click.ParamType):
    """A flag or its variable, parsed and checked by the setting itself, as Settings.load does."""

    def __init__(self, setting: Setting) -> None:
        self.setting = setting
        self.name = setting.type.__name__

    def get_metavar(self, *args: Any, **kwargs: Any) -> str:
        s = self.setting
        return "[" + "|".join(s.choices) + "]" if s.choices else _METAVAR[s.type]

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return self.setting.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _setting_options(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """click options for these settings (all of them if none is named), in declaration order. Not given: None, so
    that Settings.load falls back to the default."""
    chosen = [BY_NAME[n] for n in names] if names else list(SETTINGS)

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for s in reversed(chosen):
            help = f"{s.description} [default: {s.default_text}]"
            if s.type is bool:
                decls, kind = [f"{s.flag}/--no-{s.flag[2:]}"], None
            else:
                decls, kind = [s.flag], _SettingType(s)
            f = click.option(*decls, s.name, type=kind, default=None, envvar=s.env, show_envvar=True, help=help)(f)
        return f

    return decorate


# Every command that opens the storage takes these.
_storage_options = _setting_options("data_dir", "database_url", "database_schema")


def _run(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    from openkvs.app import open_storage

    from openkvs.storage.base import StorageError

    async def main() -> T:
        async with open_storage(settings) as storage:
            return await work(storage)

    try:
        return anyio.run(main)
    except StorageError as exc:  # unreachable, damaged, read-only: one line, no traceback (exit status 1)
        raise click.ClickException(f"cannot use the storage: {exc}") from None


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings.load(overrides)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@click.group(help=__doc__)
def main() -> None:
    pass


@main.command()
@_setting_options()
def serve(**flags: Any) -> None:
    """Start the server."""
    import uvicorn

    from openkvs.logs import log_config

    settings = _settings(**flags)
    if settings.workers > 1 and settings.rate_limits == "on" and not settings.redis_url:
        # In-memory buckets are per process: N workers would each grant the full budget (N times the limit), and
        # splitting it N ways would starve a keep-alive client that the kernel pins to one worker. Refuse.
        raise click.UsageError(
            f"--workers {settings.workers} with rate limits on needs --redis-url (workers share their budgets "
            "through Redis); or pass --rate-limits off, or run one worker."
        )
    # Worker processes read their settings from the environment: hand every resolved value down.
    for s in SETTINGS:
        os.environ[s.env] = s.format(getattr(settings, s.name))

    token = _run(settings, _first_user)
    where = f"http://{settings.host}:{settings.port}"
    backend = "PostgreSQL" if settings.database_url else f"SQLite in {os.path.abspath(settings.data_dir)}"
    click.echo(f"openkvs {where} (storage: {backend}, workers: {settings.workers})")
    if token:
        click.echo(f"\nCreated user '{DEFAULT_USER}'. Its API token (shown only now, keep it):\n\n  {token}\n")
        click.echo("Try it:\n")
        click.echo(f"  curl -X POST -H 'Authorization: Bearer {token}' '{where}/v2/key-value-stores?name=demo'\n")
    else:
        click.echo("New token: openkvs tokens create NAME (with the same --data-dir/--database-url).")
    if settings.workers > 1:
        _metrics_dir()
    from openkvs import shutdown

    config = uvicorn.Config(
        "openkvs.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        log_config=log_config(settings.log_level),
        access_log=False,  # openkvs writes its own (openkvs/observe.py)
        proxy_headers=False,  # X-Forwarded-For is believed only from --trusted-proxies, by openkvs itself
        http="openkvs.server:HttpProtocol",  # uvicorn's httptools protocol with limits on heads and connections
        ws="none",  # no WebSocket endpoints: an Upgrade request is an ordinary request
        server_header=False,
        timeout_graceful_shutdown=settings.shutdown_timeout,  # and a second SIGTERM exits at once (shutdown.py)
    )
    shutdown.run(config)


def _metrics_dir() -> None:
    """Workers share their metrics through files in an empty directory (prometheus-client's multiprocess mode),
    named in the environment before any worker imports the library; removed when the server exits."""
    import atexit
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="openkvs-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path  # (openkvs.metrics would import the library before it is set)
    atexit.register(shutil.rmtree, path, True)


async def _first_user(storage: Any) -> str | None:
    """On the very first start, a user and a token so that the server is usable at once."""
    from openkvs.storage.base import UsernameTaken

    if await storage.get_user_by_name(DEFAULT_USER) is not None:
        return None
    try:
        user = await storage.create_user(DEFAULT_USER)
    except UsernameTaken:  # another process won the race
        return None
    token = auth.new_token()
    await storage.add_token(user.id, auth.hash_token(token))
    return token


@main.group()
def users() -> None:
    """Manage users."""


@users.command("create")
@click.argument("name")
@_storage_options
def users_create(name: str, **flags: Any) -> None:
    """Create user NAME and print a new API token for it (alone, on the last line)."""
    from openkvs.storage.base import UsernameTaken

    if not rules.USERNAME.ok(name):
        raise click.UsageError("A username has 3 to 30 characters: letters, digits, '_', '.' or '-'.")

    async def work(storage: Any) -> str:
        try:
            user = await storage.create_user(name)
        except UsernameTaken:
            raise click.ClickException(f"User '{name}' exists already; use 'openkvs tokens create {name}'.") from None
        token = auth.new_token()
        await storage.add_token(user.id, auth.hash_token(token))
        return token

    click.echo(_run(_settings(**flags), work))


@main.group()
def tokens() -> None:
    """Manage API tokens."""


@tokens.command("create")
@click.argument("name")
@_storage_options
def tokens_create(name: str, **flags: Any) -> None:
    """Print a new API token for user NAME."""

    async def work(storage: Any) -> str:
        user = await storage.get_user_by_name(name)
        if user is None:
            raise click.ClickException(f"There is no user '{name}'.")
        token = auth.new_token()
        await storage.add_token(user.id, auth.hash_token(token))
        return token

    click.echo(_run(_settings(**flags), work))


@tokens.command("revoke")
@click.argument("token")
@_storage_options
def tokens_revoke(token: str, **flags: Any) -> None:
    """Revoke TOKEN (running servers stop accepting it within a few seconds)."""

    async def work(storage: Any) -> bool:
        return bool(await storage.revoke_token(auth.hash_token(token)))

    if not _run(_settings(**flags), work):
        raise click.ClickException("No such token.")
    click.echo("revoked")


async def _store(storage: Any, ref: str) -> Any:
    from openkvs import access  # local: the HTTP layer is not needed by most commands

    store = await access.find(storage, access.STORES, ref)
    if store is None:
        raise click.ClickException(f"There is no store '{ref}' (give an ID or OWNER~NAME).")
    return store


@main.group()
def grants() -> None:
    """Share a store with another user (read, or read and write)."""


@grants.command("add")
@click.argument("store")
@click.argument("username")
@click.option("--read", "level", flag_value="read", default=True, help="Read only (default).")
@click.option("--write", "level", flag_value="write", help="Read and write.")
@_storage_options
def grants_add(store: str, username: str, level: str, **flags: Any) -> None:
    """Let USERNAME read (or read and write) STORE."""

    async def work(storage: Any) -> None:
        s = await _store(storage, store)
        user = await storage.get_user_by_name(username)
        if user is None:
            raise click.ClickException(f"There is no user '{username}'.")
        if user.id == s.user_id:
            raise click.ClickException("That user owns the store.")
        await sharing.set_grant(storage, s.id, user.id, level == "write", settings.rotate_signing_key_on_revoke)

    settings = _settings(**flags)
    _run(settings, work)
    click.echo(f"{username} may now {'read and write' if level == 'write' else 'read'} {store}")


@grants.command("list")
@click.argument("store")
@_storage_options
def grants_list(store: str, **flags: Any) -> None:
    """List who STORE is shared with."""

    async def work(storage: Any) -> list[Any]:
        return list(await storage.list_grants((await _store(storage, store)).id))

    for g in _run(_settings(**flags), work):
        click.echo(f"{g.username}\t{'write' if g.can_write else 'read'}")


@grants.command("remove")
@click.argument("store")
@click.argument("username")
@_storage_options
def grants_remove(store: str, username: str, **flags: Any) -> None:
    """Take back USERNAME's access to STORE."""

    async def work(storage: Any) -> bool:
        s = await _store(storage, store)
        user = await storage.get_user_by_name(username)
        return bool(user and await sharing.remove_grant(storage, s.id, user.id, settings.rotate_signing_key_on_revoke))

    settings = _settings(**flags)
    removed = _run(settings, work)
    if removed and settings.rotate_signing_key_on_revoke:
        click.echo("removed; the store has a new URL-signing key (signed links made before stop working)")
    else:
        click.echo("removed" if removed else "there was no such grant")


@main.group()
def stores() -> None:
    """Administer stores."""


@stores.command("rotate-signing-key")
@click.argument("store")
@_storage_options
def stores_rotate(store: str, **flags: Any) -> None:
    """Give STORE a new URL-signing key: every signed URL made before stops working."""

    async def work(storage: Any) -> None:
        s = await _store(storage, store)
        await storage.update_store(s.id, {"url_signing_secret_key": auth.new_signing_key()})

    _run(_settings(**flags), work)
    click.echo("rotated")


@main.command()
@_storage_options
def migrate(**flags: Any) -> None:
    """Create or upgrade the database schema (also done at every start)."""

    async def work(storage: Any) -> None:
        await storage.migrate()

    _run(_settings(**flags), work)
    click.echo("schema is current")


@main.command()
@_storage_options
def check(**flags: Any) -> None:
    """Verify the storage without changing it. SQLite: integrity_check, and every record's file present with its
    size. PostgreSQL: connection, schema version, every record's chunks adding up to its size. Prints one line
    per problem; exit status 1 if there is any."""
    settings = _settings(**flags)
    if settings.database_url:
        from openkvs.storage.postgres.check import check as check_postgres

        problems, summary = anyio.run(check_postgres, settings.database_url, settings.database_schema)
    else:
        from pathlib import Path

        from openkvs.storage.sqlite.check import check as check_sqlite

        problems, summary = check_sqlite(Path(settings.data_dir))
    for line in problems:
        click.echo(line)
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s) found")
    click.echo(f"ok: {summary}")


@main.command("backup")
@click.argument("dest", type=click.Path(file_okay=False))
@_storage_options
def backup_cmd(dest: str, **flags: Any) -> None:
    """Back the SQLite data dir up into the new folder DEST, consistently, while a server runs and writes: the
    database (SQLite's online backup API) and the record files it names, then verified. PostgreSQL: use pg_dump
    (README: Backup)."""
    from pathlib import Path

    from openkvs.backup import BackupError, backup

    settings = _settings(**flags)
    if settings.database_url:
        raise click.UsageError("openkvs backup is for the SQLite backend; on PostgreSQL use pg_dump (README: Backup).")
    try:
        summary = backup(Path(settings.data_dir), Path(dest), echo=click.echo)
    except (BackupError, OSError, sqlite3_error()) as exc:
        raise click.ClickException(f"backup failed: {exc}") from None
    click.echo(f"backed up and verified: {summary}")


@main.command("restore")
@click.argument("src", type=click.Path(file_okay=False, exists=True))
@_setting_options("data_dir")
def restore_cmd(src: str, **flags: Any) -> None:
    """Restore the backup SRC (made by openkvs backup) into --data-dir, which must be new or empty. Start the
    server on it afterwards; it is verified before and after the copy."""
    from pathlib import Path

    from openkvs.backup import BackupError, restore

    if flags.get("data_dir") is None and not os.environ.get("OPENKVS_DATA_DIR"):
        raise click.UsageError("give the data dir to restore into: --data-dir DIR")
    settings = _settings(**flags)
    try:
        summary = restore(Path(src), Path(settings.data_dir))
    except (BackupError, OSError, sqlite3_error()) as exc:
        raise click.ClickException(f"restore failed: {exc}") from None
    click.echo(f"restored into {settings.data_dir}: {summary}")


def sqlite3_error() -> type[Exception]:
    import sqlite3

    return sqlite3.Error


@main.command("settings")
@click.option("--markdown", is_flag=True, help="As the README's configuration table.")
def show_settings(markdown: bool) -> None:
    """Every setting: flag, environment variable, default, meaning."""
    if markdown:
        click.echo(markdown_table(), nl=False)
        return
    for s in SETTINGS:
        click.echo(f"{s.flag:34} {s.env:40} default {s.default_text}\n    {s.description}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
