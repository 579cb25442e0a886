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

use super::Rng;

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
const GIVEN_A: &[&str] = &[
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "David", "Susan", "Karen", "Daniel",
    "Nancy", "Paul", "Lisa", "Mark", "Betty", "Steven", "Helen", "Kevin", "Sandra", "Brian", "Donna", "George",
];
const SYLLABLES_A: &[&str] = &["ash", "brook", "cal", "den", "fair", "gold", "hart", "kings", "lang", "mor", "pen", "ren", "stan", "thorn", "wick", "ley", "ford", "by", "ton", "well"];

const COMMON_B: &[&str] = &[
    "García", "Rodríguez", "Martínez", "Hernández", "López", "González", "Pérez", "Sánchez", "Ramírez", "Nguyễn", "Trần",
    "Lê", "Phạm", "Müller", "Schäfer", "Jiménez", "Díaz", "Gómez", "Muñoz", "Álvarez", "Romero", "Ruiz", "Núñez", "Ortíz",
];
const GIVEN_B: &[&str] = &[
    "José", "María", "Ángel", "Lucía", "Andrés", "Sofía", "Joaquín", "Inés", "Tomás", "Begoña", "Minh", "Thảo", "Jürgen",
    "Björn", "Zoë", "Renée", "Óscar", "Raúl", "Élodie", "Iñaki", "Ramón", "Verónica", "Hùng", "Anaïs",
];
const SYLLABLES_B: &[&str] = &["bel", "cas", "dor", "ech", "fal", "gar", "ibá", "lar", "mén", "nar", "olá", "qui", "rós", "sal", "tor", "urr", "val", "zú", "ñez", "aga"];

/// A person's name in parts.
#[derive(Debug, Clone)]
struct Name {
    given: String,
    /// One or two surnames (two: a double-barrelled name).
    family: Vec<String>,
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
}

/// Make the names: `users` staff accounts (user names given), `patients` patients.
pub fn directory(family: Family, seed: u64, users: &[(String, bool)], patients: usize) -> Directory {
    let mut rng = Rng::new(seed ^ 0x6e61_6d65_7321);
    let (common, given, syllables) = match family {
        Family::A => (COMMON_A, GIVEN_A, SYLLABLES_A),
        Family::B => (COMMON_B, GIVEN_B, SYLLABLES_B),
    };
    let surname = |rng: &mut Rng| -> Vec<String> {
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
    };
    let mut names: Vec<Name> = (0..patients).map(|_| Name { given: rng.pick(given).to_string(), family: surname(&mut rng) }).collect();
    let record_name = |n: &Name| match family {
        Family::A => format!("{} {}", n.given, n.family.join(" ")),
        Family::B => format!("{}, {}", n.family.join("-"), n.given),
    };
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
        let name = Name { given: rng.pick(given).to_string(), family: family_name };
        let display = match (family, clinician) {
            (Family::A, true) => format!("Dr {} {}", name.given, name.family.join(" ")),
            (Family::A, false) => format!("{} {}", name.given, name.family.join(" ")),
            (Family::B, true) => plain(&format!("Dr. {} {}, MD", name.given, name.family.join("-"))),
            (Family::B, false) => plain(&format!("{} {}, RN", name.given, name.family.join("-"))),
        };
        d.staff.push((user.clone(), display));
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
            names[i] = Name { given: rng.pick(given).to_string(), family: family_name };
            kin.push(i);
        }
        d.relatives.push(kin);
    }
    d.patients = names.iter().enumerate().map(|(i, n)| (patient_id(i), record_name(n))).collect();
    d
}

/// The id of patient `i` as the synthetic records name it.
pub fn patient_id(i: usize) -> String {
    format!("P{i:05}")
}
