//! The checklist: every item's definition and the pure check that decides it from [`Facts`].
//!
//! Rules every check follows:
//! - a technical item is [`Method::Measured`]: its status comes from live facts only; an
//!   attestation entered for it is ignored (and the evidence says so);
//! - a probe that could not run is a `Fail` naming why; nothing unobserved is a `Pass`;
//! - an administrative or physical item the box cannot observe is an attestation: `Attested`
//!   while valid (capped at the item's longest validity), `NeedsAttention` when missing or
//!   expired; the reviews the box records itself (weekly activity, quarterly access) are
//!   measured from its own records;
//! - a waiver applies only to items marked waivable, and only with an approver, a justification
//!   and an expiry in the future; a waived item is `NotApplicable` and carries the waiver.

use std::net::SocketAddr;

use jiff::{SignedDuration, Timestamp, ToSpan, civil::Date, tz::TimeZone};

use crate::facts::{Attestation, Facts, LdapFacts, Probe, Waiver};
use crate::report::{DataFlow, Evidence, Item, Method, Observed, Report, Section, Status, Summary};

/// A section (safeguard) of the report.
struct SectionDef {
    id: &'static str,
    title: &'static str,
    reference: &'static str,
}

const SECTIONS: &[SectionDef] = &[
    SectionDef { id: "access-control", title: "Access control", reference: "HIPAA §164.312(a)(1)" },
    SectionDef { id: "audit-controls", title: "Audit controls", reference: "HIPAA §164.312(b)" },
    SectionDef { id: "integrity", title: "Integrity", reference: "HIPAA §164.312(c)(1)" },
    SectionDef { id: "authentication", title: "Person or entity authentication", reference: "HIPAA §164.312(d)" },
    SectionDef { id: "transmission", title: "Transmission security", reference: "HIPAA §164.312(e)(1)" },
    SectionDef { id: "network", title: "Network exposure of the local AI", reference: "Go-live checklist" },
    SectionDef { id: "administrative", title: "Administrative safeguards", reference: "HIPAA §164.308" },
    SectionDef { id: "physical", title: "Physical safeguards", reference: "HIPAA §164.310" },
    SectionDef { id: "documentation", title: "Documentation and retention", reference: "HIPAA §164.316" },
];

/// Item identifiers (stable: they key the "what changed" list and the OSCAL control ids).
pub mod ids {
    pub const UNIQUE_USER_ID: &str = "access-unique-user-id";
    pub const EMERGENCY_ACCESS: &str = "access-emergency-access";
    pub const AUTOMATIC_LOGOFF: &str = "access-automatic-logoff";
    pub const ENCRYPTION_AT_REST: &str = "access-encryption-at-rest";
    pub const AUDIT_EVERY_INTERACTION: &str = "audit-every-interaction";
    pub const AUDIT_LOG_INTEGRITY: &str = "integrity-audit-log";
    pub const EPHI_AUTHENTICATION: &str = "integrity-ephi-authentication";
    pub const MEASURED_BOOT: &str = "integrity-measured-boot";
    pub const PERSON_AUTHENTICATION: &str = "authentication-person";
    pub const DIRECTORY_SIGN_IN: &str = "authentication-directory-sign-in";
    pub const TRANSMISSION_INTEGRITY: &str = "transmission-integrity";
    pub const TRANSMISSION_ENCRYPTION: &str = "transmission-encryption";
    pub const ENGINE_UNREACHABLE: &str = "network-engine-unreachable";
    pub const OUTBOUND_BLOCKED: &str = "network-outbound-blocked";
    pub const ACTIVITY_REVIEW: &str = "admin-activity-review";
    pub const RISK_ASSESSMENT: &str = "admin-risk-assessment";
    pub const TERMINATION: &str = "admin-termination";
    pub const ACCESS_REVIEW: &str = "admin-access-review";
    pub const TRAINING: &str = "admin-training";
    pub const LOGIN_MONITORING: &str = "admin-login-monitoring";
    pub const PASSWORD_MANAGEMENT: &str = "admin-password-management";
    pub const INCIDENT_RESPONSE: &str = "admin-incident-response";
    pub const CONTINGENCY_BACKUPS: &str = "admin-contingency-backups";
    pub const ACCEPTABLE_USE: &str = "admin-acceptable-use";
    pub const MINIMUM_NECESSARY: &str = "admin-minimum-necessary";
    pub const LOCKED_ROOM: &str = "physical-locked-room";
    pub const VISITOR_LOG: &str = "physical-visitor-log";
    pub const ENVIRONMENT: &str = "physical-environment";
    pub const UPS: &str = "physical-ups";
    pub const USB_STORAGE: &str = "physical-usb-storage";
    pub const RETENTION: &str = "documentation-retention";
}

/// How the longest an attestation is believed, whatever its "valid until" says.
#[derive(Clone, Copy)]
enum Validity {
    Quarterly,
    Yearly,
}

impl Validity {
    fn days(self) -> i64 {
        match self {
            Validity::Quarterly => 92,
            Validity::Yearly => 366,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Validity::Quarterly => "quarterly",
            Validity::Yearly => "yearly",
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Measured(fn(&Ctx) -> Outcome),
    Attested(Validity),
}

struct ItemDef {
    id: &'static str,
    title: &'static str,
    section: &'static str,
    references: &'static [&'static str],
    kind: Kind,
    /// Whether an accepted exception may stand in for this item.
    waivable: bool,
    /// What to do when the item is not in order (a check may give a more specific text).
    remediation: &'static str,
}

/// Every item, in report order.
const ITEMS: &[ItemDef] = &[
    ItemDef {
        id: ids::UNIQUE_USER_ID,
        title: "Unique user identification",
        section: "access-control",
        references: &["HIPAA §164.312(a)(2)(i)"],
        kind: Kind::Measured(check_unique_user_id),
        waivable: false,
        remediation: "Give every person their own account (`wardbox users add`) and disable shared or duplicated ones.",
    },
    ItemDef {
        id: ids::EMERGENCY_ACCESS,
        title: "Emergency access procedure",
        section: "access-control",
        references: &["HIPAA §164.312(a)(2)(ii)"],
        kind: Kind::Measured(check_emergency_access),
        waivable: false,
        remediation: "Enable break-glass sign-in in `[web]` with a time limit of at most 4 hours (`web.break_glass_timeout_secs`).",
    },
    ItemDef {
        id: ids::AUTOMATIC_LOGOFF,
        title: "Automatic logoff after 15 minutes idle",
        section: "access-control",
        references: &["HIPAA §164.312(a)(2)(iii)", "Go-live: 15-minute idle logoff"],
        kind: Kind::Measured(check_automatic_logoff),
        waivable: false,
        remediation: "Set `web.idle_timeout_secs` to 900 or less and restart the agent.",
    },
    ItemDef {
        id: ids::ENCRYPTION_AT_REST,
        title: "Encryption of the data volume",
        section: "access-control",
        references: &["HIPAA §164.312(a)(2)(iv)", "Go-live: data volume encrypted"],
        kind: Kind::Measured(check_encryption_at_rest),
        waivable: false,
        remediation: "Provision the data volume with `wardbox volume provision` (LUKS2, AES-XTS, key sealed in the TPM) and boot the appliance profile.",
    },
    ItemDef {
        id: ids::AUDIT_EVERY_INTERACTION,
        title: "Every interaction audited",
        section: "audit-controls",
        references: &["HIPAA §164.312(b)", "Go-live: every interaction audited"],
        kind: Kind::Measured(check_audit_every_interaction),
        waivable: false,
        remediation: "Look at the agent's journal for audit write errors; check free space on the data volume; restart the agent.",
    },
    ItemDef {
        id: ids::AUDIT_LOG_INTEGRITY,
        title: "Audit log integrity: chain verified, checkpoints matching",
        section: "integrity",
        references: &["HIPAA §164.312(c)(1)", "Go-live: log integrity checked"],
        kind: Kind::Measured(check_audit_log_integrity),
        waivable: false,
        remediation: "Run `wardbox audit verify` to name the broken record, treat it as a security incident, and compare with the monthly exports and the journal checkpoints.",
    },
    ItemDef {
        id: ids::EPHI_AUTHENTICATION,
        title: "Mechanism to authenticate ePHI (per-page HMAC of the store)",
        section: "integrity",
        references: &["HIPAA §164.312(c)(2)"],
        kind: Kind::Measured(check_ephi_authentication),
        waivable: false,
        remediation: "The store failed its page authentication: treat it as a security incident and restore the store from a verified backup.",
    },
    ItemDef {
        id: ids::MEASURED_BOOT,
        title: "Measured boot: Secure Boot enforcing, a signed kernel image of the firmware policy",
        section: "integrity",
        references: &["HIPAA §164.312(c)(1)", "HIPAA §164.308(a)(5)(ii)(B)"],
        kind: Kind::Measured(measured_boot::check_measured_boot),
        waivable: false,
        remediation: "Boot the box through UEFI with Secure Boot on, its pinned keys enrolled and its signed kernel image, and the volume key sealed to PCR 7 and the signed PCR 11 policy.",
    },
    ItemDef {
        id: ids::PERSON_AUTHENTICATION,
        title: "Person or entity authentication",
        section: "authentication",
        references: &["HIPAA §164.312(d)"],
        kind: Kind::Measured(check_person_authentication),
        waivable: false,
        remediation: "Every enabled account must sign in with its own secret: set argon2id passwords (`wardbox users passwd`) or move the account to the directory.",
    },
    ItemDef {
        id: ids::DIRECTORY_SIGN_IN,
        title: "Directory sign-in working",
        section: "authentication",
        references: &["Go-live: directory sign-in working"],
        kind: Kind::Measured(check_directory_sign_in),
        waivable: true,
        remediation: "Check `[web.ldap]` (URL, bind account, CA certificate) and that the firewall allow-list reaches the directory over TLS.",
    },
    ItemDef {
        id: ids::TRANSMISSION_INTEGRITY,
        title: "Transmission integrity controls",
        section: "transmission",
        references: &["HIPAA §164.312(e)(2)(i)"],
        kind: Kind::Measured(check_transmission_integrity),
        waivable: false,
        remediation: "Renew the web certificate (`web.tls_cert`) before it expires and restart the agent.",
    },
    ItemDef {
        id: ids::TRANSMISSION_ENCRYPTION,
        title: "Transmission encryption: TLS 1.3 only",
        section: "transmission",
        references: &["HIPAA §164.312(e)(2)(ii)", "Go-live: TLS 1.2 refused, 1.3 accepted"],
        kind: Kind::Measured(check_transmission_encryption),
        waivable: false,
        remediation: "The web listener must accept TLS 1.3 only: check that the agent's `serve` stage is ok and nothing else listens on the HTTPS port.",
    },
    ItemDef {
        id: ids::ENGINE_UNREACHABLE,
        title: "Inference engine reachable from no network interface",
        section: "network",
        references: &["Go-live: engine not reachable from the network"],
        kind: Kind::Measured(check_engine_unreachable),
        waivable: false,
        remediation: "Stop whatever listens on the engine's port; the engine must run only behind its Unix socket (`wardbox-engine.service` has no network).",
    },
    ItemDef {
        id: ids::OUTBOUND_BLOCKED,
        title: "Outbound internet blocked",
        section: "network",
        references: &["Go-live: outbound internet blocked", "HIPAA §164.312(e)(1)"],
        kind: Kind::Measured(check_outbound_blocked),
        waivable: false,
        remediation: "Run `wardbox firewall verify --repair` and find who changed the ruleset (the audit log records the drift).",
    },
    ItemDef {
        id: ids::ACTIVITY_REVIEW,
        title: "Information system activity review",
        section: "administrative",
        references: &["HIPAA §164.308(a)(1)(ii)(D)"],
        kind: Kind::Measured(check_activity_review),
        waivable: false,
        remediation: "Review last week's activity on the Activity review page (/admin/review) and mark the week reviewed with a note; do it every week.",
    },
    ItemDef {
        id: ids::RISK_ASSESSMENT,
        title: "Risk assessment",
        section: "administrative",
        references: &["HIPAA §164.308(a)(1)(ii)(A)", "Go-live: risk assessment"],
        kind: Kind::Attested(Validity::Yearly),
        waivable: false,
        remediation: "Carry out the yearly risk assessment and record it on the Reports page.",
    },
    ItemDef {
        id: ids::TERMINATION,
        title: "Termination: no active accounts of people who left",
        section: "administrative",
        references: &["HIPAA §164.308(a)(3)(ii)(C)"],
        kind: Kind::Measured(check_termination),
        waivable: false,
        remediation: "Disable the accounts named in the evidence (`wardbox users disable USER`) or confirm the people still work here and have them sign in.",
    },
    ItemDef {
        id: ids::ACCESS_REVIEW,
        title: "Quarterly access review",
        section: "administrative",
        references: &["HIPAA §164.308(a)(4)(ii)(C)", "Go-live: quarterly access review"],
        kind: Kind::Measured(check_access_review),
        waivable: false,
        remediation: "Carry out the quarterly access review on the Access page (/admin/access): confirm or revoke each clinician's and nurse's patient access.",
    },
    ItemDef {
        id: ids::TRAINING,
        title: "Security awareness training",
        section: "administrative",
        references: &["HIPAA §164.308(a)(5)(i)", "Go-live: training"],
        kind: Kind::Attested(Validity::Yearly),
        waivable: false,
        remediation: "Train every user (yearly) and record the training log on the Reports page.",
    },
    ItemDef {
        id: ids::LOGIN_MONITORING,
        title: "Log-in monitoring",
        section: "administrative",
        references: &["HIPAA §164.308(a)(5)(ii)(C)"],
        kind: Kind::Measured(check_login_monitoring),
        waivable: false,
        remediation: "Set the sign-in throttle (`web.signin_free_failures` < `web.signin_block_after`, `web.signin_block_secs`) and the account lock (`web.lockout_threshold`, `web.lockout_addresses` of at least 3, `web.lockout_window_secs`, `web.lockout_secs`); failed sign-ins must be audited.",
    },
    ItemDef {
        id: ids::PASSWORD_MANAGEMENT,
        title: "Password management",
        section: "administrative",
        references: &["HIPAA §164.308(a)(5)(ii)(D)"],
        kind: Kind::Measured(check_password_management),
        waivable: false,
        remediation: "Have the accounts named in the evidence change their initial password; keep a minimum length of 12.",
    },
    ItemDef {
        id: ids::INCIDENT_RESPONSE,
        title: "Incident response plan",
        section: "administrative",
        references: &["HIPAA §164.308(a)(6)(i)", "Go-live: incident response plan"],
        kind: Kind::Attested(Validity::Yearly),
        waivable: false,
        remediation: "Write or review the incident response plan and record it on the Reports page.",
    },
    ItemDef {
        id: ids::CONTINGENCY_BACKUPS,
        title: "Contingency plan: backups and a tested restore",
        section: "administrative",
        references: &["HIPAA §164.308(a)(7)(ii)(A)", "HIPAA §164.308(a)(7)(ii)(B)"],
        kind: Kind::Measured(check_contingency_backups),
        waivable: false,
        remediation: "Set up encrypted backups of the data volume, then restore one on a spare machine and record the test.",
    },
    ItemDef {
        id: ids::ACCEPTABLE_USE,
        title: "Signed acceptable-use policy",
        section: "administrative",
        references: &["HIPAA §164.310(b)", "Go-live: signed acceptable-use policy"],
        kind: Kind::Attested(Validity::Yearly),
        waivable: false,
        remediation: "Have every user sign the acceptable-use policy for the local AI and record it on the Reports page.",
    },
    ItemDef {
        id: ids::MINIMUM_NECESSARY,
        title: "Minimum-necessary guidance",
        section: "administrative",
        references: &["HIPAA §164.502(b)", "HIPAA §164.514(d)", "Go-live: minimum-necessary guidance"],
        kind: Kind::Attested(Validity::Yearly),
        waivable: false,
        remediation: "Give users the minimum-necessary guidance for prompts and uploads and record it on the Reports page.",
    },
    ItemDef {
        id: ids::LOCKED_ROOM,
        title: "Box in a locked room",
        section: "physical",
        references: &["HIPAA §164.310(a)(1)", "Go-live: locked room"],
        kind: Kind::Attested(Validity::Yearly),
        waivable: false,
        remediation: "Put the box in a room that locks, with keys held by named staff, and record it on the Reports page.",
    },
    ItemDef {
        id: ids::VISITOR_LOG,
        title: "Visitor log for the room",
        section: "physical",
        references: &["HIPAA §164.310(a)(2)(iii)", "Go-live: visitor log"],
        kind: Kind::Attested(Validity::Quarterly),
        waivable: true,
        remediation: "Keep a visitor log for the room and record its review on the Reports page.",
    },
    ItemDef {
        id: ids::ENVIRONMENT,
        title: "Environment (temperature, water, dust)",
        section: "physical",
        references: &["HIPAA §164.310(a)(2)(ii)", "Go-live: environment"],
        kind: Kind::Attested(Validity::Yearly),
        waivable: true,
        remediation: "Check the room's temperature, water and dust risks and record it on the Reports page.",
    },
    ItemDef {
        id: ids::UPS,
        title: "Uninterruptible power supply",
        section: "physical",
        references: &["HIPAA §164.308(a)(7)(ii)(C)", "Go-live: UPS"],
        kind: Kind::Attested(Validity::Yearly),
        waivable: true,
        remediation: "Connect the box to a UPS, test it, and record it on the Reports page.",
    },
    ItemDef {
        id: ids::USB_STORAGE,
        title: "Device and media controls: USB storage",
        section: "physical",
        references: &["HIPAA §164.310(d)(1)", "Go-live: USB storage controlled"],
        kind: Kind::Measured(check_usb_storage),
        waivable: true,
        remediation: "Keep the usb-storage and uas drivers blocked (the image's modprobe blacklist); remove USB drives; record a waiver if USB storage is needed for updates.",
    },
    ItemDef {
        id: ids::RETENTION,
        title: "Six-year retention of audit records",
        section: "documentation",
        references: &["HIPAA §164.316(b)(2)(i)"],
        kind: Kind::Measured(check_retention),
        waivable: false,
        remediation: "Run `wardbox audit export` for the missing months and keep the exports with the backups for six years.",
    },
];

/// What one check decided.
struct Outcome {
    status: Status,
    reason: String,
    evidence: Vec<Evidence>,
    /// A more specific remediation than the item's default.
    remediation: Option<String>,
}

impl Outcome {
    fn new(status: Status, reason: impl Into<String>, evidence: Vec<Evidence>) -> Self {
        Outcome { status, reason: reason.into(), evidence, remediation: None }
    }

    fn remedy(mut self, text: impl Into<String>) -> Self {
        self.remediation = Some(text.into());
        self
    }
}

/// What every check can see.
struct Ctx<'a> {
    facts: &'a Facts,
    now: Timestamp,
}

impl Ctx<'_> {
    fn evidence(&self, check: &str, how: &str, values: Vec<(&str, String)>) -> Evidence {
        Evidence {
            check: check.to_string(),
            how: how.to_string(),
            at: self.now,
            values: values.into_iter().map(|(n, v)| Observed { name: n.to_string(), value: v }).collect(),
        }
    }

    /// A probe that could not run: a fail naming why (never a pass).
    fn unavailable(&self, check: &str, how: &str, reason: &str) -> Outcome {
        Outcome::new(
            Status::Fail,
            format!("the box could not measure this: {reason}"),
            vec![self.evidence(check, how, vec![("probe", format!("unavailable: {reason}"))])],
        )
    }

    fn days_ago(&self, days: i64) -> Timestamp {
        self.now.checked_sub(SignedDuration::from_hours(24 * days)).unwrap_or(Timestamp::MIN)
    }
}

/// The accounts, or the outcome that says why they could not be read.
fn accounts<'a>(cx: &'a Ctx, check: &str) -> Result<&'a [crate::facts::Account], Outcome> {
    match &cx.facts.accounts {
        Probe::Observed { value } => Ok(value),
        Probe::Unavailable { reason } => Err(cx.unavailable(check, "read the accounts table", reason)),
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes".into() } else { "no".into() }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() { "none".into() } else { items.join(", ") }
}

/// The stage record's outcome, for evidence.
fn stage_outcome(facts: &Facts, stage: &str) -> String {
    facts
        .boot
        .iter()
        .find(|s| s.stage == stage)
        .map(|s| if s.reason.is_empty() { s.outcome.clone() } else { format!("{}: {}", s.outcome, s.reason) })
        .unwrap_or_else(|| "no record".into())
}

// --- Access control -------------------------------------------------------------------------

fn check_unique_user_id(cx: &Ctx) -> Outcome {
    let accounts = match accounts(cx, "every account has its own user id") {
        Ok(a) => a,
        Err(o) => return o,
    };
    let how = "read the accounts table; compared user ids case-insensitively";
    let mut seen = std::collections::BTreeSet::new();
    let mut duplicated = std::collections::BTreeSet::new();
    let mut empty = 0;
    for a in accounts {
        let id = a.user_id.trim().to_lowercase();
        if id.is_empty() {
            empty += 1;
        } else if !seen.insert(id.clone()) {
            duplicated.insert(id);
        }
    }
    let duplicates: Vec<String> = duplicated.into_iter().collect();
    let values = vec![
        ("accounts", accounts.len().to_string()),
        ("enabled accounts", accounts.iter().filter(|a| !a.disabled).count().to_string()),
        ("duplicated user ids", list_or_none(&duplicates)),
        ("accounts without a user id", empty.to_string()),
    ];
    let ev = vec![cx.evidence("every account has its own user id", how, values)];
    if accounts.is_empty() {
        return Outcome::new(Status::Fail, "there are no accounts: nobody can be identified", ev);
    }
    if !duplicates.is_empty() || empty > 0 {
        return Outcome::new(
            Status::Fail,
            format!("user ids are not unique: duplicated {}; {} without an id", list_or_none(&duplicates), empty),
            ev,
        );
    }
    Outcome::new(Status::Pass, format!("all {} accounts have distinct user ids", accounts.len()), ev)
}

fn check_emergency_access(cx: &Ctx) -> Outcome {
    let s = &cx.facts.sessions;
    let uses = match &cx.facts.sign_ins {
        Probe::Observed { value } => value.break_glass_uses.to_string(),
        Probe::Unavailable { reason } => format!("unavailable: {reason}"),
    };
    let ev = vec![cx.evidence(
        "break-glass sign-in is available, time-limited and audited",
        "read the running web configuration; counted break-glass records in the audit chain (30 days)",
        vec![
            ("break-glass enabled", yes_no(s.break_glass_enabled)),
            ("break-glass session limit (s)", s.break_glass_timeout_secs.to_string()),
            ("break-glass uses in 30 days", uses.clone()),
        ],
    )];
    if !s.break_glass_enabled {
        return Outcome::new(Status::Fail, "break-glass (emergency) sign-in is disabled", ev);
    }
    if s.break_glass_timeout_secs == 0 || s.break_glass_timeout_secs > 4 * 3600 {
        return Outcome::new(
            Status::Fail,
            format!("break-glass sessions last {} s, more than the 4-hour limit", s.break_glass_timeout_secs),
            ev,
        );
    }
    Outcome::new(
        Status::Pass,
        format!(
            "break-glass sign-in is enabled, limited to {} minutes per session and audited ({} uses in 30 days)",
            s.break_glass_timeout_secs / 60,
            uses
        ),
        ev,
    )
}

fn check_automatic_logoff(cx: &Ctx) -> Outcome {
    let s = &cx.facts.sessions;
    let ev = vec![cx.evidence(
        "idle sessions end within 15 minutes",
        "read the running web configuration (the session store enforces it on every request)",
        vec![
            ("idle timeout (s)", s.idle_timeout_secs.to_string()),
            ("absolute timeout (s)", s.absolute_timeout_secs.to_string()),
        ],
    )];
    if s.idle_timeout_secs == 0 || s.idle_timeout_secs > 15 * 60 {
        return Outcome::new(
            Status::Fail,
            format!("idle timeout is {} s, more than 900 s (15 minutes)", s.idle_timeout_secs),
            ev,
        );
    }
    Outcome::new(Status::Pass, format!("idle sessions end after {} s", s.idle_timeout_secs), ev)
}

fn check_encryption_at_rest(cx: &Ctx) -> Outcome {
    let check = "the data volume is LUKS2 with AES-XTS and its key is sealed in the TPM";
    let how = "read the device-mapper status of the data volume (as `cryptsetup status` shows it) and the TPM seal";
    let v = match &cx.facts.volume {
        Probe::Observed { value } => value,
        Probe::Unavailable { reason } => return cx.unavailable(check, how, reason),
    };
    let mut values = vec![
        ("plain directory (dev profile)", yes_no(v.plain_directory)),
        ("mapping active", yes_no(v.active)),
        ("LUKS version", v.luks_version.to_string()),
        ("cipher", v.cipher.clone()),
        ("key size (bits)", v.key_bits.to_string()),
        ("device", v.device.clone()),
        ("unlocked by", v.unlocked_by.clone()),
        ("unlock stage", stage_outcome(cx.facts, "unlock")),
    ];
    let tpm = match &cx.facts.tpm {
        Probe::Observed { value } => {
            values.push(("sealed to PCRs", format!("{} {:?}", value.pcr_bank, value.sealed_pcrs)));
            values.push(("seal matches current PCRs", yes_no(value.seal_matches_current_pcrs)));
            Some(value)
        }
        Probe::Unavailable { reason } => {
            values.push(("TPM", format!("unavailable: {reason}")));
            None
        }
    };
    let ev = vec![cx.evidence(check, how, values)];
    if v.plain_directory {
        return Outcome::new(Status::Fail, "the data directory is a plain, unencrypted directory (dev profile)", ev);
    }
    if !v.active || v.luks_version != 2 {
        return Outcome::new(
            Status::Fail,
            format!("the data volume is not an open LUKS2 volume (active: {}, LUKS version {})", yes_no(v.active), v.luks_version),
            ev,
        );
    }
    if !v.cipher.starts_with("aes-xts") || v.key_bits < 512 {
        return Outcome::new(
            Status::Fail,
            format!("the cipher is {} with a {}-bit key, not AES-256 in XTS mode (aes-xts, 512-bit key)", v.cipher, v.key_bits),
            ev,
        );
    }
    match tpm {
        None => Outcome::new(Status::Fail, "the volume is encrypted but the TPM holding its key could not be read", ev),
        Some(t) if !t.seal_matches_current_pcrs => Outcome::new(
            Status::NeedsAttention,
            "the volume is encrypted, but its TPM seal no longer matches the boot state: the next boot needs the recovery key",
            ev,
        )
        .remedy("If the boot change was legitimate (a firmware update), run `wardbox volume reseal`; otherwise treat it as a security incident."),
        Some(_) if v.unlocked_by != "tpm" => Outcome::new(
            Status::NeedsAttention,
            format!("the volume is encrypted, but this boot was unlocked by {} instead of the TPM", v.unlocked_by),
            ev,
        )
        .remedy("Run `wardbox volume reseal` so the next boot unlocks through the TPM."),
        Some(_) => Outcome::new(Status::Pass, format!("LUKS2 {} with a {}-bit key, unlocked by the TPM", v.cipher, v.key_bits), ev),
    }
}

// --- Audit controls and integrity ------------------------------------------------------------

fn check_audit_every_interaction(cx: &Ctx) -> Outcome {
    let check = "every served request to patient data or administration has an audit record";
    let how = "compared the web layer's served-request counters with its audited-request counters, per route class, since the agent started";
    let a = match &cx.facts.request_audit {
        Probe::Observed { value } => value,
        Probe::Unavailable { reason } => return cx.unavailable(check, how, reason),
    };
    let mut values = vec![("counting since", a.since.clone())];
    for c in &a.classes {
        values.push(("route class", c.class.clone()));
        values.push(("served", c.served.to_string()));
        values.push(("audited", c.audited.to_string()));
        values.push(("audit must precede serving", yes_no(c.audit_required)));
        values.push(("audit write failures", c.audit_failures.to_string()));
    }
    let gaps: Vec<String> = a
        .classes
        .iter()
        .filter(|c| c.audit_required && c.audited < c.served)
        .map(|c| format!("{} {} requests", c.served - c.audited, c.class))
        .collect();
    values.push(("served without an audit record", list_or_none(&gaps)));
    // A full data volume refuses audit records, and the requests with them: the room left is
    // part of this item, ahead of the failures it would cause.
    let space_values = match &cx.facts.data_space {
        Probe::Observed { value: s } => vec![
            ("data volume", s.path.clone()),
            ("free space", s.summary.clone()),
            ("level", s.level.clone()),
            ("thresholds", s.thresholds.clone()),
        ],
        Probe::Unavailable { reason } => vec![("not read", reason.clone())],
    };
    let ev = vec![
        cx.evidence(check, how, values),
        cx.evidence(
            "the data volume has room for the audit records of the requests to come",
            "read the free space of the store's filesystem (statvfs) and compared it with the agent's [disk] thresholds",
            space_values,
        ),
    ];
    if !a.classes.iter().any(|c| c.class == "patient_data" && c.audit_required) {
        return Outcome::new(Status::Fail, "the web layer's counters do not cover the patient-data routes", ev);
    }
    if !gaps.is_empty() {
        return Outcome::new(Status::Fail, format!("served without an audit record: {}", gaps.join(", ")), ev).remedy(
            "A route serves requests without writing its audit record first: treat it as a defect of the agent, report it to the vendor, and review the patient-data accesses of the period from the web server's journal.",
        );
    }
    let failures: u64 = a.classes.iter().map(|c| c.audit_failures).sum();
    if failures > 0 {
        return Outcome::new(
            Status::NeedsAttention,
            format!("{failures} audit writes failed since the agent started (their requests were refused, not served)"),
            ev,
        );
    }
    match &cx.facts.data_space {
        Probe::Unavailable { reason } => {
            return Outcome::new(Status::NeedsAttention, format!("the data volume's free space could not be read: {reason}"), ev);
        }
        Probe::Observed { value: s } if s.level != "ok" => {
            return Outcome::new(
                Status::NeedsAttention,
                format!("the data volume is {} on space ({}); when it is full, audit records and the requests they cover are refused", s.level, s.summary),
                ev,
            )
            .remedy("Free space on the data volume, or move the box to a larger one (`wardbox backup now`, then `wardbox backup restore-box` on the new one).");
        }
        Probe::Observed { .. } => {}
    }
    let served: u64 = a.classes.iter().filter(|c| c.audit_required).map(|c| c.served).sum();
    Outcome::new(Status::Pass, format!("all {served} patient-data and administration requests since start were audited"), ev)
}

fn check_audit_log_integrity(cx: &Ctx) -> Outcome {
    let check = "the audit hash chain is unbroken and matches the checkpoints kept outside the database";
    let how = "verified the chain from its anchor (the last verified head, itself matched against the checkpoints) to the head, and every checkpoint against its record; a periodic full walk recomputes every record";
    let a = match &cx.facts.audit {
        Probe::Observed { value } => value,
        Probe::Unavailable { reason } => return cx.unavailable(check, how, reason),
    };
    let full_walk_age = a.last_full_walk.as_ref().map(|w| cx.now.duration_since(w.at));
    let ev = vec![cx.evidence(
        check,
        how,
        vec![
            ("records", a.records.to_string()),
            ("verification", if a.full_walk { "full walk (every record recomputed)".into() } else { format!("incremental, from record {}", a.verified_from_seq) }),
            ("verified from record", a.verified_from_seq.to_string()),
            ("head record", a.head_seq.to_string()),
            ("first break", a.first_break.clone().unwrap_or_else(|| "none".into())),
            ("checkpoints checked", a.checkpoints_checked.to_string()),
            ("checkpoints not matching", a.checkpoints_mismatched.to_string()),
            (
                "last full walk",
                match &a.last_full_walk {
                    Some(w) => format!("{} (intact up to record {})", w.at, w.head_seq),
                    None => "none on record".into(),
                },
            ),
        ],
    )];
    if let Some(broken) = &a.first_break {
        return Outcome::new(Status::Fail, format!("the audit chain is broken: {broken}"), ev);
    }
    if a.checkpoints_mismatched > 0 {
        return Outcome::new(
            Status::Fail,
            format!("{} checkpoints do not match the audit chain (records were rewritten)", a.checkpoints_mismatched),
            ev,
        );
    }
    if a.checkpoints_checked == 0 && a.records > 0 {
        return Outcome::new(
            Status::NeedsAttention,
            "the chain is intact but no checkpoint exists outside the database to anchor it",
            ev,
        )
        .remedy("Check that the agent writes checkpoints to the state directory and the journal (see docs/ARCHITECTURE.md, audit).");
    }
    let walk_is_old = full_walk_age.is_none_or(|age| age > SignedDuration::from_hours(24 * FULL_WALK_DAYS));
    if !a.full_walk && walk_is_old {
        return Outcome::new(
            Status::NeedsAttention,
            format!(
                "records after {} are intact; the records before it were not recomputed by a full walk in the last {FULL_WALK_DAYS} days",
                a.verified_from_seq
            ),
            ev,
        )
        .remedy("Generate the report with `wardbox report generate --full-chain` (the monthly report does), or run `wardbox audit verify`.");
    }
    Outcome::new(
        Status::Pass,
        if a.full_walk {
            format!("every one of the {} records was recomputed and {} checkpoints match", a.records, a.checkpoints_checked)
        } else {
            format!(
                "the chain of {} records is intact from record {} on, {} checkpoints match, and a full walk found it intact within {FULL_WALK_DAYS} days",
                a.records, a.verified_from_seq, a.checkpoints_checked
            )
        },
        ev,
    )
}

/// Longest time an incremental chain check may rely on the last full walk for the records
/// before its anchor (the monthly report walks in full).
const FULL_WALK_DAYS: i64 = 35;

fn check_ephi_authentication(cx: &Ctx) -> Outcome {
    let check = "every store page carries an HMAC that verifies";
    let how = "read the store's cipher settings and ran its page integrity check (PRAGMA cipher_integrity_check)";
    let s = match &cx.facts.store {
        Probe::Observed { value } => value,
        Probe::Unavailable { reason } => return cx.unavailable(check, how, reason),
    };
    let ev = vec![cx.evidence(
        check,
        how,
        vec![
            ("cipher", s.cipher_version.clone()),
            ("page HMAC", if s.hmac_algorithm.is_empty() { "none".into() } else { s.hmac_algorithm.clone() }),
            ("pages checked", s.pages_checked.to_string()),
            ("pages failing", s.integrity_errors.to_string()),
        ],
    )];
    if s.hmac_algorithm.is_empty() {
        return Outcome::new(Status::Fail, "the store runs without per-page HMAC: altered pages would not be detected", ev);
    }
    if s.integrity_errors > 0 {
        return Outcome::new(Status::Fail, format!("{} store pages failed their HMAC check", s.integrity_errors), ev);
    }
    if s.pages_checked == 0 {
        return Outcome::new(Status::Fail, "the integrity check read no pages", ev);
    }
    Outcome::new(Status::Pass, format!("all {} pages authenticated with {}", s.pages_checked, s.hmac_algorithm), ev)
}

// --- Authentication --------------------------------------------------------------------------

fn check_person_authentication(cx: &Ctx) -> Outcome {
    let enabled: Vec<_> = match accounts(cx, "every enabled account authenticates with its own secret") {
        Ok(a) => a.iter().filter(|a| !a.disabled).collect(),
        Err(o) => return o,
    };
    let weak: Vec<String> = enabled
        .iter()
        .filter(|a| a.source == "local" && a.password_scheme != "argon2id")
        .map(|a| format!("{} ({})", a.user_id, if a.password_scheme.is_empty() { "no password" } else { &a.password_scheme }))
        .collect();
    let unknown_source: Vec<String> =
        enabled.iter().filter(|a| a.source != "local" && a.source != "directory").map(|a| a.user_id.clone()).collect();
    let directory_without = matches!(cx.facts.ldap, LdapFacts::NotConfigured);
    let dir_accounts: Vec<String> =
        enabled.iter().filter(|a| a.source == "directory" && directory_without).map(|a| a.user_id.clone()).collect();
    let ev = vec![cx.evidence(
        "every enabled account authenticates with its own secret",
        "read the accounts table (password scheme, source) and the directory configuration",
        vec![
            ("enabled accounts", enabled.len().to_string()),
            ("local accounts with argon2id", enabled.iter().filter(|a| a.source == "local" && a.password_scheme == "argon2id").count().to_string()),
            ("directory accounts", enabled.iter().filter(|a| a.source == "directory").count().to_string()),
            ("local accounts without an argon2id password", list_or_none(&weak)),
            ("directory accounts without a directory", list_or_none(&dir_accounts)),
            ("accounts of unknown source", list_or_none(&unknown_source)),
        ],
    )];
    if enabled.is_empty() {
        return Outcome::new(Status::Fail, "no enabled account: nobody can sign in", ev);
    }
    if !weak.is_empty() {
        return Outcome::new(Status::Fail, format!("accounts without an argon2id password: {}", weak.join(", ")), ev);
    }
    if !dir_accounts.is_empty() || !unknown_source.is_empty() {
        return Outcome::new(
            Status::Fail,
            format!(
                "accounts that cannot authenticate: {}",
                dir_accounts.iter().chain(unknown_source.iter()).cloned().collect::<Vec<_>>().join(", ")
            ),
            ev,
        );
    }
    Outcome::new(Status::Pass, format!("all {} enabled accounts authenticate with their own secret", enabled.len()), ev)
}

fn check_directory_sign_in(cx: &Ctx) -> Outcome {
    let check = "a bind to the clinic's directory succeeds over TLS";
    let how = "bound to the configured LDAP server with the service account, live";
    match &cx.facts.ldap {
        LdapFacts::NotConfigured => Outcome::new(
            Status::NotApplicable,
            "no directory is configured: staff sign in with local accounts",
            vec![cx.evidence(check, "read the web configuration", vec![("directory", "not configured".into())])],
        ),
        LdapFacts::Configured { url, bind } => match bind {
            Probe::Unavailable { reason } => {
                let mut o = cx.unavailable(check, how, reason);
                o.evidence[0].values.insert(0, Observed { name: "directory".into(), value: url.clone() });
                o
            }
            Probe::Observed { value: b } => {
                let ev = vec![cx.evidence(
                    check,
                    how,
                    vec![
                        ("directory", url.clone()),
                        ("TLS", yes_no(b.tls)),
                        ("bind", if b.bind_ok { "ok".into() } else { "failed".into() }),
                        ("detail", b.detail.clone()),
                    ],
                )];
                if !b.bind_ok {
                    Outcome::new(Status::Fail, format!("the directory bind failed: {}", b.detail), ev)
                } else if !b.tls {
                    Outcome::new(Status::Fail, "the directory bind works but without TLS: passwords cross the network in the clear", ev)
                } else {
                    Outcome::new(Status::Pass, format!("bound to {url} over TLS"), ev)
                }
            }
        },
    }
}

// --- Transmission security -------------------------------------------------------------------

/// TLS 1.3 cipher suites are all AEAD; the name is what rustls reports.
fn aead_suite(name: &str) -> bool {
    ["TLS13_AES_128_GCM_SHA256", "TLS13_AES_256_GCM_SHA384", "TLS13_CHACHA20_POLY1305_SHA256"].contains(&name)
}

fn check_transmission_integrity(cx: &Ctx) -> Outcome {
    let check = "the web connection uses an AEAD cipher and a valid certificate";
    let how = "made a TLS 1.3 handshake to the box's own HTTPS port and read the negotiated suite and the certificate";
    let t = match &cx.facts.tls {
        Probe::Observed { value } => value,
        Probe::Unavailable { reason } => return cx.unavailable(check, how, reason),
    };
    let ev = vec![cx.evidence(
        check,
        how,
        vec![
            ("target", t.target.clone()),
            ("TLS 1.3 handshake", t.tls13.detail.clone()),
            ("certificate subject", t.certificate_subject.clone()),
            ("certificate valid until", t.certificate_not_after.to_string()),
        ],
    )];
    if !t.tls13.accepted {
        return Outcome::new(Status::Fail, format!("no TLS 1.3 connection could be made: {}", t.tls13.detail), ev);
    }
    if !aead_suite(&t.tls13.detail) {
        return Outcome::new(Status::Fail, format!("the negotiated suite {} is not an AEAD TLS 1.3 suite", t.tls13.detail), ev);
    }
    if t.certificate_not_after <= cx.now {
        return Outcome::new(Status::Fail, format!("the certificate expired on {}", t.certificate_not_after), ev);
    }
    let left = t.certificate_not_after.duration_since(cx.now);
    if left < SignedDuration::from_hours(24 * 30) {
        return Outcome::new(
            Status::NeedsAttention,
            format!("the certificate expires in {} days, on {}", left.as_hours() / 24, t.certificate_not_after),
            ev,
        );
    }
    Outcome::new(Status::Pass, format!("{} with a certificate valid until {}", t.tls13.detail, t.certificate_not_after), ev)
}

fn check_transmission_encryption(cx: &Ctx) -> Outcome {
    let check = "TLS 1.2 offered and refused, TLS 1.3 accepted, plain HTTP refused";
    let how = "live handshakes against the box's own HTTPS port: one offering only TLS 1.2, one offering only TLS 1.3, one plain-HTTP request";
    let t = match &cx.facts.tls {
        Probe::Observed { value } => value,
        Probe::Unavailable { reason } => return cx.unavailable(check, how, reason),
    };
    let ev = vec![cx.evidence(
        check,
        how,
        vec![
            ("target", t.target.clone()),
            ("TLS 1.2 only", format!("{}: {}", if t.tls12.accepted { "accepted" } else { "refused" }, t.tls12.detail)),
            ("TLS 1.3 only", format!("{}: {}", if t.tls13.accepted { "accepted" } else { "refused" }, t.tls13.detail)),
            ("plain HTTP", if t.plain_http_refused { "refused".into() } else { "answered".into() }),
        ],
    )];
    if !t.tls13.accepted {
        return Outcome::new(Status::Fail, format!("TLS 1.3 was refused: {}", t.tls13.detail), ev);
    }
    if t.tls12.accepted {
        return Outcome::new(Status::Fail, format!("TLS 1.2 was accepted ({})", t.tls12.detail), ev);
    }
    if !t.plain_http_refused {
        return Outcome::new(Status::Fail, "the HTTPS port answered a plain-HTTP request", ev);
    }
    Outcome::new(Status::Pass, "TLS 1.3 accepted, TLS 1.2 and plain HTTP refused", ev)
}

// --- Network exposure ------------------------------------------------------------------------

fn check_engine_unreachable(cx: &Ctx) -> Outcome {
    let check = "nothing answers on the engine's port on any of the box's addresses";
    let how = "a live TCP connect to the engine's port on each address of every interface";
    let p = match &cx.facts.engine_reach {
        Probe::Observed { value } => value,
        Probe::Unavailable { reason } => return cx.unavailable(check, how, reason),
    };
    let own = agent_loopback_endpoint(&cx.facts.network.engine_channel);
    let is_own = |a: &crate::facts::ConnectAttempt| a.connected() && own.is_some_and(|o| a.target.parse::<SocketAddr>().ok() == Some(o));
    let mut values: Vec<(&str, String)> = p
        .attempts
        .iter()
        .map(|a| {
            let note = if is_own(a) { " (the agent's own loopback endpoint, which no network interface reaches)" } else { "" };
            ("connect", format!("{}: {}{note}", a.target, a.result))
        })
        .collect();
    values.push(("engine channel", cx.facts.network.engine_channel.clone()));
    let ev = vec![cx.evidence(check, how, values)];
    if p.attempts.is_empty() {
        return Outcome::new(Status::Fail, "no address was probed, so nothing proves the engine is unreachable", ev);
    }
    let open: Vec<String> = p.attempts.iter().filter(|a| a.connected() && !is_own(a)).map(|a| a.target.clone()).collect();
    if !open.is_empty() {
        return Outcome::new(Status::Fail, format!("the engine's port accepted a connection on {}", open.join(", ")), ev);
    }
    let own_answered = p.attempts.iter().filter(|a| is_own(a)).count();
    let reason = if own_answered == 0 {
        format!("all {} connects were refused or unreachable", p.attempts.len())
    } else {
        format!(
            "{} of {} connects were refused or unreachable; the other was the agent's own loopback endpoint",
            p.attempts.len() - own_answered,
            p.attempts.len()
        )
    };
    Outcome::new(Status::Pass, reason, ev)
}

/// The engine endpoint the agent itself uses, when it is a loopback address and port (the
/// appliance bridges 127.0.0.1:11434 to the engine's Unix socket): a connect there is the
/// agent's own channel, which packets from a network interface cannot reach. Anything else
/// (a Unix socket, a non-loopback address) gives `None`, so every connect counts.
fn agent_loopback_endpoint(channel: &str) -> Option<SocketAddr> {
    let rest = channel.strip_prefix("http://").or_else(|| channel.strip_prefix("https://"))?;
    let hostport = rest.split('/').next()?;
    let addr: SocketAddr = hostport.parse().ok()?;
    addr.ip().is_loopback().then_some(addr)
}

fn check_outbound_blocked(cx: &Ctx) -> Outcome {
    let check = "the kernel's ruleset is exactly the egress policy and drops everything else outbound";
    let how = "read back the nftables ruleset (table inet wardbox), compared it with the policy, read its drop counters";
    let f = match &cx.facts.firewall {
        Probe::Observed { value } => value,
        Probe::Unavailable { reason } => return cx.unavailable(check, how, reason),
    };
    let allowed: Vec<String> =
        f.allowed_outbound.iter().map(|r| format!("{}:{}/{} ({})", r.destination, r.port, r.protocol, r.purpose)).collect();
    let ev = vec![cx.evidence(
        check,
        how,
        vec![
            ("drift", list_or_none(&f.drift)),
            ("output policy", f.output_policy.clone()),
            ("outbound packets blocked", f.blocked_outbound_packets.to_string()),
            ("inbound packets blocked", f.blocked_inbound_packets.to_string()),
            ("allowed outbound", list_or_none(&allowed)),
            ("firewall stage", stage_outcome(cx.facts, "firewall")),
        ],
    )];
    if !f.drift.is_empty() {
        return Outcome::new(Status::Fail, format!("the ruleset drifted from the policy: {}", f.drift.join("; ")), ev);
    }
    if f.output_policy != "drop" {
        return Outcome::new(Status::Fail, format!("the output chain's policy is {:?}, not drop", f.output_policy), ev);
    }
    Outcome::new(
        Status::Pass,
        format!("outbound traffic is dropped except {} allowed destinations; {} packets blocked", allowed.len(), f.blocked_outbound_packets),
        ev,
    )
}

// --- Administrative (measured) ---------------------------------------------------------------

/// An enabled account unused this long belongs, most likely, to someone who left.
const STALE_ACCOUNT_DAYS: i64 = 90;

fn check_termination(cx: &Ctx) -> Outcome {
    let cutoff = cx.days_ago(STALE_ACCOUNT_DAYS);
    let all = match accounts(cx, "no enabled account has gone unused for 90 days") {
        Ok(a) => a,
        Err(o) => return o,
    };
    // An account with neither a sign-in nor a creation time on record is counted as unused:
    // nothing shows that anyone uses it.
    let stale: Vec<String> = all
        .iter()
        .filter(|a| !a.disabled)
        .filter(|a| a.last_sign_in.or(a.created_at).is_none_or(|t| t < cutoff))
        .map(|a| match (a.last_sign_in, a.created_at) {
            (Some(t), _) => format!("{} (last sign-in {t})", a.user_id),
            (None, Some(c)) => match a.sign_ins_searched_since {
                Some(since) if since > c => format!("{} (no sign-in since {since}, created {c})", a.user_id),
                _ => format!("{} (never signed in, created {c})", a.user_id),
            },
            (None, None) => format!("{} (no sign-in on record)", a.user_id),
        })
        .collect();
    let ev = vec![cx.evidence(
        "no enabled account has gone unused for 90 days",
        "read the accounts table (disabled flag) and the last sign-in of each in the audit chain",
        vec![
            ("enabled accounts", all.iter().filter(|a| !a.disabled).count().to_string()),
            ("disabled accounts", all.iter().filter(|a| a.disabled).count().to_string()),
            ("unused for 90 days", list_or_none(&stale)),
        ],
    )];
    if !stale.is_empty() {
        return Outcome::new(
            Status::NeedsAttention,
            format!("{} enabled accounts have not been used for 90 days: {}", stale.len(), stale.join(", ")),
            ev,
        );
    }
    Outcome::new(Status::Pass, "every enabled account was used within 90 days", ev)
}

fn check_login_monitoring(cx: &Ctx) -> Outcome {
    let check = "failed sign-ins are throttled per address, distributed guessing locks the account, and failures are audited";
    let how = "read the running sign-in throttle and account-lock settings; counted sign-in records in the audit chain (30 days)";
    let s = &cx.facts.sessions;
    let a = match &cx.facts.sign_ins {
        Probe::Observed { value } => value,
        Probe::Unavailable { reason } => return cx.unavailable(check, how, reason),
    };
    let ev = vec![cx.evidence(
        check,
        how,
        vec![
            ("free failures per address", s.signin_free_failures.to_string()),
            ("address paused after failures", s.signin_block_after.to_string()),
            ("address pause (s)", s.signin_block_secs.to_string()),
            ("account locks after failures", s.lockout_threshold.to_string()),
            ("from at least this many addresses", s.lockout_addresses.to_string()),
            ("within (s)", s.lockout_window_secs.to_string()),
            ("account lock duration (s)", s.lockout_secs.to_string()),
            ("successful sign-ins (30 days)", a.successful.to_string()),
            ("failed sign-ins (30 days)", a.failed.to_string()),
            ("accounts locked now", a.accounts_locked_now.to_string()),
            ("failed sign-ins audited", yes_no(a.failures_audited)),
        ],
    )];
    let throttled = s.signin_free_failures >= 1 && s.signin_block_after > s.signin_free_failures && s.signin_block_secs > 0;
    if !throttled {
        return Outcome::new(
            Status::Fail,
            format!(
                "sign-in from one address is not throttled (free failures {}, paused after {}, for {} s)",
                s.signin_free_failures, s.signin_block_after, s.signin_block_secs
            ),
            ev,
        );
    }
    let locks = (1..=20).contains(&s.lockout_threshold) && s.lockout_window_secs > 0 && s.lockout_secs > 0;
    if !locks {
        return Outcome::new(
            Status::Fail,
            format!(
                "distributed guessing does not lock the account (after {} failures within {} s, for {} s)",
                s.lockout_threshold, s.lockout_window_secs, s.lockout_secs
            ),
            ev,
        );
    }
    if s.lockout_addresses < 2 || s.lockout_addresses > s.lockout_threshold {
        return Outcome::new(
            Status::Fail,
            format!(
                "the account lock counts failures from {} addresses against {} failures: one guesser could lock people out, or the lock can never happen",
                s.lockout_addresses, s.lockout_threshold
            ),
            ev,
        );
    }
    if s.lockout_addresses < MIN_LOCKOUT_ADDRESSES {
        return Outcome::new(
            Status::NeedsAttention,
            format!(
                "the account lock needs failures from only {} addresses; at least {MIN_LOCKOUT_ADDRESSES} keep two machines from locking staff out",
                s.lockout_addresses
            ),
            ev,
        );
    }
    if !a.failures_audited {
        return Outcome::new(Status::Fail, "failed sign-ins are not audited", ev);
    }
    Outcome::new(
        Status::Pass,
        format!(
            "an address is paused after {} failures; an account locks after {} failures from {} addresses; {} failed sign-ins in 30 days, all audited",
            s.signin_block_after, s.lockout_threshold, s.lockout_addresses, a.failed
        ),
        ev,
    )
}

/// Fewest different client addresses whose failures may lock an account: below this, one or
/// two machines could lock staff out at will (the per-address throttle stops a single guesser).
const MIN_LOCKOUT_ADDRESSES: u32 = 3;

fn check_password_management(cx: &Ctx) -> Outcome {
    let s = &cx.facts.sessions;
    let all = match accounts(cx, "passwords are long enough, stored as argon2id, and no account keeps its initial password") {
        Ok(a) => a,
        Err(o) => return o,
    };
    let initial: Vec<String> = all
        .iter()
        .filter(|a| !a.disabled && a.source == "local" && a.must_change_password)
        .map(|a| a.user_id.clone())
        .collect();
    let ev = vec![cx.evidence(
        "passwords are long enough, stored as argon2id, and no account keeps its initial password",
        "read the running password policy and the accounts table",
        vec![
            ("minimum length", s.password_min_length.to_string()),
            ("accounts still on their initial password", list_or_none(&initial)),
        ],
    )];
    if s.password_min_length < 12 {
        return Outcome::new(Status::Fail, format!("the minimum password length is {}, below 12", s.password_min_length), ev);
    }
    if !initial.is_empty() {
        return Outcome::new(Status::NeedsAttention, format!("accounts still on their initial password: {}", initial.join(", ")), ev);
    }
    Outcome::new(Status::Pass, format!("minimum length {}; no initial passwords in use", s.password_min_length), ev)
}

/// A backup older than this is not a backup of today's records.
const BACKUP_MAX_AGE_DAYS: i64 = 2;
/// A restore drill older than this needs attention (a quarterly drill, with slack).
const RESTORE_TEST_MAX_AGE_DAYS: i64 = 90;

fn check_contingency_backups(cx: &Ctx) -> Outcome {
    let b = &cx.facts.backups;
    let show = |t: Option<Timestamp>| t.map(|t| t.to_string()).unwrap_or_else(|| "never".into());
    let ev = vec![cx.evidence(
        "an encrypted backup exists from the last 2 days and a restore was tested within 90 days",
        "read the backup runs `wardbox backup` recorded in the store",
        vec![
            ("backups configured", yes_no(b.configured)),
            ("last backup", show(b.last_backup)),
            ("backup encrypted", yes_no(b.encrypted)),
            ("last tested restore", show(b.last_tested_restore)),
        ],
    )];
    if !b.configured {
        return Outcome::new(Status::Fail, "no backup is configured on this box", ev);
    }
    match b.last_backup {
        None => return Outcome::new(Status::Fail, "no backup has been made", ev),
        Some(t) if t < cx.days_ago(BACKUP_MAX_AGE_DAYS) => {
            return Outcome::new(Status::Fail, format!("the last backup is from {t}, older than 2 days"), ev);
        }
        Some(_) => {}
    }
    if !b.encrypted {
        return Outcome::new(Status::Fail, "backups are not encrypted", ev);
    }
    match b.last_tested_restore {
        None => Outcome::new(Status::NeedsAttention, "backups run but no restore has been tested", ev),
        Some(t) if t < cx.days_ago(RESTORE_TEST_MAX_AGE_DAYS) => {
            Outcome::new(Status::NeedsAttention, format!("the last tested restore is from {t}, more than 90 days ago"), ev)
        }
        Some(_) => Outcome::new(Status::Pass, "recent encrypted backup and a restore tested within 90 days", ev),
    }
}

// --- Reviews the box records itself -----------------------------------------------------------

/// The weekly activity review: a week between reviews, plus a grace for one done a few days
/// late (a holiday, the reviewer away), before the item needs attention.
const ACTIVITY_REVIEW_MAX_AGE_DAYS: i64 = 7;
const ACTIVITY_REVIEW_GRACE_DAYS: i64 = 3;
/// The quarterly access review: the longest quarter since its last decision.
const ACCESS_REVIEW_MAX_AGE_DAYS: i64 = 92;

fn check_activity_review(cx: &Ctx) -> Outcome {
    let max_days = ACTIVITY_REVIEW_MAX_AGE_DAYS + ACTIVITY_REVIEW_GRACE_DAYS;
    let check = format!(
        "a week of audit activity was reviewed on the box within {max_days} days (weekly, {ACTIVITY_REVIEW_GRACE_DAYS} days' grace)"
    );
    let how = "read the newest review recorded on the Activity review page (the store's activity_reviews)";
    let review = match &cx.facts.activity_review {
        Probe::Observed { value } => value,
        Probe::Unavailable { reason } => return cx.unavailable(&check, how, reason),
    };
    let Some(r) = review else {
        return Outcome::new(
            Status::NeedsAttention,
            "no weekly activity review has been recorded on the box",
            vec![cx.evidence(&check, how, vec![("last review", "never".into())])],
        );
    };
    let ev = vec![cx.evidence(
        &check,
        how,
        vec![("last review", format!("{} by {}", r.reviewed_at, r.reviewed_by)), ("week reviewed", format!("the week of {}", r.week))],
    )];
    if r.reviewed_at > cx.now {
        return Outcome::new(Status::NeedsAttention, format!("the last activity review is dated in the future ({})", r.reviewed_at), ev);
    }
    if r.reviewed_at < cx.days_ago(max_days) {
        return Outcome::new(
            Status::NeedsAttention,
            format!("the last activity review was on {} by {}, more than {max_days} days ago", r.reviewed_at, r.reviewed_by),
            ev,
        );
    }
    Outcome::new(Status::Pass, format!("the week of {} was reviewed by {} on {}", r.week, r.reviewed_by, r.reviewed_at), ev)
}

fn check_access_review(cx: &Ctx) -> Outcome {
    let check = format!(
        "each clinician's and nurse's patient access was confirmed or revoked on the box, the last decision within {ACCESS_REVIEW_MAX_AGE_DAYS} days (quarterly)"
    );
    let how = "read the newest decision recorded on the Access page (the store's access_reviews) and the users its quarter has not decided on";
    let review = match &cx.facts.access_review {
        Probe::Observed { value } => value,
        Probe::Unavailable { reason } => return cx.unavailable(&check, how, reason),
    };
    let Some(r) = review else {
        return Outcome::new(
            Status::NeedsAttention,
            "no quarterly access review has been recorded on the box",
            vec![cx.evidence(&check, how, vec![("last review", "never".into())])],
        );
    };
    let ev = vec![cx.evidence(
        &check,
        how,
        vec![
            ("last review", format!("{} by {}", r.reviewed_at, r.reviewed_by)),
            ("quarter", r.quarter.clone()),
            ("users decided", r.users_decided.to_string()),
            ("not decided", list_or_none(&r.not_decided)),
        ],
    )];
    if r.reviewed_at > cx.now {
        return Outcome::new(Status::NeedsAttention, format!("the last access review is dated in the future ({})", r.reviewed_at), ev);
    }
    if r.reviewed_at < cx.days_ago(ACCESS_REVIEW_MAX_AGE_DAYS) {
        return Outcome::new(
            Status::NeedsAttention,
            format!(
                "the last access review was on {} by {} ({}), more than {ACCESS_REVIEW_MAX_AGE_DAYS} days ago",
                r.reviewed_at, r.reviewed_by, r.quarter
            ),
            ev,
        );
    }
    if !r.not_decided.is_empty() {
        return Outcome::new(
            Status::NeedsAttention,
            format!("the access review of {} has not decided on: {}", r.quarter, r.not_decided.join(", ")),
            ev,
        );
    }
    Outcome::new(
        Status::Pass,
        format!("the access review of {} decided on {} users; last by {} on {}", r.quarter, r.users_decided, r.reviewed_by, r.reviewed_at),
        ev,
    )
}

// --- Physical (measured) ---------------------------------------------------------------------

fn check_usb_storage(cx: &Ctx) -> Outcome {
    let check = "USB mass storage cannot be used";
    let how = "checked that the usb-storage and uas drivers cannot load, that the kernel uses no USB device the box's USB policy did not let in (usbcore.authorized_default), whether an administrator's USB window is open, and listed USB block devices";
    let u = match &cx.facts.usb {
        Probe::Observed { value } => value,
        Probe::Unavailable { reason } => return cx.unavailable(check, how, reason),
    };
    let ev = vec![cx.evidence(
        check,
        how,
        vec![
            ("storage drivers blocked", yes_no(u.storage_driver_blocked)),
            ("how", u.method.clone()),
            (
                "USB devices authorized by default",
                match u.authorized_default {
                    Some(0) => "no (usbcore.authorized_default=0: only what the USB policy lets in)".to_owned(),
                    Some(v) => format!("yes (usbcore.authorized_default={v})"),
                    None => "not known".to_owned(),
                },
            ),
            ("USB window", u.open_window.clone().unwrap_or_else(|| "closed".to_owned())),
            ("USB block devices", list_or_none(&u.usb_block_devices)),
        ],
    )];
    if let Some(window) = &u.open_window {
        // An update an administrator started: the stick is in by design, read-only, and the
        // window closes by itself. Not a pass while it lasts; not a failure either.
        return Outcome::new(Status::NeedsAttention, format!("an administrator's USB window is open ({window}); make the report again once it has closed"), ev);
    }
    if !u.storage_driver_blocked {
        return Outcome::new(Status::Fail, "the USB storage drivers can load: a USB drive would be usable", ev);
    }
    if u.authorized_default != Some(0) {
        return Outcome::new(Status::Fail, "the kernel uses USB devices by default: only a USB policy that authorizes each device (usbcore.authorized_default=0) keeps other USB devices out", ev);
    }
    if !u.usb_block_devices.is_empty() {
        return Outcome::new(Status::Fail, format!("USB block devices are present: {}", u.usb_block_devices.join(", ")), ev);
    }
    Outcome::new(Status::Pass, format!("USB storage drivers blocked ({})", u.method), ev)
}

// --- Documentation ---------------------------------------------------------------------------

fn month_start(s: &str) -> Option<Date> {
    let (y, m) = s.split_once('-')?;
    Date::new(y.parse().ok()?, m.parse().ok()?, 1).ok()
}

/// The complete months (`YYYY-MM`, UTC) from `first` up to the month before `now`'s: those an
/// export must exist for (the current month is still being written). Empty for a `first` that
/// is not a `YYYY-MM` month.
pub fn complete_months_since(first: &str, now: Timestamp) -> Vec<String> {
    let this_month = now.to_zoned(TimeZone::UTC).date().first_of_month();
    let mut months = Vec::new();
    let mut month = match month_start(first) {
        Some(m) => m,
        None => return months,
    };
    while month < this_month {
        months.push(month.strftime("%Y-%m").to_string());
        month = match month.checked_add(1.month()) {
            Ok(m) => m,
            Err(_) => break,
        };
    }
    months
}

fn check_retention(cx: &Ctx) -> Outcome {
    let r = match &cx.facts.retention {
        Probe::Observed { value } => value,
        Probe::Unavailable { reason } => {
            return cx.unavailable(
                "audit records are kept six years: policy, and a verified export for every complete month",
                "read the retention setting and the monthly exports",
                reason,
            );
        }
    };
    let mut missing = Vec::new();
    let mut damaged = Vec::new();
    for name in r.first_record_month.as_deref().map(|first| complete_months_since(first, cx.now)).unwrap_or_default() {
        match r.exports.iter().find(|e| e.month == name) {
            None => missing.push(name),
            Some(e) if !e.checksum_ok => damaged.push(name),
            Some(_) => {}
        }
    }
    let ev = vec![cx.evidence(
        "audit records are kept six years: policy, and a verified export for every complete month",
        "read the retention setting and checked each monthly export's checksum",
        vec![
            ("retention (years)", r.retention_years.to_string()),
            ("first record month", r.first_record_month.clone().unwrap_or_else(|| "no records".into())),
            ("exports", r.exports.len().to_string()),
            ("months without an export", list_or_none(&missing)),
            ("exports failing their checksum", list_or_none(&damaged)),
        ],
    )];
    if r.retention_years < 6 {
        return Outcome::new(Status::Fail, format!("the retention setting is {} years, less than six", r.retention_years), ev);
    }
    if r.first_record_month.is_some() && r.first_record_month.as_deref().and_then(month_start).is_none() {
        return Outcome::new(Status::Fail, "the first record month is not a valid YYYY-MM month", ev);
    }
    if !damaged.is_empty() {
        return Outcome::new(Status::Fail, format!("exports fail their checksum: {}", damaged.join(", ")), ev);
    }
    if !missing.is_empty() {
        return Outcome::new(Status::NeedsAttention, format!("months without an export: {}", missing.join(", ")), ev);
    }
    Outcome::new(Status::Pass, format!("{}-year retention; every complete month exported and verified", r.retention_years), ev)
}

// --- Attestations and waivers ----------------------------------------------------------------

fn attestation_outcome(cx: &Ctx, item: &str, validity: Validity) -> Outcome {
    let how = "entered on the Reports page by a named person; the box cannot observe this control";
    let candidates: Vec<&Attestation> = cx.facts.attestations.iter().filter(|a| a.item == item).collect();
    // The most recent one counts; ties broken by the document name so the choice is stable.
    let latest = candidates.iter().max_by(|a, b| a.attested_at.cmp(&b.attested_at).then_with(|| a.document.cmp(&b.document)));
    let Some(a) = latest else {
        return Outcome::new(
            Status::NeedsAttention,
            format!("no attestation has been recorded (needed {})", validity.describe()),
            vec![cx.evidence("a valid attestation exists", how, vec![("attestations", "none".into())])],
        );
    };
    let cap = a.attested_at.checked_add(SignedDuration::from_hours(24 * validity.days())).unwrap_or(Timestamp::MAX);
    let until = a.valid_until.min(cap);
    let evidence = Evidence {
        check: "a valid attestation exists".into(),
        how: how.into(),
        at: a.attested_at,
        values: [
            ("attested by", a.attested_by.clone()),
            ("attested at", a.attested_at.to_string()),
            ("document", a.document.clone()),
            ("valid until (as entered)", a.valid_until.to_string()),
            ("valid until (at most)", format!("{until} ({})", validity.describe())),
        ]
        .into_iter()
        .map(|(n, v)| Observed { name: n.into(), value: v })
        .collect(),
    };
    let ev = vec![evidence];
    if a.attested_by.trim().is_empty() || a.document.trim().is_empty() {
        return Outcome::new(Status::NeedsAttention, "the attestation does not name who attested and which document", ev);
    }
    if a.attested_at > cx.now {
        return Outcome::new(Status::NeedsAttention, format!("the attestation is dated in the future ({})", a.attested_at), ev);
    }
    if until <= cx.now {
        return Outcome::new(Status::NeedsAttention, format!("the attestation by {} expired on {until}", a.attested_by), ev);
    }
    Outcome::new(
        Status::Attested,
        format!("attested by {} on {} ({}); valid until {until}", a.attested_by, a.attested_at, a.document),
        ev,
    )
}

/// Why a waiver cannot stand, if it cannot.
fn waiver_problem(w: &Waiver, now: Timestamp) -> Option<String> {
    if w.approver.trim().is_empty() {
        return Some("it names no approver".into());
    }
    if w.justification.trim().is_empty() {
        return Some("it gives no justification".into());
    }
    if w.approved_at > now {
        return Some(format!("it is dated in the future ({})", w.approved_at));
    }
    if w.expires_at <= now {
        return Some(format!("it expired on {}", w.expires_at));
    }
    None
}

fn evaluate_item(cx: &Ctx, def: &ItemDef) -> Item {
    let mut outcome = match def.kind {
        Kind::Measured(check) => check(cx),
        Kind::Attested(validity) => attestation_outcome(cx, def.id, validity),
    };
    let method = match def.kind {
        Kind::Measured(_) => Method::Measured,
        Kind::Attested(_) => Method::Attestation,
    };
    if method == Method::Measured && cx.facts.attestations.iter().any(|a| a.item == def.id) {
        outcome.evidence.push(cx.evidence(
            "attestations for this item",
            "technical items are measured, never attested",
            vec![("attestation", "entered and ignored".into())],
        ));
    }
    let mut applied = None;
    let waivers: Vec<&Waiver> = cx.facts.waivers.iter().filter(|w| w.item == def.id).collect();
    if !waivers.is_empty() && !outcome.status.in_order() {
        let problems: Vec<String> = waivers.iter().filter_map(|w| waiver_problem(w, cx.now)).collect();
        let valid = waivers.iter().filter(|w| waiver_problem(w, cx.now).is_none()).max_by_key(|w| w.expires_at);
        match (def.waivable, valid) {
            (false, _) => outcome.evidence.push(cx.evidence(
                "waivers for this item",
                "read the waivers entered on the Reports page",
                vec![("waiver", "ignored: this item cannot be waived".into())],
            )),
            (true, Some(w)) => {
                outcome.evidence.push(cx.evidence(
                    "waivers for this item",
                    "read the waivers entered on the Reports page",
                    vec![
                        ("approver", w.approver.clone()),
                        ("justification", w.justification.clone()),
                        ("approved at", w.approved_at.to_string()),
                        ("expires at", w.expires_at.to_string()),
                        ("finding without the waiver", format!("{}: {}", outcome.status.label(), outcome.reason)),
                    ],
                ));
                outcome.status = Status::NotApplicable;
                outcome.reason = format!(
                    "accepted exception approved by {} until {}: {}",
                    w.approver, w.expires_at, w.justification
                );
                applied = Some((*w).clone());
            }
            (true, None) => outcome.evidence.push(cx.evidence(
                "waivers for this item",
                "read the waivers entered on the Reports page",
                vec![("waiver", format!("not applied: {}", problems.join("; ")))],
            )),
        }
    }
    let remediation = if outcome.status.in_order() { None } else { Some(outcome.remediation.unwrap_or_else(|| def.remediation.to_string())) };
    Item {
        id: def.id.to_string(),
        title: def.title.to_string(),
        section: def.section.to_string(),
        references: def.references.iter().map(|r| r.to_string()).collect(),
        method,
        status: outcome.status,
        reason: outcome.reason,
        evidence: outcome.evidence,
        remediation,
        waiver: applied,
    }
}

// --- Data flows ------------------------------------------------------------------------------

fn data_flows(facts: &Facts) -> Vec<DataFlow> {
    let tls = match &facts.tls {
        Probe::Observed { value } => format!(
            "TLS 1.3 {} (live handshake); TLS 1.2 {}",
            if value.tls13.accepted { "accepted" } else { "REFUSED" },
            if value.tls12.accepted { "ACCEPTED" } else { "refused" }
        ),
        Probe::Unavailable { reason } => format!("TLS not measured: {reason}"),
    };
    let mut flows: Vec<DataFlow> = facts
        .network
        .listeners
        .iter()
        .map(|l| DataFlow {
            from: l.audience.clone(),
            to: format!("box {}", l.service),
            channel: format!("{} {}", l.protocol, l.bind),
            purpose: l.service.clone(),
            control: if l.protocol.eq_ignore_ascii_case("https") { tls.clone() } else { "no TLS".into() },
        })
        .collect();
    let engine = match &facts.engine_reach {
        Probe::Observed { value } => {
            let own = agent_loopback_endpoint(&facts.network.engine_channel);
            let own_answers = value.attempts.iter().any(|a| a.connected() && own.is_some_and(|o| a.target.parse::<SocketAddr>().ok() == Some(o)));
            format!(
                "engine port refused on {} of {} addresses (live connects){}",
                value.attempts.iter().filter(|a| !a.connected()).count(),
                value.attempts.len(),
                if own_answers { "; the agent's own loopback endpoint answers" } else { "" }
            )
        }
        Probe::Unavailable { reason } => format!("engine reachability not measured: {reason}"),
    };
    flows.push(DataFlow {
        from: "agent".into(),
        to: "inference engine".into(),
        channel: facts.network.engine_channel.clone(),
        purpose: "prompts and answers (local only)".into(),
        control: engine,
    });
    match &facts.firewall {
        Probe::Observed { value } => {
            for r in &value.allowed_outbound {
                flows.push(DataFlow {
                    from: "box".into(),
                    to: r.destination.clone(),
                    channel: format!("{}/{}", r.protocol, r.port),
                    purpose: r.purpose.clone(),
                    control: "allowed by the egress policy".into(),
                });
            }
            flows.push(DataFlow {
                from: "box".into(),
                to: "anything else (internet)".into(),
                channel: "any".into(),
                purpose: "none: nothing leaves".into(),
                control: format!(
                    "output policy {}; {} packets blocked; drift: {}",
                    value.output_policy,
                    value.blocked_outbound_packets,
                    list_or_none(&value.drift)
                ),
            });
        }
        Probe::Unavailable { reason } => flows.push(DataFlow {
            from: "box".into(),
            to: "anything else (internet)".into(),
            channel: "any".into(),
            purpose: "none: nothing should leave".into(),
            control: format!("NOT MEASURED: {reason}"),
        }),
    }
    flows
}

/// The item ids, in report order (for callers that list or validate them, e.g. attestation
/// forms).
pub fn item_ids() -> impl Iterator<Item = &'static str> {
    ITEMS.iter().map(|d| d.id)
}

/// Whether an item id is an attestation (administrative or physical) item.
pub fn is_attestation_item(id: &str) -> bool {
    ITEMS.iter().any(|d| d.id == id && matches!(d.kind, Kind::Attested(_)))
}

/// Whether an item id names an item a waiver may stand in for.
pub fn is_waivable_item(id: &str) -> bool {
    ITEMS.iter().any(|d| d.id == id && d.waivable)
}

/// Evaluate the checklist. Pure: the same facts and time give the same report.
pub fn evaluate(facts: &Facts, now: Timestamp) -> Report {
    let cx = Ctx { facts, now };
    let items: Vec<Item> = ITEMS.iter().map(|d| evaluate_item(&cx, d)).collect();
    Report {
        format_version: crate::report::FORMAT_VERSION,
        box_name: facts.box_name.clone(),
        profile: facts.profile.clone(),
        generated_at: now,
        summary: Summary::count(&items),
        previous: None,
        changes: Vec::new(),
        sections: SECTIONS
            .iter()
            .map(|s| Section { id: s.id.into(), title: s.title.into(), reference: s.reference.into() })
            .collect(),
        items,
        inventory: facts.inventory.clone(),
        boot: facts.boot.clone(),
        data_flows: data_flows(facts),
    }
}

#[path = "checklist_measured_boot.rs"]
mod measured_boot;

#[cfg(test)]
#[path = "checklist_tests.rs"]
mod tests;
