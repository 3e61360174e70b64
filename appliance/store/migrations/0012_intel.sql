-- Analyst feedback (appliance/analysis/feedback.py): scoped suppressions. A suppression
-- silences one rule's alerts that fall in its scope: `group` (the incident's group key),
-- `source` (an address or CIDR block among the alert's source fields) or `asset` (a host
-- name, address or block among its target/device fields), until `expires` (NULL: until
-- deleted). `suppressed_count` is how many alerts it silenced (written back periodically).
CREATE TABLE scoped_suppressions (
    id               TEXT PRIMARY KEY,
    rule_id          TEXT NOT NULL,
    scope            TEXT NOT NULL,
    value            TEXT NOT NULL,
    incident_id      TEXT,
    created          REAL NOT NULL,
    expires          REAL,
    note             TEXT NOT NULL DEFAULT '',
    created_by       TEXT NOT NULL DEFAULT '',
    suppressed_count INTEGER NOT NULL DEFAULT 0,
    last_suppressed  REAL
);
CREATE INDEX scoped_suppressions_rule ON scoped_suppressions (rule_id);
