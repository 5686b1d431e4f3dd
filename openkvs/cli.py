"""The command line: the server's commands (serve, and administration straight on the storage) and the client's
(download, upload, import, export: over HTTP, in openkvs/client/). Commands here parse arguments and print; the
work is in config, storage, sharing and the client modules. ``HELP`` below is what ``openkvs --help`` shows.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

import openkvs
from openkvs import rules  # (auth and sharing, for the storage's commands only, are imported by them)
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
_storage_options = _setting_options(
    "data_dir", "database_url", "database_schema", "blob_store", "s3_endpoint", "s3_region", "s3_path_style",
    "blob_inline_max",
)


def _run(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """``work`` on the storage, creating the database if there is none: for serve and migrate only. The other
    commands use ``_use``."""
    return _on_storage(settings, work, create=True)


def _use(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """``work`` on an existing database: pointed at a folder or schema without one, a command says so instead of
    leaving an empty database behind (run from the wrong folder, say)."""
    return _on_storage(settings, work, create=False)


def _on_storage(settings: Settings, work: Callable[[Any], Awaitable[T]], create: bool) -> T:
    from openkvs.app import open_storage
    from openkvs.storage.base import StorageError

    async def main() -> T:
        if not create:
            await _need_database(settings)
        # no background tasks: a command's storage lives for one piece of work, and maintenance is the server's
        # (a fill of older rows' ZIP headers started here would only hold up the command's end, and the server's
        # writer, for a transaction given up at once; garbage collection comes after an interval no command lasts)
        async with open_storage(settings, background=False) as storage:
            return await work(storage)

    import anyio

    from openkvs.storage.bucket import BucketConfigError

    try:
        return anyio.run(main)
    except (StorageError, BucketConfigError) as exc:  # unreachable, damaged, read-only, misconfigured: one line
        raise click.ClickException(f"cannot use the storage: {exc}") from None


async def _need_database(settings: Settings) -> None:
    from openkvs.storage.base import StorageError

    hint = "'openkvs serve' or 'openkvs migrate' creates one; or give --data-dir or --database-url"
    if not settings.database_url:
        from openkvs.storage.sqlite import DB_NAME

        folder = os.path.abspath(settings.data_dir)
        if not os.path.exists(os.path.join(folder, DB_NAME)):
            raise click.ClickException(f"There is no openkvs database in {folder} ({hint}).")
        return
    import asyncpg

    try:
        conn = await asyncpg.connect(settings.database_url, timeout=10)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise StorageError(f"PostgreSQL at {settings.database_url}: {exc}") from None
    try:
        found = await conn.fetchval(
            "SELECT to_regclass($1) IS NOT NULL", f'"{settings.database_schema}".schema_version'
        )
    finally:
        await conn.close()
    if not found:
        raise click.ClickException(f"There is no openkvs database in schema '{settings.database_schema}' ({hint}).")


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings.load(overrides)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


HELP = """Your own server for Apify's storage API, and a client for it.

\b
On the server's machine (they find the storage with --data-dir or --database-url):
  openkvs serve                     start the server (creates the database on its first start)
  openkvs users|tokens|grants|stores ...   administer it
\b
From anywhere (they find the server with --url and --token, or OPENKVS_URL and OPENKVS_TOKEN):
  openkvs download STORE            the store as one ZIP file, resumable
  openkvs upload DIR STORE          a folder's files as records
  openkvs import PATH | export STORE DIR    Crawlee / Apify CLI local storage

STORE is a store's ID, ~NAME (the caller's store of that name) or USER~NAME.
"""


@click.group(help=HELP, context_settings={"max_content_width": 120})
@click.version_option(openkvs.__version__, "-V", "--version", prog_name="openkvs", message="%(prog)s %(version)s")
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
    if settings.blob_store:
        backend += f", bytes above {settings.blob_inline_max} in {settings.blob_store}"
    click.echo(f"openkvs {where} (storage: {backend}, workers: {settings.workers})")
    click.echo(f"Web console: {where}/console/ (sign in with an API token)")
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
        # and a second SIGTERM exits at once (shutdown.py)
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout),
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
    from openkvs import auth
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
        from openkvs import auth

        try:
            user = await storage.create_user(name)
        except UsernameTaken:
            raise click.ClickException(f"User '{name}' exists already; use 'openkvs tokens create {name}'.") from None
        token = auth.new_token()
        await storage.add_token(user.id, auth.hash_token(token))
        return token

    click.echo(_use(_settings(**flags), work))


@users.command("list")
@_storage_options
def users_list(**flags: Any) -> None:
    """List the users: name, created."""

    async def work(storage: Any) -> list[Any]:
        return await storage.list_users()

    for u in _use(_settings(**flags), work):
        click.echo(f"{u.username}\t{_when(u.created_at)}")


def _when(dt: Any) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC")


@main.group()
def tokens() -> None:
    """Manage API tokens."""


@tokens.command("create")
@click.argument("name")
@_storage_options
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

    click.echo(_use(_settings(**flags), work))


@tokens.command("list")
@click.argument("name", required=False)
@_storage_options
def tokens_list(name: str | None, **flags: Any) -> None:
    """List the API tokens (of user NAME): user, created, and an ID (the start of the token's SHA-256; the
    tokens themselves are not kept, only their hashes)."""

    async def work(storage: Any) -> list[Any]:
        return [t for t in await storage.list_tokens() if name is None or t.username == name]

    for t in _use(_settings(**flags), work):
        click.echo(f"{t.username}\t{_when(t.created_at)}\t{t.id}")


@tokens.command("revoke")
@click.argument("token")
@_storage_options
def tokens_revoke(token: str, **flags: Any) -> None:
    """Revoke TOKEN (running servers stop accepting it within a few seconds)."""

    async def work(storage: Any) -> bool:
        from openkvs import auth

        return bool(await storage.revoke_token(auth.hash_token(token)))

    if not _use(_settings(**flags), work):
        raise click.ClickException("No such token.")
    click.echo("revoked")


async def _store(storage: Any, ref: str, any_kind: bool = False) -> Any:
    """The store ``ref`` names: an ID, OWNER~NAME, or ~NAME (the one store of that name, whoever owns it). With
    ``any_kind``, a dataset or request queue too (sharing works alike for all of them)."""
    from openkvs import access  # local: the HTTP layer is not needed by most commands

    kinds = access.KINDS if any_kind else (access.STORES,)
    owners = await storage.list_users() if ref.startswith("~") else [None]
    found = [await access.find(storage, kind, ref, owner=u) for kind in kinds for u in owners]
    stores = [s for s in found if s is not None]
    if len(stores) > 1:
        names = ", ".join(f"the {_KIND_NAMES[s.kind]} {s.username}~{s.name} ({s.id})" for s in stores)
        raise click.ClickException(f"'{ref}' could be any of {names}: give its ID or OWNER~NAME.")
    if not stores:
        what = "store, dataset or request queue" if any_kind else "store"
        raise click.ClickException(f"There is no {what} '{ref}' (give an ID, OWNER~NAME or ~NAME).")
    return stores[0]


_KIND_NAMES = {"kvs": "key-value store", "dataset": "dataset", "queue": "request queue"}


@main.group()
def grants() -> None:
    """Share a store, dataset or request queue with another user (read, or read and write)."""


@grants.command("add")
@click.argument("store")
@click.argument("username")
@click.option("--read", "level", flag_value="read", default=True, help="Read only (default).")
@click.option("--write", "level", flag_value="write", help="Read and write.")
@_storage_options
def grants_add(store: str, username: str, level: str, **flags: Any) -> None:
    """Let USERNAME read (or read and write) STORE."""

    async def work(storage: Any) -> None:
        from openkvs import sharing

        s = await _store(storage, store, any_kind=True)
        user = await storage.get_user_by_name(username)
        if user is None:
            raise click.ClickException(f"There is no user '{username}'.")
        if user.id == s.user_id:
            raise click.ClickException(f"That user owns the {_KIND_NAMES[s.kind]}.")
        await sharing.set_grant(storage, s.id, user.id, level == "write", settings.rotate_signing_key_on_revoke)

    settings = _settings(**flags)
    _use(settings, work)
    click.echo(f"{username} may now {'read and write' if level == 'write' else 'read'} {store}")


@grants.command("list")
@click.argument("store")
@_storage_options
def grants_list(store: str, **flags: Any) -> None:
    """List who STORE is shared with."""

    async def work(storage: Any) -> list[Any]:
        return list(await storage.list_grants((await _store(storage, store, any_kind=True)).id))

    for g in _use(_settings(**flags), work):
        click.echo(f"{g.username}\t{'write' if g.can_write else 'read'}")


@grants.command("remove")
@click.argument("store")
@click.argument("username")
@_storage_options
def grants_remove(store: str, username: str, **flags: Any) -> None:
    """Take back USERNAME's access to STORE."""

    async def work(storage: Any) -> bool:
        from openkvs import sharing

        s = await _store(storage, store, any_kind=True)
        user = await storage.get_user_by_name(username)
        return bool(user and await sharing.remove_grant(storage, s.id, user.id, settings.rotate_signing_key_on_revoke))

    settings = _settings(**flags)
    removed = _use(settings, work)
    if removed and settings.rotate_signing_key_on_revoke:
        click.echo("removed; the store has a new URL-signing key (signed links made before stop working)")
    else:
        click.echo("removed" if removed else "there was no such grant")


@main.group()
def blobs() -> None:
    """Record bytes in a bucket (--blob-store, with --database-url or --data-dir): check, move."""


def _blob_tools(storage: Any) -> Any:
    """The fsck and migrate of the storage's backend, once it has a bucket."""
    if getattr(storage, "blob_store", None) is None:
        raise click.ClickException("this needs --blob-store (or OPENKVS_BLOB_STORE)")
    from openkvs.storage.sqlite import SQLiteStorage

    if isinstance(storage, SQLiteStorage):
        from openkvs.storage.sqlite import objects_admin

        return objects_admin
    from openkvs.storage.postgres import blobs as postgres_blobs

    return postgres_blobs


@blobs.command("fsck")
@click.option("--fix", is_flag=True, help="Delete the objects that no record, garbage row or upload names.")
@_storage_options
def blobs_fsck(fix: bool, **flags: Any) -> None:
    """Compare the bucket with the database: objects without metadata (orphans; --fix deletes them) and records
    whose object is missing or of the wrong size. Exit status 1 if anything is wrong (and not fixed)."""
    async def work(storage: Any) -> Any:
        return await _blob_tools(storage).fsck(storage, fix=fix)

    report = _use(_settings(**flags), work)
    for blob_id, size in report.orphans:
        click.echo(f"orphan object: blob {blob_id}, {size} bytes{' (deleted)' if report.deleted else ''}")
    for line in report.missing:
        click.echo(line)
    click.echo(
        f"{report.objects} objects, {report.records_in_bucket} records in the bucket; {len(report.orphans)} orphans"
        f"{f' ({report.deleted} deleted)' if report.deleted else ''}, "
        f"{len(report.missing)} records without their object"
    )
    if report.missing or (report.orphans and not report.deleted):
        raise click.ClickException("problems found")


@blobs.command("migrate")
@click.option("--to", "to", type=click.Choice(["bucket", "database"]), required=True,
              help="bucket: records above --blob-inline-max go to the bucket; database: every record comes back.")
@_storage_options
def blobs_migrate(to: str, **flags: Any) -> None:
    """Move existing record bytes between the database and the bucket, while servers run. A record written
    meanwhile keeps its new bytes; an interrupted run is resumed by running it again."""
    async def work(storage: Any) -> Any:
        return await _blob_tools(storage).migrate(storage, to)

    done = _use(_settings(**flags), work)
    click.echo(f"moved {done.moved} records ({done.moved_bytes} bytes) to the {to}; {done.skipped} written meanwhile")


@main.group()
def stores() -> None:
    """Administer stores."""


@stores.command("list")
@click.option("--user", "username", help="Only the stores this user owns.")
@_storage_options
def stores_list(username: str | None, **flags: Any) -> None:
    """List the stores: ID, OWNER~NAME, bytes stored, last modified."""

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

    for st in _use(_settings(**flags), work):
        name = f"{st.username}~{st.name}" if st.name else f"{st.username} (unnamed)"
        click.echo(f"{st.id}\t{name}\t{st.stats.storage_bytes}\t{_when(st.modified_at)}")


@stores.command("delete")
@click.argument("store")
@click.option("--yes", is_flag=True, help="Don't ask.")
@_storage_options
def stores_delete(store: str, yes: bool, **flags: Any) -> None:
    """Delete STORE with all its records and grants."""

    async def find(storage: Any) -> Any:
        return await _store(storage, store)

    settings = _settings(**flags)
    st = _use(settings, find)
    label = f"{st.username}~{st.name}" if st.name else st.id
    if not yes:
        click.confirm(f"Delete {label} ({st.id}, {st.stats.storage_bytes} bytes) and all its records?", abort=True)

    async def work(storage: Any) -> bool:
        return bool(await storage.delete_store(st.id))

    if not _use(settings, work):
        raise click.ClickException(f"There is no store '{store}' any more.")
    click.echo(f"deleted {label}")


@stores.command("rotate-signing-key")
@click.argument("store")
@_storage_options
def stores_rotate(store: str, **flags: Any) -> None:
    """Give STORE a new URL-signing key: every signed URL made before stops working."""

    async def work(storage: Any) -> None:
        from openkvs import auth

        s = await _store(storage, store)
        await storage.update_store(s.id, {"url_signing_secret_key": auth.new_signing_key()})

    _use(_settings(**flags), work)
    click.echo("rotated")


@main.command()
@_storage_options
def migrate(**flags: Any) -> None:
    """Create or upgrade the database (also done at every start)."""

    async def work(storage: Any) -> None:
        await storage.migrate()

    _run(_settings(**flags), work)
    click.echo("schema is current")


@main.command()
@click.option("--fix", is_flag=True, help="Set the stores' record counts that are wrong (servers may run), then check.")
@_storage_options
def check(fix: bool, **flags: Any) -> None:
    """Verify the storage without changing it. SQLite: integrity_check, and every record's file present with its
    size. PostgreSQL: connection, schema version, every record's chunks adding up to its size. Both: every store's
    record count. Prints one line per problem; exit status 1 if there is any. --fix first sets the wrong record
    counts (the one thing it can repair)."""
    from openkvs.storage.base import StorageError

    settings = _settings(**flags)
    if settings.database_url:
        import anyio

        from openkvs.storage.postgres import check as pg_check

        def fix_counts() -> list[str]:
            return anyio.run(pg_check.fix_counts, settings.database_url, settings.database_schema)

        def check_storage() -> tuple[list[str], str]:
            return anyio.run(pg_check.check, settings.database_url, settings.database_schema)
    else:
        from openkvs.storage.sqlite import check as sqlite_check

        def fix_counts() -> list[str]:
            return sqlite_check.fix_counts(Path(settings.data_dir))

        def check_storage() -> tuple[list[str], str]:
            return sqlite_check.check(Path(settings.data_dir))

    if fix:
        try:
            fixed = fix_counts()
        except (StorageError, sqlite3_error()) as exc:
            raise click.ClickException(f"cannot fix the record counts: {exc}") from None
        for line in fixed:
            click.echo(f"fixed: {line}")
    problems, summary = check_storage()
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


# -- client commands: they talk to a server over HTTP (openkvs/client/) -------------------------------------------


def _client_options(f: Callable[..., Any]) -> Callable[..., Any]:
    from openkvs.client import DEFAULT_URL, TOKEN_VARIABLES, URL_VARIABLES  # (client.http imports httpx)

    f = click.option("-q", "--quiet", is_flag=True, help="No progress output.")(f)
    f = click.option(
        "--token", envvar=list(TOKEN_VARIABLES), show_envvar=True, help="API token (the first of the variables set)."
    )(f)
    return click.option(
        "--url", envvar=list(URL_VARIABLES), show_envvar=True, default=DEFAULT_URL, show_default=True,
        help="The server (the first of the variables set).",
    )(f)


@contextlib.contextmanager
def _client_errors(partial: str | None = None) -> Iterator[None]:
    """A ClientError is one line and exit status 1; Ctrl-C says what was kept and exits 130."""
    from openkvs.client.http import ClientError

    try:
        yield
    except ClientError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("\ninterrupted" + (f"; {partial} is kept: run the same command again to resume" if partial else ""),
                   err=True)
        sys.exit(130)


def _say(message: str) -> None:
    click.echo(message, err=True)


@main.command()
@click.argument("store")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="The ZIP file to write [default: the store's name.zip].")
@click.option("--prefix", help="Only the records whose keys start with this.")
@click.option("--collection", help="Only the records of this collection of the store's schema.")
@_client_options
def download(store: str, output: Path | None, prefix: str | None, collection: str | None, url: str,
             token: str | None, quiet: bool) -> None:
    """Download STORE's records as one ZIP file. Interrupted, the same command resumes where it stopped (or starts
    over if the store changed since); the finished file is checked (size, every entry's CRC-32)."""
    from openkvs.client import lean_imports

    lean_imports()
    from openkvs.client import download as dl
    from openkvs.client.http import endpoint, store_name
    from openkvs.client.progress import Progress

    out = output or Path(store_name(store) + ".zip")
    with _client_errors(str(dl.part_paths(out)[0])), endpoint(url, token).client() as client:
        done = dl.download(
            client, store, out, prefix=prefix, collection=collection, say=_say,
            progress=lambda label, total, already: Progress(label, total, already, quiet=quiet),
        )
    kept = f", {done.kept} bytes of them from an earlier attempt" if done.kept else ""
    click.echo(f"{done.path}: {done.entries} records, {done.size} bytes{kept}; checked")


def _report(summary: Any) -> None:
    click.echo(summary.line())
    if summary.failed:
        for line in summary.failed[:20]:
            click.echo(f"  {line}", err=True)
        raise click.ClickException(
            f"{len(summary.failed)} files were not uploaded (run the command again to retry them)"
        )


@main.command()
@click.argument("folder", metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("store")
@click.option("--prefix", default="", help="Put this before every key.")
@click.option("--jobs", default=8, show_default=True, type=click.IntRange(1, 64), help="Files sent at once.")
@_client_options
def upload(folder: Path, store: str, prefix: str, jobs: int, url: str, token: str | None, quiet: bool) -> None:
    """Upload every file under DIR to STORE, one record each. A key is the file's path in DIR with '/' as '!'
    (img/a.png: img!a.png), after --prefix; files already stored with the same bytes are skipped. ~NAME is
    created if missing."""
    from openkvs.client import lean_imports

    lean_imports()
    from openkvs.client import upload as up
    from openkvs.client.http import endpoint
    from openkvs.client.progress import Progress

    with _client_errors(), endpoint(url, token).client() as client:
        items = up.plan(folder, prefix)
        up.ensure_store(client, store, _say)
        summary = up.upload(client, store, items, jobs=jobs, prefix=prefix, label=folder.name or str(folder),
                            progress=lambda label, total, done: Progress(label, total, done, quiet=quiet))
    _report(summary)


@main.command("import")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--store", help="Into this store (when PATH holds one store) [default: ~NAME, NAME from PATH].")
@click.option("--jobs", default=8, show_default=True, type=click.IntRange(1, 64), help="Records sent at once.")
@_client_options
def import_(path: Path, store: str | None, jobs: int, url: str, token: str | None, quiet: bool) -> None:
    """Import the key-value stores of a Crawlee or Apify CLI local storage folder (PATH: ./storage, its
    key_value_stores, or one store's folder), keeping keys and content types. Each goes into your store of the
    same name (created if missing); records already there with the same bytes are skipped."""
    from openkvs.client import lean_imports

    lean_imports()
    from openkvs.client import localstore
    from openkvs.client import upload as up
    from openkvs.client.http import endpoint
    from openkvs.client.progress import Progress

    with _client_errors(), endpoint(url, token).client() as client:
        found = localstore.find_stores(path)
        if store and len(found) > 1:
            raise click.UsageError(f"--store names one store; {path} holds {len(found)}")
        failed = 0
        for local in found:
            target = up.ensure_store(client, store or f"~{local.name}", _say)
            summary = up.upload(client, target, local.items, jobs=jobs, label=local.name,
                                progress=lambda label, total, done: Progress(label, total, done, quiet=quiet))
            click.echo(f"{local.folder} -> {target}: {summary.line()}")
            for line in summary.failed[:20]:
                click.echo(f"  {line}", err=True)
            failed += len(summary.failed)
    if failed:
        raise click.ClickException(f"{failed} records were not imported (run the command again to retry them)")


@main.command("export")
@click.argument("store")
@click.argument("folder", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--jobs", default=8, show_default=True, type=click.IntRange(1, 64), help="Records fetched at once.")
@_client_options
def export_(store: str, folder: Path, jobs: int, url: str, token: str | None, quiet: bool) -> None:
    """Export STORE into DIR in Crawlee's local storage layout (DIR/key_value_stores/NAME/, each record with its
    content type), which 'openkvs import DIR' and Crawlee read back."""
    from openkvs.client import lean_imports

    lean_imports()
    from openkvs.client import localstore
    from openkvs.client.http import endpoint
    from openkvs.client.progress import Progress

    with _client_errors(), endpoint(url, token).client() as client:
        written, summary = localstore.export(
            client, store, folder, jobs=jobs,
            progress=lambda label, total, done: Progress(label, total, done, quiet=quiet),
        )
    click.echo(f"{written}: {summary.uploaded} records ({summary.uploaded_bytes} bytes)")
    if summary.failed:
        for line in summary.failed[:20]:
            click.echo(f"  {line}", err=True)
        raise click.ClickException(f"{len(summary.failed)} records were not exported")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
