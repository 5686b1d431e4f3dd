"""A request's ID, derived from its ``uniqueKey`` exactly as the ``apify`` SDK and Crawlee derive it
(API-request-queues.md section 1): the SDK computes IDs itself and reads or upserts ``/requests/{id}`` for requests
it never added through this server, so the server must agree to the character."""

from __future__ import annotations

import base64
import hashlib

ID_LENGTH = 15


def request_id(unique_key: str) -> str:
    """The first 15 characters of the base64 of SHA-256(UTF-8 ``unique_key``), without ``+``, ``/`` and ``=``."""
    digest = base64.b64encode(hashlib.sha256(unique_key.encode()).digest()).decode()
    return digest.replace("+", "").replace("/", "").replace("=", "")[:ID_LENGTH]
