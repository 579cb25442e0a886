//! The rules measured on synthetic audit streams (see `synth`): recall on injected incidents
//! and false alerts per user-week on ordinary work.
//!
//! The thresholds and the generator were tuned on the development seeds (1 and 2) only; the
//! figures asserted here come from the held-out seeds 3001-3005, run once the rules were
//! fixed. The floors are the figures reached there (docs/alerts.md has the table).

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
    let ev = run(3001..=3005);
    println!("held-out seeds 3001-3005\n{}", ev.table());
    assert!(ev.records > 100_000);
    // Reached on these seeds (20 incidents per rule, 1500 user-weeks): every injected incident
    // found; false alerts per rule at most these counts (the streams are deterministic, so a
    // change of the rules that costs recall or adds false alerts fails here).
    let most_false = |rule: Rule| match rule {
        Rule::OffHours => 33,
        Rule::UnusualPromptSize => 50,
        Rule::UnusualHour => 27,
        Rule::UnusualPatientsPerDay => 1,
        _ => 0,
    };
    for (rule, s) in ev.rules.iter().filter(|(r, _)| INJECTED.contains(r)) {
        assert_eq!(s.incidents, 20, "{}", rule.as_str());
        assert!(
            s.recall().is_some_and(|r| r >= 1.0),
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
    // The aim: at most one false alert per user-week; reached 0.074 for these rules.
    let older: u32 = INJECTED
        .iter()
        .map(|r| ev.rules.get(r).map_or(0, |s| s.false_alerts))
        .sum();
    assert!(
        f64::from(older) / ev.user_weeks <= 0.075,
        "{}",
        f64::from(older) / ev.user_weeks
    );
}

/// The related-record rules were developed on family A (seeds 1 and 2) only. Family B writes
/// names otherwise (records `Family, Given` with accents and double surnames, staff accounts
/// without accents and with suffixes; other surname pools); these figures come from it, seeds
/// 6001-6005, run once after the rules were fixed (docs/alerts.md has the table).
#[test]
fn held_out_family_for_related_records() {
    let ev = run_family(Family::B, 6001..=6005);
    println!("held-out family B, seeds 6001-6005\n{}", ev.table());
    assert!(ev.records > 100_000);
    for rule in INJECTED_RELATED {
        let s = ev.rules.get(&rule).copied().unwrap_or_default();
        assert_eq!(s.incidents, 20, "{}", rule.as_str());
        // Reached on these seeds (20 incidents each, 1500 user-weeks). A relative whose
        // surname more than `max_patients_per_surname` patients carry is not found by its name.
        let (least_recall, most_false) = match rule {
            Rule::OwnRecord => (1.0, 4),
            Rule::CoworkerRecord => (1.0, 76),
            _ => (0.6, 20),
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
    let (mut total, mut relatives) = (Evaluation::default(), RelativesEvaluation::default());
    for seed in seeds {
        let stream = generate(&Scenario {
            seed,
            weeks: 20,
            incidents_per_kind: 4,
            family,
            addresses: true,
        });
        total.add(&evaluate(&stream));
        relatives.add(&evaluate_relatives(&stream));
    }
    (total, relatives)
}

/// Addresses (households, flats, a care home) and household incidents: the development seeds
/// of family A, on which `same_address` and the generator's addresses were developed.
#[test]
fn development_seeds_with_addresses() {
    let (ev, relatives) = run_with_addresses(Family::A, 1..=2);
    println!("development seeds 1-2, family A, with addresses\n{}\n{}", ev.table(), relatives.table());
    assert_eq!(relatives.household.incidents, 8);
    assert!(relatives.household.by_address > 0, "{relatives:?}");
}

/// Addresses held out: family B writes them UK-style (the flat on the line above the street or
/// before it on the same line, lettered flats, house names, other street words) where the rule
/// and the generator's households were developed on family A's US-style ones (seeds 1 and 2).
/// These figures come from seeds 7001-7005, run once after the rule and the generator were
/// fixed (docs/alerts.md has the table).
#[test]
fn held_out_family_for_addresses() {
    let (ev, relatives) = run_with_addresses(Family::B, 7001..=7005);
    println!("held-out family B with addresses, seeds 7001-7005\n{}\n{}", ev.table(), relatives.table());
    assert!(ev.records > 100_000);
    // Reached on these seeds (20 incidents per kind, 1500 user-weeks); the streams are
    // deterministic, so a change that costs recall or adds false alerts fails here.
    // The openings of relatives' records: 20 of relatives by name (at home or not), 20 of
    // household members (any surname).
    let (name, home, all) = (relatives.by_name, relatives.household, relatives.all());
    assert_eq!((name.incidents, home.incidents), (20, 20));
    assert!(home.by_address >= 18, "household members found by same_address alone: {home:?}");
    assert!(home.by_either >= 19, "household members found by either rule: {home:?}");
    assert!(name.by_surname >= 16, "relatives by name found by same_surname alone: {name:?}");
    assert!(name.by_either >= 17, "relatives by name found by either rule: {name:?}");
    assert!(all.by_either >= 36, "relatives' records found by either rule: {all:?}");
    assert!(relatives.false_surname_alone <= 12, "{relatives:?}");
    assert!(relatives.false_address_alone <= 39, "{relatives:?}");
    assert!(relatives.false_together <= 45, "{relatives:?}");
    // Each related-record rule with the defaults (a pair related by name and address raises
    // the name's rule: a relative at home is a same_surname alert, a namesake's own record at
    // the staff member's address a same_address one).
    for (rule, least_detected, most_false) in [
        (Rule::OwnRecord, 10, 2),
        (Rule::CoworkerRecord, 13, 56),
        (Rule::SameSurname, 16, 12),
        (Rule::SameAddress, 11, 33),
    ] {
        let s = ev.rules.get(&rule).copied().unwrap_or_default();
        assert_eq!(s.incidents, 20, "{}", rule.as_str());
        assert!(s.detected >= least_detected, "{}: {s:?}", rule.as_str());
        assert!(s.false_alerts <= most_false, "{}: {s:?}", rule.as_str());
    }
    // The aim: at most one false alert per user-week; 0.155 for all 19 rules here.
    assert!(ev.false_per_user_week(None) <= 0.156, "{}", ev.false_per_user_week(None));
}

#[test]
fn replay_gives_the_same_alerts() {
    let a = generate(&Scenario {
        seed: 7,
        weeks: 6,
        incidents_per_kind: 2,
        family: Family::A,
        addresses: false,
    });
    let b = generate(&Scenario {
        seed: 7,
        weeks: 6,
        incidents_per_kind: 2,
        family: Family::A,
        addresses: false,
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
