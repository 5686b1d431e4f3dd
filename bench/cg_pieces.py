"""Instructions (or CPU) to cut a 4.1 MiB rendered export batch into 1 MiB pieces and frame each as uvicorn frames
a chunked body: bytes slices (copies: before issue 12's `tidy`) or memoryview slices (api/download.py `_pieces`).
Arguments: bytes|view N. Per MiB: (count at N=50 - at N=0) / 50 / 4.1.

    valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python bench/cg_pieces.py view 50
"""
import sys
import time

from openkvs.api.download import SEND_PIECE, _pieces


def sliced(chunk: bytes) -> list[bytes]:
    return [chunk[i : i + SEND_PIECE] for i in range(0, len(chunk), SEND_PIECE)]


chunk = bytes(range(256)) * (4 * 4096 + 100)
cut = sliced if sys.argv[1] == "bytes" else _pieces
n = int(sys.argv[2])
t0 = time.process_time()
for _ in range(n):
    for piece in cut(chunk):
        framed = b"".join([b"%x\r\n" % len(piece), piece, b"\r\n"])  # type: ignore[list-item]  # (bytes in: no list)
t = time.process_time() - t0
print(f"{sys.argv[1]}: {t / max(n, 1) / (len(chunk) / 2**20) * 1e6:.1f} us CPU per MiB")
