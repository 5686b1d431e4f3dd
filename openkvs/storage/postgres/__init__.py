"""PostgreSQL backend: every table in one Postgres schema, record bytes in ``blob_chunks`` rows.

Usage::

    storage = PostgresStorage("postgresql://user@host/db", namespace="openkvs")  # the PostgreSQL schema
    await storage.open()        # connects, creates or migrates the schema (refuses a newer one), starts tasks
    ...
    await storage.aclose()      # flushes access counters, stops tasks, closes the pools

    await PostgresStorage(dsn, namespace=...).migrate()  # what ``openkvs migrate`` runs: migrate, return the version
    await storage.drop()                                 # tests: DROP SCHEMA ... CASCADE (works open or closed)
    await storage.collect_garbage(now=..., grace=...)    # one GC pass (the background task runs it every 10 s)
    await storage.flush_stats()                        # write the buffered access counters now

Design:

- Records point at a blob id; the bytes are rows ``blob_chunks(blob_id, seq, data)`` of ``CHUNK_SIZE`` bytes (the
  last one shorter), stored uncompressed out of line (``STORAGE EXTERNAL``). The chunk size of each record is
  kept in its row, so the constant may change without breaking old records.
- ``put_record`` buffers the first chunk; a body that fits in it is written by one statement, its own
  transaction (chunk, record upsert, old blob id to ``garbage``, store row: generation, modifiedAt, storage bytes);
  small writes of a store that arrive while one is being committed are written together by one statement of the
  same shape for many rows (group commit, ``groups``), each answered after that commit.
  A bigger body is written in one transaction on a connection of the *upload pool* (ZIP snapshots have a pool of
  their own, ``max_snapshots``: slow clients of either cannot starve the other or the short queries): chunk by
  chunk as the body yields, then the same upsert statement. All writers of a store wait for its row lock, which
  that statement takes and holds only until its commit (see ``_UPSERT_TAIL``). If the body raises, the
  transaction rolls back and nothing is left behind (a crash does the same).
- ``garbage(blob_id, created_at)``: GC deletes chunks of garbage older than ``gc_grace_seconds``, so a blob
  handed out by ``get_record`` stays readable for the grace period. A snapshot is one REPEATABLE READ READ ONLY
  transaction: rows that GC deletes after it began stay visible to it (MVCC), whatever the grace.
- Connection failures become ``StorageUnavailable``; asyncpg's pools replace closed connections on acquire.
- The store look-ups of access decisions by ID that arrive while one is in flight are asked together, by one
  statement for many (``lookups``); each answer is read after its caller asked, so read-your-writes holds across
  nodes.
- Every record keeps its ZIP local header from write time (``records.zip_head``, made in SQL by
  ``zip_local_header``): a snapshot hands out batches of small records as ``zipwriter.LocalBlock``s (headers and
  bytes joined by PostgreSQL, or read by binary COPY for records of a KiB or more) and the central directory as
  ``CentralBlock``s (``zipheads``, ``snapshot``, ``copyformat``).

Modules: ``backend`` (``PostgresStorage``: the SQL of records, garbage collection, access counters), ``catalog``
(the SQL of users, tokens, stores and grants), ``tables`` (migrations, shared columns and row conversions, key
selections, the store look-up, the record upserts), ``chunks`` (the blob handle, reading and buffering chunks),
``copyformat`` (PostgreSQL's binary COPY: its facts, a parser of its values, constants for its query),
``connections`` (``Database``: connect settings, the three pools, running a query; connection errors, pooled
connections), ``groups`` (group commit of small record writes), ``lookups`` (store look-ups in a burst asked
together), ``snapshot`` (the snapshot's transaction and its batches), ``zipheads`` (the kept ZIP headers: the SQL
that makes them, the fill of older rows).
"""

from .backend import PostgresStorage
from .chunks import CHUNK_SIZE, PgBlob
from .snapshot import SNAPSHOT_QUERY_BYTES, PgSnapshot
from .tables import GET_INLINE_MAX, MIGRATIONS, TABLES_VERSION

__all__ = [
    "CHUNK_SIZE",
    "GET_INLINE_MAX",
    "MIGRATIONS",
    "SNAPSHOT_QUERY_BYTES",
    "TABLES_VERSION",
    "PgBlob",
    "PgSnapshot",
    "PostgresStorage",
]
