"""Entry names that extract everywhere, for the ZIP download's safe mode (``?safeNames=1``). Pure: no I/O.

By default an entry is named exactly its key. Apify's keys allow names that some systems can't create: 256 bytes
(Linux and most file systems stop at 255), names equal but for case (macOS and Windows file systems don't
distinguish them: one file overwrites the other), Windows device names (``CON``, ``nul.txt``) and names ending in a
dot. In safe mode such a key's entry is renamed to ``<stem>~<16 hex digits>[<extension>]``: the stem is the key's
start (up to ``MAX_NAME`` bytes in all), the digits are the start of the SHA-256 of the key, the extension is
kept. No key contains ``~``, so a new name never equals a kept one, and two new names differ by their digits.
The manifest entry ``MANIFEST_NAME`` lists every renamed key with its entry name.

Case clashes need to know every key of the archive. ``CaseClashes`` finds them in two streaming passes with a Bloom
filter (about 1.25 bytes per key) and an exact count of the few candidates it lets through, instead of a set of
every key.
"""

from __future__ import annotations

import hashlib
import json
import re

__all__ = ["MAX_NAME", "MANIFEST_NAME", "MANIFEST_HEAD", "MANIFEST_TAIL", "CaseClashes", "safe_name", "manifest_item"]

# Below the 255-byte limit of the file systems, leaving room for the suffixes extracting tools add to temporary
# files; a kept name is at most this long too.
MAX_NAME = 200
MANIFEST_NAME = "openkvs~names.json"  # has a "~": no key, nor a renamed one (16 hex digits follow theirs)
_HASH_DIGITS = 16
_KEY_CHARS = re.compile(r"[a-zA-Z0-9!\-_.'()]+\Z")  # what a key may hold (API.md section 3)
_NOT_KEY_CHAR = re.compile(r"[^a-zA-Z0-9!\-_.'()]")
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,16}\Z")
# Windows refuses these as file names, in any case and with any extension ("nul.txt").
_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"{p}{d}" for p in ("COM", "LPT") for d in "0123456789"]
)


def _lower_digest(key: str) -> bytes:
    return hashlib.blake2b(key.lower().encode(), digest_size=16).digest()


class CaseClashes:
    """Which keys share their lower-case form with another key of the archive.

    Feed every key to ``first_pass``, then every key (in any order) to ``second_pass``, then ask ``clashes``.
    The first pass remembers the lower-case forms it may have seen before as candidates (a Bloom filter can say
    "maybe" wrongly, never "no" wrongly); the second counts the candidates exactly.
    """

    def __init__(self, count: int) -> None:
        self._m = max(8192, 10 * count)  # bits: about 1 % false candidates with 3 probes
        self._bits = bytearray(self._m // 8 + 1)
        self._counts: dict[bytes, int] = {}
        self._clashing: set[bytes] = set()

    def first_pass(self, key: str) -> None:
        digest = _lower_digest(key)
        seen = True
        for i in range(3):
            bit = int.from_bytes(digest[4 * i : 4 * i + 4], "little") % self._m
            byte, mask = bit >> 3, 1 << (bit & 7)
            if not self._bits[byte] & mask:
                seen = False
                self._bits[byte] |= mask
        if seen:
            self._counts[digest] = 0

    @property
    def need_second_pass(self) -> bool:
        return bool(self._counts)

    def second_pass(self, key: str) -> None:
        digest = _lower_digest(key)
        if digest in self._counts:
            self._counts[digest] += 1

    def finish(self) -> None:
        self._clashing = {d for d, n in self._counts.items() if n > 1}
        self._bits = bytearray()
        self._counts = {}

    def clashes(self, key: str) -> bool:
        return bool(self._clashing) and _lower_digest(key) in self._clashing


def safe_name(key: str, clashes: bool) -> str | None:
    """The entry name of ``key`` in safe mode if it must change, else None. ``clashes``: another key of the
    archive has the same lower-case form (the all-lower-case one of such keys keeps its name)."""
    if not _needs_new_name(key, clashes):
        return None
    digits = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_DIGITS]
    ext_match = _EXTENSION.search(key)
    ext = ext_match.group() if ext_match else ""
    stem = _NOT_KEY_CHAR.sub("_", key[: len(key) - len(ext)])
    if stem.split(".", 1)[0].upper() in _RESERVED:  # "COM1.tar" would stay a device name before its first dot
        stem = stem.replace(".", "_", 1)
    room = MAX_NAME - 1 - _HASH_DIGITS - len(ext)
    return f"{stem[:room]}~{digits}{ext}"


def _needs_new_name(key: str, clashes: bool) -> bool:
    if len(key.encode("utf-8", "surrogatepass")) > MAX_NAME or not _KEY_CHARS.match(key):
        return True
    if key.endswith(".") or key.split(".", 1)[0].upper() in _RESERVED:
        return True
    return clashes and key != key.lower()


MANIFEST_HEAD = (
    b'{"about":"Entries are named by their record key, except these, renamed so that the archive extracts on '
    b'every file system (too long, equal but for case, or reserved on Windows).",\n"renamed":{'
)
MANIFEST_TAIL = b"\n}}\n"


def manifest_item(key: str, name: str, first: bool) -> bytes:
    """One ``"key":"entry name"`` member of the manifest's ``renamed`` object (renamed keys in key order). The
    manifest is HEAD, the items, TAIL: built in pieces, so a million names are never whole in memory."""
    return (b"\n" if first else b",\n") + json.dumps(key).encode() + b":" + json.dumps(name).encode()
