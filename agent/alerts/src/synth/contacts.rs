//! Invented contacts for the synthetic streams: the people a patient's record names as next of
//! kin or emergency contact (FHIR `Patient.contact`), staff members among them for their
//! relatives (the ground truth of the `next_of_kin` rule).
//!
//! The shares were chosen before any figure was measured:
//!
//! - [`WITH_CONTACT`] of records give a contact, [`SECOND_CONTACT`] of those a second one.
//! - A staff member's relative (by name, or someone of their household) whose record gives
//!   contacts names the staff member among them in [`STAFF_AS_CONTACT`] of cases (a child's
//!   record its parent, a spouse's the spouse; a parent's or sibling's record often someone
//!   else of the family). A staff member's own record names a relative, never a co-worker.
//! - Other contacts are invented people: the patient's surname half of the time (a relative),
//!   otherwise one drawn as the patients' surnames are (a partner, a friend), a given name with
//!   the pool's shares. One may be a namesake of a staff member, as in a real town.
//! - Spellings: [`Family::A`] (development) writes the contact as FHIR `name.given` and
//!   `name.family`, which the agent reads as `Given Family`, relationship codes of HL7 v2 table
//!   0131 (`N` next of kin, `C` emergency contact); [`Family::B`] (held out) writes
//!   `name.text` as `Family, Given` with accents and hyphenated double surnames (the staff
//!   accounts spell them without accents), relationship codes of HL7 v3 RoleCode (`SPS`,
//!   `MTH`, `FTH`, `SON`, `DAU`, `SIB`, `FRND`); upper case now and then in both.

use std::collections::HashSet;

use super::Rng;
use super::addresses::Addresses;
use super::names::{self, Directory, Family, Name};

/// Share of patient records that give a contact.
pub const WITH_CONTACT: f64 = 0.65;
/// Share of those that give a second one.
pub const SECOND_CONTACT: f64 = 0.3;
/// Share of a staff member's relatives with contacts whose record names the staff member.
pub const STAFF_AS_CONTACT: f64 = 0.6;

/// One contact of a patient's record, as the agent keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// The patient id, as in audit records.
    pub patient: String,
    /// The relationship code the record gives.
    pub relationship: &'static str,
    /// The contact's name, as the agent reads it from the record.
    pub name: String,
}

/// The contacts of one stream.
#[derive(Debug, Clone, Default)]
pub struct Contacts {
    /// Every contact of every record, a record's contacts in their order.
    pub contacts: Vec<Contact>,
    /// Per staff member (by index): the patients whose record names them as a contact.
    pub naming_staff: Vec<Vec<usize>>,
}

/// Make the contacts of every patient record of the directory; `addresses` (empty unless the
/// stream has them) tells who lives in each staff member's household.
pub fn contacts(family: Family, seed: u64, dir: &Directory, addresses: &Addresses) -> Contacts {
    let mut rng = Rng::new(seed ^ 0x636f_6e74_6163);
    // Which staff member each relative belongs to (by name first, then household).
    let mut relative_of: Vec<Option<usize>> = vec![None; dir.patients.len()];
    for (u, kin) in dir.relatives.iter().enumerate().chain(addresses.household.iter().enumerate()) {
        for &i in kin {
            relative_of[i].get_or_insert(u);
        }
    }
    let own: HashSet<usize> = dir.own_record.iter().flatten().copied().collect();
    let mut out = Contacts { naming_staff: vec![Vec::new(); dir.staff.len()], ..Contacts::default() };
    for (i, (id, _)) in dir.patients.iter().enumerate() {
        if !rng.chance(WITH_CONTACT) {
            continue;
        }
        let n = if rng.chance(SECOND_CONTACT) { 2 } else { 1 };
        let staff_slot = match relative_of[i] {
            Some(u) if !own.contains(&i) && rng.chance(STAFF_AS_CONTACT) => Some((u, rng.int(0, n - 1))),
            _ => None,
        };
        for k in 0..n {
            let person = match staff_slot {
                Some((u, slot)) if slot == k => {
                    out.naming_staff[u].push(i);
                    dir.staff_names[u].clone()
                }
                _ => {
                    let mut p = names::invent(family, &mut rng);
                    if rng.chance(0.5) {
                        p.family = dir.patient_names[i].family.clone();
                    }
                    p
                }
            };
            out.contacts.push(Contact { patient: id.clone(), relationship: relationship(family, &mut rng, k), name: written(family, &mut rng, &person) });
        }
    }
    out
}

/// HL7 v3 RoleCode kinships (and a friend) that family B's records give.
const KINSHIP_CODES: &[&str] = &["SPS", "MTH", "FTH", "SON", "DAU", "SIB", "FRND"];

/// A relationship code: next of kin first, emergency contact second (A); a kinship (B).
fn relationship(family: Family, rng: &mut Rng, k: i64) -> &'static str {
    match family {
        Family::A => {
            if k == 0 { "N" } else { "C" }
        }
        Family::B => KINSHIP_CODES[rng.int(0, KINSHIP_CODES.len() as i64 - 1) as usize],
    }
}

/// The contact's name as the agent reads it from the record: `Given Family` from the parts
/// (A), the text `Family, Given` (B); upper case in some records.
fn written(family: Family, rng: &mut Rng, n: &Name) -> String {
    let name = names::record_name(family, n);
    let upper = if family == Family::A { 0.1 } else { 0.2 };
    if rng.chance(upper) { name.to_uppercase() } else { name }
}

#[cfg(test)]
mod tests {
    use crate::relations::NameKey;
    use crate::synth::{Family, Scenario, generate};

    #[test]
    fn records_name_contacts_and_staff_relatives_name_the_staff_member() {
        for family in [Family::A, Family::B] {
            let st = generate(&Scenario { seed: 1, weeks: 2, incidents_per_kind: 0, family, addresses: true, contacts: true });
            let c = &st.contacts;
            let records: std::collections::HashSet<&str> = c.contacts.iter().map(|x| x.patient.as_str()).collect();
            let share = records.len() as f64 / st.directory.patients.len() as f64;
            assert!((0.6..0.7).contains(&share), "{family:?}: {share}");
            // Every record naming a staff member spells the staff member's full name.
            let mut named = 0;
            for (u, kin) in c.naming_staff.iter().enumerate() {
                let staff = NameKey::of(&st.directory.staff[u].1).expect("a name");
                for &i in kin {
                    let id = crate::synth::names::patient_id(i);
                    assert!(c.contacts.iter().any(|x| x.patient == id && NameKey::of(&x.name).is_some_and(|k| k.full == staff.full)), "{family:?}: {id}");
                    named += 1;
                }
            }
            let relatives: usize = st.directory.relatives.iter().chain(st.addresses.household.iter()).map(Vec::len).sum();
            assert!(named * 5 >= relatives && named * 5 <= relatives * 3, "{family:?}: {named} of {relatives}");
        }
    }
}
