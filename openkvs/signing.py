"""URL signatures, byte-compatible with the official Apify clients (API.md section 5.3). Pure functions.

A record signature opens GET/HEAD of one record and never expires. A store content signature opens the key
listing and the ZIP download of one store until its expiry (milliseconds since the epoch, 0 for never).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
CONTENT_SIGNATURE_VERSION = 0
_MAX_SIGNATURE_LENGTH = 1024  # anything longer is garbage; don't spend work on it


def _base62(number: int) -> str:
    if number == 0:
        return "0"
    digits = []
    while number:
        number, rem = divmod(number, 62)
        digits.append(_ALPHABET[rem])
    return "".join(reversed(digits))


def hmac_sig(secret: str, message: str) -> str:
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
    return _base62(int(digest[:30], 16))


def record_signature(secret: str, key: str) -> str:
    return hmac_sig(secret, key)


def verify_record_signature(secret: str, key: str, signature: str) -> bool:
    if not signature or len(signature) > _MAX_SIGNATURE_LENGTH:
        return False
    return hmac.compare_digest(hmac_sig(secret, key).encode(), signature.encode("utf-8", "replace"))


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def _strict_b64url(text: str) -> str | None:
    """Base64url with or without its exact padding, in canonical form only, as UTF-8; None for anything else.
    (The standard decoder skips characters outside the alphabet and ignores unused bits, so many strings would
    decode to the same signature.)"""
    body = text.rstrip("=")
    pad = len(text) - len(body)
    if len(body) % 4 == 1 or not _B64URL.fullmatch(body) or pad not in (0, -len(body) % 4):
        return None
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        if base64.urlsafe_b64encode(raw).decode().rstrip("=") != body:
            return None
        return raw.decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        return None


def content_signature(secret: str, store_id: str, expires_at_ms: int = 0) -> str:
    version = CONTENT_SIGNATURE_VERSION
    sig = hmac_sig(secret, f"{version}.{expires_at_ms}.{store_id}")
    return base64.urlsafe_b64encode(f"{version}.{expires_at_ms}.{sig}".encode()).decode()


def verify_content_signature(secret: str, store_id: str, signature: str, now_ms: int | None = None) -> bool:
    """True only for a well-formed, unexpired signature of this store made with this secret."""
    if not signature or len(signature) > _MAX_SIGNATURE_LENGTH:
        return False
    decoded = _strict_b64url(signature)
    if decoded is None:
        return False
    parts = decoded.split(".")
    if len(parts) != 3:
        return False
    version, expires, sig = parts
    if version != str(CONTENT_SIGNATURE_VERSION) or not expires.isdigit() or not expires.isascii():
        return False
    expires_at_ms = int(expires)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if expires_at_ms != 0 and expires_at_ms <= now_ms:
        return False
    expected = hmac_sig(secret, f"{version}.{expires}.{store_id}")
    return hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace"))
