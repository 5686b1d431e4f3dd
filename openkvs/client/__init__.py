"""The client side of the command line: commands that talk to an openkvs (or Apify) server over HTTP.

    http.py        where the server is, the token, addresses of stores and records, errors, retries
    progress.py    a progress bar on a terminal, plain lines elsewhere
    download.py    a store's ZIP archive, resumed safely (If-Range) and verified
    receive.py     a response's body from the socket into a file, checked on the way
    upload.py      files to records, in parallel, skipping identical ones
    localstorage.py  what a PATH of Crawlee / Apify CLI local storage holds, for import; each kind's layout in
    localstore.py    key-value stores,
    localdataset.py  datasets,
    localqueue.py    request queues (each read for import, written by export)
    localfiles.py    what the three share: bounded reads, no links, names, Crawlee's JSON and times

This module itself imports nothing heavy: the command line reads the defaults below for every command's --help.
"""

import sys

DEFAULT_URL = "http://127.0.0.1:8000"
# Variables read for the server and the token, first found wins: openkvs's own, then those the Apify SDK and CLI
# use, so that an Actor's environment works as is.
URL_VARIABLES = ("OPENKVS_URL", "APIFY_API_BASE_URL")
TOKEN_VARIABLES = ("OPENKVS_TOKEN", "APIFY_TOKEN")

# Modules that `import httpx` pulls in and a client command never uses: httpx._main, httpx's own command line,
# which imports rich's consoles, tables and syntax highlighting and pygments' lexers whenever they are installed
# (rich is, for our progress bar), and trio, which httpcore imports for its async locks whenever it is installed
# (selenium, a test dependency, brings it). Together they were most of `openkvs download`'s start (BENCHMARKS.md).
# Both imports are in a try whose except makes do without (a stub command line; no trio support).
_UNUSED = ("httpx._main", "trio")


def lean_imports() -> None:
    """Imports httpx and httpcore, once, while the modules above look uninstalled (a None in sys.modules makes
    their import fail); they are importable again afterwards. Called first by the client commands, in their own
    process; a process that imported httpx already (a test's) is left as it is."""
    if "httpx" in sys.modules or "httpcore" in sys.modules:
        return
    hidden = [name for name in _UNUSED if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import httpcore  # noqa: F401
        import httpx  # noqa: F401
    finally:
        for name in hidden:
            if sys.modules.get(name, sys) is None:
                del sys.modules[name]
