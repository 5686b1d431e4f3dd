"""The client side of the command line: commands that talk to an openkvs (or Apify) server over HTTP.

    http.py        where the server is, the token, addresses of stores and records, errors, retries
    progress.py    a progress bar on a terminal, plain lines elsewhere
    download.py    a store's ZIP archive, resumed safely (If-Range) and verified
    upload.py      files to records, in parallel, skipping identical ones
    localstore.py  the Crawlee / Apify CLI local storage layout (import and export)
"""
