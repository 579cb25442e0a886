//! Which patients stand in a relation to which user: the user's own record, a patient who
//! shares the user's surname, a co-worker's record, a patient who lives at the user's address,
//! a patient whose record names the user as a contact (next of kin).
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
    /// The patient's record names the user as a contact (next of kin, emergency contact), by
    /// the user's full name, and no namesake of the user could be meant.
    NextOfKin,
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

    /// Add the next-of-kin relation: `staff` is (user name, display name), `patients` is
    /// (patient id, the patient's name) for every patient (to tell namesakes), `contacts` is
    /// (patient id, the name of a contact the patient's record gives: FHIR `Patient.contact`).
    /// A contact whose full name is a staff member's relates that staff member to the patient,
    /// compared as the own-record rule compares (a [`NameKey`]'s parts, so order, case,
    /// accents and titles do not matter), and with the same caution about namesakes: a full
    /// name that more than `max_patients_per_name` patients carry, or that more than one
    /// account carries, may be anyone's of that name, and relates no one. A pair already
    /// related (by name) keeps that relation. The names are read and dropped.
    pub fn add_next_of_kin<'a>(
        &mut self,
        cfg: &RelatedRecords,
        staff: impl IntoIterator<Item = (&'a str, &'a str)>,
        patients: impl IntoIterator<Item = (&'a str, &'a str)>,
        contacts: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        if !cfg.next_of_kin {
            return;
        }
        let mut by_full: HashMap<BTreeSet<String>, Vec<&str>> = HashMap::new();
        for (user, display) in staff {
            if let Some(k) = NameKey::of(display).filter(|k| !k.full.is_empty()) {
                by_full.entry(k.full).or_default().push(user);
            }
        }
        let mut per_name: HashMap<BTreeSet<String>, usize> = HashMap::new();
        for (_, name) in patients {
            if let Some(k) = NameKey::of(name).filter(|k| by_full.contains_key(&k.full)) {
                *per_name.entry(k.full).or_default() += 1;
            }
        }
        let cap = cfg.max_patients_per_name as usize;
        for (id, contact) in contacts {
            let Some(k) = NameKey::of(contact) else { continue };
            let Some([user]) = by_full.get(&k.full).map(Vec::as_slice) else { continue };
            if per_name.get(&k.full).copied().unwrap_or(0) > cap {
                continue;
            }
            self.pairs.entry(user.to_string()).or_default().entry(hash_id(id)).or_insert(Relation::NextOfKin);
        }
    }

    /// Add the same-address relation: `staff` is (user name, the account's postal address),
    /// `patients` is (patient id, one address line of the patient's record), a patient's lines
    /// in the order their record gives them (they are read together, so that a flat written on
    /// a line of its own belongs to the building line beside it). A pair already related by
    /// name keeps that relation. The addresses are compared as [`AddressKey`]s and dropped;
    /// only the pairs found are kept.
    pub fn add_addresses<'a>(
        &mut self,
        cfg: &RelatedRecords,
        staff: impl IntoIterator<Item = (&'a str, &'a str)>,
        patients: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        if !cfg.same_address {
            return;
        }
        let mut lines: HashMap<&str, Vec<&str>> = HashMap::new();
        for (id, line) in patients {
            lines.entry(id).or_default().push(line);
        }
        // building → (flat, if the record names one; hashed patient id) for every home a
        // patient's record gives.
        let mut residents: HashMap<String, Vec<(Option<String>, u64)>> = HashMap::new();
        for (id, lines) in &lines {
            let id = hash_id(id);
            for home in AddressKey::homes(lines.iter().copied()) {
                residents.entry(home.building).or_default().push((home.unit, id));
            }
        }
        for (user, address) in staff {
            let Some(key) = AddressKey::of(address) else { continue };
            let Some(building) = residents.get(&key.building) else { continue };
            let at = |exact: bool| -> HashSet<u64> {
                building
                    .iter()
                    .filter(|(unit, _)| if exact { unit.is_some() && *unit == key.unit } else { same_unit(key.unit.as_deref(), unit.as_deref()) })
                    .map(|(_, id)| *id)
                    .collect()
            };
            // The records that may be the home's (its flat, or no flat named), unless more
            // patients than the cap: then those that name the staff member's flat, unless
            // still too many (a care home), then none.
            let cap = cfg.max_patients_per_address as usize;
            let home = Some(at(false)).filter(|h| h.len() <= cap).or_else(|| Some(at(true)).filter(|h| h.len() <= cap));
            let Some(home) = home else { continue };
            let related = self.pairs.entry(user.to_string()).or_default();
            for id in home {
                related.entry(id).or_insert(Relation::SameAddress);
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
/// abbreviation compare as the abbreviation (the common street suffixes of the US Postal
/// Service's and Royal Mail's lists, the compass points, and the words for a flat).
const STREET_WORDS: &[(&str, &str)] = &[
    ("street", "st"), ("avenue", "ave"), ("av", "ave"), ("road", "rd"), ("drive", "dr"), ("lane", "ln"),
    ("boulevard", "blvd"), ("court", "ct"), ("place", "pl"), ("square", "sq"), ("terrace", "ter"), ("terr", "ter"),
    ("highway", "hwy"), ("parkway", "pkwy"), ("circle", "cir"), ("crescent", "cres"), ("gardens", "gdns"),
    ("grove", "gr"), ("close", "cl"), ("mount", "mt"), ("heights", "hts"), ("trail", "trl"), ("way", "wy"),
    ("north", "n"), ("south", "s"), ("east", "e"), ("west", "w"),
    ("apartment", "apt"), ("suite", "ste"), ("unit", "apt"), ("number", "no"), ("room", "rm"),
];

/// Words that name a flat, apartment or unit inside a building (after [`STREET_WORDS`]; `#`
/// reads as `apt`). The word itself does not matter: `Apt 3`, `#3`, `Unit 3` and `Flat 3` are
/// the same flat written by different hands.
const UNIT_WORDS: &[&str] = &["apt", "ste", "flat", "rm"];

/// An address as the comparison sees it: the building (house number and street: what a
/// household shares; a city or postal code is not compared), and the flat in it when the
/// address names one. Lower case, accents folded, punctuation dropped, street words
/// abbreviated: `12 Elm Street, Apt. 3, Springfield` reads as building `12 elm st`, flat `3`;
/// `Flat 3, 12 Elm Road` and `FLAT 3` on the line above `12 ELM RD` as `12 elm rd`, flat `3`.
/// A line without a house number before the building (a house name, `Rose Cottage`) is
/// passed over. Two addresses are the same home ([`same_unit`]) when the building is the same
/// and the flats are, or one of them names no flat; `max_patients_per_address` keeps a
/// building whose flats are not written quiet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AddressKey {
    /// House number and street: `12 elm st`.
    pub building: String,
    /// The flat, whatever word named it: `3`, `2b`; `None` when the address names none.
    pub unit: Option<String>,
}

/// Whether two flats of one building are the same home: the same, or one of them unknown.
fn same_unit(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// The words of one part of an address (a line, or what stands between commas).
fn address_words(part: &str) -> Vec<String> {
    part.replace('#', " # ")
        .split(|c: char| c.is_whitespace() || c == '.')
        .map(|w| {
            if w == "#" {
                return "apt".to_string();
            }
            let w: String = w.nfd().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect();
            STREET_WORDS.iter().find(|(long, _)| *long == w).map_or(w, |(_, short)| (*short).to_string())
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// A house number: digits, perhaps with one letter (`12`, `12a`).
fn house_number(w: &str) -> bool {
    let digits = w.chars().take_while(char::is_ascii_digit).count();
    (1..=6).contains(&digits) && w.chars().count() - digits <= 1 && w.chars().skip(digits).all(char::is_alphabetic)
}

/// What names a flat after its word: a number (`3`, `2b`, `12`) or a single letter (`Flat A`).
fn unit_id(w: &str) -> bool {
    (w.chars().any(|c| c.is_ascii_digit()) && w.chars().count() <= 5) || (w.chars().count() == 1 && w.chars().all(char::is_alphabetic))
}

/// What one part of an address is.
enum Part {
    /// A flat alone: `Apt 3`, `Flat 2B`, `#4`.
    Unit(String),
    /// A building, with the flat when the same part names it (`12 Elm St Apt 3`).
    Building(String, Option<String>),
    /// Anything else: a house name, a city, a postal code.
    Other,
}

impl Part {
    fn read(part: &str) -> Part {
        let mut words = address_words(part);
        let flat = words
            .windows(2)
            .position(|w| UNIT_WORDS.contains(&w[0].as_str()) && unit_id(&w[1]));
        if let Some(i) = flat {
            let unit = words[i + 1].clone();
            if words.len() == 2 {
                return Part::Unit(unit);
            }
            words.drain(i..i + 2);
            return match Part::building(words) {
                Some(b) => Part::Building(b, Some(unit)),
                None => Part::Other,
            };
        }
        Part::building(words).map_or(Part::Other, |b| Part::Building(b, None))
    }

    /// A house number first (`12 Elm St`), or last and short (`Calle Mayor 5`; a postal code
    /// such as `OR 97000` is not a house number there), and a word of two letters or more.
    fn building(words: Vec<String>) -> Option<String> {
        let numbered = words.first().is_some_and(|w| house_number(w))
            || words.last().is_some_and(|w| house_number(w) && w.chars().count() <= 4);
        let named = words.iter().any(|w| w.chars().filter(|c| c.is_alphabetic()).count() >= 2 && !house_number(w));
        (numbered && named && words.len() >= 2).then(|| words.join(" "))
    }
}

impl AddressKey {
    /// The home an address gives (a staff member's postal address): the first building its
    /// lines name, with its flat.
    pub fn of(address: &str) -> Option<AddressKey> {
        AddressKey::homes(address.lines()).into_iter().next()
    }

    /// Every home that an address's lines (in order) give: each building with its flat, which
    /// the building's own part names, or a flat alone on the part right after it (`12 Elm St` /
    /// `Apt 3`), or else right before it (`Flat 3` / `12 Elm Rd`). Lines are also cut at commas.
    pub fn homes<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<AddressKey> {
        let parts: Vec<Part> = lines.into_iter().flat_map(|l| l.split([',', '\n', ';'])).map(Part::read).collect();
        let mut taken = vec![false; parts.len()];
        let mut homes = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let Part::Building(building, unit) = part else { continue };
            let mut unit = unit.clone();
            for j in [i + 1, i.wrapping_sub(1)] {
                if unit.is_some() {
                    break;
                }
                if let Some(Part::Unit(u)) = parts.get(j)
                    && !taken[j]
                {
                    taken[j] = true;
                    unit = Some(u.clone());
                }
            }
            homes.push(AddressKey { building: building.clone(), unit });
        }
        homes
    }

    /// Whether two addresses are the same home: the same building, and the same flat unless
    /// one of them names none.
    pub fn same_home(&self, other: &AddressKey) -> bool {
        self.building == other.building && same_unit(self.unit.as_deref(), other.unit.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home(building: &str, unit: Option<&str>) -> AddressKey {
        AddressKey { building: building.into(), unit: unit.map(str::to_string) }
    }

    #[test]
    fn addresses_compare_by_building_and_flat_with_street_words_folded() {
        let k = |a: &str| AddressKey::of(a).expect("an address");
        assert_eq!(k("12 Elm Street, Apt. 3, Springfield, OR 97000"), home("12 elm st", Some("3")), "the city is not compared");
        assert!(k("12 Elm Street, Apt. 3, Springfield").same_home(&k("12 elm st")), "a flat one side does not name");
        assert!(!k("12 Elm Street, Apt. 3").same_home(&k("12 Elm St #4")), "another flat of the building");
        assert_eq!(k("4 Rue de la Paix"), k("4 rue de la paix."));
        assert_eq!(k("7 Calle Núñez"), k("7 calle nunez"));
        assert_eq!(k("Calle Mayor 5"), home("calle mayor 5", None), "a short number after the street");
        assert_eq!(k("Apartment 3 12 Elm Street"), k("apt 3 12 elm st"));
        assert_eq!(k("12 ELM ST UNIT 3"), home("12 elm st", Some("3")));
        assert_eq!(k("Flat 3, 12 Elm Road, Bristol BS1 4DJ"), home("12 elm rd", Some("3")), "the flat on the first line");
        assert_eq!(k("Flat 3\n12 Elm Road"), home("12 elm rd", Some("3")));
        assert_eq!(k("12 North Main Street\nApt 2B"), home("12 n main st", Some("2b")), "the flat on the next line");
        assert_eq!(k("Rose Cottage, 12 Elm Road"), home("12 elm rd", None), "a house name is passed over");
        assert_eq!(k("1 Flat Rock Road"), home("1 flat rock rd", None), "a street named Flat");
        assert_ne!(k("12 Elm Street"), k("14 Elm Street"));
        assert_ne!(k("12 Elm Street"), k("12 Elm Avenue"));
        assert_eq!(AddressKey::of("Springfield"), None, "a city alone is no address");
        assert_eq!(AddressKey::of("97000"), None, "a postal code alone is no address");
        assert_eq!(AddressKey::of("Springfield, OR 97000"), None, "a city and postal code are no address");
        assert_eq!(AddressKey::of("Bristol BS1 4DJ"), None);
        assert_eq!(AddressKey::of("Apt 3"), None, "a flat alone names no building");
        assert_eq!(AddressKey::of(" , "), None);
    }

    #[test]
    fn a_records_lines_give_each_home_with_its_flat() {
        let homes = AddressKey::homes(["12 Elm St", "Apt 3", "40 Oak Ave"]);
        assert_eq!(homes, vec![home("12 elm st", Some("3")), home("40 oak ave", None)], "a flat belongs to one building");
        assert_eq!(AddressKey::homes(["FLAT 3", "12 ELM RD"]), vec![home("12 elm rd", Some("3"))]);
        assert!(AddressKey::homes(["Apt 3"]).is_empty());
    }

    #[test]
    fn same_address_relation_keeps_name_relations_and_skips_crowded_addresses() {
        let cfg = RelatedRecords::default();
        let mut r = Relations::build(&cfg, [("ann", "Ann Quist")], [("1", "Lena Quist"), ("2", "Ed Other")]);
        let mut patients = vec![("1", "12 Elm Street"), ("2", "12 Elm St."), ("3", "9 Oak Road")];
        let home: Vec<(String, &str)> = (0..7).map(|i| (format!("h{i}"), "1 Care Home Lane")).collect();
        patients.extend(home.iter().map(|(id, a)| (id.as_str(), *a)));
        // A block of flats: the neighbours' records name their flats, one names none.
        patients.extend([("f1", "Flat 1, 30 Mill Road"), ("f2", "Flat 2"), ("f2", "30 Mill Road"), ("f3", "30 MILL RD")]);
        let staff = [("ann", "12 Elm Street, Springfield"), ("bob", "1 Care Home Ln"), ("cy", "no address"), ("di", "30 Mill Road\nFlat 2")];
        r.add_addresses(&cfg, staff, patients.iter().copied());
        assert_eq!(r.get("ann", hash_id("1")), Some(Relation::SameSurname), "the name relation stays");
        assert_eq!(r.get("ann", hash_id("2")), Some(Relation::SameAddress));
        assert_eq!(r.get("ann", hash_id("3")), None);
        assert_eq!(r.get("bob", hash_id("h0")), None, "seven patients live there: a care home");
        assert_eq!(r.get("di", hash_id("f2")), Some(Relation::SameAddress), "her flat, on a line of its own");
        assert_eq!(r.get("di", hash_id("f3")), Some(Relation::SameAddress), "a record that names no flat");
        assert_eq!(r.get("di", hash_id("f1")), None, "the neighbour's flat");
        let off = RelatedRecords { same_address: false, ..cfg.clone() };
        let mut r = Relations::default();
        r.add_addresses(&off, staff, patients.iter().copied());
        assert!(r.is_empty());
    }

    #[test]
    fn a_building_whose_records_name_no_flat_relates_only_the_staff_members_flat() {
        let cfg = RelatedRecords::default();
        let mut patients = vec![("f2", "Flat 2, 30 Mill Road".to_string())];
        let unnamed: Vec<String> = (0..7).map(|i| format!("u{i}")).collect();
        patients.extend(unnamed.iter().map(|id| (id.as_str(), "30 Mill Road".to_string())));
        let staff = [("di", "30 Mill Road, Flat 2"), ("ed", "30 Mill Road")];
        let mut r = Relations::default();
        r.add_addresses(&cfg, staff, patients.iter().map(|(id, a)| (*id, a.as_str())));
        assert_eq!(r.get("di", hash_id("f2")), Some(Relation::SameAddress), "her flat");
        assert_eq!(r.get("di", hash_id("u0")), None, "eight records could be hers: only her flat's count");
        assert_eq!(r.get("ed", hash_id("f2")), None, "no flat named and eight records: nothing");
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn a_record_naming_a_staff_member_as_contact_relates_them_unless_a_namesake_could_be_meant() {
        let cfg = RelatedRecords::default();
        let staff = [("ann", "Dr Ann Quist"), ("bob", "Bob Marr, RN"), ("cy", "Dr. Cy Lowe, MD"), ("cy2", "Cy Lowe"), ("ed", "Ed Stone")];
        // Bob is a patient himself (his own record); Ed has a namesake among the patients too.
        let patients = [("1", "Lena Berg"), ("2", "Marr, Bob"), ("3", "Stone, Ed"), ("4", "Ed Stone"), ("5", "Tom Quist"), ("6", "Ida Lee")];
        let contacts = [("1", "QUIST, Ann"), ("5", "Ann Quist"), ("6", "Marr, Bob"), ("1", "Cy Lowe"), ("6", "Ed Stone"), ("6", "Ann")];
        let mut r = Relations::build(&cfg, staff, patients);
        r.add_next_of_kin(&cfg, staff, patients, contacts);
        assert_eq!(r.get("ann", hash_id("1")), Some(Relation::NextOfKin), "order, case and titles do not matter");
        assert_eq!(r.get("ann", hash_id("5")), Some(Relation::SameSurname), "a pair related by name keeps that relation");
        assert_eq!(r.get("bob", hash_id("6")), Some(Relation::NextOfKin), "one patient carries the name: the staff member's own record");
        assert_eq!(r.get("cy", hash_id("1")), None, "two accounts carry the name");
        assert_eq!(r.get("cy2", hash_id("1")), None);
        assert_eq!(r.get("ed", hash_id("6")), None, "two patients carry the name: a namesake may be meant");
        assert_eq!(r.count(Relation::NextOfKin), 2, "a one-word contact names no one");
        let off = RelatedRecords { next_of_kin: false, ..cfg.clone() };
        let mut r = Relations::default();
        r.add_next_of_kin(&off, staff, patients, contacts);
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
