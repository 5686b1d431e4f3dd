# The C extension _copyrows.c (built where a compiler is at install; datasets.py works without it). Its comments
# say what each function does.

from typing import Any

FULL: int
MORE: int
ENDED: int

def take(
    data: bytes | bytearray,
    pos: int,
    next: int,
    lo: int,
    hi: int,
    desc: bool,
    sep: bytes | None,
    lead: int,
    room: int,
    max_bytes: int,
    /,
) -> tuple[Any, int, int, int, int, int]: ...
