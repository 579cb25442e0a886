//! The rules measured on synthetic audit streams (see `synth`): recall on injected incidents
//! and false alerts per user-week on ordinary work.
//!
//! The thresholds and the generator were tuned on the development seeds (1 and 2) only; the
//! figures asserted here come from held-out seeds, run once after the rules and the generator
//! were fixed. The floors are the figures reached there (docs/alerts.md has the tables). The
//! given names of the generator changed after the earlier held-out runs (seeds 3001-3005,
//! 6001-6005, 7001-7005), which changed every stream, so the tests moved to fresh seeds (8001-8005,
//! 8101-8105, 8201-8205), each run once.

use std::collections::HashSet;

use wardbox_alerts::synth::{
    Evaluation, Family, INJECTED, INJECTED_RELATED, RelativesEvaluation, Scenario, Stream, evaluate, evaluate_relatives, generate,
};
use wardbox_alerts::{Alert, Detector, Rule};

fn run(seeds: impl Iterator<Item = u64>) -> Evaluation {
    run_family(Family::A, seeds)
}

fn run_family(family: Family, seeds: impl Iterator<Item = u64>) -> Evaluation {
    let mut total = Evaluation::default();
    for seed in seeds {
        let stream = generate(&Scenario {
            seed,
            weeks: 20,
            incidents_per_kind: 4,
            family,
            addresses: false,
            contacts: false,
        });
        total.add(&evaluate(&stream));
    }
    total
}

fn alerts_of(stream: &Stream) -> Vec<Alert> {
    let mut d = Detector::new(&stream.config).expect("valid");
    stream
        .records
        .iter()
        .flat_map(|r| d.observe(&r.as_record()).expect("readable"))
        .collect()
}

#[test]
fn development_seeds() {
    let ev = run(1..=2);
    println!("development seeds 1-2\n{}", ev.table());
    assert!(ev.records > 50_000, "{} records", ev.records);
}

#[test]
fn held_out_seeds_meet_the_floors() {
    let ev = run(8201..=8205);
    println!("held-out seeds 8201-8205\n{}", ev.table());
    assert!(ev.records > 100_000);
    // Reached on these seeds (20 incidents per rule, 1500 user-weeks): every injected incident
    // found but one off-hours incident, which the generator put on a Saturday morning inside
    // the clinic's Saturday hours (not off hours: the rule is right); false alerts per rule at
    // most these counts (the streams are deterministic, so a change of the rules that costs
    // recall or adds false alerts fails here).
    let least_detected = |rule: Rule| if rule == Rule::OffHours { 19 } else { 20 };
    let most_false = |rule: Rule| match rule {
        Rule::OffHours => 34,
        Rule::UnusualPromptSize => 62,
        Rule::UnusualHour => 27,
        Rule::UnusualPatientsPerDay => 2,
        _ => 0,
    };
    for (rule, s) in ev.rules.iter().filter(|(r, _)| INJECTED.contains(r)) {
        assert_eq!(s.incidents, 20, "{}", rule.as_str());
        assert!(
            s.detected >= least_detected(*rule),
            "{}: recall {:?}",
            rule.as_str(),
            s.recall()
        );
        assert!(
            s.false_alerts <= most_false(*rule),
            "{}: {} false alerts",
            rule.as_str(),
            s.false_alerts
        );
    }
    assert_eq!(ev.rules.len(), 18, "every injected kind is scored");
    // The aim: at most one false alert per user-week; reached 0.083 for these rules.
    let older: u32 = INJECTED
        .iter()
        .map(|r| ev.rules.get(r).map_or(0, |s| s.false_alerts))
        .sum();
    assert!(
        f64::from(older) / ev.user_weeks <= 0.084,
        "{}",
        f64::from(older) / ev.user_weeks
    );
}

/// The related-record rules were developed on family A (seeds 1 and 2) only. Family B writes
/// names otherwise (records `Family, Given` with accents and double surnames, staff accounts
/// without accents and with suffixes; other surname pools); these figures come from it, seeds
/// 8001-8005, run once after the rules and the generator's given names were fixed
/// (docs/alerts.md has the table).
#[test]
fn held_out_family_for_related_records() {
    let ev = run_family(Family::B, 8001..=8005);
    println!("held-out family B, seeds 8001-8005\n{}", ev.table());
    assert!(ev.records > 100_000);
    for rule in INJECTED_RELATED {
        let s = ev.rules.get(&rule).copied().unwrap_or_default();
        assert_eq!(s.incidents, 20, "{}", rule.as_str());
        // Reached on these seeds (20 incidents each, 1500 user-weeks). A relative whose
        // surname more than `max_patients_per_surname` patients carry is not found by its name.
        let (least_recall, most_false) = match rule {
            Rule::OwnRecord => (1.0, 7),
            Rule::CoworkerRecord => (1.0, 72),
            _ => (0.85, 12),
        };
        assert!(
            s.recall().is_some_and(|r| r >= least_recall),
            "{}: recall {:?}",
            rule.as_str(),
            s.recall()
        );
        assert!(
            s.false_alerts <= most_false,
            "{}: {} false alerts",
            rule.as_str(),
            s.false_alerts
        );
    }
}

fn run_with_addresses(family: Family, seeds: impl Iterator<Item = u64>) -> (Evaluation, RelativesEvaluation) {
    run_related(family, seeds, false)
}

/// Streams with addresses, and with contacts on the patients' records when `contacts`.
fn run_related(family: Family, seeds: impl Iterator<Item = u64>, contacts: bool) -> (Evaluation, RelativesEvaluation) {
    let (mut total, mut relatives) = (Evaluation::default(), RelativesEvaluation::default());
    for seed in seeds {
        let stream = generate(&Scenario {
            seed,
            weeks: 20,
            incidents_per_kind: 4,
            family,
            addresses: true,
            contacts,
        });
        total.add(&evaluate(&stream));
        relatives.add(&evaluate_relatives(&stream));
    }
    (total, relatives)
}

/// Addresses (households, flats, a care home) and household incidents, and contacts on the
/// patients' records: the development seeds of family A, on which `same_address`,
/// `next_of_kin` and the generator's addresses and contacts were developed. (Contacts change
/// no figure of `same_surname` or `same_address` alone.)
#[test]
fn development_seeds_with_addresses() {
    let (ev, relatives) = run_related(Family::A, 1..=2, true);
    println!("development seeds 1-2, family A, with addresses and contacts\n{}\n{}", ev.table(), relatives.table());
    assert_eq!(relatives.household.incidents, 8);
    assert!(relatives.household.by_address > 0, "{relatives:?}");
    assert!(relatives.all().by_contact > 0, "{relatives:?}");
}

/// Addresses held out: family B writes them UK-style (the flat on the line above the street or
/// before it on the same line, lettered flats, house names, other street words) where the rule
/// and the generator's households were developed on family A's US-style ones (seeds 1 and 2).
/// These figures come from seeds 8101-8105, run once after the rule and the generator (its
/// addresses, then its given names) were fixed (docs/alerts.md has the table).
#[test]
fn held_out_family_for_addresses() {
    let (ev, relatives) = run_with_addresses(Family::B, 8101..=8105);
    println!("held-out family B with addresses, seeds 8101-8105\n{}\n{}", ev.table(), relatives.table());
    assert!(ev.records > 100_000);
    // Reached on these seeds (20 incidents per kind, 1500 user-weeks); the streams are
    // deterministic, so a change that costs recall or adds false alerts fails here.
    // The openings of relatives' records: 20 of relatives by name (at home or not), 20 of
    // household members (any surname).
    let (name, home, all) = (relatives.by_name, relatives.household, relatives.all());
    assert_eq!((name.incidents, home.incidents), (20, 20));
    assert!(home.by_address >= 17, "household members found by same_address alone: {home:?}");
    assert!(home.by_any >= 17, "household members found by either rule: {home:?}");
    assert!(name.by_surname >= 16, "relatives by name found by same_surname alone: {name:?}");
    assert!(name.by_any >= 18, "relatives by name found by either rule: {name:?}");
    assert!(all.by_any >= 35, "relatives' records found by either rule: {all:?}");
    assert!(relatives.false_surname_alone <= 9, "{relatives:?}");
    assert!(relatives.false_address_alone <= 30, "{relatives:?}");
    assert!(relatives.false_together <= 31, "{relatives:?}");
    // Each related-record rule with the defaults (a pair related by name and address raises
    // the name's rule: a relative at home is a same_surname alert, a namesake's own record at
    // the staff member's address a same_address one).
    // The own records missed here (4 incidents, of 2 staff: Joaquín Schäfer and Élodie Lê, each
    // with one namesake among the patients) raised same_address.
    for (rule, least_detected, most_false) in [
        (Rule::OwnRecord, 16, 6),
        (Rule::CoworkerRecord, 19, 90),
        (Rule::SameSurname, 16, 9),
        (Rule::SameAddress, 10, 22),
    ] {
        let s = ev.rules.get(&rule).copied().unwrap_or_default();
        assert_eq!(s.incidents, 20, "{}", rule.as_str());
        assert!(s.detected >= least_detected, "{}: {s:?}", rule.as_str());
        assert!(s.false_alerts <= most_false, "{}: {s:?}", rule.as_str());
    }
    // The aim: at most one false alert per user-week; 0.161 for all 19 rules here.
    assert!(ev.false_per_user_week(None) <= 0.162, "{}", ev.false_per_user_week(None));
}

/// Contacts held out: family B writes a record's contacts as `Family, Given` text with
/// accents and HL7 v3 kinship codes where `next_of_kin` and the generator's contacts were
/// developed on family A's `Given Family` parts (seeds 1 and 2). These figures come from fresh
/// seeds 9001-9005, run once after the rule, its defaults and the generator's contacts were
/// fixed (docs/alerts.md has the table).
#[test]
fn held_out_family_for_next_of_kin() {
    let (ev, relatives) = run_related(Family::B, 9001..=9005, true);
    println!("held-out family B with addresses and contacts, seeds 9001-9005\n{}\n{}", ev.table(), relatives.table());
    assert!(ev.records > 100_000);
    // Reached on these seeds (20 incidents per kind, 1500 user-weeks); the streams are
    // deterministic, so a change that costs recall or adds false alerts fails here.
    let (name, home, all) = (relatives.by_name, relatives.household, relatives.all());
    assert_eq!((name.incidents, home.incidents), (20, 20));
    // The openings of relatives' records noticed by any related-record rule: 38 of 40 (34 by
    // same_surname or same_address). The two missed give neither contact nor the staff
    // member's address: a relative with a surname 90 patients carry who lives elsewhere, and
    // a household member whose record gives no address.
    assert!(all.by_any >= 38, "relatives' records found by any rule: {all:?}");
    assert!(all.by_surname_or_address >= 34, "{all:?}");
    assert!(name.by_any >= 19 && home.by_any >= 19, "{relatives:?}");
    // Each rule alone.
    assert!(name.by_contact >= 11 && home.by_contact >= 5, "found by next_of_kin alone: {relatives:?}");
    assert!(all.by_surname >= 22 && all.by_address >= 28, "{relatives:?}");
    assert!(relatives.false_contact_alone <= 8, "{relatives:?}");
    assert!(relatives.false_surname_alone <= 22, "{relatives:?}");
    assert!(relatives.false_address_alone <= 38, "{relatives:?}");
    assert!(relatives.false_together <= 48, "{relatives:?}");
    // With the defaults, rule by rule (a pair related by name raises the name's rule, else
    // a contact's, else the address's; next_of_kin has no incidents of its own: it finds
    // the relatives' ones).
    for (rule, least_detected, most_false) in [
        (Rule::OwnRecord, 20, 6),
        (Rule::CoworkerRecord, 20, 80),
        (Rule::SameSurname, 14, 22),
        (Rule::SameAddress, 8, 24),
    ] {
        let s = ev.rules.get(&rule).copied().unwrap_or_default();
        assert_eq!(s.incidents, 20, "{}", rule.as_str());
        assert!(s.detected >= least_detected, "{}: {s:?}", rule.as_str());
        assert!(s.false_alerts <= most_false, "{}: {s:?}", rule.as_str());
    }
    assert!(ev.rules.get(&Rule::NextOfKin).is_some_and(|s| s.false_alerts <= 2), "{:?}", ev.rules.get(&Rule::NextOfKin));
    // The aim: at most one false alert per user-week; 0.157 for all 20 rules here.
    assert!(ev.false_per_user_week(None) <= 0.158, "{}", ev.false_per_user_week(None));
}

#[test]
fn replay_gives_the_same_alerts() {
    let a = generate(&Scenario {
        seed: 7,
        weeks: 6,
        incidents_per_kind: 2,
        family: Family::A,
        addresses: false,
        contacts: false,
    });
    let b = generate(&Scenario {
        seed: 7,
        weeks: 6,
        incidents_per_kind: 2,
        family: Family::A,
        addresses: false,
        contacts: false,
    });
    let (first, second) = (alerts_of(&a), alerts_of(&b));
    assert!(!first.is_empty());
    assert_eq!(first, second);
}

#[test]
fn alerts_carry_no_patient_ids() {
    let stream = generate(&Scenario {
        seed: 8,
        weeks: 8,
        incidents_per_kind: 2,
        family: Family::A,
        addresses: false,
        contacts: false,
    });
    let patients: HashSet<String> = stream
        .records
        .iter()
        .filter_map(|r| {
            let d: serde_json::Value = serde_json::from_str(&r.detail).ok()?;
            d.get("patient")
                .and_then(|p| p.as_str())
                .map(str::to_string)
        })
        .collect();
    assert!(patients.len() > 100);
    let alerts = alerts_of(&stream);
    let rules: HashSet<Rule> = alerts.iter().map(|a| a.rule).collect();
    assert!(rules.len() >= 10, "{rules:?}");
    for a in &alerts {
        let text = serde_json::to_string(a).expect("serializes");
        assert!(
            !patients.iter().any(|p| text.contains(p.as_str())),
            "{text}"
        );
        assert!(!text.contains("sha256"), "{text}");
    }
}
