-- Active response (appliance/respond). One row per (action, incident): planned in the
-- incident's own durable transaction, then carried out by the worker after the commit.
-- state: pending (to execute) | active (executed, or simulated when dry_run) | undo_pending
-- (TTL passed or undo asked; to lift) | undone | failed (gave up executing) | undo_failed
-- (gave up lifting) | cancelled (undone before it ran) | refused (allow-list, bad value,
-- rate limit) | duplicate (the same value already held by this action).
CREATE TABLE respond_actions (
    id            INTEGER PRIMARY KEY,
    action        TEXT NOT NULL,
    incident_id   TEXT NOT NULL,
    rule_id       TEXT NOT NULL,
    value         TEXT NOT NULL,
    state         TEXT NOT NULL,
    dry_run       INTEGER NOT NULL,
    ttl           REAL NOT NULL,                 -- 0 = permanent
    created       REAL NOT NULL,
    updated       REAL NOT NULL,
    executed      REAL,
    expires       REAL,                          -- when the undo is due (NULL: never)
    next_attempt  REAL,                          -- when the worker tries again (retries)
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    UNIQUE (action, incident_id)
);
-- No second block of the same value by the same action while one is held.
CREATE UNIQUE INDEX respond_held ON respond_actions (action, value)
    WHERE state IN ('pending', 'active', 'undo_pending');
CREATE INDEX respond_due ON respond_actions (state, next_attempt);
CREATE INDEX respond_expiry ON respond_actions (state, expires);

-- Everything that happened, in order: planned, executed, dry_run, refused, duplicate,
-- failed, retry, expired, undo_requested, undone, undo_failed, cancelled.
CREATE TABLE respond_audit (
    id          INTEGER PRIMARY KEY,
    at          REAL NOT NULL,
    action_id   INTEGER,
    action      TEXT NOT NULL,
    incident_id TEXT,
    value       TEXT,
    event       TEXT NOT NULL,
    actor       TEXT NOT NULL,                   -- system | api:<token id> | cli
    detail      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX respond_audit_action ON respond_audit (action_id, id);
