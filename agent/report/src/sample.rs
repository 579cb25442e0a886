//! A complete set of facts describing a healthy appliance, for tests, the benchmark and the
//! documentation's example report. Never gathered from a box: every value is made up.

use jiff::{SignedDuration, Timestamp};

use crate::facts::*;

fn days_before(now: Timestamp, days: i64) -> Timestamp {
    now.checked_sub(SignedDuration::from_hours(24 * days)).unwrap_or(Timestamp::MIN)
}

fn days_after(now: Timestamp, days: i64) -> Timestamp {
    now.checked_add(SignedDuration::from_hours(24 * days)).unwrap_or(Timestamp::MAX)
}

/// Every attestation item attested yesterday, valid for its full period.
fn attestations(now: Timestamp) -> Vec<Attestation> {
    crate::checklist::item_ids()
        .filter(|id| crate::checklist::is_attestation_item(id))
        .map(|id| Attestation {
            item: id.to_string(),
            attested_by: "practice manager (pm.jones)".into(),
            attested_at: days_before(now, 1),
            document: format!("Compliance binder, section {id}"),
            valid_until: days_after(now, 80),
        })
        .collect()
}

/// The fingerprint of the made-up fleet's PCR-signing key.
const SAMPLE_PCR_SIGNING_KEY: &str = "5b1f0c9e2a7d4e8f3c6b9a0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f";

/// A box that booted its blessed, signed kernel image with Secure Boot enforcing the keys its
/// firmware policy pins, its root file system opened through dm-verity.
fn measured_boot() -> MeasuredBootFacts {
    let keys = |pk: &str, kek: &str, db: &str| {
        [("PK", pk), ("KEK", kek), ("db", db)]
            .into_iter()
            .map(|(variable, fp)| KeyList { variable: variable.into(), entries: vec![fp.repeat(32)] })
            .collect::<Vec<_>>()
    };
    MeasuredBootFacts {
        firmware: Probe::observed(FirmwareBoot {
            secure_boot: Some(true),
            setup_mode: Some(false),
            audit_mode: Some(false),
            deployed_mode: Some(false),
            boot_entry: Some("wardbox-0.4.0.efi".into()),
            boot_count_path: None,
            stub_info: Some("systemd-stub 252.39-1~deb12u2".into()),
        }),
        pcrs: Probe::observed(BootPcrs { pcr7: "7a".repeat(32), pcr11: "b1".repeat(32) }),
        policy: Probe::observed(BootPolicy {
            file: "/usr/share/wardbox/firmware-policy.toml".into(),
            secure_boot_required: true,
            pcrs: vec![7],
            signed_pcr11: true,
            pinned_keys: keys("a1", "b2", "c3"),
            enrolled_keys: Probe::observed(keys("a1", "b2", "c3")),
            keys_refused: None,
        }),
        root: Probe::observed(RootFileSystem {
            root_hash: Some("3f9c".repeat(16)),
            hash_offset: Some(1_610_612_736),
            arguments_refused: None,
            device: "/dev/mapper/wardbox-root".into(),
            device_number: "254:0".into(),
            dm_name: Some("wardbox-root".into()),
            dm_verity: true,
        }),
    }
}

/// A route class whose every request was served and, where required, audited.
pub fn route_class(class: &str, audit_required: bool, served: u64) -> RouteClassCount {
    RouteClassCount { class: class.into(), audit_required, served, audited: if audit_required { served } else { 0 }, audit_failures: 0 }
}

/// A healthy appliance as of `now`: every item passes or is attested.
pub fn healthy(now: Timestamp) -> Facts {
    let stage = |name: &str| StageFact { stage: name.into(), outcome: "ok".into(), reason: String::new(), missing_protections: vec![] };
    let account = |id: &str, role: &str, source: &str| Account {
        user_id: id.into(),
        role: role.into(),
        source: source.into(),
        disabled: false,
        created_at: Some(days_before(now, 200)),
        last_sign_in: Some(days_before(now, 3)),
        password_scheme: if source == "local" { "argon2id".into() } else { String::new() },
        must_change_password: false,
        sign_ins_searched_since: None,
    };
    Facts {
        box_name: "wardbox-clinic-01".into(),
        profile: "appliance".into(),
        boot: ["config", "unlock", "firewall", "store", "gpu", "engine", "serve"].into_iter().map(stage).collect(),
        volume: Probe::observed(VolumeFacts {
            plain_directory: false,
            active: true,
            luks_version: 2,
            cipher: "aes-xts-plain64".into(),
            key_bits: 512,
            device: "/dev/vda3".into(),
            unlocked_by: "tpm".into(),
        }),
        tpm: Probe::observed(TpmFacts {
            manufacturer: "IBM".into(),
            firmware_version: "1.62".into(),
            pcr_bank: "sha256".into(),
            sealed_pcrs: vec![0, 2, 4, 7],
            seal_matches_current_pcrs: true,
            signed_pcr11_key: Some(SAMPLE_PCR_SIGNING_KEY.into()),
            pcr11_signed: Some(true),
            seal_check: "would unseal with the PCRs as they are now".into(),
        }),
        store: Probe::observed(StoreFacts {
            cipher_version: "SQLCipher 4.19.0".into(),
            hmac_algorithm: "HMAC_SHA512".into(),
            integrity_errors: 0,
            pages_checked: 4096,
        }),
        firewall: Probe::observed(FirewallFacts {
            drift: vec![],
            output_policy: "drop".into(),
            blocked_outbound_packets: 1234,
            blocked_inbound_packets: 56,
            allowed_outbound: vec![OutboundRule {
                destination: "10.0.0.5".into(),
                port: 636,
                protocol: "tcp".into(),
                purpose: "clinic directory (LDAPS)".into(),
            }],
        }),
        tls: Probe::observed(TlsProbe {
            target: "192.168.10.5:443".into(),
            tls13: Handshake { accepted: true, detail: "TLS13_AES_256_GCM_SHA384".into() },
            tls12: Handshake { accepted: false, detail: "peer sent alert: protocol version".into() },
            plain_http_refused: true,
            certificate_not_after: days_after(now, 300),
            certificate_subject: "CN=wardbox-clinic-01.clinic.lan".into(),
        }),
        engine_reach: Probe::observed(EngineReachProbe {
            attempts: vec![
                ConnectAttempt { target: "127.0.0.1:11434".into(), result: "refused".into() },
                ConnectAttempt { target: "192.168.10.5:11434".into(), result: "refused".into() },
                ConnectAttempt { target: "[::1]:11434".into(), result: "refused".into() },
            ],
        }),
        audit: Probe::observed(AuditFacts {
            records: 52_000,
            verified_from_seq: 51_001,
            head_seq: 52_000,
            first_break: None,
            checkpoints_checked: 52,
            checkpoints_mismatched: 0,
            full_walk: false,
            last_full_walk: Some(FullWalk { at: days_before(now, 3), head_seq: 51_000 }),
        }),
        request_audit: Probe::observed(RequestAudit {
            since: "2026-11-20T06:00:00Z".into(),
            classes: vec![
                route_class("patient_data", true, 640),
                route_class("administration", true, 52),
                route_class("account", false, 90),
                route_class("sign_in", false, 30),
            ],
        }),
        data_space: Probe::observed(DataSpace {
            path: "/var/lib/wardbox/data".into(),
            total_bytes: 512 << 30,
            free_bytes: 301 << 30,
            summary: "301.0 GiB free of 512.0 GiB (58.8 %)".into(),
            level: "ok".into(),
            thresholds: "low below 10 % free, critical below 3 % free".into(),
        }),
        retention: Probe::observed(RetentionFacts { retention_years: 6, first_record_month: None, exports: vec![] }),
        accounts: Probe::observed(vec![
            account("dr.smith", "clinician", "local"),
            account("nurse.lee", "clinician", "directory"),
            account("pm.jones", "admin", "local"),
            account("auditor.kim", "auditor", "local"),
        ]),
        sessions: SessionPolicy {
            idle_timeout_secs: 900,
            absolute_timeout_secs: 12 * 3600,
            break_glass_enabled: true,
            break_glass_timeout_secs: 3600,
            signin_free_failures: 3,
            signin_block_after: 10,
            signin_block_secs: 900,
            lockout_threshold: 5,
            lockout_addresses: 3,
            lockout_window_secs: 3600,
            lockout_secs: 900,
            password_min_length: 12,
        },
        sign_ins: Probe::observed(SignInActivity { successful: 300, failed: 7, accounts_locked_now: 1, break_glass_uses: 0, failures_audited: true }),
        ldap: LdapFacts::Configured {
            url: "ldaps://10.0.0.5".into(),
            bind: Probe::observed(LdapBind { tls: true, bind_ok: true, detail: "bind as cn=wardbox,ou=services ok".into() }),
        },
        backups: BackupFacts {
            configured: true,
            last_backup: Some(days_before(now, 1)),
            encrypted: true,
            last_tested_restore: Some(days_before(now, 30)),
        },
        activity_review: Probe::observed(Some(ActivityReview {
            // Last week's Monday, reviewed two days ago.
            week: {
                let d = days_before(now, 9).to_zoned(jiff::tz::TimeZone::UTC).date();
                let back = i64::from(d.weekday().to_monday_zero_offset());
                d.checked_sub(jiff::Span::new().days(back)).unwrap_or(d).to_string()
            },
            reviewed_by: "pm.jones".into(),
            reviewed_at: days_before(now, 2),
        })),
        access_review: Probe::observed(Some(AccessReview {
            quarter: {
                let d = days_before(now, 20).to_zoned(jiff::tz::TimeZone::UTC).date();
                format!("{}-Q{}", d.year(), (d.month() - 1) / 3 + 1)
            },
            reviewed_by: "it.admin".into(),
            reviewed_at: days_before(now, 20),
            users_decided: 2,
            not_decided: vec![],
        })),
        usb: Probe::observed(UsbFacts {
            storage_driver_blocked: true,
            usb_block_devices: vec![],
            method: "modprobe blacklist (usb-storage, uas)".into(),
            authorized_default: Some(0),
            open_window: None,
        }),
        measured_boot: measured_boot(),
        network: NetworkFacts {
            addresses: vec!["192.168.10.5".into(), "127.0.0.1".into(), "::1".into()],
            listeners: vec![Listener {
                bind: "0.0.0.0:443".into(),
                protocol: "https".into(),
                service: "web UI".into(),
                audience: "clinic LAN (staff browsers)".into(),
            }],
            engine_channel: "unix:/run/wardbox/engine.sock".into(),
        },
        inventory: Inventory {
            hardware_vendor: "Example Systems".into(),
            hardware_model: "EX-1".into(),
            serial: "EX1-0001".into(),
            cpu: "8-core x86-64".into(),
            memory_mib: 65536,
            gpus: vec![Gpu { name: "NVIDIA L4".into(), memory_mib: 23034, driver: "580.159.04".into(), health: "healthy".into() }],
            os: "Debian GNU/Linux 12 (bookworm)".into(),
            kernel: "6.1.0-27-amd64".into(),
            image_version: "wardbox-image 0.1.0".into(),
            agent_version: "0.1.0".into(),
            secure_boot: Some(true),
            models: vec![
                Model {
                    name: "gemma-3-270m".into(),
                    role: "chat".into(),
                    file: "gemma-3-270m-q4_k_m.gguf".into(),
                    bytes: 253_113_024,
                    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818".into(),
                    digest_verified: true,
                },
            ],
        },
        attestations: attestations(now),
        waivers: vec![],
    }
}
