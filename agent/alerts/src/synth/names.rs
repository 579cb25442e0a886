//! Invented names for the synthetic streams: the staff's display names and a name for every
//! patient, in one of two scenario families, and which patients are staff or staff's
//! relatives (the ground truth of the related-record rules).
//!
//! - [`Family::A`] (development): records name patients `Given Family`; staff accounts read
//!   `Dr Given Family` or `Given Family`; surnames from an English-speaking pool; relatives
//!   carry the staff member's surname as it is.
//! - [`Family::B`] (held out): records name patients `Family, Given` with accents and
//!   double-barrelled surnames (`García-López`); staff accounts come without accents and with
//!   suffixes (`Jose Nunez, RN`, `Dr. Ana Garcia-Lopez, MD`); a relative may carry one half of
//!   a staff member's double surname, or the double surname of which the staff member has one
//!   half. Other surname pools, other given names.
//!
//! Given names are drawn as often as people carry them (`given.rs`: the 1990 US census's
//! shares for 400 names, two thirds of people; the others a rarer name each), so that a staff
//! member whose surname `n` patients carry shares their full name with `n × 0.0028` patients
//! on average, as in a real population. (A pool of 24 given names drawn evenly made it `n / 24`,
//! fifteen times too many namesakes.)

use super::Rng;

mod given;

use given::{GIVEN_A, GIVEN_B};

/// Which family of names a stream is generated in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// The rules were developed on this family.
    A,
    /// Held out: measured once the rules were fixed.
    B,
}

const COMMON_A: &[&str] = &[
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Anderson", "Taylor", "Thomas", "Moore",
    "Martin", "Jackson", "Thompson", "White", "Harris", "Clark", "Lewis", "Walker", "Hall", "Young", "Allen", "King",
];
const SYLLABLES_A: &[&str] = &["ash", "brook", "cal", "den", "fair", "gold", "hart", "kings", "lang", "mor", "pen", "ren", "stan", "thorn", "wick", "ley", "ford", "by", "ton", "well"];

const COMMON_B: &[&str] = &[
    "García", "Rodríguez", "Martínez", "Hernández", "López", "González", "Pérez", "Sánchez", "Ramírez", "Nguyễn", "Trần",
    "Lê", "Phạm", "Müller", "Schäfer", "Jiménez", "Díaz", "Gómez", "Muñoz", "Álvarez", "Romero", "Ruiz", "Núñez", "Ortíz",
];
const SYLLABLES_B: &[&str] = &["bel", "cas", "dor", "ech", "fal", "gar", "ibá", "lar", "mén", "nar", "olá", "qui", "rós", "sal", "tor", "urr", "val", "zú", "ñez", "aga"];

/// A person's name in parts.
#[derive(Debug, Clone, Default)]
pub(super) struct Name {
    pub(super) given: String,
    /// One or two surnames (two: a double-barrelled name).
    pub(super) family: Vec<String>,
}

/// A surname few people carry: three syllables of twenty (8,000 of them; with two syllables,
/// 400, the "rare" surnames were shared by a patient or two each and staff had namesakes among
/// the patients far more often than a clinic would).
fn rare(rng: &mut Rng, syllables: &[&str]) -> String {
    let mut s: String = (0..3).map(|_| *rng.pick(syllables)).collect();
    if let Some(first) = s.chars().next() {
        s = first.to_uppercase().chain(s.chars().skip(1)).collect();
    }
    s
}

/// A given name, drawn with the shares of `pool` (per million people); the people the pool's
/// names leave out get a rare name.
fn given_name(rng: &mut Rng, pool: &[(&str, u32)], syllables: &[&str]) -> String {
    let mut draw = rng.unit() * 1_000_000.0;
    for (name, per_million) in pool {
        draw -= f64::from(*per_million);
        if draw < 0.0 {
            return (*name).to_string();
        }
    }
    rare(rng, syllables)
}

/// Accents off, as a directory without them would spell a name.
fn plain(s: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    s.nfd().filter(|c| c.is_ascii()).collect()
}

/// The names of one stream.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// (user name, display name) of every account.
    pub staff: Vec<(String, String)>,
    /// (patient id as in audit records, the name the record gives), for every patient.
    pub patients: Vec<(String, String)>,
    /// Per staff member (by index): their own record's patient index, if they are a patient.
    pub own_record: Vec<Option<usize>>,
    /// Per staff member: patient indices of relatives (same surname).
    pub relatives: Vec<Vec<usize>>,
    /// The staff's names in parts, as a record would spell them (with accents).
    pub(super) staff_names: Vec<Name>,
    /// The patients' names in parts.
    pub(super) patient_names: Vec<Name>,
}

/// The family's surname pools: (common, syllables of rare ones).
fn pools(family: Family) -> (&'static [&'static str], &'static [(&'static str, u32)], &'static [&'static str]) {
    match family {
        Family::A => (COMMON_A, GIVEN_A, SYLLABLES_A),
        Family::B => (COMMON_B, GIVEN_B, SYLLABLES_B),
    }
}

/// A patient's surname(s): 70 % from the common pool (Zipf-like), the others rare; in family B
/// a fifth double-barrelled.
fn draw_surname(family: Family, rng: &mut Rng) -> Vec<String> {
    let (common, _, syllables) = pools(family);
    let one = |rng: &mut Rng| {
        if rng.chance(0.7) {
            // Zipf-like: the first surnames of the pool are the most common.
            let i = ((rng.unit().powf(2.0)) * common.len() as f64) as usize;
            common[i.min(common.len() - 1)].to_string()
        } else {
            rare(rng, syllables)
        }
    };
    if family == Family::B && rng.chance(0.2) { vec![one(rng), one(rng)] } else { vec![one(rng)] }
}

/// A person drawn as the patients are: a given name with the pool's shares, a surname.
pub(super) fn invent(family: Family, rng: &mut Rng) -> Name {
    let (_, given, syllables) = pools(family);
    Name { given: given_name(rng, given, syllables), family: draw_surname(family, rng) }
}

/// How a record of the family writes a person's name: `Given Family` (A), `Family, Given`
/// with the double surname hyphenated (B).
pub(super) fn record_name(family: Family, n: &Name) -> String {
    match family {
        Family::A => format!("{} {}", n.given, n.family.join(" ")),
        Family::B => format!("{}, {}", n.family.join("-"), n.given),
    }
}

/// Make the names: `users` staff accounts (user names given), `patients` patients.
pub fn directory(family: Family, seed: u64, users: &[(String, bool)], patients: usize) -> Directory {
    let mut rng = Rng::new(seed ^ 0x6e61_6d65_7321);
    let (common, given, syllables) = pools(family);
    let mut names: Vec<Name> = (0..patients).map(|_| Name { given: given_name(&mut rng, given, syllables), family: draw_surname(family, &mut rng) }).collect();
    let mut d = Directory::default();
    let mut used = std::collections::HashSet::new();
    for (user, clinician) in users {
        // Staff surnames are mostly rare ones (a clinic's dozen people), a few common ones.
        let family_name = if rng.chance(0.2) {
            vec![rng.pick(common).to_string()]
        } else if family == Family::B && rng.chance(0.3) {
            vec![rare(&mut rng, syllables), rng.pick(common).to_string()]
        } else {
            vec![rare(&mut rng, syllables)]
        };
        let name = Name { given: given_name(&mut rng, given, syllables), family: family_name };
        let display = match (family, clinician) {
            (Family::A, true) => format!("Dr {} {}", name.given, name.family.join(" ")),
            (Family::A, false) => format!("{} {}", name.given, name.family.join(" ")),
            (Family::B, true) => plain(&format!("Dr. {} {}, MD", name.given, name.family.join("-"))),
            (Family::B, false) => plain(&format!("{} {}, RN", name.given, name.family.join("-"))),
        };
        d.staff.push((user.clone(), display));
        d.staff_names.push(name.clone());
        let clinician = *clinician;
        let _ = clinician;
        // A third of the staff are patients of their own clinic.
        let mut pick_free = |rng: &mut Rng| loop {
            let i = rng.int(0, patients as i64 - 1) as usize;
            if used.insert(i) {
                break i;
            }
        };
        let own = rng.chance(0.35).then(|| {
            let i = pick_free(&mut rng);
            names[i] = name.clone();
            i
        });
        d.own_record.push(own);
        // Relatives: 0-3 patients with the staff member's surname (in family B sometimes one
        // half of a double surname, or a double surname of which theirs is one half).
        let mut kin = Vec::new();
        for _ in 0..rng.int(0, 3) {
            let i = pick_free(&mut rng);
            let family_name = match (family, name.family.len()) {
                (Family::B, 2) if rng.chance(0.5) => vec![name.family[rng.int(0, 1) as usize].clone()],
                (Family::B, 1) if rng.chance(0.4) => vec![name.family[0].clone(), rng.pick(common).to_string()],
                _ => name.family.clone(),
            };
            names[i] = Name { given: given_name(&mut rng, given, syllables), family: family_name };
            kin.push(i);
        }
        d.relatives.push(kin);
    }
    d.patients = names.iter().enumerate().map(|(i, n)| (patient_id(i), record_name(family, n))).collect();
    d.patient_names = names;
    d
}

/// The id of patient `i` as the synthetic records name it.
pub fn patient_id(i: usize) -> String {
    format!("P{i:05}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relations::NameKey;

    /// How often two people drawn from a pool share a given name (the rare names the pool
    /// leaves out are thousands, so they add next to nothing).
    fn shared_given_name(pool: &[(&str, u32)]) -> f64 {
        pool.iter().map(|(_, m)| (f64::from(*m) / 1e6).powi(2)).sum()
    }

    #[test]
    fn given_names_are_as_common_as_in_a_real_population() {
        for pool in [GIVEN_A, GIVEN_B] {
            // The 1990 US census: two people share a given name with probability 0.0028; the
            // commonest name is carried by 1.7 % of people; 400 names cover two thirds.
            let p = shared_given_name(pool);
            assert!((0.0025..0.0031).contains(&p), "{p}");
            assert_eq!(pool.len(), 400);
            assert!(pool[0].1 <= 17_000, "{:?}", pool[0]);
            let covered: u32 = pool.iter().map(|(_, m)| m).sum();
            assert!((600_000..700_000).contains(&covered), "{covered}");
            // Shares fall with rank, and no two names are one name to the rules.
            assert!(pool.windows(2).all(|w| w[0].1 >= w[1].1));
            let folded: std::collections::HashSet<_> =
                pool.iter().map(|(n, _)| plain(n).to_lowercase()).collect();
            assert_eq!(folded.len(), pool.len());
            assert!(pool.iter().all(|(n, _)| NameKey::of(n).is_some_and(|k| k.surnames == [plain(n).to_lowercase()])), "{pool:?}");
        }
    }

    /// Patients other than the staff member's own record who carry the staff member's full
    /// name, per staff member, over many directories; and what the names' shares predict for
    /// them (the patients who carry the staff member's surname, times 0.0028).
    fn namesakes(family: Family, seeds: std::ops::RangeInclusive<u64>) -> (f64, f64) {
        let users: Vec<(String, bool)> = (0..15).map(|i| (format!("u{i}"), i < 8)).collect();
        let (mut found, mut predicted, mut staff) = (0usize, 0.0, 0usize);
        for seed in seeds {
            let d = directory(family, seed, &users, 4000);
            let keys: Vec<NameKey> = d.patients.iter().filter_map(|(_, n)| NameKey::of(n)).collect();
            for (i, (_, display)) in d.staff.iter().enumerate() {
                let k = NameKey::of(display).expect("a name");
                let same = keys.iter().filter(|p| p.full == k.full).count();
                found += same - usize::from(d.own_record[i].is_some());
                let surname = keys.iter().filter(|p| p.surnames[0] == k.surnames[0]).count();
                predicted += surname as f64 * shared_given_name(if family == Family::A { GIVEN_A } else { GIVEN_B });
                staff += 1;
            }
        }
        (found as f64 / staff as f64, predicted / staff as f64)
    }

    #[test]
    fn namesakes_among_the_patients_are_as_rare_as_the_names_predict() {
        for family in [Family::A, Family::B] {
            let (found, predicted) = namesakes(family, 1..=40);
            println!("{family:?}: {found:.3} namesakes per staff member, {predicted:.3} predicted");
            assert!(found <= 2.0 * predicted + 0.02, "{family:?}: {found} namesakes per staff member, {predicted} predicted");
        }
    }
}
