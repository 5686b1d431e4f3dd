"""Secrets kept out of output: a password in a configured URL (--database-url, --redis-url, --blob-store) as
messages, logs and serve's banner show the URL. Imports nothing of openkvs: the storage and the command line use it
alike."""

from __future__ import annotations

import re

# A password in a URL: after "user:" up to the last "@" (a password may hold an unescaped "@", "/", "?" or "#": a
# generated one does, and libpq reads it to the "@"; a "host:port/db?x=a@b" is hidden from its port on, which is
# the price of never showing a password), or in a parameter as libpq takes it (postgresql://host/db?password=...).
_USERINFO_PASSWORD = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/?#@:]*:)(.*)@", re.DOTALL)
_PARAM_PASSWORD = re.compile(r"([?&](?:ssl)?password=)[^&#]*", re.IGNORECASE)
REDACTED = "***"


def redacted(url: str) -> str:
    """``url`` as messages, logs and the banner show it: its password, if any, replaced by ``***``
    (``postgresql://user:***@host/db``). Every configured URL that reaches output goes through here."""
    url = _USERINFO_PASSWORD.sub(rf"\1{REDACTED}@", url, count=1)
    return _PARAM_PASSWORD.sub(rf"\1{REDACTED}", url)


def without_secrets(text: str, url: str) -> str:
    """``text`` (a library's error message about ``url``) with ``url`` redacted, and its password wherever else it
    appears (a driver quoting part of the URL)."""
    text = text.replace(url, redacted(url))
    # (the same password redacted() hides: urlsplit() would end it at a "?" or "#")
    found = _USERINFO_PASSWORD.match(url)
    password = found.group(2) if found else None
    # (a password of a few characters would garble the message wherever they occur, and guards next to nothing)
    return text.replace(password, REDACTED) if password and len(password) >= 4 else text
