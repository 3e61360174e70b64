-- Events move from one row each to segments of up to 1024 JSON lines (see store/segments.py):
-- a row per event cost more SQLite work than receiving and decoding the message. Ids are
-- implicit (first_id + line number); the ranges let queries and retention skip whole segments.
-- Rows of the old `events` table are converted by the store at open, then that table is dropped.
CREATE TABLE event_segments (
    first_id    INTEGER PRIMARY KEY,
    last_id     INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    min_ts      REAL NOT NULL,
    max_ts      REAL NOT NULL,
    min_created REAL NOT NULL,
    max_created REAL NOT NULL,
    body        BLOB NOT NULL      -- JSON lines, last column so range scans skip it
);
