-- Notification engine state (appliance/notify). Messages themselves wait in the shared
-- `outbox` table (upstream = 'notify/<channel>', stream = 'notify'); these tables hold what
-- must survive a restart before a message exists: incidents waiting for their group window,
-- digest or the end of quiet hours, escalation and repeat deadlines, silences, SMS reply
-- codes, and a bounded history of deliveries for the API.

-- Incidents collected for one future message: a route's group (kind 'group'), its digest
-- ('digest') or what quiet hours held back ('quiet'). All rows of one (route, kind, bucket)
-- share `due` (clock time) and leave together as one message.
CREATE TABLE notify_pending (
    route       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    bucket      TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    due         REAL NOT NULL,
    severity    TEXT NOT NULL,
    summary     TEXT NOT NULL,     -- JSON: what the message needs from the incident
    PRIMARY KEY (route, kind, bucket, incident_id)
) WITHOUT ROWID;
CREATE INDEX notify_pending_due ON notify_pending (due);

-- When a route's group last sent (for group_interval).
CREATE TABLE notify_groups (
    route       TEXT NOT NULL,
    bucket      TEXT NOT NULL,
    last_sent   REAL NOT NULL,
    PRIMARY KEY (route, bucket)
) WITHOUT ROWID;

-- Per-incident timers: escalation levels and repeat reminders, dropped when the incident
-- is acknowledged, resolved or suppressed.
CREATE TABLE notify_timers (
    incident_id TEXT NOT NULL,
    kind        TEXT NOT NULL,     -- escalate | repeat
    route       TEXT NOT NULL,
    level       INTEGER NOT NULL,
    due         REAL NOT NULL,
    summary     TEXT NOT NULL,
    PRIMARY KEY (incident_id, kind, route)
) WITHOUT ROWID;
CREATE INDEX notify_timers_due ON notify_timers (due);

-- Silences (API): matchers as JSON; expired rows are deleted by the engine.
CREATE TABLE notify_silences (
    id          TEXT PRIMARY KEY,
    created     REAL NOT NULL,
    expires     REAL NOT NULL,
    created_by  TEXT NOT NULL,
    comment     TEXT NOT NULL,
    matchers    TEXT NOT NULL
) WITHOUT ROWID;

-- Short codes an SMS reply may carry to acknowledge an incident.
CREATE TABLE notify_ack_codes (
    code        TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    expires     REAL NOT NULL
) WITHOUT ROWID;

-- What was delivered or given up (the newest rows, trimmed by the engine).
CREATE TABLE notify_log (
    id          INTEGER PRIMARY KEY,
    channel     TEXT NOT NULL,
    key         TEXT NOT NULL,
    at          REAL NOT NULL,
    status      TEXT NOT NULL,     -- sent | dead
    attempts    INTEGER NOT NULL,
    subject     TEXT NOT NULL,
    incidents   TEXT NOT NULL,     -- JSON list of incident ids
    last_error  TEXT
);
CREATE INDEX notify_ack_codes_incident ON notify_ack_codes (incident_id);
