"""The embedded default backend: SQLite in WAL mode for metadata and small records, files for large records.

Layout under ``data_dir``::

    openkvs.sqlite3 (+ -wal, -shm)   users, tokens, stores, grants, records, record_data, garbage, leases, uploads
    blobs/ab/cd/<name>               record bytes larger than ``inline_max``, written once, never modified
    tmp/                             uploads in progress (renamed into blobs/ when complete)

With ``blob_store`` (``--blob-store``), records above its ``inline_max`` are objects in an S3-compatible bucket
instead of files (``objects``: their ``path`` is ``s3:<blob id>``, ``uploads`` their intents).

Concurrency. Several processes may open one data_dir. Every write is a ``BEGIN IMMEDIATE`` transaction (SQLite
serialises them across processes; ``busy_timeout`` makes the others wait). Within a process, writes go through one
connection guarded by a capacity limiter of one, run in a worker thread; writes that arrive while it is busy are
committed together, in one transaction, each in a savepoint of its own and each answered only after that COMMIT
(group commit, ``connections.Database.write``). Reads take a connection from a small pool, also in a worker thread
(point reads: on the event loop's thread; a snapshot's batches: in worker threads, the next one read while the
current one is sent). Nothing process-local is needed
for correctness: the stats buffer only delays counters, and the set of leases this process renews is advisory (an
expired lease is ignored by everyone).

Reclaiming bytes. A replaced or deleted file-backed record puts its path into ``garbage``. A file is deleted once
its garbage row is older than ``gc_grace_seconds`` (so a ``get_record`` that raced the replacement can still read
it) and no live snapshot of its store may still need it: a snapshot first inserts a lease of its store whose
watermark is the largest garbage id at that moment and only then starts its read transaction, so every file it
can see has a garbage id above the watermark (or none). A download of one store never keeps another's files.
Inline records (``record_data``) need no such care: ``get_record`` returns their bytes by value and a snapshot
reads them through its own read transaction.

ZIP downloads of many small records. Each record keeps its archive local header from write time
(``records.zip_head``, ``zipwriter.local_header``), so that a snapshot hands out a batch of small records as one
statement whose one result is their headers and bytes joined by SQLite, and the central directory likewise (see
``snapshot.py``): no Python object per record. A header is NULL in rows from before version 9 and in rows whose
key, size, CRC or time an UPDATE changed (a trigger); those are read the slower way, entry by entry, until
``fill_zip_heads`` (in the background after each start, and ``openkvs migrate``) fills them in.

Modules: ``backend`` (``SQLiteStorage``: the SQL of records, lifecycle), ``catalog`` (the SQL of users, tokens,
stores and grants), ``connections`` (the writer, the readers, their threads; error translation), ``tables`` (DDL,
creating and upgrading a database, shared SELECTs, row and time conversions), ``files`` (record files: spilling,
committing, leases, garbage collection), ``maintenance`` (the background task, the access counters' flush),
``blobs`` (blob handles, reading bytes, the tmp/ sweep), ``space`` (the disk's reserve), ``snapshot`` (the
snapshot's read transaction and its batches), ``check`` (``openkvs check``), ``objects`` (record bytes in a
bucket), ``objects_admin`` (``openkvs blobs``).
"""

from .backend import SQLiteStorage
from .tables import DB_NAME, TABLES_VERSION

__all__ = ["DB_NAME", "TABLES_VERSION", "SQLiteStorage"]
