-- The tables of openkvs SQLite databases at tables version 2 (before datasets and request queues), to test the
-- upgrade from them.
CREATE TABLE IF NOT EXISTS users (
    id          TEXT PRIMARY KEY,
    username    TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    hash        TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS stores (
    id                      TEXT PRIMARY KEY,
    user_id                 TEXT NOT NULL REFERENCES users(id),
    name                    TEXT,
    general_access          TEXT NOT NULL,
    schema                  TEXT,
    url_signing_secret_key  TEXT NOT NULL,
    created_at              INTEGER NOT NULL,
    modified_at             INTEGER NOT NULL,
    accessed_at             INTEGER NOT NULL,
    generation              INTEGER NOT NULL DEFAULT 0,
    read_count              INTEGER NOT NULL DEFAULT 0,
    write_count             INTEGER NOT NULL DEFAULT 0,
    delete_count            INTEGER NOT NULL DEFAULT 0,
    list_count              INTEGER NOT NULL DEFAULT 0,
    storage_bytes           INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS stores_user_name ON stores(user_id, name COLLATE NOCASE) WHERE name IS NOT NULL;
CREATE INDEX IF NOT EXISTS stores_user_created ON stores(user_id, created_at, id);
CREATE TABLE IF NOT EXISTS grants (
    store_id    TEXT NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    can_write   INTEGER NOT NULL,
    PRIMARY KEY (store_id, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS grants_user ON grants(user_id, store_id);
-- One row per record, clustered by (store_id, key) in byte order: a keys page or a snapshot batch is one range
-- scan. The bytes live in record_data (inline, data_id) or in blobs/ (path).
CREATE TABLE IF NOT EXISTS records (
    store_id          TEXT NOT NULL,
    key               TEXT NOT NULL COLLATE BINARY,
    size              INTEGER NOT NULL,
    decoded_size      INTEGER NOT NULL,
    crc32             INTEGER NOT NULL,
    modified_at       INTEGER NOT NULL,
    content_type      TEXT NOT NULL,
    content_encoding  TEXT,
    data_id           INTEGER,
    path              TEXT,
    PRIMARY KEY (store_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS record_data (
    id    INTEGER PRIMARY KEY,
    data  BLOB NOT NULL
);
-- Files to delete. created_at in the future marks a file being committed right now (deleted with the row on
-- success, reclaimed if the process died in between). store_id: whose file it was (NULL in rows of version 1).
CREATE TABLE IF NOT EXISTS garbage (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    path        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    store_id    TEXT
);
-- A snapshot's lease keeps the files of its store (store_id) whose garbage id is above the watermark.
CREATE TABLE IF NOT EXISTS leases (
    id          TEXT PRIMARY KEY,
    watermark   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    store_id    TEXT
);
