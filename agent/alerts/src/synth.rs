//! Synthetic audit streams for measuring the detector: weeks of ordinary work by 15 staff,
//! with incidents of each kind injected at known times, from a fixed seed.
//!
//! The records have the shapes the agent writes (see `record.rs`); the people in them are
//! invented: a mix of full-time and part-time clinicians and nurses (some only mornings or
//! afternoons, some on Saturdays), two administrators and an auditor, with their own pace of
//! patients, question lengths, typos at the sign-in page, re-sign-ins after idle time,
//! holidays, vacations and the odd evening spent finishing notes. [`evaluate`] runs a detector
//! over a stream and scores each rule: recall on the injected incidents, and alerts that touch
//! no incident record (false alerts) per user-week.

mod addresses;
mod contacts;
mod names;

use std::collections::{BTreeMap, BTreeSet, HashSet};

pub use addresses::Addresses;
pub use contacts::{Contact, Contacts};
pub use names::{Directory, Family};

use serde_json::{Value, json};

use crate::config::{AlertsConfig, RelatedRecords};
use crate::detector::{Alert, Detector, Rule};
use crate::record::Record;
use crate::relations::Relations;
use crate::time::days_from_civil;

/// splitmix64: small, fast, and the same sequence on every platform for a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform integer in [lo, hi].
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i64
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-12);
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.int(0, items.len() as i64 - 1) as usize]
    }
}

/// A record of a generated stream, owned.
#[derive(Debug, Clone)]
pub struct OwnedRecord {
    pub seq: u64,
    pub ts: String,
    pub kind: &'static str,
    pub actor: String,
    pub detail: String,
}

impl OwnedRecord {
    pub fn as_record(&self) -> Record<'_> {
        Record {
            seq: self.seq,
            ts: &self.ts,
            kind: self.kind,
            actor: &self.actor,
            detail: &self.detail,
        }
    }
}

/// An injected incident: the rule that should catch it and its records.
#[derive(Debug, Clone)]
pub struct Incident {
    pub rule: Rule,
    pub user: String,
    pub seqs: Vec<u64>,
}

/// A generated stream with its ground truth.
#[derive(Debug)]
pub struct Stream {
    pub config: AlertsConfig,
    pub records: Vec<OwnedRecord>,
    pub incidents: Vec<Incident>,
    /// The ordinary staff (the 15 users) times the weeks: the denominator of false alerts.
    pub user_weeks: f64,
    /// The staff's and the patients' names (for the related-record rules).
    pub directory: Directory,
    /// The staff's and the patients' postal addresses (for `same_address`); empty unless the
    /// scenario asks for them.
    pub addresses: Addresses,
    /// The contacts (next of kin) the patients' records give; empty unless the scenario asks
    /// for them.
    pub contacts: Contacts,
}

impl Stream {
    /// The relations between staff and patients, built from the stream's names and addresses
    /// as the agent builds them from its store.
    pub fn relations(&self) -> Relations {
        self.relations_for(&self.config.related_records)
    }

    /// The same with other related-record settings (a rule switched off).
    pub fn relations_for(&self, cfg: &RelatedRecords) -> Relations {
        let staff = || self.directory.staff.iter().map(|(u, n)| (u.as_str(), n.as_str()));
        let patients = || self.directory.patients.iter().map(|(p, n)| (p.as_str(), n.as_str()));
        let mut r = Relations::build(cfg, staff(), patients());
        r.add_next_of_kin(cfg, staff(), patients(), self.contacts.contacts.iter().map(|c| (c.patient.as_str(), c.name.as_str())));
        r.add_addresses(
            cfg,
            self.addresses.staff.iter().map(|(u, a)| (u.as_str(), a.as_str())),
            self.addresses.patients.iter().map(|(p, l)| (p.as_str(), l.as_str())),
        );
        r
    }
}

/// What a stream looks like.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    pub weeks: u32,
    /// Incidents of each kind injected.
    pub incidents_per_kind: u32,
    /// How the names (and addresses) of staff and patients are written (development or held
    /// out).
    pub family: Family,
    /// Postal addresses for staff and patients (households, flats, a care home: `synth/addresses.rs`)
    /// and incidents of a user opening the record of someone in their household, for
    /// `same_address`. Without them a stream is the one measured before addresses existed.
    pub addresses: bool,
    /// Contacts (next of kin) on the patients' records, staff members among them for their
    /// relatives (`synth/contacts.rs`), for `next_of_kin`. Without them a stream is the one
    /// measured before contacts existed.
    pub contacts: bool,
}

/// The rules the generator injects incidents for.
pub const INJECTED: [Rule; 15] = [
    Rule::OffHours,
    Rule::BulkAccess,
    Rule::LargePrompt,
    Rule::SigninFailuresAccount,
    Rule::SigninFailuresAddress,
    Rule::PasswordSpraying,
    Rule::DeniedAccess,
    Rule::BreakGlassUse,
    Rule::BreakGlassOverrun,
    Rule::DormantAccount,
    Rule::FirewallCheck,
    Rule::GpuDegraded,
    Rule::UnusualPatientsPerDay,
    Rule::UnusualPromptSize,
    Rule::UnusualHour,
];

/// The related-record rules' incidents, injected after the others from a generator of their
/// own (so the streams of the rules above are the same as before these existed).
pub const INJECTED_RELATED: [Rule; 3] = [Rule::OwnRecord, Rule::CoworkerRecord, Rule::SameSurname];

const OFFSET_MIN: i64 = 60;
const USERS: usize = 15;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Clinician,
    Nurse,
    Admin,
    Auditor,
}

#[derive(Debug, Clone)]
struct Person {
    name: String,
    role: Role,
    /// Weekdays worked (0 = Monday).
    days: Vec<usize>,
    /// Shift in local minutes.
    start: i64,
    end: i64,
    patients_mean: f64,
    prompt_median: f64,
    prompt_sigma: f64,
    ask_chance: f64,
    workstation: String,
    /// Vacation: local day numbers off.
    vacation: HashSet<i64>,
}

#[derive(Debug)]
struct Event {
    t: i64,
    kind: &'static str,
    actor: String,
    detail: Value,
    incident: Option<usize>,
}

struct Gen {
    rng: Rng,
    events: Vec<Event>,
    incidents: Vec<(Rule, String)>,
    holidays: HashSet<i64>,
    patients: u32,
    session: u64,
}

fn utc(day: i64, minute: i64, rng: &mut Rng) -> i64 {
    (day * 1440 + minute - OFFSET_MIN) * 60 + rng.int(0, 59)
}

impl Gen {
    fn push(
        &mut self,
        t: i64,
        kind: &'static str,
        actor: &str,
        detail: Value,
        incident: Option<usize>,
    ) {
        self.events.push(Event {
            t,
            kind,
            actor: actor.to_string(),
            detail,
            incident,
        });
    }

    fn who(&mut self, p: &Person, client: &str, break_glass: bool) -> Value {
        let role = match p.role {
            Role::Clinician => "clinician",
            Role::Nurse => "nurse",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        };
        json!({ "user": p.name, "role": role, "client": client, "session": format!("s{}", self.session), "break_glass": break_glass })
    }

    fn patient(&mut self) -> String {
        format!("P{:05}", self.rng.int(0, i64::from(self.patients) - 1))
    }

    fn login(&mut self, t: i64, p: &Person, client: &str, inc: Option<usize>) {
        self.session += 1;
        let who = self.who(p, client, false);
        self.push(
            t,
            "login",
            &p.name,
            json!({ "who": who, "source": "local" }),
            inc,
        );
    }

    fn fail(&mut self, t: i64, account: &str, client: &str, reason: &str, inc: Option<usize>) {
        self.push(
            t,
            "login_failed",
            account,
            json!({ "user": account, "client": client, "reason": reason, "emergency": false }),
            inc,
        );
    }

    fn view(
        &mut self,
        t: i64,
        p: &Person,
        client: &str,
        patient: &str,
        bg: bool,
        inc: Option<usize>,
    ) {
        let who = self.who(p, client, bg);
        self.push(t, "access", &p.name, json!({ "who": who, "method": "GET", "route": "/patients/{id}", "path": format!("/patients/{patient}") }), inc);
    }

    fn ask(
        &mut self,
        t: i64,
        p: &Person,
        client: &str,
        patient: &str,
        chars: u64,
        inc: Option<usize>,
    ) {
        let who = self.who(p, client, false);
        let text = json!({ "sha256": format!("{:016x}", self.rng.next_u64()), "chars": chars });
        self.push(
            t,
            "query",
            &p.name,
            json!({ "who": who, "patient": patient, "task": "ask", "text": text }),
            inc,
        );
        let answer = json!({ "sha256": format!("{:016x}", self.rng.next_u64()), "chars": self.rng.int(200, 2000) });
        let who = self.who(p, client, false);
        let t = t + self.rng.int(5, 40);
        self.push(t, "answer", &p.name, json!({ "who": who, "patient": patient, "task": "ask", "answer": answer, "outcome": "done" }), None);
    }

    fn prompt_size(&mut self, p: &Person) -> u64 {
        (p.prompt_median * (p.prompt_sigma * self.rng.normal()).exp())
            .round()
            .clamp(5.0, 7900.0) as u64
    }

    fn new_incident(&mut self, rule: Rule, user: &str) -> usize {
        self.incidents.push((rule, user.to_string()));
        self.incidents.len() - 1
    }

    /// One ordinary working day of a person.
    fn workday(&mut self, day: i64, p: &Person, weekday: usize) {
        let rng = &mut self.rng;
        let jitter = |rng: &mut Rng| (rng.normal() * 12.0).clamp(-25.0, 25.0) as i64;
        let (mut start, mut end) = (p.start + jitter(rng), p.end + jitter(rng));
        if weekday == 5 {
            start = start.max(8 * 60 - 10);
            end = end.min(12 * 60 + 20);
        }
        if rng.chance(0.1) {
            end += rng.int(0, 25); // finishing a note
        }
        let client = if rng.chance(0.3) {
            format!("10.0.2.{}", rng.int(1, 3))
        } else {
            p.workstation.clone()
        };
        let t0 = utc(day, start, &mut self.rng);
        if self.rng.chance(0.05) {
            for i in 0..self.rng.int(1, 2) {
                self.fail(t0 - 60 + i * 20, &p.name, &client, "bad_password", None);
            }
        }
        self.login(t0, p, &client, None);
        let t_end = utc(day, end, &mut self.rng);
        // Re-sign-ins after the idle limit, through the shift.
        for _ in 0..self.rng.int(0, 3) {
            let t = self.rng.int(t0 + 1800, t_end.max(t0 + 1801));
            self.login(t.min(t_end), p, &client, None);
        }
        match p.role {
            Role::Clinician | Role::Nurse => {
                let n = (p.patients_mean + p.patients_mean.sqrt() * self.rng.normal())
                    .round()
                    .max(0.0) as i64;
                for _ in 0..n {
                    let t = self.rng.int(t0 + 30, t_end.max(t0 + 31));
                    let patient = self.patient();
                    self.view(t, p, &client, &patient, false, None);
                    if self.rng.chance(0.4) {
                        let t = t + self.rng.int(20, 300);
                        self.view(t, p, &client, &patient, false, None);
                    }
                    if self.rng.chance(p.ask_chance) {
                        let chars = self.prompt_size(p);
                        let t = t + self.rng.int(30, 400);
                        self.ask(t, p, &client, &patient, chars, None);
                    }
                }
            }
            Role::Admin | Role::Auditor => {
                let page = if p.role == Role::Admin {
                    "/admin/users"
                } else {
                    "/admin/audit"
                };
                for _ in 0..self.rng.int(2, 12) {
                    let t = self.rng.int(t0 + 30, t_end.max(t0 + 31));
                    let who = self.who(p, &client, false);
                    self.push(
                        t,
                        "access",
                        &p.name,
                        json!({ "who": who, "method": "GET", "route": page, "path": page }),
                        None,
                    );
                }
                if p.role == Role::Admin && self.rng.chance(0.2) {
                    let t = self.rng.int(t0 + 30, t_end.max(t0 + 31));
                    let who = self.who(p, &client, false);
                    self.push(
                        t,
                        "admin_action",
                        &p.name,
                        json!({ "who": who, "action": "user_disable", "target": "temp1" }),
                        None,
                    );
                }
            }
        }
        if self.rng.chance(0.01) {
            // A click on a page the role may not open.
            let t = self.rng.int(t0 + 30, t_end.max(t0 + 31));
            let who = self.who(p, &client, false);
            self.push(
                t,
                "access",
                &p.name,
                json!({ "who": who, "method": "GET", "route": "/admin", "outcome": "denied_role" }),
                None,
            );
        }
        let who = self.who(p, &client, false);
        self.push(
            t_end + 30,
            "logout",
            &p.name,
            json!({ "who": who, "reason": "user" }),
            None,
        );
        if self.rng.chance(0.005) {
            // Benign but off hours: an evening at home finishing letters.
            let t = utc(day, self.rng.int(19 * 60 + 30, 21 * 60), &mut self.rng);
            self.login(t, p, &client, None);
            let patient = self.patient();
            self.view(t + 60, p, &client, &patient, false, None);
        }
    }
}

fn people(rng: &mut Rng) -> Vec<Person> {
    let mut out = Vec::new();
    for i in 0..USERS {
        let role = match i {
            0..=7 => Role::Clinician,
            8..=11 => Role::Nurse,
            12 | 13 => Role::Admin,
            _ => Role::Auditor,
        };
        // Users 2, 5, 9 work half days (mornings or afternoons); 3, 4, 10 part time; 6, 11 also on Saturdays.
        let half_day = matches!(i, 2 | 5 | 9);
        let (start, end) = if half_day {
            if i == 5 {
                (13 * 60 + 30 + rng.int(0, 20), 18 * 60 + rng.int(0, 15))
            } else {
                (7 * 60 + 50 + rng.int(0, 20), 12 * 60 + 20 + rng.int(0, 10))
            }
        } else {
            let s = 7 * 60 + 45 + rng.int(0, 75);
            (s, (s + rng.int(7 * 60, 9 * 60 + 30)).min(18 * 60 + 20))
        };
        let mut days: Vec<usize> = if matches!(i, 3 | 4 | 10) {
            vec![0, 1, 3]
        } else {
            vec![0, 1, 2, 3, 4]
        };
        if matches!(i, 6 | 11) {
            days.push(5);
        }
        let patients_mean = match role {
            Role::Clinician => rng.int(6, 18) as f64 * if half_day { 0.6 } else { 1.0 },
            Role::Nurse => rng.int(10, 24) as f64,
            _ => 0.0,
        };
        out.push(Person {
            name: format!(
                "{}{:02}",
                [
                    "dr", "dr", "dr", "dr", "dr", "dr", "dr", "dr", "rn", "rn", "rn", "rn",
                    "admin", "admin", "audit"
                ][i],
                i + 1
            ),
            role,
            days,
            start,
            end,
            patients_mean,
            prompt_median: rng.int(120, 600) as f64,
            prompt_sigma: 0.45 + rng.unit() * 0.2,
            ask_chance: 0.3 + rng.unit() * 0.5,
            workstation: format!("10.0.1.{}", i + 10),
            vacation: HashSet::new(),
        });
    }
    out
}

/// Generate a stream.
pub fn generate(s: &Scenario) -> Stream {
    let mut rng = Rng::new(s.seed);
    // Streams begin on Monday 2026-01-05.
    let first_day = days_from_civil(2026, 1, 5);
    let days = i64::from(s.weeks) * 7;
    let mut staff = people(&mut rng);
    let mut holidays = HashSet::new();
    for _ in 0..(s.weeks / 8 + 1) {
        holidays.insert(first_day + 7 * rng.int(1, i64::from(s.weeks) - 1) + rng.int(0, 4));
    }
    for p in staff.iter_mut() {
        if rng.chance(0.7) {
            let from = first_day + rng.int(21, days - 14);
            p.vacation.extend(from..from + rng.int(5, 14));
        }
    }
    let config = AlertsConfig {
        clinic_hours: crate::config::ClinicHours {
            utc_offset_minutes: OFFSET_MIN as i32,
            sat: "08:00-12:30".into(),
            holidays: holidays
                .iter()
                .collect::<BTreeSet<_>>()
                .iter()
                .map(|&&d| {
                    let date = jiff::civil::Date::new(1970, 1, 1).expect("epoch")
                        + jiff::Span::new().days(d);
                    date.to_string()
                })
                .collect(),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut g = Gen {
        rng,
        events: Vec::new(),
        incidents: Vec::new(),
        holidays,
        patients: 4000,
        session: 0,
    };

    // Incidents first pick their (user, day), so ordinary work on that day can make room.
    let mut plan: Vec<(Rule, usize, i64)> = Vec::new();
    let mut taken = HashSet::new();
    for rule in INJECTED {
        for _ in 0..s.incidents_per_kind {
            loop {
                let u = match rule {
                    Rule::UnusualHour => *g.rng.pick(&[2usize, 5, 9]),
                    Rule::UnusualPatientsPerDay | Rule::BulkAccess | Rule::UnusualPromptSize => {
                        g.rng.int(0, 11) as usize
                    }
                    _ => g.rng.int(0, USERS as i64 - 1) as usize,
                };
                let day = first_day + g.rng.int(28, days - 1);
                let p = &staff[u];
                let wd = ((day + 3).rem_euclid(7)) as usize;
                let works = p.days.contains(&wd)
                    && !g.holidays.contains(&day)
                    && !p.vacation.contains(&day);
                let needs_workday = !matches!(
                    rule,
                    Rule::OffHours
                        | Rule::FirewallCheck
                        | Rule::GpuDegraded
                        | Rule::PasswordSpraying
                        | Rule::DormantAccount
                );
                if (works || !needs_workday) && taken.insert((u, day)) {
                    plan.push((rule, u, day));
                    break;
                }
            }
        }
    }

    for day in first_day..first_day + days {
        let wd = ((day + 3).rem_euclid(7)) as usize;
        if wd == 0 {
            let t = utc(day, 6 * 60, &mut g.rng);
            g.push(
                t,
                "lifecycle",
                "system",
                json!({ "event": "serving", "listen": "0.0.0.0:443" }),
                None,
            );
        }
        if g.holidays.contains(&day) {
            continue;
        }
        for p in staff.clone().iter() {
            if p.days.contains(&wd) && !p.vacation.contains(&day) && !g.rng.chance(0.03) {
                g.workday(day, p, wd);
            }
        }
    }

    // Former staff: active the first two weeks, then gone; one comes back per dormancy incident.
    let dormant_days: Vec<i64> = plan
        .iter()
        .filter(|x| x.0 == Rule::DormantAccount)
        .map(|x| x.2)
        .collect();
    for (k, &back) in dormant_days.iter().enumerate() {
        let mut former = staff[0].clone();
        former.name = format!("former{:02}", k + 1);
        former.workstation = format!("10.0.3.{}", k + 1);
        former.vacation.clear();
        for day in first_day..first_day + 14 {
            let wd = ((day + 3).rem_euclid(7)) as usize;
            if wd < 5 && !g.holidays.contains(&day) {
                g.workday(day, &former, wd);
            }
        }
        // Back after more than 90 days, on a weekday morning.
        let mut back = back.max(first_day + 14 + 92);
        while ((back + 3).rem_euclid(7)) as usize >= 5 || g.holidays.contains(&back) {
            back += 1;
        }
        if back >= first_day + days {
            back = first_day + 14 + 92;
        }
        let inc = g.new_incident(Rule::DormantAccount, &former.name);
        let t = utc(back, 10 * 60, &mut g.rng);
        g.login(t, &former, &former.workstation.clone(), Some(inc));
        for i in 0..g.rng.int(2, 6) {
            let patient = g.patient();
            g.view(
                t + 60 * (i + 1),
                &former,
                &former.workstation.clone(),
                &patient,
                false,
                Some(inc),
            );
        }
    }
    for (rule, u, day) in plan {
        if rule == Rule::DormantAccount {
            continue;
        }
        let p = staff[u].clone();
        inject(&mut g, rule, &p, day);
    }

    let users: Vec<(String, bool)> = staff.iter().map(|p| (p.name.clone(), p.role == Role::Clinician)).collect();
    let directory = names::directory(s.family, s.seed, &users, g.patients as usize);
    inject_related(&mut g, s, &staff, &directory, first_day, days);
    let addresses = if s.addresses { addresses::addresses(s.family, s.seed, &directory) } else { Addresses::default() };
    if s.addresses {
        inject_households(&mut g, s, &staff, &addresses, first_day, days);
    }
    let contacts = if s.contacts { contacts::contacts(s.family, s.seed, &directory, &addresses) } else { Contacts::default() };

    // Sort by time (stable: a login stays before what follows it at the same second).
    let Gen {
        mut events,
        incidents,
        ..
    } = g;
    events.sort_by_key(|e| e.t);
    let mut seqs: Vec<Vec<u64>> = vec![Vec::new(); incidents.len()];
    let mut rng = Rng::new(s.seed ^ 0x5eed);
    let records = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let seq = i as u64 + 1;
            if let Some(k) = e.incident {
                seqs[k].push(seq);
            }
            let ts = jiff::Timestamp::new(e.t, rng.int(0, 999_999_999) as i32)
                .expect("time in range")
                .to_string();
            OwnedRecord {
                seq,
                ts,
                kind: e.kind,
                actor: e.actor,
                detail: e.detail.to_string(),
            }
        })
        .collect();
    let incidents = incidents
        .into_iter()
        .zip(seqs)
        .map(|((rule, user), seqs)| Incident { rule, user, seqs })
        .collect();
    Stream {
        config,
        records,
        incidents,
        user_weeks: (USERS as u32 * s.weeks) as f64,
        directory,
        addresses,
        contacts,
    }
}

/// A clinician or nurse opens the record of someone who lives at their home (a relative by
/// name or of another surname), on a day they work, inside their shift: 1-3 views. Scored as
/// `same_address` incidents; with the `same_surname` ones they are the openings of relatives'
/// records ([`evaluate_relatives`]).
fn inject_households(g: &mut Gen, s: &Scenario, staff: &[Person], addresses: &Addresses, first_day: i64, days: i64) {
    let mut rng = Rng::new(s.seed ^ 0x686f_7573_6568);
    for _ in 0..s.incidents_per_kind {
        for _attempt in 0..10_000 {
            let u = rng.int(0, 11) as usize;
            let home = &addresses.household[u];
            let p = &staff[u];
            let day = first_day + rng.int(28, days - 1);
            let wd = ((day + 3).rem_euclid(7)) as usize;
            let works = p.days.contains(&wd) && wd < 5 && !g.holidays.contains(&day) && !p.vacation.contains(&day);
            if home.is_empty() || !works {
                continue;
            }
            let target = home[rng.int(0, home.len() as i64 - 1) as usize];
            let inc = g.new_incident(Rule::SameAddress, &p.name);
            let minute = rng.int(p.start + 30, (p.end - 30).max(p.start + 31));
            let t = utc(day, minute, &mut rng);
            let patient = names::patient_id(target);
            let client = p.workstation.clone();
            for k in 0..rng.int(1, 3) {
                g.view(t + k * rng.int(20, 240), p, &client, &patient, false, Some(inc));
            }
            break;
        }
    }
}

/// A clinician or nurse opens their own record, a co-worker's, or a relative's, on a day they
/// work, inside their shift: 1-3 views, sometimes a question.
fn inject_related(g: &mut Gen, s: &Scenario, staff: &[Person], dir: &Directory, first_day: i64, days: i64) {
    let mut rng = Rng::new(s.seed ^ 0x7265_6c61_7465);
    for rule in INJECTED_RELATED {
        for _ in 0..s.incidents_per_kind {
            for _attempt in 0..10_000 {
                let u = rng.int(0, 11) as usize;
                let target = match rule {
                    Rule::OwnRecord => dir.own_record[u],
                    Rule::CoworkerRecord => {
                        let v = rng.int(0, USERS as i64 - 1) as usize;
                        if v == u { None } else { dir.own_record[v] }
                    }
                    _ => {
                        let kin = &dir.relatives[u];
                        (!kin.is_empty()).then(|| kin[rng.int(0, kin.len() as i64 - 1) as usize])
                    }
                };
                let p = &staff[u];
                let day = first_day + rng.int(28, days - 1);
                let wd = ((day + 3).rem_euclid(7)) as usize;
                let works = p.days.contains(&wd) && wd < 5 && !g.holidays.contains(&day) && !p.vacation.contains(&day);
                let Some(target) = target.filter(|_| works) else { continue };
                let inc = g.new_incident(rule, &p.name);
                let minute = rng.int(p.start + 30, (p.end - 30).max(p.start + 31));
                let t = utc(day, minute, &mut rng);
                let patient = names::patient_id(target);
                let client = p.workstation.clone();
                for k in 0..rng.int(1, 3) {
                    g.view(t + k * rng.int(20, 240), p, &client, &patient, false, Some(inc));
                }
                break;
            }
        }
    }
}

/// Add one incident of a kind for a person on a day.
fn inject(g: &mut Gen, rule: Rule, p: &Person, day: i64) {
    let inc = g.new_incident(rule, &p.name);
    let i = Some(inc);
    let client = p.workstation.clone();
    let in_shift = |g: &mut Gen| {
        let m = g.rng.int(p.start + 20, (p.end - 60).max(p.start + 21));
        utc(day, m, &mut g.rng)
    };
    match rule {
        Rule::OffHours => {
            let wd = ((day + 3).rem_euclid(7)) as usize;
            let minute = if wd >= 5 || g.holidays.contains(&day) {
                g.rng.int(9 * 60, 17 * 60)
            } else {
                g.rng.int(21 * 60, 27 * 60 + 30) % 1440
            };
            let t = utc(day, minute, &mut g.rng);
            g.login(t, p, &client, i);
            for k in 0..g.rng.int(2, 5) {
                let patient = g.patient();
                g.view(t + 90 * (k + 1), p, &client, &patient, false, i);
            }
        }
        Rule::BulkAccess => {
            let t = in_shift(g);
            let n = g.rng.int(35, 80);
            let span = g.rng.int(15, 50) * 60;
            for k in 0..n {
                let patient = g.patient();
                g.view(t + span * k / n, p, &client, &patient, false, i);
            }
        }
        Rule::LargePrompt => {
            let t = in_shift(g);
            let patient = g.patient();
            let chars = g.rng.int(8500, 20_000) as u64;
            g.ask(t, p, &client, &patient, chars, i);
        }
        Rule::SigninFailuresAccount => {
            let t = in_shift(g);
            let from = [
                format!("10.0.9.{}", g.rng.int(1, 200)),
                format!("10.0.9.{}", g.rng.int(1, 200)),
            ];
            let n = g.rng.int(6, 20);
            let span = g.rng.int(3, 12) * 60;
            for k in 0..n {
                let c = from[(k % 2) as usize].clone();
                g.fail(t + span * k / n, &p.name, &c, "bad_password", i);
            }
        }
        Rule::SigninFailuresAddress => {
            let t = in_shift(g);
            let c = format!("10.0.8.{}", g.rng.int(1, 200));
            let n = g.rng.int(12, 25);
            let span = g.rng.int(4, 13) * 60;
            let names = [p.name.clone(), "admin".into(), "root".into()];
            for k in 0..n {
                let name = &names[(k % 3) as usize];
                let reason = if k % 3 == 0 {
                    "bad_password"
                } else {
                    "unknown_user"
                };
                g.fail(t + span * k / n, name, &c, reason, i);
            }
        }
        Rule::PasswordSpraying => {
            let t = utc(day, g.rng.int(0, 1439), &mut g.rng);
            let accounts = g.rng.int(6, 12);
            let span = g.rng.int(10, 28) * 60;
            let addresses = g.rng.int(2, 6);
            for k in 0..accounts {
                let name = if k % 3 == 2 {
                    format!("user{k}")
                } else {
                    format!("{}{:02}", if k % 2 == 0 { "dr" } else { "rn" }, k + 1)
                };
                let c = format!("10.0.7.{}", k % addresses + 1);
                let reason = if name.starts_with("user") {
                    "unknown_user"
                } else {
                    "bad_password"
                };
                g.fail(t + span * k / accounts, &name, &c, reason, i);
            }
        }
        Rule::DeniedAccess => {
            let t = in_shift(g);
            let n = g.rng.int(3, 8);
            let span = g.rng.int(2, 8) * 60;
            for k in 0..n {
                let who = g.who(p, &client, false);
                let (route, outcome) = if k % 2 == 0 {
                    ("/admin", "denied_role")
                } else {
                    ("/patients/{id}", "denied_patient")
                };
                g.push(
                    t + span * k / n,
                    "access",
                    &p.name,
                    json!({ "who": who, "method": "GET", "route": route, "outcome": outcome }),
                    i,
                );
            }
        }
        Rule::BreakGlassUse | Rule::BreakGlassOverrun => {
            let t = utc(day, g.rng.int(0, 1439), &mut g.rng);
            let who = g.who(p, &client, true);
            g.push(t, "security_alert", &p.name, json!({ "event": "break_glass_login", "who": who, "reason": { "sha256": "00", "chars": 40 } }), i);
            let last = if rule == Rule::BreakGlassOverrun {
                g.rng.int(65, 150) * 60
            } else {
                g.rng.int(5, 50) * 60
            };
            let n = g.rng.int(2, 5);
            for k in 1..=n {
                let patient = g.patient();
                g.view(t + last * k / n, p, &client, &patient, true, i);
            }
        }
        Rule::FirewallCheck => {
            let t = utc(day, g.rng.int(0, 1439), &mut g.rng);
            let event = if g.rng.chance(0.5) {
                json!({ "source": "firewall", "event": "verify_failed", "reason": "table missing" })
            } else {
                json!({ "source": "firewall", "event": "drift_repaired", "drift": ["rule 3"] })
            };
            g.push(t, "security_alert", "system", event, i);
        }
        Rule::GpuDegraded => {
            let t = utc(day, g.rng.int(0, 1439), &mut g.rng);
            let to = if g.rng.chance(0.7) {
                "degraded"
            } else {
                "failed"
            };
            g.push(t, "security_alert", "system", json!({ "source": "gpu", "transition": { "gpu": "GPU-0", "from": "healthy", "to": to, "reason": "xid 79" } }), i);
            // The recovery is ordinary.
            g.push(t + 1800, "security_alert", "system", json!({ "source": "gpu", "transition": { "gpu": "GPU-0", "from": to, "to": "healthy", "reason": "ok" } }), None);
        }
        Rule::UnusualPatientsPerDay => {
            // Spread over the shift, under the bulk rule's pace: many patients, no burst.
            let n = (p.patients_mean * 2.5).round() as i64 + g.rng.int(10, 20);
            let t0 = utc(day, p.start, &mut g.rng);
            let t1 = utc(day, p.end, &mut g.rng).max(t0 + n * 150);
            for k in 0..n {
                let patient = g.patient();
                g.view(t0 + (t1 - t0) * k / n, p, &client, &patient, false, i);
            }
        }
        Rule::UnusualPromptSize => {
            // A document pasted into a question, below the absolute limit.
            let t = in_shift(g);
            let patient = g.patient();
            let chars = g.rng.int(4000, 7900) as u64;
            g.ask(t, p, &client, &patient, chars, i);
        }
        Rule::UnusualHour => {
            // A half-day worker signing in at the other end of the clinic's day.
            let minute = if p.start > 12 * 60 {
                g.rng.int(7 * 60 + 40, 8 * 60 + 30)
            } else {
                g.rng.int(16 * 60 + 30, 18 * 60)
            };
            let t = utc(day, minute, &mut g.rng);
            g.login(t, p, &client, i);
            for k in 0..g.rng.int(1, 3) {
                let patient = g.patient();
                g.view(t + 120 * (k + 1), p, &client, &patient, false, i);
            }
        }
        _ => {}
    }
}

/// How one rule did on a stream (or several, summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleScore {
    pub incidents: u32,
    pub detected: u32,
    /// Alerts of this rule that touch no injected incident's records.
    pub false_alerts: u32,
}

impl RuleScore {
    pub fn recall(&self) -> Option<f64> {
        (self.incidents > 0).then(|| f64::from(self.detected) / f64::from(self.incidents))
    }
}

/// Scores per rule and the user-weeks they were measured over.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    pub rules: BTreeMap<Rule, RuleScore>,
    pub user_weeks: f64,
    pub records: usize,
}

impl Evaluation {
    pub fn add(&mut self, other: &Evaluation) {
        for (rule, s) in &other.rules {
            let e = self.rules.entry(*rule).or_default();
            e.incidents += s.incidents;
            e.detected += s.detected;
            e.false_alerts += s.false_alerts;
        }
        self.user_weeks += other.user_weeks;
        self.records += other.records;
    }

    pub fn false_alerts(&self) -> u32 {
        self.rules.values().map(|s| s.false_alerts).sum()
    }

    pub fn false_per_user_week(&self, rule: Option<Rule>) -> f64 {
        let n = rule.map_or(self.false_alerts(), |r| {
            self.rules.get(&r).map_or(0, |s| s.false_alerts)
        });
        f64::from(n) / self.user_weeks
    }

    /// A table: rule, incidents, detected, recall, false alerts, per user-week.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<26} {:>9} {:>8} {:>7} {:>7} {:>10}\n",
            "rule", "incidents", "detected", "recall", "false", "false/uw"
        );
        for (rule, s) in &self.rules {
            let recall = s.recall().map_or("-".to_string(), |r| format!("{r:.3}"));
            out += &format!(
                "{:<26} {:>9} {:>8} {:>7} {:>7} {:>10.4}\n",
                rule.as_str(),
                s.incidents,
                s.detected,
                recall,
                s.false_alerts,
                f64::from(s.false_alerts) / self.user_weeks
            );
        }
        out += &format!(
            "all false alerts: {} over {:.0} user-weeks = {:.4} per user-week; {} records\n",
            self.false_alerts(),
            self.user_weeks,
            self.false_per_user_week(None),
            self.records
        );
        out
    }
}

/// Run a fresh detector over the stream and score every rule.
pub fn evaluate(stream: &Stream) -> Evaluation {
    let mut d = Detector::new(&stream.config).expect("the generator's configuration is valid");
    d.set_relations(stream.relations());
    let mut alerts: Vec<Alert> = Vec::new();
    for r in &stream.records {
        alerts.extend(
            d.observe(&r.as_record())
                .expect("generated records are readable"),
        );
    }
    score(stream, &alerts)
}

/// How many openings of relatives' records were found, by which rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Found {
    pub incidents: u32,
    /// By `same_surname`, the other two rules switched off.
    pub by_surname: u32,
    /// By `same_address`, the other two switched off.
    pub by_address: u32,
    /// By `next_of_kin`, the other two switched off (0 on a stream without contacts).
    pub by_contact: u32,
    /// By `same_surname` alone or `same_address` alone: what the two found before
    /// `next_of_kin` existed (a pair is related with all rules on exactly when one rule alone
    /// relates it).
    pub by_surname_or_address: u32,
    /// By any related-record rule, all on (the defaults; a pair several relate raises one
    /// alert: the name's, else the contact's, else the address's).
    pub by_any: u32,
}

impl Found {
    fn add(&mut self, o: &Found) {
        self.incidents += o.incidents;
        self.by_surname += o.by_surname;
        self.by_address += o.by_address;
        self.by_contact += o.by_contact;
        self.by_surname_or_address += o.by_surname_or_address;
        self.by_any += o.by_any;
    }
}

/// The openings of relatives' records: the `same_surname` incidents (a relative by name, at
/// home or elsewhere) and the `same_address` ones (someone who lives at the user's home, of
/// any surname), found by each rule alone and by any; and the rules' false alerts.
#[derive(Debug, Clone, Default)]
pub struct RelativesEvaluation {
    pub by_name: Found,
    pub household: Found,
    /// Alerts that list no incident record: each rule alone, and the three rules' together
    /// with all on.
    pub false_surname_alone: u32,
    pub false_address_alone: u32,
    pub false_contact_alone: u32,
    pub false_together: u32,
    pub user_weeks: f64,
}

impl RelativesEvaluation {
    pub fn add(&mut self, o: &RelativesEvaluation) {
        self.by_name.add(&o.by_name);
        self.household.add(&o.household);
        self.false_surname_alone += o.false_surname_alone;
        self.false_address_alone += o.false_address_alone;
        self.false_contact_alone += o.false_contact_alone;
        self.false_together += o.false_together;
        self.user_weeks += o.user_weeks;
    }

    /// Every opening of a relative's record.
    pub fn all(&self) -> Found {
        let mut f = self.by_name;
        f.add(&self.household);
        f
    }

    pub fn table(&self) -> String {
        let r = |n: u32, of: u32| if of == 0 { "-".to_string() } else { format!("{:.3}", f64::from(n) / f64::from(of)) };
        let mut out =
            format!("{:<30} {:>9} {:>13} {:>13} {:>12} {:>18} {:>8}\n", "relatives' records opened", "incidents", "same_surname", "same_address", "next_of_kin", "surname|address", "any");
        for (what, f) in [("by name (same_surname)", self.by_name), ("household (same_address)", self.household), ("all", self.all())] {
            out += &format!(
                "{what:<30} {:>9} {:>13} {:>13} {:>12} {:>18} {:>8}\n",
                f.incidents,
                r(f.by_surname, f.incidents),
                r(f.by_address, f.incidents),
                r(f.by_contact, f.incidents),
                r(f.by_surname_or_address, f.incidents),
                r(f.by_any, f.incidents)
            );
        }
        let uw = |n: u32| f64::from(n) / self.user_weeks;
        out += &format!(
            "{:<30} {:>9} {:>13} {:>13} {:>12} {:>18} {:>8}\n{:<30} {:>9} {:>13.4} {:>13.4} {:>12.4} {:>18} {:>8.4}\n",
            "false alerts",
            "",
            self.false_surname_alone,
            self.false_address_alone,
            self.false_contact_alone,
            "",
            self.false_together,
            "  per user-week",
            "",
            uw(self.false_surname_alone),
            uw(self.false_address_alone),
            uw(self.false_contact_alone),
            "",
            uw(self.false_together)
        );
        out
    }
}

/// Run detectors over the stream with `same_surname`, `same_address` and `next_of_kin` each
/// alone and all three on, and score the openings of relatives' records. A stream without
/// contacts skips the `next_of_kin` run (it could raise nothing).
pub fn evaluate_relatives(stream: &Stream) -> RelativesEvaluation {
    let alerts = |same_surname: bool, same_address: bool, next_of_kin: bool| -> Vec<Alert> {
        let mut config = stream.config.clone();
        config.related_records.same_surname = same_surname;
        config.related_records.same_address = same_address;
        config.related_records.next_of_kin = next_of_kin;
        let mut d = Detector::new(&config).expect("the generator's configuration is valid");
        d.set_relations(stream.relations_for(&config.related_records));
        stream
            .records
            .iter()
            .flat_map(|r| d.observe(&r.as_record()).expect("generated records are readable"))
            .filter(|a| matches!(a.rule, Rule::SameSurname | Rule::SameAddress | Rule::NextOfKin))
            .collect()
    };
    let with_contacts = !stream.contacts.contacts.is_empty();
    let (surname, address, all) = (alerts(true, false, false), alerts(false, true, false), alerts(true, true, true));
    let contact = if with_contacts { alerts(false, false, true) } else { Vec::new() };
    let incident_seqs: HashSet<u64> = stream.incidents.iter().flat_map(|i| i.seqs.iter().copied()).collect();
    let lists = |a: &Alert, seqs: &HashSet<u64>| a.seqs.iter().any(|q| seqs.contains(q));
    let mut ev = RelativesEvaluation { user_weeks: stream.user_weeks, ..Default::default() };
    for inc in &stream.incidents {
        let f = match inc.rule {
            Rule::SameSurname => &mut ev.by_name,
            Rule::SameAddress => &mut ev.household,
            _ => continue,
        };
        let own: HashSet<u64> = inc.seqs.iter().copied().collect();
        f.incidents += 1;
        let (by_surname, by_address) = (surname.iter().any(|a| lists(a, &own)), address.iter().any(|a| lists(a, &own)));
        f.by_surname += u32::from(by_surname);
        f.by_address += u32::from(by_address);
        f.by_surname_or_address += u32::from(by_surname || by_address);
        f.by_contact += u32::from(contact.iter().any(|a| lists(a, &own)));
        f.by_any += u32::from(all.iter().any(|a| lists(a, &own)));
    }
    let false_alerts = |alerts: &[Alert]| alerts.iter().filter(|a| !lists(a, &incident_seqs)).count() as u32;
    ev.false_surname_alone = false_alerts(&surname);
    ev.false_address_alone = false_alerts(&address);
    ev.false_contact_alone = false_alerts(&contact);
    ev.false_together = false_alerts(&all);
    ev
}

/// Score alerts against a stream's incidents.
pub fn score(stream: &Stream, alerts: &[Alert]) -> Evaluation {
    let mut ev = Evaluation {
        user_weeks: stream.user_weeks,
        records: stream.records.len(),
        ..Default::default()
    };
    let incident_seqs: HashSet<u64> = stream
        .incidents
        .iter()
        .flat_map(|i| i.seqs.iter().copied())
        .collect();
    for inc in &stream.incidents {
        let own: HashSet<u64> = inc.seqs.iter().copied().collect();
        let s = ev.rules.entry(inc.rule).or_default();
        s.incidents += 1;
        if alerts
            .iter()
            .any(|a| a.rule == inc.rule && a.seqs.iter().any(|q| own.contains(q)))
        {
            s.detected += 1;
        }
    }
    for a in alerts {
        if !a.seqs.iter().any(|q| incident_seqs.contains(q)) {
            ev.rules.entry(a.rule).or_default().false_alerts += 1;
        }
    }
    ev
}
