//! Which patients stand in a relation to which user: the user's own record, a patient who
//! shares the user's surname, a co-worker's record, a patient who lives at the user's address.
//!
//! The names are compared here, in memory, once, and never kept: [`Relations::build`] takes
//! the staff's display names and the patients' names (the agent reads both from the encrypted
//! store), and keeps only pairs of (user name, 64-bit hash of the patient id) with the kind of
//! relation. The detector's memory, its alerts and everything they reach hold no name of a
//! patient, and no statement that a staff member is a patient.
//!
//! Matching works on normalised name parts: lower case, accents folded (`Núñez` = `Nunez`),
//! titles and suffixes dropped (`Dr`, `RN`, `MD`, …), and both `Given Family` and
//! `Family, Given` read. The surname is the family part (the last word, or what stands before
//! a comma); a double-barrelled surname (`García-López`) also matches each of its halves. A
//! full name is the set of its parts, so word order does not matter; it needs two parts.

use std::collections::{BTreeSet, HashMap, HashSet};

use unicode_normalization::UnicodeNormalization;

use crate::config::RelatedRecords;
use crate::record::hash_id;

/// How a patient relates to the user who opened their record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Relation {
    /// The patient has the user's own full name.
    OwnRecord,
    /// The patient has the full name of another staff member.
    CoworkerRecord,
    /// The patient shares the user's surname (a relative, perhaps), and the surname is rare
    /// enough among the patients to mean something.
    SameSurname,
    /// The patient lives at the user's postal address (a member of the household, perhaps),
    /// and few enough patients live there for it to mean something.
    SameAddress,
}

/// Words in names that say a rank or a degree, not who someone is.
const TITLES: &[&str] = &[
    "dr", "doctor", "mr", "mrs", "ms", "miss", "mx", "prof", "sir", "md", "do", "rn", "np", "pa", "lpn", "bsn", "msn", "dnp",
    "phd", "dds", "pharmd", "jr", "sr", "ii", "iii", "iv", "nurse",
];

/// A name as the comparisons see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameKey {
    /// The family name and, when it is double-barrelled, each half.
    pub surnames: Vec<String>,
    /// Every part of the name, for full-name comparisons; empty when the name has fewer than
    /// two parts (one word names no one reliably).
    pub full: BTreeSet<String>,
}

fn fold(word: &str) -> String {
    word.nfd()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '\'')
        .flat_map(char::to_lowercase)
        .collect::<String>()
        .trim_matches(|c| c == '-' || c == '\'')
        .to_string()
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == '.' || c == ',')
        .map(fold)
        .filter(|w| !w.is_empty() && !TITLES.contains(&w.as_str()))
        .collect()
}

impl NameKey {
    /// `None` when nothing of a name is left after the titles.
    pub fn of(name: &str) -> Option<NameKey> {
        // "Family, Given" (the comma form of records), else "Given Family".
        let (family, given) = match name.split_once(',') {
            Some((f, g)) if !words(f).is_empty() && !words(g).is_empty() => (words(f), words(g)),
            _ => {
                let mut all = words(name);
                let last = all.pop()?;
                (vec![last], all)
            }
        };
        let family_name = family.join(" ");
        let mut surnames = vec![family_name.clone()];
        for part in family_name.split(['-', ' ']).filter(|p| !p.is_empty()) {
            if !surnames.iter().any(|s| s == part) {
                surnames.push(part.to_string());
            }
        }
        let full: BTreeSet<String> = given
            .into_iter()
            .chain(family_name.split(' ').map(str::to_string))
            .collect();
        let full = if full.len() >= 2 { full } else { BTreeSet::new() };
        Some(NameKey { surnames, full })
    }
}

/// The relations found: (user, hashed patient id) → relation. Holds no name.
#[derive(Debug, Default, Clone)]
pub struct Relations {
    /// user → hashed patient id → relation (looked up by `&str` on every patient access).
    pairs: HashMap<String, HashMap<u64, Relation>>,
}

impl Relations {
    /// Compare every staff member with every patient. `staff`: (user name, display name);
    /// `patients`: (patient id as it appears in audit records, the patient's name). The names
    /// are read and dropped; only the pairs found are kept.
    pub fn build<'a>(
        cfg: &RelatedRecords,
        staff: impl IntoIterator<Item = (&'a str, &'a str)>,
        patients: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Relations {
        let staff: Vec<(&str, NameKey)> = staff
            .into_iter()
            .filter_map(|(user, display)| NameKey::of(display).map(|k| (user, k)))
            .collect();
        let patients: Vec<(u64, NameKey)> = patients
            .into_iter()
            .filter_map(|(id, name)| NameKey::of(name).map(|k| (hash_id(id), k)))
            .collect();
        // How many patients carry each surname: a common surname says little about kinship.
        let mut per_surname: HashMap<&str, HashSet<u64>> = HashMap::new();
        for (id, k) in &patients {
            for s in &k.surnames {
                per_surname.entry(s.as_str()).or_default().insert(*id);
            }
        }
        let mut per_name: HashMap<&BTreeSet<String>, usize> = HashMap::new();
        for (_, k) in &patients {
            if !k.full.is_empty() {
                *per_name.entry(&k.full).or_default() += 1;
            }
        }
        let mut by_full: HashMap<&BTreeSet<String>, Vec<&str>> = HashMap::new();
        for (user, k) in &staff {
            if !k.full.is_empty() {
                by_full.entry(&k.full).or_default().push(user);
            }
        }
        let min = cfg.min_surname_chars as usize;
        let mut pairs: HashMap<String, HashMap<u64, Relation>> = HashMap::new();
        for (id, pk) in &patients {
            let unique = per_name.get(&pk.full).is_some_and(|&n| n <= cfg.max_patients_per_name as usize);
            let namesakes = if unique { by_full.get(&pk.full).map(Vec::as_slice).unwrap_or(&[]) } else { &[] };
            for (user, sk) in &staff {
                let own = !pk.full.is_empty() && namesakes.contains(user);
                let relation = if own {
                    cfg.own_record.then_some(Relation::OwnRecord)
                } else if !namesakes.is_empty() && cfg.coworker {
                    Some(Relation::CoworkerRecord)
                } else if cfg.same_surname
                    && sk.surnames.iter().any(|s| {
                        s.chars().count() >= min
                            && pk.surnames.contains(s)
                            && per_surname.get(s.as_str()).map_or(0, HashSet::len)
                                <= cfg.max_patients_per_surname as usize
                    })
                {
                    Some(Relation::SameSurname)
                } else {
                    None
                };
                if let Some(r) = relation {
                    pairs.entry(user.to_string()).or_default().insert(*id, r);
                }
            }
        }
        Relations { pairs }
    }

    /// Add the same-address relation: `staff` is (user name, the account's postal address),
    /// `patients` is (patient id, one address line of the patient's record). A pair already
    /// related by name keeps that relation. The addresses are compared as [`AddressKey`]s and
    /// dropped; only the pairs found are kept.
    pub fn add_addresses<'a>(
        &mut self,
        cfg: &RelatedRecords,
        staff: impl IntoIterator<Item = (&'a str, &'a str)>,
        patients: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        if !cfg.same_address {
            return;
        }
        let mut per_address: HashMap<AddressKey, HashSet<u64>> = HashMap::new();
        for (id, line) in patients {
            if let Some(key) = AddressKey::of(line) {
                per_address.entry(key).or_default().insert(hash_id(id));
            }
        }
        for (user, address) in staff {
            let Some(key) = AddressKey::of(address) else { continue };
            let Some(ids) = per_address.get(&key) else { continue };
            if ids.len() > cfg.max_patients_per_address as usize {
                continue;
            }
            let related = self.pairs.entry(user.to_string()).or_default();
            for id in ids {
                related.entry(*id).or_insert(Relation::SameAddress);
            }
        }
    }

    /// The relation of `user` to the patient with this hashed id, if any.
    pub(crate) fn get(&self, user: &str, patient: u64) -> Option<Relation> {
        self.pairs.get(user)?.get(&patient).copied()
    }

    /// How many (user, patient) pairs are related.
    pub fn len(&self) -> usize {
        self.pairs.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// How many pairs have this relation.
    pub fn count(&self, relation: Relation) -> usize {
        self.pairs.values().flat_map(HashMap::values).filter(|&&r| r == relation).count()
    }
}

/// Words of street addresses written in more than one way: each long form and its
/// abbreviation compare as the abbreviation.
const STREET_WORDS: &[(&str, &str)] = &[
    ("street", "st"), ("avenue", "ave"), ("av", "ave"), ("road", "rd"), ("drive", "dr"), ("lane", "ln"),
    ("boulevard", "blvd"), ("court", "ct"), ("place", "pl"), ("square", "sq"), ("terrace", "ter"),
    ("highway", "hwy"), ("parkway", "pkwy"), ("circle", "cir"), ("north", "n"), ("south", "s"),
    ("east", "e"), ("west", "w"), ("apartment", "apt"), ("suite", "ste"), ("unit", "apt"), ("number", "no"),
];

/// An address as the comparison sees it: the first line (the street and number, which is
/// what a household shares; a city or postal code alone is not compared), lower case,
/// accents folded, punctuation dropped, street words abbreviated (`12 Elm Street, Apt. 3,
/// Springfield` compares as `12 elm st`). Needs a number and a word, so that a bare city or a
/// bare number is no address. Flats of one building share a first line unless the flat is
/// written on it; `max_patients_per_address` keeps a large building quiet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AddressKey(String);

impl AddressKey {
    pub fn of(address: &str) -> Option<AddressKey> {
        let first = address.split([',', '\n']).map(str::trim).find(|l| !l.is_empty())?;
        let words: Vec<String> = first
            .split(|c: char| c.is_whitespace() || c == '.' || c == '#')
            .map(|w| {
                let w: String = w.nfd().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect();
                STREET_WORDS.iter().find(|(long, _)| *long == w).map_or(w, |(_, short)| (*short).to_string())
            })
            .filter(|w| !w.is_empty())
            .collect();
        let has_number = words.iter().any(|w| w.chars().any(|c| c.is_ascii_digit()));
        let has_word = words.iter().any(|w| w.chars().any(char::is_alphabetic) && w.chars().count() >= 2);
        (has_number && has_word).then(|| AddressKey(words.join(" ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_compare_by_their_first_line_with_street_words_folded() {
        let k = |a: &str| AddressKey::of(a).expect("an address");
        assert_eq!(k("12 Elm Street, Apt. 3, Springfield, OR 97000"), k("12 elm st"), "the first line only");
        assert_eq!(k("4 Rue de la Paix"), k("4 rue de la paix."));
        assert_eq!(k("7 Calle Núñez"), k("7 calle nunez"));
        assert_eq!(k("Apartment 3 12 Elm Street"), k("apt 3 12 elm st"));
        assert_ne!(k("12 Elm Street"), k("14 Elm Street"));
        assert_eq!(AddressKey::of("Springfield"), None, "a city alone is no address");
        assert_eq!(AddressKey::of("97000"), None, "a postal code alone is no address");
        assert_eq!(AddressKey::of(" , "), None);
    }

    #[test]
    fn same_address_relation_keeps_name_relations_and_skips_crowded_addresses() {
        let cfg = RelatedRecords::default();
        let mut r = Relations::build(&cfg, [("ann", "Ann Quist")], [("1", "Lena Quist"), ("2", "Ed Other")]);
        let mut patients = vec![("1", "12 Elm Street"), ("2", "12 Elm St."), ("3", "9 Oak Road")];
        let home: Vec<(String, &str)> = (0..7).map(|i| (format!("h{i}"), "1 Care Home Lane")).collect();
        patients.extend(home.iter().map(|(id, a)| (id.as_str(), *a)));
        let staff = [("ann", "12 Elm Street, Springfield"), ("bob", "1 Care Home Ln"), ("cy", "no address")];
        r.add_addresses(&cfg, staff, patients.iter().copied());
        assert_eq!(r.get("ann", hash_id("1")), Some(Relation::SameSurname), "the name relation stays");
        assert_eq!(r.get("ann", hash_id("2")), Some(Relation::SameAddress));
        assert_eq!(r.get("ann", hash_id("3")), None);
        assert_eq!(r.get("bob", hash_id("h0")), None, "seven patients live there: a care home");
        let off = RelatedRecords { same_address: false, ..cfg.clone() };
        let mut r = Relations::default();
        r.add_addresses(&off, staff, patients.iter().copied());
        assert!(r.is_empty());
    }

    fn key(n: &str) -> NameKey {
        NameKey::of(n).expect("a name")
    }

    #[test]
    fn names_are_read_in_both_orders_with_titles_and_accents_folded() {
        assert_eq!(key("Dr. María Núñez, MD"), key("Nunez, Maria"));
        assert_eq!(key("Maria Nunez").surnames, vec!["nunez"]);
        assert_eq!(key("Ana García-López").surnames, vec!["garcia-lopez", "garcia", "lopez"]);
        assert!(key("Dr A").full.is_empty(), "one word names no one");
        assert_eq!(NameKey::of("Dr. RN"), None);
    }

    #[test]
    fn own_coworker_and_surname_relations() {
        let cfg = RelatedRecords::default();
        let staff = [("ann", "Dr Ann Quist"), ("bob", "Bob Marr, RN"), ("cy", "Cy Smith")];
        let mut patients: Vec<(String, String)> = vec![
            ("1".into(), "Quist, Ann".into()),
            ("2".into(), "Bob Marr".into()),
            ("3".into(), "Lena Quist".into()),
            ("4".into(), "Ed Other".into()),
        ];
        // Smith is common among the patients: no surname relation for cy.
        for i in 0..20 {
            patients.push((format!("s{i}"), format!("Person{i} Smith")));
        }
        let r = Relations::build(&cfg, staff, patients.iter().map(|(a, b)| (a.as_str(), b.as_str())));
        assert_eq!(r.get("ann", hash_id("1")), Some(Relation::OwnRecord));
        assert_eq!(r.get("bob", hash_id("1")), Some(Relation::CoworkerRecord));
        assert_eq!(r.get("ann", hash_id("2")), Some(Relation::CoworkerRecord));
        assert_eq!(r.get("bob", hash_id("2")), Some(Relation::OwnRecord));
        assert_eq!(r.get("ann", hash_id("3")), Some(Relation::SameSurname));
        assert_eq!(r.get("bob", hash_id("3")), None);
        assert_eq!(r.get("ann", hash_id("4")), None);
        assert_eq!(r.get("cy", hash_id("s1")), None, "a surname 20 patients share");
        let off = RelatedRecords { same_surname: false, ..cfg };
        let r = Relations::build(&off, staff, patients.iter().map(|(a, b)| (a.as_str(), b.as_str())));
        assert_eq!(r.get("ann", hash_id("3")), None);
    }
}
