//! Versioned schema migrations. Append only: a released migration is never edited, because
//! boxes in the field have already run it.

/// One schema step; `version` is stored in SQLite's `user_version`.
#[derive(Debug)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "audit log",
        sql: "
            CREATE TABLE audit (
                seq       INTEGER PRIMARY KEY,   -- 1, 2, 3 … with no gaps
                ts        TEXT NOT NULL,         -- RFC 3339, UTC
                kind      TEXT NOT NULL,
                actor     TEXT NOT NULL,
                detail    TEXT NOT NULL,         -- JSON; hashes and lengths, never PHI text
                prev_hash TEXT NOT NULL,
                hash      TEXT NOT NULL
            ) STRICT;
            -- Append-only at the database level too: the chain detects what these triggers
            -- cannot stop (someone editing the file with the key in hand).
            CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
                BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
            CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
                BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
        ",
    },
    Migration {
        version: 2,
        name: "accounts",
        sql: "
            CREATE TABLE users (
                id            INTEGER PRIMARY KEY,
                username      TEXT NOT NULL UNIQUE,
                display_name  TEXT NOT NULL,
                role          TEXT NOT NULL CHECK (role IN ('clinician', 'nurse', 'admin', 'auditor')),
                password_hash TEXT,              -- argon2id PHC string; NULL for directory (LDAP) users
                created_at    TEXT NOT NULL,
                disabled      INTEGER NOT NULL DEFAULT 0
            ) STRICT;
        ",
    },
    Migration {
        version: 3,
        name: "web accounts: lockout, source, break-glass",
        sql: "
            -- Failed sign-ins since the last success, and until when (unix seconds) the account
            -- is locked. Kept in the store so a restart of the agent does not reset a lockout.
            ALTER TABLE users ADD COLUMN failed_logins INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE users ADD COLUMN locked_until INTEGER NOT NULL DEFAULT 0;
            -- 'local' (argon2id hash here) or 'ldap' (the directory checks the password and
            -- its groups set the role at every sign-in).
            ALTER TABLE users ADD COLUMN source TEXT NOT NULL DEFAULT 'local'
                CHECK (source IN ('local', 'ldap'));
            -- Emergency-access accounts sign in only through the break-glass page, which
            -- demands a reason and raises an alert; the normal sign-in refuses them.
            ALTER TABLE users ADD COLUMN break_glass INTEGER NOT NULL DEFAULT 0;
            -- Each emergency sign-in with its reason, for the administrators' review. The
            -- reason may name a patient, so it lives here in the encrypted store and only
            -- its digest goes into the audit chain.
            CREATE TABLE break_glass_events (
                id          INTEGER PRIMARY KEY,
                user_id     INTEGER NOT NULL REFERENCES users(id),
                at          INTEGER NOT NULL,
                client      TEXT NOT NULL,
                reason      TEXT NOT NULL,
                reviewed_by TEXT
            ) STRICT;
        ",
    },
    // The retrieval index lives in this same encrypted database: chunks, FTS5 and sqlite-vec
    // vectors, the pseudonym map, grants. Its SQL is owned by `wardbox-rag` and, like every
    // migration here, never edited once released.
    Migration { version: 4, name: wardbox_rag::index::MIGRATION_NAME, sql: wardbox_rag::index::MIGRATION_SQL },
    Migration {
        version: 5,
        name: "compliance attestations and waivers",
        sql: "
            -- What a named person vouches for on an administrative or physical checklist item
            -- (`wardbox report attest`), read by every compliance report. Times RFC 3339, UTC.
            CREATE TABLE report_attestations (
                id          INTEGER PRIMARY KEY,
                item        TEXT NOT NULL,
                attested_by TEXT NOT NULL,
                attested_at TEXT NOT NULL,
                document    TEXT NOT NULL,       -- which document it rests on; only its digest is audited
                valid_until TEXT NOT NULL
            ) STRICT;
            -- Accepted exceptions to waivable items (`wardbox report waive`).
            CREATE TABLE report_waivers (
                id            INTEGER PRIMARY KEY,
                item          TEXT NOT NULL,
                approver      TEXT NOT NULL,
                justification TEXT NOT NULL,     -- only its digest is audited
                approved_at   TEXT NOT NULL,
                expires_at    TEXT NOT NULL
            ) STRICT;
        ",
    },
    Migration {
        version: 6,
        name: "alerts and their outbox",
        sql: "
            -- Each alert the detector raised over the audit chain (`wardbox-alerts`). One row
            -- per (rule, subject, triggering record), so replaying the chain after a restart
            -- cannot raise the same alert twice. No PHI: rule, user names, counts, record numbers.
            CREATE TABLE alerts (
                id          INTEGER PRIMARY KEY,
                rule        TEXT NOT NULL,
                subject     TEXT NOT NULL,
                trigger_seq INTEGER NOT NULL,    -- the audit record that raised it
                at          TEXT NOT NULL,       -- that record's time (RFC 3339, UTC)
                alert       TEXT NOT NULL,       -- the alert as JSON (threshold, observed, records)
                audit_seq   INTEGER,             -- the audit record of its raising; NULL until written
                reviewed_by TEXT,
                reviewed_at TEXT,
                review_note TEXT,                -- typed by a reviewer: stays here, only its digest is audited
                UNIQUE (rule, subject, trigger_seq)
            ) STRICT;
            -- At-least-once delivery: one row per alert and destination, new -> delivered, or
            -- failed and retried at next_attempt (unix seconds) with backoff until delivered.
            CREATE TABLE alert_outbox (
                alert_id     INTEGER NOT NULL REFERENCES alerts(id),
                destination  TEXT NOT NULL CHECK (destination IN ('syslog', 'email')),
                state        TEXT NOT NULL DEFAULT 'new' CHECK (state IN ('new', 'delivered', 'failed')),
                attempts     INTEGER NOT NULL DEFAULT 0,
                next_attempt INTEGER NOT NULL DEFAULT 0,
                last_error   TEXT,
                delivered_at TEXT,
                PRIMARY KEY (alert_id, destination)
            ) STRICT;
            -- How far the detector has read the chain: alerts of records up to here have been
            -- stored, so a replay at start stores only what lies beyond.
            CREATE TABLE alert_detector (
                id            INTEGER PRIMARY KEY CHECK (id = 1),
                processed_seq INTEGER NOT NULL
            ) STRICT;
        ",
    },
    // The backup repository key and the record of every backup and restore drill. Its SQL is
    // owned by `crate::backup`.
    Migration { version: 7, name: crate::backup::MIGRATION_NAME, sql: crate::backup::MIGRATION_SQL },
    // The retrieval index's vectors partitioned by owner: a search for one patient and the
    // library reads only their vectors (docs/rag.md). Copies the stored vectors, drops the old table.
    Migration {
        version: 8,
        name: wardbox_rag::index::MIGRATION_PARTITIONED_NAME,
        sql: wardbox_rag::index::MIGRATION_PARTITIONED_SQL,
    },
    // The alerts' daily heartbeat per destination (owned by `crate::alerting::heartbeat`).
    Migration { version: 9, name: crate::alerting::heartbeat::MIGRATION_NAME, sql: crate::alerting::heartbeat::MIGRATION_SQL },
    // Clinicians' conversations about a patient and their turns (owned by
    // `crate::clinical::conversations`).
    Migration { version: 10, name: crate::clinical::conversations::MIGRATION_NAME, sql: crate::clinical::conversations::MIGRATION_SQL },
    // The alerts' workflow: assignee, disposition, breach clock, closing, and every step
    // (owned by `crate::alerting::workflow`).
    Migration { version: 11, name: crate::alerting::workflow::MIGRATION_NAME, sql: crate::alerting::workflow::MIGRATION_SQL },
    // The model the administrators chose per clinical task (owned by
    // `crate::clinical::task_models`).
    Migration { version: 12, name: crate::clinical::task_models::MIGRATION_NAME, sql: crate::clinical::task_models::MIGRATION_SQL },
    // The quarterly access review of who may see which patient (owned by `crate::web::access`).
    Migration { version: 13, name: crate::web::access::MIGRATION_NAME, sql: crate::web::access::MIGRATION_SQL },
    // Medical images: de-identified DICOM files and photos, their renders, the site's UID key
    // and each patient's date offset.
    Migration { version: 14, name: crate::web::images::MIGRATION_NAME, sql: crate::web::images::MIGRATION_SQL },
    // The staff's postal addresses the `same_address` alert rule compares (owned by
    // `crate::alerting::relations`).
    Migration { version: 15, name: crate::alerting::relations::MIGRATION_NAME, sql: crate::alerting::relations::MIGRATION_SQL },
    // Who set each staff postal address (an administrator, or the directory at sign-in).
    Migration { version: 16, name: crate::alerting::relations::SOURCE_MIGRATION_NAME, sql: crate::alerting::relations::SOURCE_MIGRATION_SQL },
    // Where the alert detector starts: a new store's first record (owned by `crate::alerting::outbox`).
    Migration { version: 17, name: crate::alerting::outbox::START_MIGRATION_NAME, sql: crate::alerting::outbox::START_MIGRATION_SQL },
    // The contacts (next of kin) a patient's record gives, as pseudonyms, for the `next_of_kin`
    // alert rule. Its SQL is owned by `wardbox-rag`.
    Migration { version: 18, name: wardbox_rag::index::MIGRATION_CONTACTS_NAME, sql: wardbox_rag::index::MIGRATION_CONTACTS_SQL },
];
