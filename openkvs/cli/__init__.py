"""The command line: the server's commands (serve, and administration straight on the storage) and the client's
(download, upload, import, export: over HTTP, in openkvs/client/). Commands here parse arguments and print; the
work is in config, storage, sharing and the client modules. ``HELP`` below is what ``openkvs --help`` shows.

This module holds the ``openkvs`` group and ``serve``; the other commands are in admin.py (users, tokens, grants,
stores), maintenance.py (blobs, migrate, check, backup, restore, settings) and transfer.py (the client's), and
common.py has what the storage's commands share.
"""

from __future__ import annotations

import errno
import math
import os
import socket
from typing import Any

import click

import openkvs
from openkvs.cli import admin, maintenance, transfer
from openkvs.cli.common import load_settings, setting_options
from openkvs.cli.common import run as _run  # (looked up here when serve runs: tests replace it)
from openkvs.config import SETTINGS
from openkvs.redact import redacted

DEFAULT_USER = "admin"

HELP = """Your own server for Apify's storage API, and a client for it.

\b
On the server's machine (they find the storage with --data-dir or --database-url):
  openkvs serve                     start the server (creates the database on its first start)
  openkvs users|tokens|grants|stores ...   administer it
  openkvs migrate|check|backup|restore|blobs ...   maintain it
  openkvs settings                  every setting of serve, with its environment variable
\b
From anywhere (they find the server with --url and --token, or OPENKVS_URL and OPENKVS_TOKEN):
  openkvs download STORE            the store as one ZIP file, resumable
  openkvs upload DIR STORE          a folder's files as records
  openkvs import PATH | export STORE DIR    Crawlee / Apify CLI local storage

STORE is a store's ID, USER~NAME, or ~NAME: the caller's store of that name (in the commands on the server's machine,
the one store of that name, whoever owns it).
"""


@click.group(help=HELP, context_settings={"max_content_width": 120})
@click.version_option(openkvs.__version__, "-V", "--version", prog_name="openkvs", message="%(prog)s %(version)s")
def main() -> None:
    pass


@main.command()
@setting_options()
def serve(**flags: Any) -> None:
    """Start the server."""
    import uvicorn

    from openkvs import heap
    from openkvs.logs import log_config

    heap.tune()  # (before the workers start: they take it from the environment)
    settings = load_settings(**flags)
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

    async def prepare(storage: Any) -> str | None:
        _check_address(settings.host, settings.port)  # before the first user: its token is shown only once
        return await _first_user(storage)

    token = _run(settings, prepare)
    where = f"http://{f'[{settings.host}]' if ':' in settings.host else settings.host}:{settings.port}"
    if settings.database_url:
        backend = f"PostgreSQL, schema '{settings.database_schema}'"
    else:
        backend = f"SQLite in {os.path.abspath(settings.data_dir)}"
    if settings.blob_store:
        backend += f", bytes above {settings.blob_inline_max} in {redacted(settings.blob_store)}"
    click.echo(f"openkvs {where} (storage: {backend}, workers: {settings.workers})")
    # behind a proxy (--public-url) the console and the API are where clients reach the server, as its own URLs say
    reach = (settings.public_url or where).rstrip("/")
    click.echo(f"Web console: {reach}/console/ (sign in with an API token)")
    if token:
        click.echo(f"\nCreated user '{DEFAULT_USER}'. Its API token (shown only now, keep it):\n\n  {token}\n")
        click.echo("Try it:\n")
        click.echo(f"  curl -X POST -H 'Authorization: Bearer {token}' '{reach}/v2/key-value-stores?name=demo'\n")
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
        log_level=settings.log_level.lower(),
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


def _check_address(host: str, port: int) -> None:
    """One line if another server holds the port (a second `make run`, anything on 8000), instead of the banner and
    a new user's token followed by uvicorn's "[Errno 98] ... address already in use" and exit status 3. Other bind
    errors (an address not on this machine, a privileged port) are left to uvicorn, which names them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.create_server((host, port), family=family).close()  # SO_REUSEADDR, as uvicorn binds
    except OSError as e:
        if e.errno != errno.EADDRINUSE:
            return
        raise click.ClickException(
            f"{host}:{port} is in use (another openkvs, or another server): choose a free port with --port N "
            "or OPENKVS_PORT=N (`OPENKVS_PORT=N make run`)"
        ) from None


async def _first_user(storage: Any) -> str | None:
    """On the very first start (a storage without users), a user and a token so that the server is usable at once;
    not where an operator made users already (`openkvs users create`): an admin they didn't ask for, its token in
    the service's log."""
    from openkvs import auth
    from openkvs.storage.base import UsernameTaken

    if await storage.list_users():
        return None
    try:
        user = await storage.create_user(DEFAULT_USER)
    except UsernameTaken:  # another process won the race
        return None
    token = auth.new_token()
    await storage.add_token(user.id, auth.hash_token(token))
    return token


for command in (
    admin.users, admin.tokens, admin.grants, maintenance.blobs, admin.stores, maintenance.migrate, maintenance.check,
    maintenance.backup_cmd, maintenance.restore_cmd, maintenance.show_settings,
    transfer.download, transfer.upload, transfer.import_, transfer.export_,
):  # in the order they were declared when this was one module
    main.add_command(command)

