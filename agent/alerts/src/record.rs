//! What the detector reads from an audit record, as the agent writes them today.
//!
//! The input is the stored record's fields (`seq`, `ts`, `kind`, `actor`, `detail` as the JSON
//! text), so the agent's `AuditRecord` maps onto it field by field and this crate does not
//! depend on the agent. [`Observed::read`] turns it into the few facts the rules use; patient
//! ids become a 64-bit hash at once, so no patient id is kept in the detector's memory.

use serde_json::Value;

/// One audit record, borrowed from the stored one.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub seq: u64,
    /// RFC 3339 UTC, as the audit writer stores it (`2026-11-29T11:07:38.123456789Z`).
    pub ts: &'a str,
    /// The `EventKind` name (`login`, `login_failed`, `access`, `query`, `security_alert`, …).
    pub kind: &'a str,
    /// A user name, `system`, `cli:<unix user>`, or on failed sign-ins the name typed.
    pub actor: &'a str,
    /// The detail JSON text.
    pub detail: &'a str,
}

/// A record the detector cannot read; the detector's state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The timestamp is not RFC 3339.
    #[error("audit record {seq}: timestamp {ts:?} is not RFC 3339: {reason}")]
    Timestamp {
        seq: u64,
        ts: String,
        reason: String,
    },
    /// The detail is not a JSON object.
    #[error("audit record {seq}: detail is not a JSON object")]
    Detail { seq: u64 },
    /// Sequence numbers must grow: a replay fed out of order would judge the wrong windows.
    #[error(
        "audit record {seq} arrived after record {last}: records must be fed in sequence order"
    )]
    OutOfOrder { seq: u64, last: u64 },
}

/// What happened, in the terms the rules use.
#[derive(Debug, Clone, PartialEq)]
pub enum Fact {
    /// A successful sign-in (`login`).
    SignIn { user: String },
    /// An emergency sign-in (`security_alert` / `break_glass_login`).
    BreakGlassSignIn { user: String },
    /// A failed sign-in (`login_failed`); `account` is the name typed, when there was one;
    /// `unknown_account` when no account has that name (it may be a password typed in the
    /// wrong field, so alerts never repeat it).
    SignInFailed {
        account: Option<String>,
        client: Option<String>,
        unknown_account: bool,
    },
    /// A page or action by a signed-in user (`access`, `query`, `admin_action`). `patient` is
    /// the hash of the patient id when the request concerned one; `prompt_chars` the length of
    /// a question; `denied` a refused request (`outcome` = `denied_*`).
    Activity {
        user: String,
        patient: Option<u64>,
        prompt_chars: Option<u64>,
        denied: Option<String>,
        break_glass: bool,
    },
    /// The agent's own sign-in throttle acted (`signin_address_blocked`, `account_locked`).
    Throttle { event: String },
    /// A system check failed, or a part of the box reported a security problem
    /// (`security_alert` records with a `source`).
    SystemCheck { source: SystemSource, event: String },
    /// Anything else (boot stages, lifecycle, answers, logouts, key rotation).
    Other,
}

/// Which part of the box wrote a system `security_alert` record. Each source has a rule of
/// its own, so an administrator sees the alert under the name of what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemSource {
    /// The firewall check at boot or its recheck (`verify_failed`, `drift_repaired`).
    Firewall,
    /// A GPU left the healthy state.
    Gpu,
    /// The audit chain's walk at start failed (`chain_broken`, `verify_failed`).
    Audit,
    /// A form or request failed its CSRF check.
    Csrf,
    /// A backup failed, or scheduled backups did not run.
    Backup,
    /// A system update did not take: the box fell back to the previous system, the pending
    /// update could not be settled, or the TPM anti-rollback floor could not be raised.
    Update,
    /// Free space on the data volume fell below a `[disk]` threshold of the agent.
    Disk,
    /// A USB stick (a device with a mass-storage interface) plugged in and refused by the box's
    /// USB policy, or a stick the mount helper refused.
    Usb,
    /// A source this version does not know (written by a newer component, or a typo in one):
    /// still an alert, never filed under another source's rule.
    Unknown(String),
}

impl SystemSource {
    /// The `source` name as the records write it.
    pub fn name(&self) -> &str {
        match self {
            SystemSource::Firewall => "firewall",
            SystemSource::Gpu => "gpu",
            SystemSource::Audit => "audit",
            SystemSource::Csrf => "csrf",
            SystemSource::Backup => "backup",
            SystemSource::Update => "update",
            SystemSource::Disk => "disk",
            SystemSource::Usb => "usb",
            SystemSource::Unknown(name) => name,
        }
    }
}

/// The facts of one record.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub seq: u64,
    /// Seconds since the epoch, UTC.
    pub ts: i64,
    pub fact: Fact,
}

impl Observed {
    pub fn read(r: &Record<'_>) -> Result<Self, RecordError> {
        let ts: jiff::Timestamp =
            r.ts.parse()
                .map_err(|e: jiff::Error| RecordError::Timestamp {
                    seq: r.seq,
                    ts: r.ts.to_string(),
                    reason: e.to_string(),
                })?;
        let detail: Value =
            serde_json::from_str(r.detail).map_err(|_| RecordError::Detail { seq: r.seq })?;
        if !detail.is_object() {
            return Err(RecordError::Detail { seq: r.seq });
        }
        Ok(Observed {
            seq: r.seq,
            ts: ts.as_second(),
            fact: fact_of(r.kind, r.actor, &detail),
        })
    }
}

fn is_person(actor: &str) -> bool {
    !actor.is_empty() && actor != "system" && !actor.starts_with("cli:")
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

fn fact_of(kind: &str, actor: &str, d: &Value) -> Fact {
    let break_glass = d
        .pointer("/who/break_glass")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match kind {
        "login" if is_person(actor) => Fact::SignIn {
            user: actor.to_string(),
        },
        "login_failed" => Fact::SignInFailed {
            account: text(d, "user").filter(|u| !u.is_empty()),
            client: text(d, "client"),
            unknown_account: text(d, "reason").as_deref() == Some("unknown_user"),
        },
        "access" | "query" | "admin_action" if is_person(actor) => {
            let patient = match kind {
                "query" => text(d, "patient"),
                _ => text(d, "patient").or_else(|| {
                    d.get("path")
                        .and_then(Value::as_str)
                        .and_then(patient_in_path)
                }),
            };
            let prompt_chars = (kind == "query")
                .then(|| d.pointer("/text/chars").and_then(Value::as_u64))
                .flatten();
            let denied = text(d, "outcome").filter(|o| o.starts_with("denied"));
            Fact::Activity {
                user: actor.to_string(),
                patient: patient.as_deref().map(hash_id),
                prompt_chars,
                denied,
                break_glass,
            }
        }
        "security_alert" => {
            let event = text(d, "event").unwrap_or_default();
            match (text(d, "source").as_deref(), event.as_str()) {
                (_, "break_glass_login") if is_person(actor) => Fact::BreakGlassSignIn {
                    user: actor.to_string(),
                },
                (_, "signin_address_blocked" | "account_locked") => Fact::Throttle { event },
                (_, "csrf_rejected") => Fact::SystemCheck {
                    source: SystemSource::Csrf,
                    event,
                },
                (Some("firewall"), _) => Fact::SystemCheck {
                    source: SystemSource::Firewall,
                    event,
                },
                (Some("audit"), _) => Fact::SystemCheck {
                    source: SystemSource::Audit,
                    event,
                },
                // A failed or missed backup; its recovery (`backup_recovered`, a lifecycle
                // record) is good news, not an alert.
                (Some("backup"), "backup_failed" | "backup_missed") => Fact::SystemCheck {
                    source: SystemSource::Backup,
                    event,
                },
                (Some("backup"), _) => Fact::Other,
                // Free space fell below a threshold (the agent's `disk::watch`, once per
                // crossing); what it saw and the threshold are in the observed text. Its
                // recovery (`space_recovered`, a lifecycle record) is not an alert.
                (Some("disk"), "space_low" | "space_critical") => Fact::SystemCheck {
                    source: SystemSource::Disk,
                    event: match (text(d, "free"), text(d, "threshold")) {
                        (Some(free), Some(threshold)) => {
                            format!("{event}: {free}, below {threshold}")
                        }
                        _ => event,
                    },
                },
                (Some("disk"), _) => Fact::Other,
                // A refused stick: what it is and why are in the observed text.
                (Some("usb"), "storage_refused" | "mount_refused") => Fact::SystemCheck {
                    source: SystemSource::Usb,
                    event: match text(d, "detail") {
                        Some(detail) => format!("{event}: {detail}"),
                        None => event,
                    },
                },
                (Some("usb"), _) => Fact::Other,
                // The update records carry no `event`: a fallback says `outcome: fell-back`,
                // a failure to settle or to raise the TPM floor only its `reason`.
                (Some("update"), _) => Fact::SystemCheck {
                    source: SystemSource::Update,
                    event: text(d, "event")
                        .or_else(|| text(d, "outcome"))
                        .unwrap_or_else(|| "failed".into()),
                },
                (Some("gpu"), _) => {
                    // A transition back to healthy is good news, not an alert.
                    let to = d
                        .pointer("/transition/to")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown");
                    if to == "healthy" {
                        Fact::Other
                    } else {
                        Fact::SystemCheck {
                            source: SystemSource::Gpu,
                            event: format!("to_{to}"),
                        }
                    }
                }
                // The agent's own record of an alert it raised: an alert about it would
                // raise another, without end.
                (Some("alerts"), _) => Fact::Other,
                (Some(source), _) => Fact::SystemCheck {
                    source: SystemSource::Unknown(source.to_string()),
                    event,
                },
                _ => Fact::Other,
            }
        }
        _ => Fact::Other,
    }
}

/// `/patients/P123` and `/patients/P123/documents/9` name patient `P123`; `/patients` does not.
fn patient_in_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/patients/")?;
    let id = rest.split('/').next()?;
    (!id.is_empty()).then(|| id.to_string())
}

/// FNV-1a: stable across runs and builds (replays give the same alerts), and enough to tell
/// patients apart inside one user's window; not a protection of the id.
pub(crate) fn hash_id(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(kind: &str, actor: &str, detail: Value) -> Fact {
        let detail = detail.to_string();
        Observed::read(&Record {
            seq: 1,
            ts: "2026-11-29T11:07:38.123456789Z",
            kind,
            actor,
            detail: &detail,
        })
        .expect("readable")
        .fact
    }

    // The detail shapes below are copied from the agent's audit calls (web/guard.rs,
    // web/login.rs, web/pages.rs, stages/firewall.rs, daemon.rs).
    #[test]
    fn reads_the_records_the_agent_writes() {
        let who = json!({ "user": "ann", "role": "clinician", "client": "10.0.0.5", "session": "s1", "break_glass": false });
        assert_eq!(
            read("login", "ann", json!({ "who": who, "source": "local" })),
            Fact::SignIn { user: "ann".into() }
        );
        let f = read(
            "access",
            "ann",
            json!({ "who": who, "method": "GET", "route": "/patients/{id}", "path": "/patients/P77" }),
        );
        assert_eq!(
            f,
            Fact::Activity {
                user: "ann".into(),
                patient: Some(hash_id("P77")),
                prompt_chars: None,
                denied: None,
                break_glass: false
            }
        );
        let f = read(
            "query",
            "ann",
            json!({ "who": who, "patient": "P77", "task": "ask", "text": { "sha256": "ab", "chars": 950 } }),
        );
        assert!(matches!(
            f,
            Fact::Activity {
                patient: Some(_),
                prompt_chars: Some(950),
                ..
            }
        ));
        let f = read(
            "access",
            "ann",
            json!({ "who": who, "method": "GET", "route": "/admin", "outcome": "denied_role" }),
        );
        assert!(
            matches!(f, Fact::Activity { patient: None, denied: Some(ref d), .. } if d == "denied_role")
        );
        let f = read(
            "login_failed",
            "bob",
            json!({ "user": "bob", "client": "10.0.0.9", "reason": "bad_password", "emergency": false }),
        );
        assert_eq!(
            f,
            Fact::SignInFailed {
                account: Some("bob".into()),
                client: Some("10.0.0.9".into()),
                unknown_account: false
            }
        );
        let f = read(
            "login_failed",
            "unknown",
            json!({ "user": null, "client": "10.0.0.9", "reason": "wrong_page", "emergency": false }),
        );
        assert_eq!(
            f,
            Fact::SignInFailed {
                account: None,
                client: Some("10.0.0.9".into()),
                unknown_account: false
            }
        );
        let f = read(
            "security_alert",
            "ann",
            json!({ "event": "break_glass_login", "who": who, "reason": { "sha256": "cd", "chars": 30 } }),
        );
        assert_eq!(f, Fact::BreakGlassSignIn { user: "ann".into() });
        let f = read(
            "security_alert",
            "system",
            json!({ "source": "firewall", "event": "verify_failed", "reason": "nft missing" }),
        );
        assert_eq!(
            f,
            Fact::SystemCheck {
                source: SystemSource::Firewall,
                event: "verify_failed".into()
            }
        );
        let t = json!({ "gpu": "GPU-1", "from": "healthy", "to": "degraded", "reason": "ecc" });
        assert_eq!(
            read(
                "security_alert",
                "system",
                json!({ "source": "gpu", "transition": t })
            ),
            Fact::SystemCheck {
                source: SystemSource::Gpu,
                event: "to_degraded".into()
            }
        );
        let t = json!({ "gpu": "GPU-1", "from": "degraded", "to": "healthy", "reason": "ok" });
        assert_eq!(
            read(
                "security_alert",
                "system",
                json!({ "source": "gpu", "transition": t })
            ),
            Fact::Other
        );
        let f = read(
            "security_alert",
            "system",
            json!({ "event": "account_locked", "user": "bob", "addresses": 4, "for_secs": 900 }),
        );
        assert_eq!(
            f,
            Fact::Throttle {
                event: "account_locked".into()
            }
        );
        // CLI administration is not a person's clinical activity.
        assert_eq!(
            read(
                "admin_action",
                "cli:root",
                json!({ "action": "records_grant", "target": "ann", "patient": "P1" })
            ),
            Fact::Other
        );
    }

    #[test]
    fn unreadable_records_are_errors() {
        let r = Record {
            seq: 9,
            ts: "yesterday",
            kind: "login",
            actor: "ann",
            detail: "{}",
        };
        assert!(matches!(
            Observed::read(&r),
            Err(RecordError::Timestamp { seq: 9, .. })
        ));
        let r = Record {
            seq: 9,
            ts: "2026-11-29T11:07:38Z",
            kind: "login",
            actor: "ann",
            detail: "[1]",
        };
        assert_eq!(Observed::read(&r), Err(RecordError::Detail { seq: 9 }));
    }

    #[test]
    fn a_failed_or_missed_backup_is_a_system_check_and_its_recovery_is_not() {
        for event in ["backup_failed", "backup_missed"] {
            let f = read("security_alert", "system", json!({ "source": "backup", "event": event, "reason": "the backup destination /media/b is not available" }));
            assert_eq!(f, Fact::SystemCheck { source: SystemSource::Backup, event: event.into() });
        }
        let f = read("lifecycle", "system", json!({ "source": "backup", "event": "backup_recovered" }));
        assert_eq!(f, Fact::Other);
        let f = read("security_alert", "system", json!({ "source": "backup", "event": "something_else" }));
        assert_eq!(f, Fact::Other);
    }

    /// The records the agent's disk watch writes: a crossing into low or critical space is a
    /// check with the figure and the threshold; the recovery is not.
    #[test]
    fn low_space_on_the_data_volume_is_a_disk_check_and_its_recovery_is_not() {
        let low = json!({ "source": "disk", "event": "space_low", "path": "/var/lib/wardbox/data", "free_bytes": 4, "total_bytes": 48, "free_percent": 8.3, "free": "4.0 MiB free of 48.0 MiB (8.3 %)", "threshold": "4.8 MiB free" });
        assert_eq!(
            read("security_alert", "system", low),
            Fact::SystemCheck {
                source: SystemSource::Disk,
                event: "space_low: 4.0 MiB free of 48.0 MiB (8.3 %), below 4.8 MiB free".into()
            }
        );
        let bare = read("security_alert", "system", json!({ "source": "disk", "event": "space_critical" }));
        assert_eq!(bare, Fact::SystemCheck { source: SystemSource::Disk, event: "space_critical".into() });
        let recovered = json!({ "source": "disk", "event": "space_recovered", "alerts_acknowledged": 1 });
        assert_eq!(read("lifecycle", "system", recovered.clone()), Fact::Other);
        assert_eq!(read("security_alert", "system", recovered), Fact::Other);
    }

    /// The three records the update code writes (docs/update.md): a fallback to the previous
    /// system, a pending update that cannot be settled, a TPM floor that cannot be raised.
    #[test]
    fn an_update_that_did_not_take_is_an_update_check() {
        let fell_back = json!({ "source": "update", "bundle_sha256": "ab", "from": "1.0.0", "to": "1.1.0", "outcome": "fell-back", "reason": "the box booted version 1.0.0, not 1.1.0" });
        assert_eq!(
            read("security_alert", "system", fell_back),
            Fact::SystemCheck { source: SystemSource::Update, event: "fell-back".into() }
        );
        for reason in ["cannot settle the pending update: no such file", "cannot raise the TPM anti-rollback floor: tpm2 busy"] {
            assert_eq!(
                read("security_alert", "system", json!({ "source": "update", "reason": reason })),
                Fact::SystemCheck { source: SystemSource::Update, event: "failed".into() }
            );
        }
    }

    #[test]
    fn an_unknown_source_is_named_as_unknown_and_the_alerts_own_records_are_not_checks() {
        let f = read("security_alert", "system", json!({ "source": "thermal", "event": "overheated" }));
        assert_eq!(
            f,
            Fact::SystemCheck { source: SystemSource::Unknown("thermal".into()), event: "overheated".into() }
        );
        let raised = json!({ "source": "alerts", "event": "alert_raised", "alert": 3, "rule": "backup", "subject": "box" });
        assert_eq!(read("security_alert", "system", raised), Fact::Other);
    }
}
