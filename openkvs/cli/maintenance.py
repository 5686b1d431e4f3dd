"""Maintenance of the storage: record bytes in a bucket, migrations, checks, backup and restore, the settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from openkvs.cli.common import (
    load_settings,
    run,
    setting_options,
    storage_options,
    use,
    version_found,
    where,
)
from openkvs.config import SETTINGS, markdown_table
from openkvs.plural import counted
from openkvs.storage.base import Storage


@click.group()
def blobs() -> None:
    """Record bytes in a bucket: check, move. They need --blob-store (with --database-url or --data-dir)."""


def _with_bucket(storage: Storage) -> Storage:
    if storage.blob_store is None:
        raise click.ClickException("this needs --blob-store (or OPENKVS_BLOB_STORE)")
    return storage


@blobs.command("fsck")
@click.option("--fix", is_flag=True, help="Delete the objects that no record, garbage row or upload names.")
@storage_options
def blobs_fsck(fix: bool, **flags: Any) -> None:
    """Compare the bucket with the database. Lists objects without metadata (orphans; --fix deletes them) and records
    whose object is missing or of the wrong size. Exit status 1 if anything is wrong (and not fixed)."""
    async def work(storage: Any) -> Any:
        return await _with_bucket(storage).check_bucket(fix=fix)

    report = use(load_settings(**flags), work)
    for blob_id, size in report.orphans:
        click.echo(f"orphan object: blob {blob_id}, {counted(size, 'byte')}{' (deleted)' if report.deleted else ''}")
    for line in report.missing:
        click.echo(line)
    click.echo(
        f"{counted(report.objects, 'object')}, {counted(report.records_in_bucket, 'record')} in the bucket; "
        f"{counted(len(report.orphans), 'orphan')}"
        f"{f' ({report.deleted} deleted)' if report.deleted else ''}, "
        f"{counted(len(report.missing), 'record')} without their object"
    )
    if report.missing or (report.orphans and not report.deleted):
        raise click.ClickException("problems found")


@blobs.command("migrate")
@click.option("--to", "to", type=click.Choice(["bucket", "database"]), required=True,
              help="bucket: records above --blob-inline-max go to the bucket; database: every record comes back.")
@storage_options
def blobs_migrate(to: str, **flags: Any) -> None:
    """Move record bytes to the bucket or back. While servers run: a record written
    meanwhile keeps its new bytes; an interrupted run is resumed by running it again."""
    async def work(storage: Any) -> Any:
        return await _with_bucket(storage).move_record_bytes(to)

    done = use(load_settings(**flags), work)
    click.echo(f"moved {counted(done.moved, 'record')} ({counted(done.moved_bytes, 'byte')}) to the {to}; "
               f"{done.skipped} written meanwhile")


@click.command()
@storage_options
def migrate(**flags: Any) -> None:
    """Create or upgrade the database, and say which. Every start of the server does it too."""

    async def work(storage: Any) -> int:
        return int(await storage.migrate())

    settings = load_settings(**flags)
    before = version_found(settings)
    after = run(settings, work)
    if before is None:
        click.echo(f"created the database at version {after} in {where(settings)}")
    elif before < after:
        click.echo(f"upgraded the database in {where(settings)} from version {before} to {after}")
    else:
        click.echo(f"the database in {where(settings)} is already current (version {after})")


@click.command()
@click.option("--fix", is_flag=True,
              help="Set the stores' record counts and ZIP totals that are wrong (servers may run), then check.")
@storage_options
def check(fix: bool, **flags: Any) -> None:
    """Verify the storage without changing it. SQLite: integrity_check, and every record's file present with its
    size. PostgreSQL: connection, schema version, every record's chunks adding up to its size. Both: every store's
    record count and ZIP totals, and every record's kept ZIP header. Prints one line per problem; exit status 1 if
    there is any. --fix first sets the wrong record counts and ZIP totals (the one thing it can repair)."""
    from openkvs.storage.base import StorageError

    settings = load_settings(**flags)
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
        raise click.ClickException(f"{counted(len(problems), 'problem')} found")
    click.echo(f"ok: {summary}")


@click.command("backup")
@click.argument("dest", type=click.Path(file_okay=False))
@storage_options
def backup_cmd(dest: str, **flags: Any) -> None:
    """Copy a SQLite data dir into DEST while a server runs. DEST is a new folder (not a link; made as DEST.partial
    first); the copy is consistent while the server writes: the database (SQLite's online backup API) and the record
    files it names, then verified.
    Records whose bytes are in a --blob-store bucket: their rows only (back the bucket up by its own means).
    PostgreSQL: use pg_dump (README: Backup)."""
    from pathlib import Path

    from openkvs.backup import BackupError, backup

    settings = load_settings(**flags)
    if settings.database_url:
        raise click.UsageError("openkvs backup is for the SQLite backend; on PostgreSQL use pg_dump (README: Backup).")
    try:
        summary = backup(Path(settings.data_dir), Path(dest), echo=click.echo)
    except (BackupError, OSError, sqlite3_error()) as exc:
        raise click.ClickException(f"backup failed: {exc}") from None
    click.echo(f"backed up and verified: {summary}")


@click.command("restore")
@click.argument("src", type=click.Path(file_okay=False, exists=True))
@setting_options("data_dir")
def restore_cmd(src: str, **flags: Any) -> None:
    """Copy a backup into a new data dir. SRC (made by openkvs backup) goes into --data-dir, new or empty. Start the
    server on it afterwards; it is verified before and after the copy."""
    from pathlib import Path

    from openkvs.backup import BackupError, restore

    if flags.get("data_dir") is None and not os.environ.get("OPENKVS_DATA_DIR"):
        raise click.UsageError("give the data dir to restore into: --data-dir DIR")
    settings = load_settings(**flags)
    try:
        summary = restore(Path(src), Path(settings.data_dir))
    except (BackupError, OSError, sqlite3_error()) as exc:
        raise click.ClickException(f"restore failed: {exc}") from None
    click.echo(f"restored into {settings.data_dir}: {summary}")


def sqlite3_error() -> type[Exception]:
    import sqlite3

    return sqlite3.Error


@click.command("settings")
@click.option("--markdown", is_flag=True, help="As the README's configuration table.")
def show_settings(markdown: bool) -> None:
    """Every setting: flag, environment variable, default, meaning."""
    if markdown:
        click.echo(markdown_table(), nl=False)
        return
    for s in SETTINGS:
        click.echo(f"{s.flag:34} {s.env:40} default {s.default_text}\n    {s.description}")
