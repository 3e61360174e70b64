-- Raw flow records (NetFlow/IPFIX), apart from `events`: flows arrive at hundreds of
-- thousands a second, far past what one SQLite row per event can take, so they get a compact
-- table written in large batches, a short retention and a per-second cap on raw rows
-- ([flows] raw_max_per_second; what is not kept is counted). Rules and rollups see every flow.
CREATE TABLE flows (
    id        INTEGER PRIMARY KEY,
    ts        REAL NOT NULL,     -- flow end (event.end), else receive time
    created   REAL NOT NULL,     -- receive time
    start     REAL,              -- event.start
    exporter  TEXT NOT NULL,     -- observer.ip
    src_ip    TEXT,
    dst_ip    TEXT,
    src_port  INTEGER,
    dst_port  INTEGER,
    proto     INTEGER,           -- network.iana_number
    bytes     INTEGER,           -- network.bytes (sampling applied)
    packets   INTEGER,           -- network.packets (sampling applied)
    fields    TEXT NOT NULL      -- every other flat field, JSON
);
CREATE INDEX flows_ts ON flows (ts);

-- Per-minute aggregates by dimension (source.ip, destination.ip, conversation,
-- destination.port): the top keys by bytes and by packets, the rest summed under key "other".
-- Kept much longer than raw flows ([flows] rollup_retention_days).
CREATE TABLE flow_rollups (
    minute   INTEGER NOT NULL,   -- epoch seconds of the minute start (receive time)
    dim      TEXT NOT NULL,
    key      TEXT NOT NULL,
    bytes    INTEGER NOT NULL,
    packets  INTEGER NOT NULL,
    flows    INTEGER NOT NULL,
    PRIMARY KEY (minute, dim, key)
) WITHOUT ROWID;
