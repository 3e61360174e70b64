-- The web console (appliance.console): local users, their sessions, the audit log and the
-- rules operators switched off. No secondary indexes: each b-tree costs a 32 KiB page even
-- empty, and these tables are small (sessions, users) or read newest-first by id (audit, whose
-- times grow with its ids).
-- `password` is "scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>": the parameters travel with the
-- hash so that they can be raised later without invalidating stored passwords.
CREATE TABLE console_users (
    name     TEXT PRIMARY KEY,
    role     TEXT NOT NULL,
    password TEXT NOT NULL,
    created  REAL NOT NULL,
    updated  REAL NOT NULL
) WITHOUT ROWID;

-- A session is found by the SHA-256 of its cookie value (the cookie itself is never stored:
-- a copy of the database does not log anyone in). `csrf` is the synchronizer token the
-- session's pages send back with every change.
CREATE TABLE console_sessions (
    id_hash   TEXT PRIMARY KEY,
    username  TEXT NOT NULL,
    csrf      TEXT NOT NULL,
    created   REAL NOT NULL,
    last_seen REAL NOT NULL,
    remote    TEXT NOT NULL
) WITHOUT ROWID;

-- Who changed what, when and from where: console users, API tokens and the CLI.
CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY,
    ts     REAL NOT NULL,
    actor  TEXT NOT NULL,
    remote TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);

-- Rules an operator switched off (or back on) from the console or the API: they stay loaded
-- and evaluated but raise no incident while `enabled` is 0. Survives restarts and reloads.
CREATE TABLE rule_state (
    rule_id TEXT PRIMARY KEY,
    enabled INTEGER NOT NULL,
    changed REAL NOT NULL,
    actor   TEXT NOT NULL
) WITHOUT ROWID;
