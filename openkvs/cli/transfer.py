"""The client's commands: they talk to a server over HTTP (openkvs/client/)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from openkvs.plural import counted


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
    except ClientError as exc:  # (nothing answering at --url is one too: http.Unreachable says so)
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("\ninterrupted" + (f"; {partial} is kept: run the same command again to resume" if partial else ""),
                   err=True)
        sys.exit(130)


def _say(message: str) -> None:
    click.echo(message, err=True)


@click.command()
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
    kept = f", {counted(done.kept, 'byte')} of them from an earlier attempt" if done.kept else ""
    click.echo(f"{done.path}: {counted(done.entries, 'record')}, {counted(done.size, 'byte')}{kept}; checked")


def _report(summary: Any) -> None:
    click.echo(summary.line())
    if summary.failed:
        for line in summary.failed[:20]:
            click.echo(f"  {line}", err=True)
        raise click.ClickException(
            f"{counted(len(summary.failed), 'file')} not uploaded (run the command again to retry)"
        )


@click.command()
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


@click.command("import")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--store", help="Into this store (when PATH holds one store) [default: ~NAME, NAME from PATH].")
@click.option("--jobs", default=8, show_default=True, type=click.IntRange(1, 64), help="Records sent at once.")
@_client_options
def import_(path: Path, store: str | None, jobs: int, url: str, token: str | None, quiet: bool) -> None:
    """Import Crawlee / Apify CLI local storage. PATH is a local storage folder (./storage), its key_value_stores,
    or one store's folder; its key-value stores are imported with their keys and content types (not its datasets
    or request queues). Each goes into your store of the same name (created if missing); records already there
    with the same bytes are skipped."""
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
        raise click.ClickException(f"{counted(failed, 'record')} not imported (run the command again to retry)")


@click.command("export")
@click.argument("store")
@click.argument("folder", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--jobs", default=8, show_default=True, type=click.IntRange(1, 64), help="Records fetched at once.")
@_client_options
def export_(store: str, folder: Path, jobs: int, url: str, token: str | None, quiet: bool) -> None:
    """Export STORE into DIR as Crawlee's local storage. It is written as DIR/key_value_stores/NAME/, each record
    with its content type, which 'openkvs import DIR' and Crawlee read back."""
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
    click.echo(f"{written}: {counted(summary.uploaded, 'record')} ({counted(summary.uploaded_bytes, 'byte')})")
    if summary.failed:
        for line in summary.failed[:20]:
            click.echo(f"  {line}", err=True)
        raise click.ClickException(f"{counted(len(summary.failed), 'record')} not exported")
