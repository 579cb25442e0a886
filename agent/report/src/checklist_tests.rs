//! Every check has a test that makes it pass and one that makes it fail, and each asserts that
//! the evidence names the cause (an observed value with the cause in it).

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::facts::*;
use crate::sample;

fn now() -> Timestamp {
    "2026-11-29T10:00:00Z".parse().expect("time")
}

fn days_ago(d: i64) -> Timestamp {
    now().checked_sub(SignedDuration::from_hours(24 * d)).expect("time")
}

fn days_ahead(d: i64) -> Timestamp {
    now().checked_add(SignedDuration::from_hours(24 * d)).expect("time")
}

fn run(change: impl FnOnce(&mut Facts)) -> Report {
    let mut facts = sample::healthy(now());
    change(&mut facts);
    evaluate(&facts, now())
}

/// The item has `status`, a reason, a remediation exactly when it is not in order, and an
/// observed value named `name` whose value contains `value`.
#[track_caller]
fn expect(report: &Report, id: &str, status: Status, name: &str, value: &str) {
    let item = report.item(id).unwrap_or_else(|| panic!("no item {id}"));
    assert_eq!(item.status, status, "{id}: {}", item.reason);
    assert!(!item.reason.is_empty(), "{id} has no reason");
    assert_eq!(item.remediation.is_some(), !status.in_order(), "{id}: remediation {:?}", item.remediation);
    let found = item.evidence.iter().flat_map(|e| &e.values).any(|o| o.name == name && o.value.contains(value));
    assert!(found, "{id}: no evidence {name:?} containing {value:?} in {:#?}", item.evidence);
}

macro_rules! check {
    ($name:ident, $id:expr,
     pass: |$p:ident| $pass:block => ($pname:expr, $pvalue:expr),
     fail: |$f:ident| $fail:block => $status:expr, ($fname:expr, $fvalue:expr)) => {
        mod $name {
            use super::*;
            #[test]
            fn passes() {
                #[allow(unused_variables)]
                let r = run(|$p| $pass);
                expect(&r, $id, Status::Pass, $pname, $pvalue);
            }
            #[test]
            fn fails_naming_the_cause() {
                let r = run(|$f| $fail);
                expect(&r, $id, $status, $fname, $fvalue);
            }
        }
    };
}

fn volume(f: &mut Facts) -> &mut VolumeFacts {
    match &mut f.volume {
        Probe::Observed { value } => value,
        Probe::Unavailable { .. } => panic!("sample volume"),
    }
}
fn accounts(f: &mut Facts) -> &mut Vec<Account> {
    match &mut f.accounts {
        Probe::Observed { value } => value,
        Probe::Unavailable { .. } => panic!("sample accounts"),
    }
}
fn requests(f: &mut Facts) -> &mut RequestAudit {
    match &mut f.request_audit {
        Probe::Observed { value } => value,
        Probe::Unavailable { .. } => panic!("sample request audit"),
    }
}
fn data_space(f: &mut Facts) -> &mut DataSpace {
    match &mut f.data_space {
        Probe::Observed { value } => value,
        Probe::Unavailable { .. } => panic!("sample data space"),
    }
}
fn sign_ins(f: &mut Facts) -> &mut SignInActivity {
    match &mut f.sign_ins {
        Probe::Observed { value } => value,
        Probe::Unavailable { .. } => panic!("sample sign-ins"),
    }
}
fn retention(f: &mut Facts) -> &mut RetentionFacts {
    match &mut f.retention {
        Probe::Observed { value } => value,
        Probe::Unavailable { .. } => panic!("sample retention"),
    }
}
fn audit(f: &mut Facts) -> &mut AuditFacts {
    match &mut f.audit {
        Probe::Observed { value } => value,
        Probe::Unavailable { .. } => panic!("sample audit"),
    }
}
fn tls(f: &mut Facts) -> &mut TlsProbe {
    match &mut f.tls {
        Probe::Observed { value } => value,
        Probe::Unavailable { .. } => panic!("sample tls"),
    }
}
fn firewall(f: &mut Facts) -> &mut FirewallFacts {
    match &mut f.firewall {
        Probe::Observed { value } => value,
        Probe::Unavailable { .. } => panic!("sample firewall"),
    }
}
fn usb(f: &mut Facts) -> &mut UsbFacts {
    match &mut f.usb {
        Probe::Observed { value } => value,
        Probe::Unavailable { .. } => panic!("sample usb"),
    }
}
fn store(f: &mut Facts) -> &mut StoreFacts {
    match &mut f.store {
        Probe::Observed { value } => value,
        Probe::Unavailable { .. } => panic!("sample store"),
    }
}

check!(unique_user_id, ids::UNIQUE_USER_ID,
    pass: |f| {} => ("accounts", "4"),
    fail: |f| { accounts(f)[1].user_id = "Dr.Smith".into(); } => Status::Fail, ("duplicated user ids", "dr.smith"));

check!(emergency_access, ids::EMERGENCY_ACCESS,
    pass: |f| {} => ("break-glass session limit (s)", "3600"),
    fail: |f| { f.sessions.break_glass_enabled = false; } => Status::Fail, ("break-glass enabled", "no"));

check!(automatic_logoff, ids::AUTOMATIC_LOGOFF,
    pass: |f| {} => ("idle timeout (s)", "900"),
    fail: |f| { f.sessions.idle_timeout_secs = 1800; } => Status::Fail, ("idle timeout (s)", "1800"));

check!(encryption_at_rest, ids::ENCRYPTION_AT_REST,
    pass: |f| {} => ("cipher", "aes-xts-plain64"),
    fail: |f| { volume(f).plain_directory = true; } => Status::Fail, ("plain directory (dev profile)", "yes"));

check!(encryption_weak_cipher, ids::ENCRYPTION_AT_REST,
    pass: |f| {} => ("key size (bits)", "512"),
    fail: |f| { volume(f).cipher = "aes-cbc-essiv:sha256".into(); } => Status::Fail, ("cipher", "aes-cbc"));

check!(encryption_seal_stale, ids::ENCRYPTION_AT_REST,
    pass: |f| {} => ("seal matches current PCRs", "yes"),
    fail: |f| {
        if let Probe::Observed { value } = &mut f.tpm { value.seal_matches_current_pcrs = false; }
    } => Status::NeedsAttention, ("seal matches current PCRs", "no"));

check!(encryption_recovery_unlock, ids::ENCRYPTION_AT_REST,
    pass: |f| {} => ("unlocked by", "tpm"),
    fail: |f| { volume(f).unlocked_by = "recovery".into(); } => Status::NeedsAttention, ("unlocked by", "recovery"));

check!(audit_every_interaction, ids::AUDIT_EVERY_INTERACTION,
    pass: |f| {} => ("served without an audit record", "none"),
    fail: |f| { requests(f).classes[0].audited = 637; } => Status::Fail, ("served without an audit record", "3 patient_data requests"));

check!(audit_every_admin_interaction, ids::AUDIT_EVERY_INTERACTION,
    pass: |f| {} => ("audited", "52"),
    fail: |f| { requests(f).classes[1].audited = 50; } => Status::Fail, ("served without an audit record", "2 administration requests"));

check!(audit_counters_cover_patient_data, ids::AUDIT_EVERY_INTERACTION,
    pass: |f| {} => ("route class", "patient_data"),
    fail: |f| { requests(f).classes.remove(0); } => Status::Fail, ("route class", "administration"));

check!(audit_write_failures, ids::AUDIT_EVERY_INTERACTION,
    pass: |f| {} => ("audit write failures", "0"),
    fail: |f| { requests(f).classes[0].audit_failures = 2; } => Status::NeedsAttention, ("audit write failures", "2"));

check!(audit_room_on_the_data_volume, ids::AUDIT_EVERY_INTERACTION,
    pass: |f| {} => ("free space", "301.0 GiB free of 512.0 GiB"),
    fail: |f| { data_space(f).level = "low".into(); data_space(f).summary = "40.0 GiB free of 512.0 GiB (7.8 %)".into(); } => Status::NeedsAttention, ("level", "low"));

#[test]
fn free_space_that_cannot_be_read_needs_attention_and_critical_space_is_named() {
    let r = run(|f| f.data_space = Probe::unavailable("statvfs /var/lib/wardbox/data: EIO"));
    expect(&r, ids::AUDIT_EVERY_INTERACTION, Status::NeedsAttention, "not read", "EIO");
    let r = run(|f| {
        data_space(f).level = "critical".into();
        data_space(f).summary = "10.0 GiB free of 512.0 GiB (2.0 %)".into();
    });
    let item = r.item(ids::AUDIT_EVERY_INTERACTION).expect("item");
    assert_eq!(item.reason, "the data volume is critical on space (10.0 GiB free of 512.0 GiB (2.0 %)); when it is full, audit records and the requests they cover are refused");
    assert!(item.remediation.as_deref().is_some_and(|r| r.contains("wardbox backup restore-box")), "{:?}", item.remediation);
}

#[test]
fn unaudited_sign_in_pages_are_not_a_gap() {
    // Sign-in pages are audited by their outcome (login, login_failed), not per request.
    let r = run(|f| requests(f).classes[3].served = 500);
    expect(&r, ids::AUDIT_EVERY_INTERACTION, Status::Pass, "served", "500");
    let r = run(|f| requests(f).classes.retain(|c| c.class != "patient_data"));
    let item = r.item(ids::AUDIT_EVERY_INTERACTION).expect("item");
    assert!(item.reason.contains("do not cover the patient-data routes"), "{}", item.reason);
}

check!(audit_log_integrity, ids::AUDIT_LOG_INTEGRITY,
    pass: |f| {} => ("first break", "none"),
    fail: |f| { audit(f).first_break = Some("record 17 was altered".into()); } => Status::Fail, ("first break", "record 17 was altered"));

check!(audit_checkpoints, ids::AUDIT_LOG_INTEGRITY,
    pass: |f| {} => ("checkpoints checked", "52"),
    fail: |f| { audit(f).checkpoints_mismatched = 1; } => Status::Fail, ("checkpoints not matching", "1"));

check!(audit_incremental_needs_a_recent_full_walk, ids::AUDIT_LOG_INTEGRITY,
    pass: |f| {} => ("verification", "incremental, from record 51001"),
    fail: |f| { audit(f).last_full_walk = None; } => Status::NeedsAttention, ("last full walk", "none on record"));

check!(audit_old_full_walk, ids::AUDIT_LOG_INTEGRITY,
    pass: |f| { audit(f).full_walk = true; audit(f).last_full_walk = None; } => ("verification", "full walk"),
    fail: |f| { audit(f).last_full_walk = Some(FullWalk { at: days_ago(40), head_seq: 40_000 }); } => Status::NeedsAttention, ("last full walk", "intact up to record 40000"));

check!(ephi_authentication, ids::EPHI_AUTHENTICATION,
    pass: |f| {} => ("page HMAC", "HMAC_SHA512"),
    fail: |f| { store(f).integrity_errors = 3; } => Status::Fail, ("pages failing", "3"));

check!(ephi_without_hmac, ids::EPHI_AUTHENTICATION,
    pass: |f| {} => ("pages checked", "4096"),
    fail: |f| { store(f).hmac_algorithm.clear(); } => Status::Fail, ("page HMAC", "none"));

check!(person_authentication, ids::PERSON_AUTHENTICATION,
    pass: |f| {} => ("local accounts with argon2id", "3"),
    fail: |f| { accounts(f)[0].password_scheme.clear(); } => Status::Fail, ("local accounts without an argon2id password", "dr.smith (no password)"));

check!(directory_sign_in, ids::DIRECTORY_SIGN_IN,
    pass: |f| {} => ("bind", "ok"),
    fail: |f| {
        f.ldap = LdapFacts::Configured {
            url: "ldaps://10.0.0.5".into(),
            bind: Probe::observed(LdapBind { tls: true, bind_ok: false, detail: "invalid credentials (49)".into() }),
        };
    } => Status::Fail, ("detail", "invalid credentials"));

check!(directory_without_tls, ids::DIRECTORY_SIGN_IN,
    pass: |f| {} => ("TLS", "yes"),
    fail: |f| {
        f.ldap = LdapFacts::Configured {
            url: "ldap://10.0.0.5".into(),
            bind: Probe::observed(LdapBind { tls: false, bind_ok: true, detail: "bind ok".into() }),
        };
    } => Status::Fail, ("TLS", "no"));

check!(transmission_integrity, ids::TRANSMISSION_INTEGRITY,
    pass: |f| {} => ("TLS 1.3 handshake", "TLS13_AES_256_GCM_SHA384"),
    fail: |f| { tls(f).certificate_not_after = days_ago(1); } => Status::Fail, ("certificate valid until", "2026-11-28"));

check!(transmission_certificate_expiring, ids::TRANSMISSION_INTEGRITY,
    pass: |f| {} => ("certificate subject", "wardbox-clinic-01"),
    fail: |f| { tls(f).certificate_not_after = days_ahead(10); } => Status::NeedsAttention, ("certificate valid until", "2026-12-09"));

check!(transmission_encryption, ids::TRANSMISSION_ENCRYPTION,
    pass: |f| {} => ("TLS 1.2 only", "refused"),
    fail: |f| { tls(f).tls12 = Handshake { accepted: true, detail: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into() }; } => Status::Fail, ("TLS 1.2 only", "accepted"));

check!(transmission_tls13_refused, ids::TRANSMISSION_ENCRYPTION,
    pass: |f| {} => ("TLS 1.3 only", "accepted"),
    fail: |f| { tls(f).tls13 = Handshake { accepted: false, detail: "connection refused".into() }; } => Status::Fail, ("TLS 1.3 only", "connection refused"));

check!(transmission_plain_http, ids::TRANSMISSION_ENCRYPTION,
    pass: |f| {} => ("plain HTTP", "refused"),
    fail: |f| { tls(f).plain_http_refused = false; } => Status::Fail, ("plain HTTP", "answered"));

check!(engine_unreachable, ids::ENGINE_UNREACHABLE,
    pass: |f| {} => ("connect", "192.168.10.5:11434: refused"),
    fail: |f| {
        if let Probe::Observed { value } = &mut f.engine_reach { value.attempts[1].result = "connected".into(); }
    } => Status::Fail, ("connect", "192.168.10.5:11434: connected"));

check!(engine_nothing_probed, ids::ENGINE_UNREACHABLE,
    pass: |f| {} => ("engine channel", "unix:"),
    fail: |f| { f.engine_reach = Probe::observed(EngineReachProbe { attempts: vec![] }); } => Status::Fail, ("engine channel", "unix:"));

/// The appliance bridges 127.0.0.1:11434 to the engine's socket for the agent: that connect
/// is the agent's own channel; the same port on any other address is a failure.
fn agent_loopback_endpoint_answers(f: &mut Facts) {
    f.network.engine_channel = "http://127.0.0.1:11434".into();
    if let Probe::Observed { value } = &mut f.engine_reach {
        value.attempts[0].result = "connected".into();
    }
}

check!(engine_loopback_endpoint_of_the_agent, ids::ENGINE_UNREACHABLE,
    pass: |f| { agent_loopback_endpoint_answers(f); } => ("connect", "127.0.0.1:11434: connected (the agent's own loopback endpoint"),
    fail: |f| {
        agent_loopback_endpoint_answers(f);
        if let Probe::Observed { value } = &mut f.engine_reach { value.attempts[2].result = "connected".into(); }
    } => Status::Fail, ("connect", "[::1]:11434: connected"));

check!(engine_loopback_without_a_loopback_endpoint, ids::ENGINE_UNREACHABLE,
    pass: |f| {} => ("connect", "127.0.0.1:11434: refused"),
    fail: |f| {
        // The agent reaches the engine over its Unix socket: a loopback listener is someone else's.
        if let Probe::Observed { value } = &mut f.engine_reach { value.attempts[0].result = "connected".into(); }
    } => Status::Fail, ("connect", "127.0.0.1:11434: connected"));

check!(outbound_blocked, ids::OUTBOUND_BLOCKED,
    pass: |f| {} => ("outbound packets blocked", "1234"),
    fail: |f| { firewall(f).drift = vec!["table inet wardbox was flushed: its chains hold no rules".into()]; } => Status::Fail, ("drift", "flushed"));

check!(outbound_policy_accept, ids::OUTBOUND_BLOCKED,
    pass: |f| {} => ("output policy", "drop"),
    fail: |f| { firewall(f).output_policy = "accept".into(); } => Status::Fail, ("output policy", "accept"));

check!(termination, ids::TERMINATION,
    pass: |f| {} => ("unused for 90 days", "none"),
    fail: |f| { accounts(f)[0].last_sign_in = Some(days_ago(120)); } => Status::NeedsAttention, ("unused for 90 days", "dr.smith (last sign-in 2026-08-01"));

check!(termination_never_signed_in, ids::TERMINATION,
    pass: |f| { accounts(f)[3].last_sign_in = None; accounts(f)[3].created_at = Some(days_ago(10)); } => ("enabled accounts", "4"),
    fail: |f| { accounts(f)[3].last_sign_in = None; } => Status::NeedsAttention, ("unused for 90 days", "auditor.kim (never signed in"));

check!(termination_no_sign_in_in_the_window, ids::TERMINATION,
    pass: |f| { accounts(f)[3].sign_ins_searched_since = Some(days_ago(120)); } => ("unused for 90 days", "none"),
    fail: |f| { accounts(f)[3].last_sign_in = None; accounts(f)[3].sign_ins_searched_since = Some(days_ago(120)); } => Status::NeedsAttention, ("unused for 90 days", "auditor.kim (no sign-in since 2026-08-01"));

check!(login_monitoring, ids::LOGIN_MONITORING,
    pass: |f| {} => ("failed sign-ins (30 days)", "7"),
    fail: |f| { f.sessions.lockout_threshold = 0; } => Status::Fail, ("account locks after failures", "0"));

check!(login_throttle_per_address, ids::LOGIN_MONITORING,
    pass: |f| {} => ("address paused after failures", "10"),
    fail: |f| { f.sessions.signin_block_after = 3; } => Status::Fail, ("address paused after failures", "3"));

check!(login_lock_needs_three_addresses, ids::LOGIN_MONITORING,
    pass: |f| {} => ("from at least this many addresses", "3"),
    fail: |f| { f.sessions.lockout_addresses = 2; } => Status::NeedsAttention, ("from at least this many addresses", "2"));

check!(login_lock_by_one_address, ids::LOGIN_MONITORING,
    pass: |f| {} => ("within (s)", "3600"),
    fail: |f| { f.sessions.lockout_addresses = 1; } => Status::Fail, ("from at least this many addresses", "1"));

check!(login_failures_unaudited, ids::LOGIN_MONITORING,
    pass: |f| {} => ("failed sign-ins audited", "yes"),
    fail: |f| { sign_ins(f).failures_audited = false; } => Status::Fail, ("failed sign-ins audited", "no"));

check!(password_management, ids::PASSWORD_MANAGEMENT,
    pass: |f| {} => ("minimum length", "12"),
    fail: |f| { f.sessions.password_min_length = 8; } => Status::Fail, ("minimum length", "8"));

check!(password_initial, ids::PASSWORD_MANAGEMENT,
    pass: |f| {} => ("accounts still on their initial password", "none"),
    fail: |f| { accounts(f)[2].must_change_password = true; } => Status::NeedsAttention, ("accounts still on their initial password", "pm.jones"));

check!(contingency_backups, ids::CONTINGENCY_BACKUPS,
    pass: |f| {} => ("backup encrypted", "yes"),
    fail: |f| {
        f.backups = BackupFacts { configured: false, last_backup: None, encrypted: false, last_tested_restore: None };
    } => Status::Fail, ("backups configured", "no"));

check!(contingency_old_backup, ids::CONTINGENCY_BACKUPS,
    pass: |f| {} => ("last tested restore", "2026-10-30"),
    fail: |f| { f.backups.last_backup = Some(days_ago(5)); } => Status::Fail, ("last backup", "2026-11-24"));

check!(contingency_untested_restore, ids::CONTINGENCY_BACKUPS,
    pass: |f| {} => ("backups configured", "yes"),
    fail: |f| { f.backups.last_tested_restore = None; } => Status::NeedsAttention, ("last tested restore", "never"));

check!(contingency_stale_drill, ids::CONTINGENCY_BACKUPS,
    pass: |f| { f.backups.last_tested_restore = Some(days_ago(89)); } => ("last tested restore", "2026-09-01"),
    fail: |f| { f.backups.last_tested_restore = Some(days_ago(91)); } => Status::NeedsAttention, ("last tested restore", "2026-08-30"));

fn activity_review(f: &mut Facts) -> &mut ActivityReview {
    match &mut f.activity_review {
        Probe::Observed { value: Some(r) } => r,
        _ => panic!("sample activity review"),
    }
}

fn access_review(f: &mut Facts) -> &mut AccessReview {
    match &mut f.access_review {
        Probe::Observed { value: Some(r) } => r,
        _ => panic!("sample access review"),
    }
}

// Weekly: 7 days and 3 days' grace.
check!(activity_review_within_its_week_and_grace, ids::ACTIVITY_REVIEW,
    pass: |f| { activity_review(f).reviewed_at = days_ago(9); } => ("last review", "2026-11-20T10:00:00Z by pm.jones"),
    fail: |f| { activity_review(f).reviewed_at = days_ago(11); } => Status::NeedsAttention, ("last review", "2026-11-18T10:00:00Z by pm.jones"));

check!(activity_review_never_recorded, ids::ACTIVITY_REVIEW,
    pass: |f| {} => ("week reviewed", "the week of 2026-11-16"),
    fail: |f| { f.activity_review = Probe::observed(None); } => Status::NeedsAttention, ("last review", "never"));

check!(activity_review_unreadable, ids::ACTIVITY_REVIEW,
    pass: |f| {} => ("last review", "by pm.jones"),
    fail: |f| { f.activity_review = Probe::unavailable("the store cannot be opened"); } => Status::Fail, ("probe", "the store cannot be opened"));

// Quarterly: the longest quarter, 92 days.
check!(access_review_within_a_quarter, ids::ACCESS_REVIEW,
    pass: |f| { access_review(f).reviewed_at = days_ago(91); } => ("last review", "2026-08-30T10:00:00Z by it.admin"),
    fail: |f| { access_review(f).reviewed_at = days_ago(93); } => Status::NeedsAttention, ("last review", "2026-08-28T10:00:00Z by it.admin"));

check!(access_review_of_every_clinician_and_nurse, ids::ACCESS_REVIEW,
    pass: |f| {} => ("not decided", "none"),
    fail: |f| { access_review(f).not_decided = vec!["nurse.lee".into()]; } => Status::NeedsAttention, ("not decided", "nurse.lee"));

check!(access_review_never_recorded, ids::ACCESS_REVIEW,
    pass: |f| {} => ("users decided", "2"),
    fail: |f| { f.access_review = Probe::observed(None); } => Status::NeedsAttention, ("last review", "never"));

#[test]
fn a_review_the_box_records_cannot_be_replaced_by_an_attestation() {
    let r = run(|f| {
        f.activity_review = Probe::observed(None);
        f.access_review = Probe::observed(None);
        for item in [ids::ACTIVITY_REVIEW, ids::ACCESS_REVIEW] {
            f.attestations.push(Attestation {
                item: item.into(),
                attested_by: "pm.jones".into(),
                attested_at: days_ago(1),
                document: "Review binder".into(),
                valid_until: days_ahead(60),
            });
        }
    });
    for item in [ids::ACTIVITY_REVIEW, ids::ACCESS_REVIEW] {
        expect(&r, item, Status::NeedsAttention, "attestation", "entered and ignored");
        assert_eq!(r.item(item).expect("item").method, Method::Measured);
    }
    assert!(!is_attestation_item(ids::ACTIVITY_REVIEW) && !is_attestation_item(ids::ACCESS_REVIEW));
}

check!(usb_storage, ids::USB_STORAGE,
    pass: |f| {} => ("storage drivers blocked", "yes"),
    fail: |f| { usb(f).storage_driver_blocked = false; } => Status::Fail, ("storage drivers blocked", "no"));

check!(usb_device_policy, ids::USB_STORAGE,
    pass: |f| {} => ("USB devices authorized by default", "no (usbcore.authorized_default=0"),
    fail: |f| { usb(f).authorized_default = Some(-1); } => Status::Fail, ("USB devices authorized by default", "yes (usbcore.authorized_default=-1)"));

check!(usb_unknown_device_policy, ids::USB_STORAGE,
    pass: |f| {} => ("USB window", "closed"),
    fail: |f| { usb(f).authorized_default = None; } => Status::Fail, ("USB devices authorized by default", "not known"));

check!(usb_window_open, ids::USB_STORAGE,
    pass: |f| {} => ("USB window", "closed"),
    fail: |f| { usb(f).open_window = Some("for update by admin:jo until 2026-11-29T10:42:00Z".into()); usb(f).storage_driver_blocked = false; } => Status::NeedsAttention, ("USB window", "for update by admin:jo"));

check!(usb_device_present, ids::USB_STORAGE,
    pass: |f| {} => ("USB block devices", "none"),
    fail: |f| { usb(f).usb_block_devices = vec!["sdb (USB 16 GB)".into()]; } => Status::Fail, ("USB block devices", "sdb"));

check!(retention, ids::RETENTION,
    pass: |f| {
        retention(f).first_record_month = Some("2026-09".into());
        retention(f).exports = vec![
            MonthExport { month: "2026-09".into(), checksum_ok: true },
            MonthExport { month: "2026-10".into(), checksum_ok: true },
        ];
    } => ("exports", "2"),
    fail: |f| { retention(f).retention_years = 5; } => Status::Fail, ("retention (years)", "5"));

check!(retention_missing_month, ids::RETENTION,
    pass: |f| {} => ("months without an export", "none"),
    fail: |f| {
        retention(f).first_record_month = Some("2026-09".into());
        retention(f).exports = vec![MonthExport { month: "2026-09".into(), checksum_ok: true }];
    } => Status::NeedsAttention, ("months without an export", "2026-10"));

check!(retention_damaged_export, ids::RETENTION,
    pass: |f| {} => ("exports failing their checksum", "none"),
    fail: |f| {
        retention(f).first_record_month = Some("2026-10".into());
        retention(f).exports = vec![MonthExport { month: "2026-10".into(), checksum_ok: false }];
    } => Status::Fail, ("exports failing their checksum", "2026-10"));

fn attestation_items() -> Vec<&'static str> {
    item_ids().filter(|id| is_attestation_item(id)).collect()
}

#[test]
fn the_healthy_sample_passes_or_is_attested_everywhere() {
    let r = run(|_| {});
    for item in &r.items {
        let expected = if item.method == Method::Attestation { Status::Attested } else { Status::Pass };
        assert_eq!(item.status, expected, "{}: {}", item.id, item.reason);
        assert!(item.remediation.is_none());
    }
    assert_eq!(r.summary.fail + r.summary.needs_attention, 0);
}

#[test]
fn every_attestation_item_is_attested_with_who_when_and_document() {
    let r = run(|_| {});
    // The activity and access reviews are measured from the box's own records.
    assert_eq!(attestation_items().len(), 9);
    for id in attestation_items() {
        expect(&r, id, Status::Attested, "attested by", "pm.jones");
        expect(&r, id, Status::Attested, "document", "Compliance binder");
    }
}

#[test]
fn an_expired_attestation_needs_attention_naming_the_date() {
    let r = run(|f| {
        for a in &mut f.attestations {
            a.attested_at = days_ago(400);
            a.valid_until = days_ago(35);
        }
    });
    for id in attestation_items() {
        expect(&r, id, Status::NeedsAttention, "valid until (as entered)", "2026-10-25");
    }
}

#[test]
fn a_missing_attestation_needs_attention() {
    let r = run(|f| f.attestations.clear());
    for id in attestation_items() {
        expect(&r, id, Status::NeedsAttention, "attestations", "none");
    }
}

#[test]
fn a_quarterly_attestation_is_capped_whatever_valid_until_says() {
    let r = run(|f| {
        for a in f.attestations.iter_mut().filter(|a| a.item == ids::VISITOR_LOG) {
            a.attested_at = days_ago(100);
            a.valid_until = days_ahead(300);
        }
    });
    expect(&r, ids::VISITOR_LOG, Status::NeedsAttention, "valid until (at most)", "quarterly");
    assert!(r.item(ids::VISITOR_LOG).expect("item").reason.contains("expired"));
}

#[test]
fn an_attestation_without_a_document_is_not_accepted() {
    let r = run(|f| {
        for a in f.attestations.iter_mut().filter(|a| a.item == ids::TRAINING) {
            a.document = " ".into();
        }
    });
    expect(&r, ids::TRAINING, Status::NeedsAttention, "attested by", "pm.jones");
}

#[test]
fn an_attestation_for_a_technical_item_is_ignored() {
    let r = run(|f| {
        f.sessions.idle_timeout_secs = 3600;
        f.attestations.push(Attestation {
            item: ids::AUTOMATIC_LOGOFF.into(),
            attested_by: "it.admin".into(),
            attested_at: days_ago(1),
            document: "we promise".into(),
            valid_until: days_ahead(30),
        });
    });
    expect(&r, ids::AUTOMATIC_LOGOFF, Status::Fail, "attestation", "entered and ignored");
}

#[test]
fn no_technical_item_passes_when_its_probe_is_unavailable() {
    let r = run(|f| {
        let gone = "the probe could not connect";
        f.volume = Probe::unavailable(gone);
        f.store = Probe::unavailable(gone);
        f.firewall = Probe::unavailable(gone);
        f.tls = Probe::unavailable(gone);
        f.engine_reach = Probe::unavailable(gone);
        f.audit = Probe::unavailable(gone);
        f.request_audit = Probe::unavailable(gone);
        f.accounts = Probe::unavailable(gone);
        f.sign_ins = Probe::unavailable(gone);
        f.retention = Probe::unavailable(gone);
        f.usb = Probe::unavailable(gone);
        f.ldap = LdapFacts::Configured { url: "ldaps://10.0.0.5".into(), bind: Probe::unavailable(gone) };
    });
    for id in [
        ids::ENCRYPTION_AT_REST,
        ids::EPHI_AUTHENTICATION,
        ids::OUTBOUND_BLOCKED,
        ids::TRANSMISSION_ENCRYPTION,
        ids::TRANSMISSION_INTEGRITY,
        ids::ENGINE_UNREACHABLE,
        ids::AUDIT_EVERY_INTERACTION,
        ids::AUDIT_LOG_INTEGRITY,
        ids::USB_STORAGE,
        ids::DIRECTORY_SIGN_IN,
        ids::UNIQUE_USER_ID,
        ids::PERSON_AUTHENTICATION,
        ids::TERMINATION,
        ids::PASSWORD_MANAGEMENT,
        ids::LOGIN_MONITORING,
        ids::RETENTION,
    ] {
        expect(&r, id, Status::Fail, "probe", "unavailable: the probe could not connect");
    }
    assert!(r.data_flows.iter().any(|d| d.control.contains("NOT MEASURED")));
}

#[test]
fn break_glass_counts_unavailable_are_said_but_the_configuration_decides() {
    let r = run(|f| f.sign_ins = Probe::unavailable("the audit chain could not be read"));
    expect(&r, ids::EMERGENCY_ACCESS, Status::Pass, "break-glass uses in 30 days", "unavailable: the audit chain");
}

#[test]
fn an_account_without_any_time_on_record_counts_as_unused() {
    let r = run(|f| {
        accounts(f)[2].last_sign_in = None;
        accounts(f)[2].created_at = None;
    });
    expect(&r, ids::TERMINATION, Status::NeedsAttention, "unused for 90 days", "pm.jones (no sign-in on record)");
}

#[test]
fn the_tpm_being_unreadable_fails_encryption() {
    let r = run(|f| f.tpm = Probe::unavailable("no TPM answered at device:/dev/tpmrm0"));
    expect(&r, ids::ENCRYPTION_AT_REST, Status::Fail, "TPM", "no TPM answered");
}

#[test]
fn a_directory_that_is_not_configured_is_not_applicable() {
    let r = run(|f| {
        f.ldap = LdapFacts::NotConfigured;
        accounts(f).retain(|a| a.source == "local");
    });
    expect(&r, ids::DIRECTORY_SIGN_IN, Status::NotApplicable, "directory", "not configured");
}

fn usb_waiver(approver: &str, justification: &str, expires: Timestamp) -> Waiver {
    Waiver {
        item: ids::USB_STORAGE.into(),
        approver: approver.into(),
        justification: justification.into(),
        approved_at: days_ago(2),
        expires_at: expires,
    }
}

#[test]
fn a_complete_waiver_makes_the_item_not_applicable_and_is_carried() {
    let r = run(|f| {
        usb(f).storage_driver_blocked = false;
        f.waivers.push(usb_waiver("dr.owner", "model updates arrive on USB until the update server exists", days_ahead(60)));
    });
    expect(&r, ids::USB_STORAGE, Status::NotApplicable, "finding without the waiver", "fail");
    let item = r.item(ids::USB_STORAGE).expect("item");
    assert!(item.reason.contains("dr.owner"));
    assert_eq!(item.waiver.as_ref().map(|w| w.approver.as_str()), Some("dr.owner"));
}

#[test]
fn an_incomplete_or_expired_waiver_is_not_applied_and_says_why() {
    for (waiver, cause) in [
        (usb_waiver("", "updates", days_ahead(60)), "no approver"),
        (usb_waiver("dr.owner", "  ", days_ahead(60)), "no justification"),
        (usb_waiver("dr.owner", "updates", days_ago(1)), "expired on 2026-11-28"),
    ] {
        let r = run(|f| {
            usb(f).storage_driver_blocked = false;
            f.waivers.push(waiver);
        });
        expect(&r, ids::USB_STORAGE, Status::Fail, "waiver", cause);
        assert!(r.item(ids::USB_STORAGE).expect("item").waiver.is_none());
    }
}

#[test]
fn a_waiver_cannot_cover_a_technical_safeguard() {
    let r = run(|f| {
        volume(f).plain_directory = true;
        f.waivers.push(Waiver { item: ids::ENCRYPTION_AT_REST.into(), ..usb_waiver("dr.owner", "cost", days_ahead(60)) });
    });
    expect(&r, ids::ENCRYPTION_AT_REST, Status::Fail, "waiver", "cannot be waived");
}

#[test]
fn the_same_facts_give_the_same_report() {
    let facts = sample::healthy(now());
    let a = serde_json::to_vec(&evaluate(&facts, now())).expect("json");
    let b = serde_json::to_vec(&evaluate(&facts.clone(), now())).expect("json");
    assert_eq!(a, b);
}

#[test]
fn changes_list_pass_to_fail_first() {
    let before = run(|f| f.attestations.retain(|a| a.item != ids::TRAINING));
    let mut after = run(|f| {
        f.sessions.idle_timeout_secs = 3600; // pass -> fail
        firewall(f).drift = vec!["table inet wardbox is missing".into()]; // pass -> fail
        accounts(f)[0].must_change_password = true; // pass -> needs attention
    });
    after.compare_with(&before, Some("sha256:00".into()));
    let order: Vec<(&str, Option<Status>, Option<Status>)> =
        after.changes.iter().map(|c| (c.item.as_str(), c.from, c.to)).collect();
    assert_eq!(
        order,
        vec![
            (ids::AUTOMATIC_LOGOFF, Some(Status::Pass), Some(Status::Fail)),
            (ids::OUTBOUND_BLOCKED, Some(Status::Pass), Some(Status::Fail)),
            (ids::PASSWORD_MANAGEMENT, Some(Status::Pass), Some(Status::NeedsAttention)),
            (ids::TRAINING, Some(Status::NeedsAttention), Some(Status::Attested)),
        ]
    );
    assert_eq!(after.previous.as_ref().and_then(|p| p.digest.as_deref()), Some("sha256:00"));
}

#[test]
fn the_data_flow_map_says_nothing_leaves() {
    let r = run(|_| {});
    let last = r.data_flows.last().expect("flows");
    assert_eq!(last.to, "anything else (internet)");
    assert!(last.control.contains("output policy drop"), "{}", last.control);
    assert!(r.data_flows.iter().any(|d| d.to == "10.0.0.5" && d.channel == "tcp/636"));
    assert!(r.data_flows.iter().any(|d| d.to == "inference engine" && d.control.contains("refused on 3 of 3")));
}

#[test]
fn complete_months_run_from_the_first_record_to_the_month_before_now() {
    assert_eq!(complete_months_since("2026-09", now()), vec!["2026-09", "2026-10"]);
    assert_eq!(complete_months_since("2025-12", days_ago(300)), vec!["2025-12", "2026-01"]);
    assert!(complete_months_since("2026-11", now()).is_empty(), "the current month is not complete");
    assert!(complete_months_since("2026-13", now()).is_empty());
}

// --- Measured boot ----------------------------------------------------------------------------

fn boot_firmware(f: &mut Facts) -> &mut FirmwareBoot {
    match &mut f.measured_boot.firmware {
        Probe::Observed { value } => value,
        Probe::Unavailable { .. } => panic!("sample firmware variables"),
    }
}
fn boot_policy(f: &mut Facts) -> &mut BootPolicy {
    match &mut f.measured_boot.policy {
        Probe::Observed { value } => value,
        Probe::Unavailable { .. } => panic!("sample firmware policy"),
    }
}
fn tpm(f: &mut Facts) -> &mut TpmFacts {
    match &mut f.tpm {
        Probe::Observed { value } => value,
        Probe::Unavailable { .. } => panic!("sample tpm"),
    }
}

check!(measured_boot, ids::MEASURED_BOOT,
    pass: |f| {} => ("blessed entry", "yes"),
    fail: |f| { boot_firmware(f).secure_boot = Some(false); } => Status::Fail, ("Secure Boot", "no"));

#[test]
fn measured_boot_passes_naming_the_booted_image_and_the_pcrs() {
    let r = run(|_| {});
    let item = r.item(ids::MEASURED_BOOT).expect("item");
    assert!(item.reason.contains("wardbox-0.4.0.efi") && item.reason.contains("signed by the fleet's PCR-signing key"), "{}", item.reason);
    expect(&r, ids::MEASURED_BOOT, Status::Pass, "PCR 7", &"7a".repeat(32));
    expect(&r, ids::MEASURED_BOOT, Status::Pass, "PCR 11", &"b1".repeat(32));
    expect(&r, ids::MEASURED_BOOT, Status::Pass, "kernel image stub", "systemd-stub 252");
    expect(&r, ids::MEASURED_BOOT, Status::Pass, "key check", "the enrolled keys are the pinned ones");
    expect(&r, ids::MEASURED_BOOT, Status::Pass, "booted image signed for the volume key", "yes");
    // A new entry on its first, counted boot is still the signed image: it passes, and the
    // evidence says it was on trial.
    let r = run(|f| {
        boot_firmware(f).boot_entry = Some("wardbox-0.5.0+3.efi".into());
        boot_firmware(f).boot_count_path = Some("\\EFI\\Linux\\wardbox-0.5.0+2-1.efi".into());
    });
    expect(&r, ids::MEASURED_BOOT, Status::Pass, "blessed entry", "no: booted on trial with the try counter +3");
    expect(&r, ids::MEASURED_BOOT, Status::Pass, "version", "0.5.0");
}

#[test]
fn setup_or_audit_mode_is_not_enforcing_and_fails() {
    let r = run(|f| {
        boot_firmware(f).setup_mode = Some(true);
        boot_firmware(f).secure_boot = Some(false);
    });
    expect(&r, ids::MEASURED_BOOT, Status::Fail, "setup mode", "yes");
    let reason = &r.item(ids::MEASURED_BOOT).expect("item").reason;
    assert!(reason.contains("Secure Boot is off") && reason.contains("setup mode"), "{reason}");
    let r = run(|f| boot_firmware(f).audit_mode = Some(true));
    expect(&r, ids::MEASURED_BOOT, Status::Fail, "audit mode", "yes");
    // A SetupMode that cannot be read confirms nothing: never a pass.
    let r = run(|f| boot_firmware(f).setup_mode = None);
    expect(&r, ids::MEASURED_BOOT, Status::NeedsAttention, "setup mode", "not readable");
    // Firmware older than UEFI 2.5 has no AuditMode: that alone is no finding.
    let r = run(|f| boot_firmware(f).audit_mode = None);
    expect(&r, ids::MEASURED_BOOT, Status::Pass, "audit mode", "absent");
}

#[test]
fn a_box_without_uefi_variables_needs_attention_and_never_passes() {
    let r = run(|f| f.measured_boot.firmware = Probe::unavailable("/sys/firmware/efi/efivars does not exist: not booted through UEFI"));
    expect(&r, ids::MEASURED_BOOT, Status::NeedsAttention, "UEFI variables", "unavailable: /sys/firmware/efi/efivars does not exist");
    // The dev box: no UEFI variables, no firmware policy, no volume seal; PCRs read from a
    // software TPM. Each missing read is named; nothing passes.
    let r = run(|f| {
        f.measured_boot.firmware = Probe::unavailable("/sys/firmware/efi/efivars does not exist: not booted through UEFI");
        f.measured_boot.policy = Probe::unavailable("the volume is a plain directory (dev profile), which has no firmware policy");
        f.measured_boot.pcrs = Probe::observed(BootPcrs { pcr7: "00".repeat(32), pcr11: "00".repeat(32) });
        f.tpm = Probe::unavailable("the dev profile has no TPM");
    });
    expect(&r, ids::MEASURED_BOOT, Status::NeedsAttention, "PCR 11", &"00".repeat(32));
    let item = r.item(ids::MEASURED_BOOT).expect("item");
    for needle in ["not booted through UEFI", "plain directory", "the dev profile has no TPM"] {
        assert!(item.reason.contains(needle), "{needle} missing from {}", item.reason);
    }
    assert!(item.remediation.as_deref().is_some_and(|r| r.contains("appliance")), "{:?}", item.remediation);
    let r = run(|f| f.measured_boot.pcrs = Probe::unavailable("no TPM answered at device:/dev/tpmrm0"));
    expect(&r, ids::MEASURED_BOOT, Status::NeedsAttention, "PCR 7 and 11", "unavailable: no TPM answered");
}

#[test]
fn an_image_that_is_not_a_signed_wardbox_uki_fails() {
    for (entry, shown) in [(Some("grubx64.efi"), "grubx64.efi"), (Some("wardbox-notes.efi"), "wardbox-notes.efi"), (None, "none (not started by systemd-boot)")] {
        let r = run(|f| boot_firmware(f).boot_entry = entry.map(String::from));
        expect(&r, ids::MEASURED_BOOT, Status::Fail, "boot entry", shown);
    }
    let r = run(|f| boot_firmware(f).stub_info = None);
    expect(&r, ids::MEASURED_BOOT, Status::Fail, "kernel image stub", "none (not a unified kernel image)");
    let r = run(|f| {
        f.measured_boot.pcrs = Probe::observed(BootPcrs { pcr7: "7a".repeat(32), pcr11: "00".repeat(32) });
    });
    expect(&r, ids::MEASURED_BOOT, Status::Fail, "PCR 11", &"00".repeat(32));
    // The TPM found this boot's PCR 11 unsigned by the seal's PCR-signing key.
    let r = run(|f| {
        tpm(f).pcr11_signed = Some(false);
        tpm(f).seal_check = "no signature in /run/systemd/tpm2-pcr-signature.json matches PCR 11".into();
    });
    expect(&r, ids::MEASURED_BOOT, Status::Fail, "booted image signed for the volume key", "NO: no signature in");
}

#[test]
fn the_policy_keys_and_the_volume_binding_are_judged() {
    let r = run(|f| boot_policy(f).keys_refused = Some("the firmware's Secure Boot db holds the certificate ab12…, which the policy does not list".into()));
    expect(&r, ids::MEASURED_BOOT, Status::Fail, "key check", "refused: the firmware's Secure Boot db");
    let r = run(|f| boot_policy(f).pinned_keys.clear());
    expect(&r, ids::MEASURED_BOOT, Status::NeedsAttention, "key check", "nothing pinned");
    let r = run(|f| boot_policy(f).enrolled_keys = Probe::unavailable("the firmware's Secure Boot PK cannot be read"));
    expect(&r, ids::MEASURED_BOOT, Status::NeedsAttention, "enrolled keys", "unavailable: the firmware's Secure Boot PK");
    let r = run(|f| {
        tpm(f).signed_pcr11_key = None;
        tpm(f).pcr11_signed = None;
    });
    expect(&r, ids::MEASURED_BOOT, Status::NeedsAttention, "signed PCR 11 policy", "no (literal PCRs only)");
    // A box whose policy has no [signed_pcr11] and whose seal matches it: the binding is as
    // the policy asks, and the pinned keys tie the image to the policy.
    let r = run(|f| {
        tpm(f).signed_pcr11_key = None;
        tpm(f).pcr11_signed = None;
        boot_policy(f).signed_pcr11 = false;
    });
    expect(&r, ids::MEASURED_BOOT, Status::Pass, "booted image signed for the volume key", "not checked (no signed PCR 11 policy)");
    let r = run(|f| tpm(f).sealed_pcrs = vec![0, 2, 4]);
    expect(&r, ids::MEASURED_BOOT, Status::NeedsAttention, "volume key sealed to", "[0, 2, 4]");
    let r = run(|f| {
        tpm(f).pcr11_signed = None;
        tpm(f).seal_check = "the literal PCRs changed since the key was sealed".into();
    });
    expect(&r, ids::MEASURED_BOOT, Status::NeedsAttention, "booted image signed for the volume key", "not checked: the literal PCRs changed");
}

#[test]
fn a_measured_failure_outweighs_what_could_not_be_measured() {
    let r = run(|f| {
        boot_firmware(f).secure_boot = Some(false);
        f.measured_boot.pcrs = Probe::unavailable("no TPM answered");
    });
    expect(&r, ids::MEASURED_BOOT, Status::Fail, "Secure Boot", "no");
    let item = r.item(ids::MEASURED_BOOT).expect("item");
    assert!(!item.reason.contains("no TPM answered"), "the reason names the failures only: {}", item.reason);
    assert!(item.remediation.as_deref().is_some_and(|r| r.contains("Turn Secure Boot on")), "{:?}", item.remediation);
}

#[test]
fn wardbox_uki_entries_are_recognised_with_their_try_counter() {
    use super::measured_boot::{UkiEntry, uki_entry};
    assert_eq!(uki_entry("wardbox-0.4.0.efi"), Some(UkiEntry { version: "0.4.0", counter: None }));
    assert_eq!(uki_entry("wardbox-0.4.0.1+3.efi"), Some(UkiEntry { version: "0.4.0.1", counter: Some("3") }));
    assert_eq!(uki_entry("wardbox-0.4.0+0-3.efi"), Some(UkiEntry { version: "0.4.0", counter: Some("0-3") }));
    for other in ["wardbox-notes.efi", "wardbox-.efi", "grubx64.efi", "wardbox-0.4.0+.efi", "wardbox-0.4.0+x.efi", "wardbox-0.4.0.conf"] {
        assert_eq!(uki_entry(other), None, "{other}");
    }
}

// --- Measured boot: the verified root ---------------------------------------------------------

fn boot_root(f: &mut Facts) -> &mut RootFileSystem {
    match &mut f.measured_boot.root {
        Probe::Observed { value } => value,
        Probe::Unavailable { .. } => panic!("sample root file system"),
    }
}

check!(measured_boot_root, ids::MEASURED_BOOT,
    pass: |f| {} => ("root file system", "verified (dm-verity), root hash 3f9c3f9c3f9c3f9c…, device wardbox-root"),
    fail: |f| {
        let r = boot_root(f);
        (r.root_hash, r.hash_offset) = (None, None);
        (r.device, r.device_number, r.dm_name, r.dm_verity) = ("/dev/vda2".into(), "252:2".into(), None, false);
    } => Status::Fail, ("root file system", "NOT verified: no root hash on the kernel command line, / mounted from /dev/vda2"));

#[test]
fn measured_boot_passes_naming_the_verified_root() {
    let r = run(|_| {});
    let reason = &r.item(ids::MEASURED_BOOT).expect("item").reason;
    assert!(reason.ends_with("its root file system is verified (dm-verity, root hash 3f9c3f9c3f9c3f9c…)"), "{reason}");
    expect(&r, ids::MEASURED_BOOT, Status::Pass, "root hash on the command line", &"3f9c".repeat(16));
    expect(&r, ids::MEASURED_BOOT, Status::Pass, "hash tree offset", "1610612736 bytes");
    expect(&r, ids::MEASURED_BOOT, Status::Pass, "/ mounted from", "/dev/mapper/wardbox-root (254:0)");
    expect(&r, ids::MEASURED_BOOT, Status::Pass, "device-mapper device", "wardbox-root, opened by veritysetup (dm-verity)");
}

#[test]
fn a_root_not_on_the_verity_device_fails_even_with_a_root_hash() {
    // The command line names a root hash, but / is a plain partition (the initrd's script did
    // not run, or the root was mounted otherwise).
    let r = run(|f| {
        let r = boot_root(f);
        (r.device, r.device_number, r.dm_name, r.dm_verity) = ("/dev/vda2".into(), "252:2".into(), None, false);
    });
    expect(&r, ids::MEASURED_BOOT, Status::Fail, "device-mapper device", "no (not a device-mapper device)");
    let item = r.item(ids::MEASURED_BOOT).expect("item");
    assert!(item.reason.contains("/ is mounted from /dev/vda2") && item.reason.contains("not the dm-verity device wardbox-root"), "{}", item.reason);
    assert!(item.remediation.as_deref().is_some_and(|r| r.contains("not a Wardbox release") && r.contains("incident")), "{:?}", item.remediation);
    // A device-mapper device of that name that veritysetup did not make (a plain dm-linear
    // mapping of the slot), or a verity device of another name, is not the verified root either.
    let r = run(|f| boot_root(f).dm_verity = false);
    expect(&r, ids::MEASURED_BOOT, Status::Fail, "device-mapper device", "wardbox-root, not a dm-verity device");
    let r = run(|f| boot_root(f).dm_name = Some("other-root".into()));
    expect(&r, ids::MEASURED_BOOT, Status::Fail, "root file system", "NOT verified: root hash 3f9c3f9c3f9c3f9c… on the command line, but / mounted from");
}

#[test]
fn unusable_verity_arguments_fail_naming_why() {
    let r = run(|f| {
        let r = boot_root(f);
        (r.root_hash, r.hash_offset) = (None, None);
        r.arguments_refused = Some("wardbox.verity_root_hash=xyz is not a SHA-256 (64 hexadecimal digits)".into());
    });
    expect(&r, ids::MEASURED_BOOT, Status::Fail, "root file system", "NOT verified: unusable dm-verity arguments (wardbox.verity_root_hash=xyz");
}

#[test]
fn an_unreadable_root_needs_attention_and_never_passes() {
    let r = run(|f| f.measured_boot.root = Probe::unavailable("/proc/self/mountinfo cannot be read: No such file or directory"));
    expect(&r, ids::MEASURED_BOOT, Status::NeedsAttention, "root file system", "unavailable: /proc/self/mountinfo cannot be read");
    let reason = &r.item(ids::MEASURED_BOOT).expect("item").reason;
    assert!(reason.contains("whether the root file system is verified cannot be read"), "{reason}");
    // An unverified root outweighs the rest being unreadable (a dev machine's own root).
    let r = run(|f| {
        f.measured_boot.firmware = Probe::unavailable("/sys/firmware/efi/efivars does not exist: not booted through UEFI");
        let r = boot_root(f);
        (r.root_hash, r.hash_offset) = (None, None);
    });
    expect(&r, ids::MEASURED_BOOT, Status::Fail, "UEFI variables", "unavailable");
}

#[test]
fn facts_without_the_root_read_as_not_gathered() {
    let mut value = serde_json::to_value(sample::healthy(now()).measured_boot).expect("json");
    value.as_object_mut().expect("object").remove("root");
    let old: MeasuredBootFacts = serde_json::from_value(value).expect("facts from before the verified root");
    assert!(matches!(&old.root, Probe::Unavailable { reason } if reason.contains("not gathered")), "{:?}", old.root);
}
