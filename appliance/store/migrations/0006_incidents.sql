-- Incidents raised by correlation. `doc` is the full incident document (see
-- appliance/incidents/__init__.py); the columns beside it are what the API filters on and
-- what the manager looks up (an open incident by rule and group key).
CREATE TABLE incidents (
    id          TEXT PRIMARY KEY,
    rule_id     TEXT NOT NULL,
    group_key   TEXT NOT NULL,
    status      TEXT NOT NULL,
    severity    TEXT NOT NULL,
    first_seen  REAL NOT NULL,
    last_seen   REAL NOT NULL,
    updated     REAL NOT NULL,
    revision    INTEGER NOT NULL,
    doc         TEXT NOT NULL
);
CREATE INDEX incidents_rule_key ON incidents (rule_id, group_key);
CREATE INDEX incidents_last_seen ON incidents (last_seen);

-- Scoped suppressions created by marking an incident a false positive: further hits of the
-- rule for the same group key are counted on that incident instead of opening a new one.
CREATE TABLE suppressions (
    rule_id     TEXT NOT NULL,
    group_key   TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    created     REAL NOT NULL,
    expires     REAL,
    reason      TEXT,
    PRIMARY KEY (rule_id, group_key)
) WITHOUT ROWID;
