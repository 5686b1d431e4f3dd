# The C extension _copyrows.c (built where a compiler is at install; datasets.py works without it). Its comments
# say what each function does.

def join(
    data: bytes | bytearray, pos: int, sep: bytes, lead: int, max_rows: int, max_bytes: int, /
) -> tuple[bytes, int, int, bool]: ...
def values(
    data: bytes | bytearray, pos: int, lead: int, max_rows: int, max_bytes: int, /
) -> tuple[list[bytes], int, int, bool]: ...
