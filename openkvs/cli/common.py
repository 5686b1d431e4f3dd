"""What the storage's commands share: their options, derived from the settings' declaration (openkvs/config.py),
and the storage opened for one piece of work."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from openkvs.config import BY_NAME, SETTINGS, Setting, Settings
from openkvs.redact import without_secrets

T = TypeVar("T")
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


def setting_options(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
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


def one_of(dest: str, flags: dict[str, tuple[str, str]], default: str | None = None) -> Callable[
        [Callable[..., Any]], Callable[..., Any]]:
    """Flags of which at most one may be given, each setting ``dest`` to its value: ``{"--queue": ("queue",
    help)}``; none given, ``default``. (Options sharing a name with ``flag_value`` let the last of them win
    silently: ``export --queue X --dataset`` exported a dataset.) Two of them together are a usage error naming
    both, exit status 2."""
    key = f"openkvs.one_of.{dest}"

    def remember(flag: str, value: str) -> Callable[[click.Context, click.Parameter, bool], None]:
        def callback(ctx: click.Context, param: click.Parameter, given: bool) -> None:
            ctx.params.setdefault(dest, default)
            if not given:
                return
            earlier = ctx.meta.get(key)
            if earlier is not None and earlier != flag:
                raise click.BadOptionUsage(flag, f"{earlier} and {flag} cannot be given together: give one of them.",
                                           ctx)
            ctx.meta[key] = flag
            ctx.params[dest] = value

        return callback

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for flag, (value, help) in reversed(flags.items()):
            f = click.option(flag, f"{dest}_{value}", is_flag=True, expose_value=False, callback=remember(flag, value),
                             help=help)(f)
        return f

    return decorate


# Every command that opens the storage takes these.
storage_options = setting_options(
    "data_dir", "database_url", "database_schema", "blob_store", "s3_endpoint", "s3_region", "s3_path_style",
    "blob_inline_max",
)


def run(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """``work`` on the storage, creating the database if there is none: for serve and migrate only. The other
    commands use ``_use``."""
    return on_storage(settings, work, create=True)


def use(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """``work`` on an existing database: pointed at a folder or schema without one, a command says so instead of
    leaving an empty database behind (run from the wrong folder, say)."""
    return on_storage(settings, work, create=False)


def on_storage(settings: Settings, work: Callable[[Any], Awaitable[T]], create: bool) -> T:
    from openkvs.app import open_storage

    async def main() -> T:
        if not create:
            await need_database(settings)
        # no background tasks: a command's storage lives for one piece of work, and maintenance is the server's
        # (a fill of older rows' ZIP headers started here would only hold up the command's end, and the server's
        # writer, for a transaction given up at once; garbage collection comes after an interval no command lasts)
        async with open_storage(settings, background=False) as storage:
            return await work(storage)

    return _run(main)


def version_found(settings: Settings) -> int | None:
    """``stored_version``, for a command (``migrate`` reads it before it opens the storage)."""
    return _run(lambda: stored_version(settings))


def _run(main: Callable[[], Awaitable[T]]) -> T:
    import anyio

    from openkvs.storage.base import StorageError
    from openkvs.storage.bucket import BucketConfigError

    try:
        return anyio.run(main)
    except (StorageError, BucketConfigError) as exc:  # unreachable, damaged, read-only, misconfigured: one line
        raise click.ClickException(f"cannot use the storage: {exc}") from None


async def need_database(settings: Settings) -> None:
    hint = "'openkvs serve' or 'openkvs migrate' creates one; or give --data-dir or --database-url"
    if await stored_version(settings) is None:
        raise click.ClickException(f"There is no openkvs database in {where(settings)} ({hint}).")


def where(settings: Settings) -> str:
    """The database the settings point at, as a message names it."""
    if settings.database_url:
        return f"schema '{settings.database_schema}'"
    return os.path.abspath(settings.data_dir)


async def stored_version(settings: Settings) -> int | None:
    """The version of the tables of the database the settings point at, None if there is none; read without
    creating or changing anything (``migrate`` tells what it then did)."""
    from openkvs.storage.base import StorageError

    if not settings.database_url:
        import sqlite3

        from openkvs.storage.sqlite import DB_NAME

        path = os.path.join(os.path.abspath(settings.data_dir), DB_NAME)
        if not os.path.exists(path):
            return None
        try:  # a damaged file: opening the storage says so, in its words
            with contextlib.closing(sqlite3.connect(path)) as conn:
                return int(conn.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.Error:
            return 0
    import asyncpg

    try:
        conn = await asyncpg.connect(settings.database_url, timeout=10)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:  # (a bad URL: the latter)
        url = settings.database_url
        raise StorageError(without_secrets(f"PostgreSQL at {url}: {exc}", url)) from None
    try:
        table = f'"{settings.database_schema}".schema_version'
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
            return None
        return int(await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {table}"))
    finally:
        await conn.close()


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings.load(overrides)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
