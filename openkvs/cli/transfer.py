"""The client's commands: they talk to a server over HTTP (openkvs/client/)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from openkvs.cli.common import one_of
from openkvs.plural import counted


def _client_options(f: Callable[..., Any]) -> Callable[..., Any]:
    from openkvs.client import DEFAULT_URL, TOKEN_VARIABLES, URL_VARIABLES  # (client.http imports httpx)

    f = click.option("-q", "--quiet", is_flag=True,
                     help="No progress, nor lines on what is done on the way (created store ~NAME, resuming): only "
                          "the result and errors.")(f)
    f = click.option(
        "--token", envvar=list(TOKEN_VARIABLES), show_envvar=True, help="API token (the first of the variables set)."
    )(f)
    return click.option(
        "--url", envvar=list(URL_VARIABLES), show_envvar=True, default=DEFAULT_URL, show_default=True,
        help="The server (the first of the variables set).",
    )(f)


@contextlib.contextmanager
def _client_errors(what: str, partial: Path | None = None) -> Iterator[None]:
    """A ClientError is one line and exit status 1, and so are an OS error (``WHAT: <strerror> (<path>)``: a file
    in the way of a folder, a full disk) and, last of all, an error from reading a server's answer that the code
    reading it did not turn into a BadAnswer; Ctrl-C says what was kept (``partial``, if it was begun: not when the
    command is stopped before the first byte) and exits 130."""
    from openkvs.client.http import ANSWER_ERRORS, BadAnswer, ClientError

    try:
        yield
    except ClientError as exc:  # (nothing answering at --url is one too: http.Unreachable says so)
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(_os_error(what, exc)) from None
    except ANSWER_ERRORS as exc:
        raise click.ClickException(str(BadAnswer(what, exc))) from None
    except KeyboardInterrupt:
        kept = partial is not None and partial.exists()
        click.echo("\ninterrupted" + (f"; {partial} is kept: run the same command again to resume" if kept else ""),
                   err=True)
        sys.exit(130)


def _os_error(what: str, exc: OSError) -> str:
    paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    return f"{what}: {exc.strerror or exc}" + (f" ({paths})" if paths else "")


def _failed(lines: list[str]) -> None:
    """The first 20 of a command's failures, one line each (a server's key or message in one shown escaped)."""
    from openkvs.client.http import shown

    for line in lines[:20]:
        click.echo(f"  {shown(line)}", err=True)


def _say(message: str) -> None:
    click.echo(message, err=True)


def _teller(quiet: bool) -> Callable[[str], None]:
    """What a command says on the way (a store created, a download resumed or begun anew): on stderr, as
    ``_say``; nothing with -q, which keeps only the result and errors."""
    return (lambda message: None) if quiet else _say


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
    with _client_errors("download", dl.part_paths(out)[0]), endpoint(url, token).client() as client:
        done = dl.download(
            client, store, out, prefix=prefix, collection=collection, say=_teller(quiet),
            progress=lambda label, total, already: Progress(label, total, already, quiet=quiet),
        )
    kept = f", {counted(done.kept, 'byte')} of them from an earlier attempt" if done.kept else ""
    click.echo(f"{done.path}: {counted(done.entries, 'record')}, {counted(done.size, 'byte')}{kept}; checked")


def _report(summary: Any) -> None:
    click.echo(summary.line())
    if summary.failed:
        _failed(summary.failed)
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
    (img/a.png: img!a.png), after --prefix; files already stored with the same bytes are skipped. Symbolic links
    in DIR (to files or folders) are not followed but left out and named, as rsync does without -L (copy with
    'cp -rL' to upload what they point at). ~NAME is created if missing."""
    from openkvs.client import lean_imports

    lean_imports()
    from openkvs.client import upload as up
    from openkvs.client.http import endpoint
    from openkvs.client.progress import Progress

    with _client_errors("upload"), endpoint(url, token).client() as client:
        items, left_out = up.plan(folder, prefix)
        for line in left_out[:20]:
            _teller(quiet)(f"left out: {line}")
        if len(left_out) > 20:
            _teller(quiet)(f"left out: ... and {len(left_out) - 20} more")
        up.ensure_store(client, store, _teller(quiet))
        summary = up.upload(client, store, items, jobs=jobs, prefix=prefix, label=folder.name or str(folder),
                            progress=lambda label, total, done: Progress(label, total, done, quiet=quiet))
        summary.left_out = len(left_out)
    _report(summary)


@click.command("import")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--store", help="Into this one (when PATH holds one store, dataset or queue) [default: ~NAME, NAME "
              "from PATH].")
@click.option("--append", is_flag=True, help="Push a dataset's items after those the target already holds (by "
              "default such a dataset is refused, unless it holds the first items of the same dataset: an earlier "
              "import, which then goes on from there).")
@click.option("--jobs", default=8, show_default=True, type=click.IntRange(1, 64), help="Records sent at once.")
@_client_options
def import_(path: Path, store: str | None, append: bool, jobs: int, url: str, token: str | None, quiet: bool) -> None:
    """Import Crawlee / Apify CLI local storage. PATH is a storage folder (./storage), its key_value_stores,
    datasets or request_queues, or one store's, dataset's or queue's folder. Each goes into yours of the same name
    (created if missing; Crawlee's "default" into ~default). Everything is read and checked before anything is
    sent, and a run again after a failure goes on without duplicating: records already there with the same bytes
    are skipped, a dataset's import resumes after the items it pushed, requests already in the queue (the same
    uniqueKey) are left as they are. Stores keep keys and content types; datasets their items in order; queues
    their requests in order, handled or not."""
    from openkvs.client import lean_imports

    lean_imports()
    from openkvs.client import localdataset, localqueue, localstorage
    from openkvs.client import upload as up
    from openkvs.client.http import ClientError, endpoint
    from openkvs.client.localfiles import open_target
    from openkvs.client.progress import Progress

    def progress(label: str, total: int | None, done: int) -> Progress:
        return Progress(label, total, done, quiet=quiet)

    failed: list[str] = []
    with _client_errors("import"), endpoint(url, token).client() as client:
        found = localstorage.find(path, store)
        if store and found.count() > 1:
            raise click.UsageError(f"--store names one; {path} holds {found.count()}")
        for local in found.stores:
            target = up.ensure_store(client, store or f"~{local.name}", _teller(quiet))
            summary = up.upload(client, target, local.items, jobs=jobs, label=local.name, progress=progress)
            click.echo(f"{local.folder} -> {target}: {summary.line()}")
            _failed(summary.failed)
            if summary.failed:
                failed.append(f"{counted(len(summary.failed), 'record')} of {local.folder}")
        for dataset in found.datasets:
            target = store or f"~{dataset.name}"
            try:
                info = open_target(client, localdataset.COLLECTION, "dataset", target, _teller(quiet))
                count = localdataset.item_count(info, f"dataset {target}")
                pushed = localdataset.import_dataset(client, dataset, target, count, append=append, progress=progress)
            except ClientError as exc:
                _say(str(exc))
                failed.append(str(dataset.folder))
                continue
            click.echo(f"{dataset.folder} -> {target}: {pushed.line()}")
        for queue in found.queues:
            target = store or f"~{queue.name}"
            try:
                open_target(client, localqueue.COLLECTION, "request queue", target, _teller(quiet))
                added = localqueue.import_queue(client, queue, target, progress=progress)
            except ClientError as exc:
                _say(str(exc))
                failed.append(str(queue.folder))
                continue
            click.echo(f"{queue.folder} -> {target}: {added.line()} (in order: {queue.order})")
    if failed:
        raise click.ClickException(f"not imported: {', '.join(failed)} (run the command again to retry)")


@click.command("export")
@click.argument("store")
@click.argument("folder", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@one_of("kind", {
    "--dataset": ("dataset", "STORE is a dataset: into DIR/datasets/NAME/, an item file each."),
    "--queue": ("queue", "STORE is a request queue: into DIR/request_queues/NAME/, its order into "
                "DIR/key_value_stores/default/. Reading it counts as a client of the queue (hadMultipleClients)."),
})
@click.option("--jobs", default=8, show_default=True, type=click.IntRange(1, 64), help="Records fetched at once.")
@_client_options
def export_(store: str, folder: Path, kind: str | None, jobs: int, url: str, token: str | None, quiet: bool) -> None:
    """Export STORE into DIR as Crawlee's local storage. A key-value store goes to DIR/key_value_stores/NAME/, each
    record with its content type (a dataset or request queue to its own layout, with --dataset or --queue), a new
    folder: one that holds files already is refused (but the default store's may hold the orders of queues exported
    there: kept). 'openkvs import DIR' and Crawlee read it back."""
    from openkvs.client import lean_imports

    lean_imports()
    from openkvs.client import localdataset, localqueue, localstore
    from openkvs.client.http import endpoint
    from openkvs.client.progress import Progress

    def progress(label: str, total: int | None, done: int) -> Progress:
        return Progress(label, total, done, quiet=quiet)

    with _client_errors("export"), endpoint(url, token).client() as client:
        if kind == "dataset":
            written, items = localdataset.export_dataset(client, store, folder, progress=progress)
            click.echo(f"{written}: {counted(items, 'item')}")
            return
        if kind == "queue":
            written, requests, handled = localqueue.export_queue(client, store, folder, progress=progress)
            click.echo(f"{written}: {counted(requests, 'request')} ({handled} handled)")
            return
        written, summary = localstore.export(client, store, folder, jobs=jobs, progress=progress)
    click.echo(f"{written}: {counted(summary.uploaded, 'record')} ({counted(summary.uploaded_bytes, 'byte')})")
    if summary.failed:
        _failed(summary.failed)
        raise click.ClickException(f"{counted(len(summary.failed), 'record')} not exported")
