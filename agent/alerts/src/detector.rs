//! The detector: audit records in, alerts out, one record at a time.
//!
//! Pure and deterministic: the alerts depend only on the configuration and the records fed so
//! far (timestamps come from the records, never from a clock; no map's iteration order reaches
//! an alert), so replaying the same history gives the same alerts, and feeding the live stream
//! gives the alerts of replaying it.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::config::{AlertsConfig, Checked, ConfigError};
use crate::record::{Fact, Observed, Record, RecordError, SystemSource};
use crate::relations::{Relation, Relations};
use crate::stats::median_mad;
use crate::time::{Local, hhmm};

/// Most record numbers one alert lists (the triggering record is always among them).
pub const MAX_SEQS: usize = 64;

/// Which rule raised an alert. Stored and shown by its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    OffHours,
    BulkAccess,
    LargePrompt,
    SigninFailuresAccount,
    SigninFailuresAddress,
    PasswordSpraying,
    /// The agent's own sign-in throttle blocked an address or locked an account.
    SigninThrottle,
    DeniedAccess,
    BreakGlassUse,
    BreakGlassOverrun,
    DormantAccount,
    FirewallCheck,
    AuditChain,
    GpuDegraded,
    CsrfRejected,
    UnusualPatientsPerDay,
    UnusualPromptSize,
    UnusualHour,
    /// A user opened the record of a patient with their own name.
    OwnRecord,
    /// A user opened the record of a patient who shares their (uncommon) surname.
    SameSurname,
    /// A user opened the record of a patient with another staff member's name.
    CoworkerRecord,
    /// A user opened the record of a patient who lives at the user's postal address.
    SameAddress,
    /// A user opened the record of a patient whose record names the user as a contact (next
    /// of kin, emergency contact).
    NextOfKin,
    /// A backup failed, or scheduled backups did not run (the agent's `source: "backup"`
    /// records).
    Backup,
    /// A system update did not take: the box fell back to the previous system, or the agent
    /// could not settle the update or raise the TPM anti-rollback floor (`source: "update"`).
    Update,
    /// Free space on the data volume fell below the agent's warning or critical threshold
    /// (`source: "disk"`), once per crossing.
    DiskSpace,
    /// A USB stick plugged in and refused outside an administrator's USB window, or refused by
    /// the mount helper (`source: "usb"`).
    UsbRefused,
    /// A system `security_alert` from a source this version does not know: an alert under a
    /// name that says so, never filed under another source's rule.
    UnknownSystemAlert,
    /// An emergency sign-in whose alert nobody reviewed within the configured days (raised by
    /// the agent from its stored alerts, not by the detector: it depends on the review state).
    BreakGlassUnreviewed,
}

impl Rule {
    pub const ALL: [Rule; 28] = [
        Rule::OffHours,
        Rule::BulkAccess,
        Rule::LargePrompt,
        Rule::SigninFailuresAccount,
        Rule::SigninFailuresAddress,
        Rule::PasswordSpraying,
        Rule::SigninThrottle,
        Rule::DeniedAccess,
        Rule::BreakGlassUse,
        Rule::BreakGlassOverrun,
        Rule::DormantAccount,
        Rule::FirewallCheck,
        Rule::AuditChain,
        Rule::GpuDegraded,
        Rule::CsrfRejected,
        Rule::UnusualPatientsPerDay,
        Rule::UnusualPromptSize,
        Rule::UnusualHour,
        Rule::OwnRecord,
        Rule::SameSurname,
        Rule::CoworkerRecord,
        Rule::SameAddress,
        Rule::NextOfKin,
        Rule::Backup,
        Rule::Update,
        Rule::DiskSpace,
        Rule::UsbRefused,
        Rule::UnknownSystemAlert,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::OffHours => "off_hours",
            Rule::BulkAccess => "bulk_access",
            Rule::LargePrompt => "large_prompt",
            Rule::SigninFailuresAccount => "signin_failures_account",
            Rule::SigninFailuresAddress => "signin_failures_address",
            Rule::PasswordSpraying => "password_spraying",
            Rule::SigninThrottle => "signin_throttle",
            Rule::DeniedAccess => "denied_access",
            Rule::BreakGlassUse => "break_glass_use",
            Rule::BreakGlassOverrun => "break_glass_overrun",
            Rule::DormantAccount => "dormant_account",
            Rule::FirewallCheck => "firewall_check",
            Rule::AuditChain => "audit_chain",
            Rule::GpuDegraded => "gpu_degraded",
            Rule::CsrfRejected => "csrf_rejected",
            Rule::UnusualPatientsPerDay => "unusual_patients_per_day",
            Rule::UnusualPromptSize => "unusual_prompt_size",
            Rule::UnusualHour => "unusual_hour",
            Rule::OwnRecord => "own_record",
            Rule::SameSurname => "same_surname",
            Rule::CoworkerRecord => "coworker_record",
            Rule::SameAddress => "same_address",
            Rule::NextOfKin => "next_of_kin",
            Rule::BreakGlassUnreviewed => "break_glass_unreviewed",
            Rule::Backup => "backup",
            Rule::Update => "update",
            Rule::DiskSpace => "disk_space",
            Rule::UsbRefused => "usb_refused",
            Rule::UnknownSystemAlert => "unknown_system_alert",
        }
    }
}

/// One alert. Carries user names, client addresses, counts and audit record numbers; never a
/// patient id or any text of a record (the records themselves are one click away).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub rule: Rule,
    /// Whom it is about: `user:ann`, `account:bob`, `unknown account`, `address:10.0.0.9`, `box`.
    pub subject: String,
    /// The triggering record's timestamp, as stored.
    pub at: String,
    /// The rule's threshold, in words with its numbers.
    pub threshold: String,
    /// What was seen, in words with its numbers.
    pub observed: String,
    /// The audit records that triggered it, in order, at most [`MAX_SEQS`] (the latest ones).
    pub seqs: Vec<u64>,
}

impl Alert {
    /// One line: rule, subject, observed, threshold, records.
    pub fn summary(&self) -> String {
        let seqs: Vec<String> = self.seqs.iter().map(u64::to_string).collect();
        format!(
            "{} {}: {} (threshold: {}); audit records {}",
            self.rule.as_str(),
            self.subject,
            self.observed,
            self.threshold,
            seqs.join(", ")
        )
    }
}

/// Timestamped record numbers inside a sliding window, with a key per entry.
#[derive(Debug, Default)]
struct Window {
    entries: VecDeque<(i64, u64, u64)>,
    /// Entries per key, for distinct counts.
    counts: HashMap<u64, u32>,
    /// After an alert the window is cleared and stays quiet until then, so one burst is one alert.
    quiet_until: i64,
}

impl Window {
    fn push(&mut self, ts: i64, seq: u64, key: u64, span_secs: i64) {
        self.entries.push_back((ts, seq, key));
        *self.counts.entry(key).or_default() += 1;
        while let Some(&(t, _, k)) = self.entries.front() {
            if t > ts - span_secs {
                break;
            }
            self.entries.pop_front();
            if let Some(c) = self.counts.get_mut(&k) {
                *c -= 1;
                if *c == 0 {
                    self.counts.remove(&k);
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn distinct(&self) -> usize {
        self.counts.len()
    }

    /// The record numbers of the first entry of each distinct key, oldest first.
    fn first_seqs_per_key(&self) -> Vec<u64> {
        let mut seen = std::collections::HashSet::new();
        self.entries
            .iter()
            .filter(|e| seen.insert(e.2))
            .map(|e| e.1)
            .collect()
    }

    fn seqs(&self) -> Vec<u64> {
        self.entries.iter().map(|e| e.1).collect()
    }

    fn fire(&mut self, ts: i64, quiet_secs: i64) {
        self.entries.clear();
        self.counts.clear();
        self.quiet_until = ts + quiet_secs;
    }

    fn quiet(&self, ts: i64) -> bool {
        ts < self.quiet_until
    }
}

/// What the detector keeps per user.
#[derive(Debug, Default)]
struct UserState {
    last_active: Option<i64>,
    off_hours_quiet_until: i64,
    bulk: Window,
    denied: Window,
    /// The open emergency session: when and in which record it began, and whether its
    /// overrun was reported.
    break_glass: Option<(i64, u64, bool)>,
    /// Today (local day number) and today's distinct patients with the first record of each.
    today: i64,
    today_patients: Vec<(u64, u64)>,
    today_patients_alerted: bool,
    today_hour_alerted: bool,
    /// Related patients (own, same surname, co-worker) alerted today: once a day per patient.
    today_related: Vec<u64>,
    /// Today's first and last active minute (local).
    today_span: Option<(u16, u16)>,
    /// Baseline histories, newest last.
    patients_per_day: VecDeque<u32>,
    prompt_ln_chars: VecDeque<f32>,
    day_starts: VecDeque<u16>,
    day_ends: VecDeque<u16>,
    /// The day baselines as (median, scaled MAD), recomputed when a day is added to the
    /// histories (only then do they change); `None` during the cold start.
    patients_baseline: Option<(f64, f64)>,
    start_baseline: Option<(f64, f64)>,
    end_baseline: Option<(f64, f64)>,
}

/// State of the failed sign-in rules (not per user: the accounts typed need not exist).
#[derive(Debug, Default)]
struct SigninState {
    /// Keyed by a hash of the name typed (it may be a password typed in the wrong field).
    by_account: HashMap<u64, Window>,
    by_address: HashMap<String, Window>,
    spray: Window,
}

/// The detector.
#[derive(Debug)]
pub struct Detector {
    cfg: Checked,
    users: HashMap<String, UserState>,
    signin: SigninState,
    last_seq: Option<u64>,
    /// Which user relates to which patient (no names: see `relations.rs`).
    relations: Relations,
}

fn push_capped<T>(q: &mut VecDeque<T>, v: T, cap: u32) {
    q.push_back(v);
    while q.len() > cap as usize {
        q.pop_front();
    }
}

/// Names and addresses at the sign-in page are attacker-controlled: past 1,024 entries, drop
/// the windows that are idle, so the maps stay small.
fn sweep<K>(windows: &mut HashMap<K, Window>, now: i64, span_secs: i64) {
    if windows.len() > 1024 {
        windows
            .retain(|_, w| w.entries.back().is_some_and(|e| e.0 > now - span_secs) || w.quiet(now));
    }
}

fn latest(mut seqs: Vec<u64>) -> Vec<u64> {
    if seqs.len() > MAX_SEQS {
        seqs.drain(..seqs.len() - MAX_SEQS);
    }
    seqs
}

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

impl Detector {
    pub fn new(config: &AlertsConfig) -> Result<Self, ConfigError> {
        Ok(Detector {
            cfg: config.validate()?,
            users: HashMap::new(),
            signin: SigninState::default(),
            last_seq: None,
            relations: Relations::default(),
        })
    }

    /// Replace the relations between users and patients (built by the caller from the names
    /// in its store, see [`Relations::build`]); they apply from the next record on.
    pub fn set_relations(&mut self, relations: Relations) {
        self.relations = relations;
    }

    /// Users with state (baselines and windows).
    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// Feed the next record; returns the alerts it raises (usually none). A record that cannot
    /// be read is an error and changes nothing.
    pub fn observe(&mut self, record: &Record<'_>) -> Result<Vec<Alert>, RecordError> {
        if let Some(last) = self.last_seq.filter(|&l| record.seq <= l) {
            return Err(RecordError::OutOfOrder {
                seq: record.seq,
                last,
            });
        }
        let o = Observed::read(record)?;
        self.last_seq = Some(record.seq);
        let mut out = Vec::new();
        let alert =
            |rule, subject: String, threshold: String, observed: String, seqs: Vec<u64>| Alert {
                rule,
                subject,
                at: record.ts.to_string(),
                threshold,
                observed,
                seqs: latest(seqs),
            };
        match &o.fact {
            Fact::SignIn { user } => {
                self.activity(&o, user, &mut out, &alert);
            }
            Fact::BreakGlassSignIn { user } => {
                out.push(alert(
                    Rule::BreakGlassUse,
                    format!("user:{user}"),
                    "every emergency sign-in".into(),
                    "emergency (break-glass) sign-in".into(),
                    vec![o.seq],
                ));
                self.activity(&o, user, &mut out, &alert);
                self.users.entry(user.clone()).or_default().break_glass =
                    Some((o.ts, o.seq, false));
            }
            Fact::Activity {
                user,
                patient,
                prompt_chars,
                denied,
                break_glass,
            } => {
                self.activity(&o, user, &mut out, &alert);
                if *break_glass {
                    self.break_glass_overrun(&o, user, &mut out, &alert);
                }
                if let Some(p) = *patient {
                    self.patient_access(&o, user, p, &mut out, &alert);
                }
                if let Some(chars) = *prompt_chars {
                    self.prompt(&o, user, chars, &mut out, &alert);
                }
                if let Some(d) = denied {
                    self.denied(&o, user, d, &mut out, &alert);
                }
            }
            Fact::SignInFailed {
                account,
                client,
                unknown_account,
            } => self.signin_failed(
                &o,
                account.as_deref(),
                client.as_deref(),
                *unknown_account,
                &mut out,
                &alert,
            ),
            Fact::Throttle { event } => {
                out.push(alert(
                    Rule::SigninThrottle,
                    "box".into(),
                    "every sign-in block or account lock".into(),
                    event.clone(),
                    vec![o.seq],
                ));
            }
            Fact::SystemCheck { source, event } => {
                let rule = match source {
                    SystemSource::Firewall => Rule::FirewallCheck,
                    SystemSource::Gpu => Rule::GpuDegraded,
                    SystemSource::Csrf => Rule::CsrfRejected,
                    SystemSource::Backup => Rule::Backup,
                    SystemSource::Audit => Rule::AuditChain,
                    SystemSource::Update => Rule::Update,
                    SystemSource::Disk => Rule::DiskSpace,
                    SystemSource::Usb => Rule::UsbRefused,
                    SystemSource::Unknown(_) => Rule::UnknownSystemAlert,
                };
                let threshold = match source {
                    SystemSource::Disk => {
                        "every fall of the data volume's free space below a [disk] threshold".into()
                    }
                    SystemSource::Usb => {
                        "every USB stick refused outside an administrator's USB window".into()
                    }
                    _ => format!("every {} failure", source.name()),
                };
                out.push(alert(rule, "box".into(), threshold, event.clone(), vec![o.seq]));
            }
            Fact::Other => {}
        }
        Ok(out)
    }

    /// Every sign-in and page by a person: off hours, dormancy, the day's bookkeeping.
    fn activity(&mut self, o: &Observed, user: &str, out: &mut Vec<Alert>, alert: &impl AlertFn) {
        let cfg = &self.cfg;
        let local = Local::of(o.ts, cfg.utc_offset_secs);
        let st = self.users.entry(user.to_string()).or_default();
        let subject = format!("user:{user}");

        let grace = cfg.raw.clinic_hours.grace_minutes;
        let holiday = cfg.holidays.contains(&local.day);
        let open = !holiday
            && cfg.week[local.weekday]
                .iter()
                .any(|&(a, b)| local.minute + grace >= a && local.minute < b + grace);
        if !open && o.ts >= st.off_hours_quiet_until {
            let hours = &cfg.week[local.weekday];
            let threshold = if hours.is_empty() || holiday {
                format!(
                    "clinic closed on {}{}",
                    WEEKDAYS[local.weekday],
                    if holiday { " (holiday)" } else { "" }
                )
            } else {
                let ranges: Vec<String> = hours
                    .iter()
                    .map(|&(a, b)| format!("{}-{}", hhmm(a), hhmm(b)))
                    .collect();
                format!(
                    "clinic hours {} {} with {grace} min grace",
                    WEEKDAYS[local.weekday],
                    ranges.join(",")
                )
            };
            out.push(alert(
                Rule::OffHours,
                subject.clone(),
                threshold,
                format!(
                    "activity at {} {} local",
                    WEEKDAYS[local.weekday],
                    hhmm(local.minute)
                ),
                vec![o.seq],
            ));
            st.off_hours_quiet_until = o.ts + i64::from(cfg.raw.clinic_hours.cooldown_minutes) * 60;
        }

        if let Some(last) = st.last_active {
            let idle_days = (o.ts - last) / 86_400;
            if idle_days > i64::from(cfg.raw.dormant.days) {
                out.push(alert(
                    Rule::DormantAccount,
                    subject,
                    format!("no activity for more than {} days", cfg.raw.dormant.days),
                    format!("first activity after {idle_days} days"),
                    vec![o.seq],
                ));
            }
        }
        st.last_active = Some(st.last_active.map_or(o.ts, |l| l.max(o.ts)));

        if local.day != st.today {
            // The day before goes into the patients-per-day history (days with activity only).
            if st.today != 0 {
                push_capped(
                    &mut st.patients_per_day,
                    st.today_patients.len() as u32,
                    cfg.raw.baseline.history_days,
                );
            }
            if let Some((first, last)) = st.today_span.take() {
                push_capped(&mut st.day_starts, first, cfg.raw.baseline.history_days);
                push_capped(&mut st.day_ends, last, cfg.raw.baseline.history_days);
            }
            let cold = st.patients_per_day.len() < cfg.raw.baseline.cold_start_days as usize;
            st.patients_baseline = if cold {
                None
            } else {
                median_mad(st.patients_per_day.iter().map(|&n| f64::from(n)))
            };
            let cold = st.day_starts.len() < cfg.raw.baseline.cold_start_days as usize;
            st.start_baseline = if cold {
                None
            } else {
                median_mad(st.day_starts.iter().map(|&m| f64::from(m)))
            };
            st.end_baseline = if cold {
                None
            } else {
                median_mad(st.day_ends.iter().map(|&m| f64::from(m)))
            };
            st.today = local.day;
            st.today_patients.clear();
            st.today_patients_alerted = false;
            st.today_hour_alerted = false;
            st.today_related.clear();
        }
        let minute = local.minute as u16;
        st.today_span = Some(
            st.today_span
                .map_or((minute, minute), |(a, b)| (a.min(minute), b.max(minute))),
        );

        // Working hours: outside the user's own usual day (median start and end of past days,
        // widened by k scaled MADs, at least the floor).
        let b = &cfg.raw.baseline;
        if st.today_hour_alerted {
            return;
        }
        let (Some((start, start_mad)), Some((end, end_mad))) = (st.start_baseline, st.end_baseline)
        else {
            return;
        };
        let floor = f64::from(b.min_hour_shift_minutes);
        let earliest = start - (b.hour_mads * start_mad).max(floor);
        let latest = end + (b.hour_mads * end_mad).max(floor);
        let m = f64::from(minute);
        if m < earliest || m > latest {
            let clock = |v: f64| hhmm(v.clamp(0.0, 1439.0).round() as u32);
            out.push(alert(
                Rule::UnusualHour,
                format!("user:{user}"),
                format!(
                    "active between {} and {} (the user's usual day widened by {} MADs, at least {} min)",
                    clock(earliest),
                    clock(latest),
                    b.hour_mads,
                    b.min_hour_shift_minutes
                ),
                format!("active at {}; usually works {}-{}", hhmm(local.minute), clock(start), clock(end)),
                vec![o.seq],
            ));
            st.today_hour_alerted = true;
        }
    }

    fn break_glass_overrun(
        &mut self,
        o: &Observed,
        user: &str,
        out: &mut Vec<Alert>,
        alert: &impl AlertFn,
    ) {
        let limit = i64::from(self.cfg.raw.break_glass.session_limit_minutes);
        let Some(st) = self.users.get_mut(user) else {
            return;
        };
        if let Some((since, first_seq, reported)) = st.break_glass.as_mut() {
            let minutes = (o.ts - *since) / 60;
            if !*reported && minutes > limit {
                *reported = true;
                out.push(alert(
                    Rule::BreakGlassOverrun,
                    format!("user:{user}"),
                    format!("emergency session limit {limit} min"),
                    format!("emergency session still active after {minutes} min"),
                    vec![*first_seq, o.seq],
                ));
            }
        }
    }

    fn patient_access(
        &mut self,
        o: &Observed,
        user: &str,
        patient: u64,
        out: &mut Vec<Alert>,
        alert: &impl AlertFn,
    ) {
        let cfg = &self.cfg.raw;
        let Some(st) = self.users.get_mut(user) else {
            return;
        };
        let span = i64::from(cfg.bulk_access.window_minutes) * 60;
        st.bulk.push(o.ts, o.seq, patient, span);
        let distinct = st.bulk.distinct();
        if distinct > cfg.bulk_access.max_patients as usize && !st.bulk.quiet(o.ts) {
            out.push(alert(
                Rule::BulkAccess,
                format!("user:{user}"),
                format!(
                    "more than {} distinct patients in {} min",
                    cfg.bulk_access.max_patients, cfg.bulk_access.window_minutes
                ),
                format!(
                    "{distinct} distinct patients in {} min",
                    cfg.bulk_access.window_minutes
                ),
                st.bulk.first_seqs_per_key(),
            ));
            st.bulk.fire(o.ts, span);
        }

        if let Some(relation) = self.relations.get(user, patient)
            && !st.today_related.contains(&patient)
        {
            st.today_related.push(patient);
            let r = &cfg.related_records;
            let (rule, threshold, observed) = match relation {
                Relation::OwnRecord => (
                    Rule::OwnRecord,
                    "every opening of a record with the user's own name (once a day per record)".to_string(),
                    "opened the record of a patient with the user's own name",
                ),
                Relation::CoworkerRecord => (
                    Rule::CoworkerRecord,
                    "every opening of a record with another staff member's name (once a day per record)".to_string(),
                    "opened the record of a patient with another staff member's name",
                ),
                Relation::SameSurname => (
                    Rule::SameSurname,
                    format!(
                        "every opening of a record of a patient sharing the user's surname, if at most {} patients carry it (once a day per record)",
                        r.max_patients_per_surname
                    ),
                    "opened the record of a patient who shares the user's surname",
                ),
                Relation::SameAddress => (
                    Rule::SameAddress,
                    format!(
                        "every opening of a record of a patient living at the user's postal address, if at most {} patients live there (once a day per record)",
                        r.max_patients_per_address
                    ),
                    "opened the record of a patient who lives at the user's postal address",
                ),
                Relation::NextOfKin => (
                    Rule::NextOfKin,
                    format!(
                        "every opening of a record of a patient whose record names the user as a contact (next of kin, emergency contact) by full name, unless more than {} patients carry the name (once a day per record)",
                        r.max_patients_per_name
                    ),
                    "opened the record of a patient whose record names the user as a contact",
                ),
            };
            out.push(alert(
                rule,
                format!("user:{user}"),
                threshold,
                observed.to_string(),
                vec![o.seq],
            ));
        }

        if st.today_patients.iter().any(|&(p, _)| p == patient) {
            return;
        }
        st.today_patients.push((patient, o.seq));
        let b = &cfg.baseline;
        if st.today_patients_alerted {
            return;
        }
        if let Some((med, spread)) = st.patients_baseline {
            let upper =
                (med + b.patients_mads * spread).max(med + f64::from(b.min_patients_excess));
            let today = st.today_patients.len();
            if today as f64 > upper {
                out.push(alert(
                    Rule::UnusualPatientsPerDay,
                    format!("user:{user}"),
                    format!("more than {upper:.0} patients in a day (median + {} MADs, at least {} over the median)", b.patients_mads, b.min_patients_excess),
                    format!("{today} patients today; usually {:.0}-{:.0}", (med - spread).max(0.0).floor(), (med + spread).ceil()),
                    st.today_patients.iter().map(|&(_, s)| s).collect(),
                ));
                st.today_patients_alerted = true;
            }
        }
    }

    fn prompt(
        &mut self,
        o: &Observed,
        user: &str,
        chars: u64,
        out: &mut Vec<Alert>,
        alert: &impl AlertFn,
    ) {
        let cfg = &self.cfg.raw;
        let Some(st) = self.users.get_mut(user) else {
            return;
        };
        if chars > u64::from(cfg.large_prompt.max_chars) {
            out.push(alert(
                Rule::LargePrompt,
                format!("user:{user}"),
                format!("more than {} characters", cfg.large_prompt.max_chars),
                format!("question of {chars} characters"),
                vec![o.seq],
            ));
        }
        let b = &cfg.baseline;
        // Sizes spread multiplicatively: the baseline works on their logarithm.
        let ln = (chars.max(1) as f64).ln();
        let judged = st.prompt_ln_chars.len() >= b.cold_start_prompts as usize
            && chars >= u64::from(b.min_prompt_chars);
        if judged
            && let Some((med, spread)) =
                median_mad(st.prompt_ln_chars.iter().map(|&v| f64::from(v)))
        {
            let spread = spread.max(0.1);
            if ln > med + b.prompt_mads * spread {
                out.push(alert(
                    Rule::UnusualPromptSize,
                    format!("user:{user}"),
                    format!(
                        "more than {:.0} characters (median + {} MADs of the user's questions, and at least {})",
                        (med + b.prompt_mads * spread).exp().max(f64::from(b.min_prompt_chars)),
                        b.prompt_mads,
                        b.min_prompt_chars
                    ),
                    format!("question of {chars} characters; usually {:.0}-{:.0}", (med - spread).exp(), (med + spread).exp()),
                    vec![o.seq],
                ));
            }
        }
        push_capped(&mut st.prompt_ln_chars, ln as f32, b.history_prompts);
    }

    fn denied(
        &mut self,
        o: &Observed,
        user: &str,
        outcome: &str,
        out: &mut Vec<Alert>,
        alert: &impl AlertFn,
    ) {
        let cfg = &self.cfg.raw.denied_access;
        let Some(st) = self.users.get_mut(user) else {
            return;
        };
        let span = i64::from(cfg.window_minutes) * 60;
        st.denied.push(o.ts, o.seq, 0, span);
        if st.denied.len() >= cfg.max_denials as usize && !st.denied.quiet(o.ts) {
            out.push(alert(
                Rule::DeniedAccess,
                format!("user:{user}"),
                format!(
                    "{} refused requests in {} min",
                    cfg.max_denials, cfg.window_minutes
                ),
                format!(
                    "{} refused requests in {} min (last: {outcome})",
                    st.denied.len(),
                    cfg.window_minutes
                ),
                st.denied.seqs(),
            ));
            st.denied.fire(o.ts, span);
        }
    }

    fn signin_failed(
        &mut self,
        o: &Observed,
        account: Option<&str>,
        client: Option<&str>,
        unknown_account: bool,
        out: &mut Vec<Alert>,
        alert: &impl AlertFn,
    ) {
        let s = &self.cfg.raw.signin;
        let span = i64::from(s.window_minutes) * 60;
        if let Some(account) = account {
            let key = crate::record::hash_id(account);
            sweep(&mut self.signin.by_account, o.ts, span);
            let w = self.signin.by_account.entry(key).or_default();
            w.push(o.ts, o.seq, key, span);
            if w.len() >= s.account_failures as usize && !w.quiet(o.ts) {
                // A name that is no account may be a password typed in the wrong field: never repeat it.
                let subject = if unknown_account {
                    "unknown account".to_string()
                } else {
                    format!("account:{account}")
                };
                out.push(alert(
                    Rule::SigninFailuresAccount,
                    subject,
                    format!(
                        "{} failed sign-ins for one account in {} min",
                        s.account_failures, s.window_minutes
                    ),
                    format!("{} failed sign-ins in {} min", w.len(), s.window_minutes),
                    w.seqs(),
                ));
                w.fire(o.ts, span);
            }
            let spray_span = i64::from(s.spray_window_minutes) * 60;
            let spray = &mut self.signin.spray;
            spray.push(o.ts, o.seq, key, spray_span);
            if spray.distinct() >= s.spray_accounts as usize && !spray.quiet(o.ts) {
                out.push(alert(
                    Rule::PasswordSpraying,
                    "box".into(),
                    format!(
                        "failed sign-ins for {} different accounts in {} min",
                        s.spray_accounts, s.spray_window_minutes
                    ),
                    format!(
                        "failed sign-ins for {} different accounts in {} min ({} attempts)",
                        spray.distinct(),
                        s.spray_window_minutes,
                        spray.len()
                    ),
                    spray.seqs(),
                ));
                spray.fire(o.ts, spray_span);
            }
        }
        if let Some(client) = client {
            sweep(&mut self.signin.by_address, o.ts, span);
            let w = self
                .signin
                .by_address
                .entry(client.to_string())
                .or_default();
            w.push(o.ts, o.seq, 0, span);
            if w.len() >= s.address_failures as usize && !w.quiet(o.ts) {
                out.push(alert(
                    Rule::SigninFailuresAddress,
                    format!("address:{client}"),
                    format!(
                        "{} failed sign-ins from one address in {} min",
                        s.address_failures, s.window_minutes
                    ),
                    format!("{} failed sign-ins in {} min", w.len(), s.window_minutes),
                    w.seqs(),
                ));
                w.fire(o.ts, span);
            }
        }
    }
}

/// Builds an alert stamped with the current record's time.
trait AlertFn: Fn(Rule, String, String, String, Vec<u64>) -> Alert {}
impl<F: Fn(Rule, String, String, String, Vec<u64>) -> Alert> AlertFn for F {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Feeds records built from (seconds since Monday 2026-11-23 00:00 UTC, kind, actor, detail).
    struct Feed {
        d: Detector,
        seq: u64,
    }

    const MONDAY: i64 = 20_780 * 86_400;

    impl Feed {
        fn new() -> Self {
            Feed {
                d: Detector::new(&AlertsConfig::default()).expect("defaults"),
                seq: 0,
            }
        }
        fn at(&mut self, secs: i64, kind: &str, actor: &str, detail: Value) -> Vec<Alert> {
            self.seq += 1;
            let ts = jiff::Timestamp::from_second(MONDAY + secs)
                .expect("time")
                .to_string();
            let detail = detail.to_string();
            self.d
                .observe(&Record {
                    seq: self.seq,
                    ts: &ts,
                    kind,
                    actor,
                    detail: &detail,
                })
                .expect("readable")
        }
        fn view(&mut self, secs: i64, user: &str, patient: &str) -> Vec<Alert> {
            self.at(secs, "access", user, json!({ "who": { "user": user, "break_glass": false }, "route": "/patients/{id}", "path": format!("/patients/{patient}") }))
        }
    }

    fn rules(alerts: &[Alert]) -> Vec<Rule> {
        alerts.iter().map(|a| a.rule).collect()
    }

    const H: i64 = 3600;

    #[test]
    fn monday_is_a_monday() {
        assert_eq!(Local::of(MONDAY, 0).weekday, 0);
    }

    #[test]
    fn off_hours_alerts_once_per_cooldown() {
        let mut f = Feed::new();
        assert!(f.at(9 * H, "login", "ann", json!({})).is_empty());
        assert!(
            f.at(18 * H + 50 * 60, "login", "ann", json!({})).is_empty(),
            "inside the grace"
        );
        let a = f.at(22 * H, "login", "ann", json!({}));
        assert_eq!(rules(&a), vec![Rule::OffHours]);
        assert_eq!(a[0].observed, "activity at Mon 22:00 local");
        assert_eq!(
            a[0].threshold,
            "clinic hours Mon 07:30-18:30 with 30 min grace"
        );
        assert_eq!(a[0].seqs, vec![3]);
        assert!(f.view(22 * H + 60, "ann", "P1").is_empty(), "same episode");
        let a = f.at(5 * 86_400 + 10 * H, "login", "ann", json!({}));
        assert_eq!(a[0].threshold, "clinic closed on Sat");
    }

    #[test]
    fn bulk_access_counts_distinct_patients_in_the_window() {
        let mut f = Feed::new();
        for i in 0..40 {
            assert!(
                f.view(9 * H + i * 10, "ann", "P1").is_empty(),
                "one patient many times is not bulk"
            );
        }
        let mut fired = Vec::new();
        for i in 0..31 {
            fired.extend(f.view(10 * H + i * 60, "ann", &format!("Q{i}")));
        }
        assert_eq!(rules(&fired), vec![Rule::BulkAccess]);
        assert_eq!(fired[0].observed, "31 distinct patients in 60 min");
        // The patient seen before the burst is in the window too, so 30 new ones are enough.
        assert_eq!(fired[0].seqs.len(), 31);
        assert!(
            !fired[0].summary().contains("Q1"),
            "no patient id in an alert"
        );
    }

    #[test]
    fn failed_signins_per_account_address_and_across_accounts() {
        let mut f = Feed::new();
        let fail = |f: &mut Feed, t: i64, user: &str, client: &str, reason: &str| {
            f.at(
                t,
                "login_failed",
                user,
                json!({ "user": user, "client": client, "reason": reason, "emergency": false }),
            )
        };
        let mut got = Vec::new();
        for i in 0..5 {
            got.extend(fail(
                &mut f,
                10 * H + i * 30,
                "bob",
                "10.0.0.9",
                "bad_password",
            ));
        }
        assert_eq!(rules(&got), vec![Rule::SigninFailuresAccount]);
        assert_eq!(got[0].subject, "account:bob");
        got.clear();
        for (i, name) in ["hunter2!", "amy", "cat", "dan", "eve"].iter().enumerate() {
            got.extend(fail(
                &mut f,
                11 * H + i as i64 * 60,
                name,
                "10.0.0.7",
                if i == 0 {
                    "unknown_user"
                } else {
                    "bad_password"
                },
            ));
        }
        assert_eq!(
            rules(&got),
            vec![Rule::PasswordSpraying],
            "bob's earlier failures are not in the 30 min window"
        );
        got.clear();
        for i in 0..5 {
            got.extend(fail(
                &mut f,
                12 * H + i * 20,
                "hunter2!",
                "10.0.0.7",
                "unknown_user",
            ));
        }
        assert_eq!(rules(&got), vec![Rule::SigninFailuresAccount]);
        assert_eq!(
            got[0].subject, "unknown account",
            "a name that is no account is never repeated"
        );
        got.clear();
        for i in 0..10 {
            got.extend(fail(
                &mut f,
                14 * H + i * 20,
                if i % 2 == 0 { "amy" } else { "cat" },
                "10.0.0.8",
                "bad_password",
            ));
        }
        assert_eq!(
            rules(&got),
            vec![
                Rule::SigninFailuresAccount,
                Rule::SigninFailuresAccount,
                Rule::SigninFailuresAddress
            ]
        );
    }

    #[test]
    fn break_glass_use_and_overrun() {
        let mut f = Feed::new();
        let a = f.at(10 * H, "security_alert", "ann", json!({ "event": "break_glass_login", "who": {}, "reason": { "sha256": "x", "chars": 9 } }));
        assert_eq!(rules(&a), vec![Rule::BreakGlassUse]);
        let bg = |f: &mut Feed, t| {
            f.at(
                t,
                "access",
                "ann",
                json!({ "who": { "break_glass": true }, "path": "/patients/P1" }),
            )
        };
        assert!(bg(&mut f, 10 * H + 59 * 60).is_empty());
        let a = bg(&mut f, 11 * H + 5 * 60);
        assert_eq!(rules(&a), vec![Rule::BreakGlassOverrun]);
        assert_eq!(a[0].seqs, vec![1, 3]);
        assert!(bg(&mut f, 11 * H + 6 * 60).is_empty(), "reported once");
    }

    #[test]
    fn dormant_account_wakes_up() {
        let mut f = Feed::new();
        assert!(
            f.at(9 * H, "login", "ann", json!({})).is_empty(),
            "a first sign-in is not dormancy"
        );
        assert!(
            f.at(9 * H + 84 * 86_400, "login", "ann", json!({}))
                .is_empty()
        );
        let a = f.at(9 * H + 176 * 86_400, "login", "ann", json!({}));
        assert_eq!(rules(&a), vec![Rule::DormantAccount]);
        assert_eq!(a[0].observed, "first activity after 92 days");
    }

    #[test]
    fn patients_per_day_against_the_users_own_history() {
        let mut f = Feed::new();
        // Two weeks of 5 to 9 patients on weekdays.
        let mut day = 0;
        for week in 0..3 {
            for wd in 0..5 {
                let n = 5 + (week + wd) % 5;
                for p in 0..n {
                    assert!(
                        f.view(
                            (week * 7 + wd) * 86_400 + 9 * H + p * 600,
                            "ann",
                            &format!("P{day}-{p}")
                        )
                        .is_empty()
                    );
                }
                day += 1;
            }
        }
        let mut got = Vec::new();
        for p in 0..20 {
            got.extend(f.view(21 * 86_400 + 9 * H + p * 300, "ann", &format!("X{p}")));
        }
        assert_eq!(rules(&got), vec![Rule::UnusualPatientsPerDay]);
        assert_eq!(got[0].observed, "16 patients today; usually 5-9");
        assert_eq!(
            got[0].threshold,
            "more than 15 patients in a day (median + 5 MADs, at least 8 over the median)"
        );
    }

    #[test]
    fn working_hours_against_the_users_own_days() {
        let mut f = Feed::new();
        for day in 0..12 {
            let d = (day / 5) * 7 + day % 5;
            assert!(
                f.at(d * 86_400 + 8 * H, "login", "ann", json!({}))
                    .is_empty()
            );
            assert!(f.view(d * 86_400 + 12 * H, "ann", "P1").is_empty());
        }
        // Day 12 (a Wednesday): an hour later than usual is fine, the evening is not.
        assert!(
            f.at(16 * 86_400 + 13 * H, "login", "ann", json!({}))
                .is_empty()
        );
        let a = f.view(16 * 86_400 + 16 * H + 30 * 60, "ann", "P2");
        assert_eq!(rules(&a), vec![Rule::UnusualHour]);
        assert_eq!(a[0].observed, "active at 16:30; usually works 08:00-12:00");
        assert!(
            f.view(16 * 86_400 + 17 * H, "ann", "P3").is_empty(),
            "once a day"
        );
    }

    #[test]
    fn prompt_sizes_absolute_and_against_the_users_own() {
        let mut f = Feed::new();
        let ask = |f: &mut Feed, t: i64, chars: u64| {
            f.at(t, "query", "ann", json!({ "who": {}, "patient": "P1", "task": "ask", "text": { "sha256": "00", "chars": chars } }))
        };
        for i in 0..30 {
            assert!(
                ask(&mut f, 9 * H + i * 60, 200 + (i as u64 % 5) * 50).is_empty(),
                "cold start"
            );
        }
        let a = ask(&mut f, 10 * H, 5000);
        assert_eq!(rules(&a), vec![Rule::UnusualPromptSize]);
        assert_eq!(
            a[0].observed,
            "question of 5000 characters; usually 229-393"
        );
        assert_eq!(
            a[0].threshold,
            "more than 1500 characters (median + 3 MADs of the user's questions, and at least 1500)"
        );
        assert_eq!(
            rules(&ask(&mut f, 10 * H + 60, 9000)),
            vec![Rule::LargePrompt, Rule::UnusualPromptSize]
        );
    }

    #[test]
    fn related_records_alert_once_a_day_per_record_and_name_no_one() {
        let mut f = Feed::new();
        let cfg = crate::config::RelatedRecords::default();
        let staff = [("ann", "Dr Ann Quist"), ("bob", "Bob Marr")];
        let patients = [("101", "Ann Quist"), ("102", "Marr, Bob"), ("103", "Lena Quist"), ("104", "Ed Other")];
        f.d.set_relations(Relations::build(&cfg, staff, patients));
        assert!(f.view(9 * H, "ann", "104").is_empty());
        let own = f.view(9 * H + 60, "ann", "101");
        assert_eq!(rules(&own), vec![Rule::OwnRecord]);
        assert_eq!(own[0].seqs, vec![2]);
        assert!(f.view(9 * H + 120, "ann", "101").is_empty(), "once a day");
        assert_eq!(rules(&f.view(9 * H + 180, "ann", "102")), vec![Rule::CoworkerRecord]);
        let kin = f.view(9 * H + 240, "ann", "103");
        assert_eq!(rules(&kin), vec![Rule::SameSurname]);
        let text = serde_json::to_string(&kin).expect("json");
        assert!(!text.to_lowercase().contains("quist") && !text.contains("103"), "{text}");
        assert_eq!(rules(&f.view(86_400 + 9 * H, "ann", "101")), vec![Rule::OwnRecord], "the next day again");
        assert_eq!(rules(&f.view(86_400 + 9 * H + 60, "bob", "101")), vec![Rule::CoworkerRecord]);
        // A record naming Bob as its contact.
        let mut r = Relations::build(&cfg, staff, patients);
        r.add_next_of_kin(&cfg, staff, patients, [("104", "Marr, Bob")]);
        f.d.set_relations(r);
        let nok = f.view(86_400 + 9 * H + 120, "bob", "104");
        assert_eq!(rules(&nok), vec![Rule::NextOfKin]);
        let text = serde_json::to_string(&nok).expect("json");
        assert!(!text.to_lowercase().contains("marr") && !text.contains("104"), "{text}");
        assert!(f.view(86_400 + 9 * H + 180, "bob", "104").is_empty(), "once a day");
    }

    #[test]
    fn repeated_refusals() {
        let mut f = Feed::new();
        let deny = |f: &mut Feed, t: i64| {
            f.at(
                t,
                "access",
                "ann",
                json!({ "who": {}, "route": "/admin", "outcome": "denied_role" }),
            )
        };
        assert!(deny(&mut f, 9 * H).is_empty());
        assert!(
            deny(&mut f, 9 * H + 700).is_empty(),
            "the first left the 10 min window"
        );
        assert!(deny(&mut f, 9 * H + 800).is_empty());
        let a = deny(&mut f, 9 * H + 900);
        assert_eq!(rules(&a), vec![Rule::DeniedAccess]);
        assert_eq!(a[0].seqs, vec![2, 3, 4]);
    }

    #[test]
    fn records_must_come_in_order_and_replays_agree() {
        let mut f = Feed::new();
        f.at(22 * H, "login", "ann", json!({}));
        let r = Record {
            seq: 1,
            ts: "2026-11-23T22:00:00Z",
            kind: "login",
            actor: "ann",
            detail: "{}",
        };
        assert_eq!(
            f.d.observe(&r),
            Err(RecordError::OutOfOrder { seq: 1, last: 1 })
        );
        let bad = Record {
            seq: 5,
            ts: "2026-11-23 22:00",
            kind: "login",
            actor: "ann",
            detail: "{}",
        };
        assert!(matches!(
            f.d.observe(&bad),
            Err(RecordError::Timestamp { seq: 5, .. })
        ));
    }

    /// Each system source is filed under its own rule; before, a source without a rule of its
    /// own fell to `audit_chain`, and the update records raised nothing.
    #[test]
    fn system_alerts_are_filed_under_their_own_source() {
        let mut f = Feed::new();
        let cases = [
            (json!({ "source": "audit", "event": "chain_broken", "reason": "record 9" }), Rule::AuditChain, "chain_broken"),
            (
                json!({ "source": "update", "bundle_sha256": "ab", "from": "1.0.0", "to": "1.1.0", "outcome": "fell-back", "reason": "the box booted version 1.0.0, not 1.1.0" }),
                Rule::Update,
                "fell-back",
            ),
            (json!({ "source": "update", "reason": "cannot raise the TPM anti-rollback floor: busy" }), Rule::Update, "failed"),
            (json!({ "source": "disk", "event": "space_critical" }), Rule::DiskSpace, "space_critical"),
            (
                json!({ "source": "usb", "event": "storage_refused", "device": "1-2", "detail": "0781:5583 USB storage is refused" }),
                Rule::UsbRefused,
                "storage_refused: 0781:5583 USB storage is refused",
            ),
            (json!({ "source": "thermal", "event": "overheated" }), Rule::UnknownSystemAlert, "overheated"),
        ];
        for (i, (detail, rule, observed)) in cases.into_iter().enumerate() {
            let got = f.at(10 * H + i as i64 * 60, "security_alert", "system", detail);
            assert_eq!(rules(&got), vec![rule], "{got:?}");
            assert_eq!(got[0].observed, observed);
            assert_eq!(got[0].subject, "box");
        }
        let got = f.at(11 * H, "security_alert", "system", json!({ "source": "thermal", "event": "overheated" }));
        assert!(got[0].threshold.contains("thermal"), "the unknown source is named: {got:?}");
        assert_eq!(Rule::UnknownSystemAlert.as_str(), "unknown_system_alert");
        assert_eq!(Rule::Update.as_str(), "update");
        assert_eq!(Rule::DiskSpace.as_str(), "disk_space");
    }

}
