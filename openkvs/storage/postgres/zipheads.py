"""Each record's ZIP local header, kept from write time (``records.zip_head``, schema version 9; issue 19): a
snapshot then hands out a batch of small records as one ``zipwriter.LocalBlock`` (headers and bytes joined by
PostgreSQL in one result value) and the central directory as ``CentralBlock``s (snapshot.py), without a Python
object per record.

The header is ``zipwriter.local_header(key, decoded_size, crc32, seconds)`` with ``seconds`` the record's
``modified_at`` in whole seconds, made by the SQL function ``zip_local_header`` (below): the record upserts
write it with the row (tables.py); a trigger makes it again for a row whose key, size, CRC or time an UPDATE
changed without setting it, and for a row inserted without it. Rows from before version 9 have none (NULL) until
``fill_zip_heads`` gives them one: in the background after each start, and by ``openkvs migrate``. The table
``zip_head_fill`` has a row while there may be such rows; a snapshot reads a batch with a NULL header the old
way, so an archive is the same bytes either way (tests/storage/test_zip_kept_pg.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from .connections import deadlock_retried

log = logging.getLogger(__package__)

def _le(x: str, width: int) -> str:
    """SQL: the ``width`` low bytes of the bigint ``x``, little-endian (swapped, then int8send's big-endian)."""
    # (every term in parentheses: PostgreSQL's << | & share one precedence, left to right)
    swapped = " | ".join(f"((({x} >> {8 * i}) & 255) << {8 * (7 - i)})" for i in range(width))
    return f"substring(int8send({swapped}) FROM 1 FOR {width})"


# zipwriter.local_header in PL/pgSQL: the same bytes for the same (key, size, crc, modified_at), '' where it gives
# b'' (a name over 65,535 bytes, a bad size or CRC). DOS time and date in UTC, clamped to 1980..2107; the Unix
# mtime of the time stamp extra clamped to 0..2^31-1; ZIP64 sizes from 0xFFFFFFFF bytes. Built-in functions
# only, so that it runs whatever the caller's search_path (the trigger below has the same body); ``{finish}``:
# what is done with ``head``.
_HEADER_BODY = f"""
DECLARE
    name bytea := convert_to({{k}}, 'UTF8');
    n bigint := octet_length(name);
    sz bigint := {{size}};
    c bigint := {{crc}};
    s bigint := floor(extract(epoch FROM {{t}}));
    mtime bigint := least(greatest(s, 0), 2147483647);
    u timestamp;
    dos_date bigint := 33;  -- 1980-01-01 00:00:00
    dos_time bigint := 0;
    head bytea := ''::bytea;
BEGIN
    IF n <= 65535 AND sz >= 0 AND c >= 0 AND c <= 4294967295 THEN
        IF s >= 4354819200 THEN  -- from 2108-01-01: 2107-12-31 23:59:58
            dos_date := (127 << 9) | (12 << 5) | 31;
            dos_time := (23 << 11) | (59 << 5) | 29;
        ELSIF s >= 315532800 THEN  -- from 1980-01-01
            u := to_timestamp(s) AT TIME ZONE 'UTC';
            dos_date := ((extract(year FROM u)::bigint - 1980) << 9) | (extract(month FROM u)::bigint << 5)
                | extract(day FROM u)::bigint;
            dos_time := (extract(hour FROM u)::bigint << 11) | (extract(minute FROM u)::bigint << 5)
                | (floor(extract(second FROM u))::bigint >> 1);
        END IF;
        IF sz < 4294967295 THEN
            head := '\\x504b0304140000080000'::bytea || {_le("dos_time", 2)} || {_le("dos_date", 2)}
                || {_le("c", 4)} || {_le("sz", 4)} || {_le("sz", 4)} || {_le("n", 2)} || '\\x0900'::bytea || name
                || '\\x5554050001'::bytea || {_le("mtime", 4)};
        ELSE
            head := '\\x504b03042d0000080000'::bytea || {_le("dos_time", 2)} || {_le("dos_date", 2)}
                || {_le("c", 4)} || '\\xffffffffffffffff'::bytea || {_le("n", 2)} || '\\x1d00'::bytea || name
                || '\\x01001000'::bytea || {_le("sz", 8)} || {_le("sz", 8)}
                || '\\x5554050001'::bytea || {_le("mtime", 4)};
        END IF;
    END IF;
    {{finish}}
END"""

_HEADER = (
    "CREATE OR REPLACE FUNCTION zip_local_header(k text, size bigint, crc bigint, t timestamptz) RETURNS bytea\n"
    "LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$"
    + _HEADER_BODY.format(k="k", size="size", crc="crc", t="t", finish="RETURN head;")
    + "$$;\n"
)
_TRIGGER = (
    "CREATE OR REPLACE FUNCTION records_zip_head() RETURNS trigger LANGUAGE plpgsql AS $$"
    + _HEADER_BODY.format(
        k="NEW.key", size="NEW.decoded_size", crc="NEW.crc32", t="NEW.modified_at",
        finish="NEW.zip_head := head; RETURN NEW;",
    )
    + "$$;\n"
)

# Version 9. The triggers keep the header right for writers that don't set it (an UPDATE of the time, a row
# inserted by hand); the record upserts set it themselves, so that for them the trigger's WHEN is false and no
# function is called. Safe to run again on a schema that has some of it (IF NOT EXISTS, OR REPLACE).
ZIP_HEADS = (
    _HEADER
    + _TRIGGER
    + """
ALTER TABLE records ADD COLUMN IF NOT EXISTS zip_head bytea;
DROP TRIGGER IF EXISTS records_zip_head_insert ON records;
CREATE TRIGGER records_zip_head_insert BEFORE INSERT ON records
    FOR EACH ROW WHEN (NEW.zip_head IS NULL) EXECUTE FUNCTION records_zip_head();
DROP TRIGGER IF EXISTS records_zip_head_update ON records;
CREATE TRIGGER records_zip_head_update BEFORE UPDATE OF key, decoded_size, crc32, modified_at ON records
    FOR EACH ROW WHEN (NEW.zip_head IS NOT DISTINCT FROM OLD.zip_head
        AND (NEW.key, NEW.decoded_size, NEW.crc32, NEW.modified_at)
            IS DISTINCT FROM (OLD.key, OLD.decoded_size, OLD.crc32, OLD.modified_at))
    EXECUTE FUNCTION records_zip_head();
-- Where fill_zip_heads goes on (the last store ID and key it filled up to); no row: every header is there.
CREATE TABLE IF NOT EXISTS zip_head_fill (store_id text NOT NULL, key text COLLATE "C" NOT NULL);
DELETE FROM zip_head_fill;
INSERT INTO zip_head_fill SELECT '', '' WHERE EXISTS (SELECT FROM records WHERE zip_head IS NULL);
"""
)

ZIP_HEAD_FILL = 2000  # rows per statement of fill_zip_heads

# One step of the fill: the headers of the next ZIP_HEAD_FILL rows in primary key order after the position kept
# in zip_head_fill, which moves on in the same statement (its row gone once the last row is passed). Rows locked
# by a writer are waited for; several processes filling at once take turns on the zip_head_fill row.
FILL_STEP = f"""WITH p AS (SELECT store_id, key FROM zip_head_fill FOR UPDATE),
    b AS MATERIALIZED (
        SELECT r.store_id, r.key, r.zip_head IS NULL AS missing FROM records r, p
        WHERE (r.store_id, r.key) > (p.store_id, p.key) ORDER BY r.store_id, r.key LIMIT {ZIP_HEAD_FILL}
    ),
    last AS (SELECT store_id, key FROM b ORDER BY store_id DESC, key DESC LIMIT 1),
    up AS (
        UPDATE records r SET zip_head = zip_local_header(r.key, r.decoded_size, r.crc32, r.modified_at)
        FROM b WHERE b.missing AND r.store_id = b.store_id AND r.key = b.key AND r.zip_head IS NULL
        RETURNING 1
    ),
    moved AS (
        UPDATE zip_head_fill f SET store_id = last.store_id, key = last.key FROM last
        WHERE (SELECT count(*) FROM b) = {ZIP_HEAD_FILL} RETURNING 1
    ),
    done AS (
        DELETE FROM zip_head_fill WHERE EXISTS (SELECT FROM p) AND (SELECT count(*) FROM b) < {ZIP_HEAD_FILL}
        RETURNING 1
    )
SELECT (SELECT count(*) FROM up) AS filled, (SELECT count(*) FROM b) AS passed, EXISTS (SELECT FROM p) AS pending"""


async def fill_zip_heads(
    step: Callable[[], Awaitable[asyncpg.Record | None]], stop: asyncio.Event | None = None, pause: float = 0.0
) -> int:
    """Give every record without one its header, ZIP_HEAD_FILL rows per statement (``step()`` runs FILL_STEP,
    each its own transaction), from where the last fill stopped; returns how many were filled. Stops between
    statements when ``stop`` is set (a statement in flight is never cancelled: it ends, then the fill stops)."""
    filled = 0
    while stop is None or not stop.is_set():
        row = await deadlock_retried("filling ZIP headers", step)
        assert row is not None
        filled += row["filled"]
        if not row["pending"] or row["passed"] < ZIP_HEAD_FILL:
            break
        if pause:
            await asyncio.sleep(pause)
    if filled:
        log.info("kept ZIP headers: %d older records given theirs", filled)
    return filled
