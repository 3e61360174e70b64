-- Events: one row per normalized event. The columns beside `fields` are the ones the API
-- filters on; `fields` holds the remaining flat ECS fields as JSON. Rowids are assigned by the
-- single writer in receive order, so retention can find its cut-off by rowid without an index
-- on the receive time.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    ts          REAL NOT NULL,    -- event time (@timestamp), epoch seconds
    created     REAL NOT NULL,    -- receive time (event.created)
    module      TEXT NOT NULL,    -- syslog | snmp | netflow
    observer_ip TEXT,
    source_ip   TEXT,
    hostname    TEXT,
    message     TEXT,
    fields      TEXT NOT NULL,
    raw         BLOB
);
CREATE INDEX events_ts ON events (ts);

-- Small key/value state owned by components (template caches, correlation snapshots, ...).
CREATE TABLE state (
    component TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     BLOB,
    updated   REAL NOT NULL,
    PRIMARY KEY (component, key)
) WITHOUT ROWID;
