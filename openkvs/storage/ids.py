"""Random identifiers: 17 characters from ``[a-zA-Z0-9]`` drawn from a CSPRNG (``secrets``)."""

from __future__ import annotations

import secrets
import string

ALPHABET = string.ascii_letters + string.digits
ID_LENGTH = 17


def new_id(length: int = ID_LENGTH) -> str:
    """A fresh random id (17 characters: about 101 bits)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(length))
