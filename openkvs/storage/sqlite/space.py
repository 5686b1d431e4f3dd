"""Disk space for the SQLite backend. OS errors that mean "nothing can be stored here" (no space, quota, read-only
filesystem) become ``StorageFull``; and new record bytes are refused while the data dir's free space is below a
reserve. The reserve is what keeps a full disk usable: deleting a record, a snapshot's lease, the access counters
and the WAL checkpoint each need a little space (SQLite appends to the WAL before it can free anything), so
openkvs itself never fills the disk to the last byte. Space comes back when records are deleted: a deleted
record's file once the grace period is over (``gc_grace_seconds``), an inline record's pages at once (SQLite
reuses them, so they count as free for the next small record)."""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..base import StorageFull

log = logging.getLogger(__package__)

RESERVE_BYTES = 16 * 1024 * 1024
MIB = 1024 * 1024
FAR_ABOVE_RESERVE = 256 * MIB
FREE_FRESH_SECONDS = 1.0

_REASONS = {errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only filesystem"}


def full_error(exc: OSError, where: object) -> StorageFull | None:
    """``StorageFull`` for an OS error that means "cannot store" (else None: not ours to translate)."""
    reason = _REASONS.get(exc.errno) if exc.errno is not None else None
    return StorageFull(f"{where}: {reason}") if reason else None


@contextmanager
def storing(where: object) -> Iterator[None]:
    """Writing files: a full or read-only disk raises ``StorageFull`` instead of a bare ``OSError``."""
    try:
        yield
    except OSError as exc:
        full = full_error(exc, where)
        if full is None:
            raise
        raise full from exc


def probe_writable(tmp_dir: Path) -> None:
    """At start-up: refuse a data dir that can't be written at all (read-only filesystem or no permission),
    with one clear line, instead of starting and failing at every write. A full disk is no reason to refuse:
    the records can still be read and deleted."""
    probe = tmp_dir / f"{os.getpid()}-probe.part"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0")
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            log.warning("the disk of %s is full: records can be read and deleted, not written", tmp_dir.parent)
            return
        reason = _REASONS.get(exc.errno or 0) or exc.strerror or str(exc)
        raise StorageFull(f"cannot write in the data dir {tmp_dir.parent}: {reason}") from exc
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass


class Headroom:
    """Whether the data dir has room for ``incoming`` more bytes above the reserve; logs one line when free space
    drops below the reserve and one when it is back (not one per refused request)."""

    def __init__(self, data_dir: Path, reserve: int = RESERVE_BYTES) -> None:
        self.data_dir = data_dir
        self.reserve = reserve
        self.low = False
        self._free = 0  # the last statvfs answer, less the bytes let in since (see free)
        self._fresh_until = 0.0

    def free(self) -> int:
        """Free bytes in the data dir. ``statvfs`` took a tenth of a small PUT's CPU here, so while the disk is
        far from the reserve (FAR_ABOVE_RESERVE) its answer is kept for FREE_FRESH_SECONDS, less the bytes that
        ``enough`` lets in meanwhile: only other programs' writes of more than that margin within that time
        could then let a record in below the reserve. Near the reserve every call asks the filesystem."""
        now = time.monotonic()
        if now < self._fresh_until:
            return self._free
        st = os.statvfs(self.data_dir)
        free = st.f_bavail * st.f_frsize
        self._free = free
        self._fresh_until = now + FREE_FRESH_SECONDS if free - self.reserve > FAR_ABOVE_RESERVE else 0.0
        return free

    def enough(self, incoming: int, reusable: int = 0, free: int | None = None) -> bool:
        if self.reserve <= 0:
            return True
        free = self.free() if free is None else free
        ok = free + reusable - incoming >= self.reserve
        if ok and self._fresh_until:
            self._free -= incoming
            if self._free - self.reserve <= FAR_ABOVE_RESERVE:
                self._fresh_until = 0.0  # ask the filesystem next time
        if ok == self.low:  # a change of state
            self.low = not ok
            if self.low:
                log.warning(
                    "disk almost full: %s has %.1f MiB free, less than the %d MiB kept so that records can still "
                    "be deleted; new records get 507 insufficient-storage until space is freed",
                    self.data_dir, free / MIB, self.reserve // MIB,
                )
            else:
                log.info(
                    "disk space is back: %s has %.1f MiB free; records are accepted again", self.data_dir, free / MIB
                )
        return ok

    def refuse(self) -> StorageFull:
        return StorageFull(
            f"{self.data_dir}: less than {self.reserve // MIB} MiB free (kept for deletes); no new records"
        )
