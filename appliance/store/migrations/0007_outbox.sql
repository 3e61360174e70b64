-- Forwarding outbox: one row per (upstream, document) still to deliver. A row is written in
-- the same durable transaction as the incident change it carries, deleted when the upstream
-- acknowledges it, and parked (state 'dead') after max_rejections permanent failures.
-- `id` is the creation order the sender delivers in; `key` (sensor_id:incident_id:revision)
-- is the idempotency key sent with every attempt. `drop_class` orders drops when the spool is
-- full (0 dropped first): see appliance/forward/outbox.py.
CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY,
    upstream    TEXT NOT NULL,
    stream      TEXT NOT NULL DEFAULT 'incident',
    key         TEXT NOT NULL,
    created     REAL NOT NULL,
    drop_class  INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    body        TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending',   -- pending | dead
    attempts    INTEGER NOT NULL DEFAULT 0,        -- every failed try (transient or not)
    rejections  INTEGER NOT NULL DEFAULT 0,        -- permanent failures (4xx)
    last_error  TEXT,
    UNIQUE (upstream, key)
);
CREATE INDEX outbox_queue ON outbox (upstream, state, id);
CREATE INDEX outbox_drop ON outbox (upstream, drop_class, id);
CREATE INDEX outbox_age ON outbox (upstream, created);
