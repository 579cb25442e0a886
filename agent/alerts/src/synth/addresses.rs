//! Invented postal addresses for the synthetic streams: a home for every staff member and
//! every patient, households, blocks of flats and a care home, each copy of an address
//! written the ways real records differ (the ground truth of the `same_address` rule).
//!
//! - Households: a staff member lives with [`RELATIVES_AT_HOME`] of their relatives by name
//!   (the others live elsewhere) and with 0-2 patients of other surnames (a partner who kept
//!   their name, step-children, a parent-in-law); a staff member who is a patient of the
//!   clinic has their own home on their record. Other patients live in households of 1-6 at
//!   homes of their own; [`FLATS`] of the homes are flats in buildings of 4-24 flats, staff
//!   flats among them, so a staff member has neighbours among the patients. A care home
//!   houses 45-70 patients (more than `max_patients_per_address`). Streets of one name and
//!   another type (`Oak Street`, `Oak Avenue`) both exist.
//! - Records: a patient's record gives its address as FHIR `Patient.address` lines (each line
//!   a row of the store, in the record's order); [`NO_ADDRESS`] of records give none,
//!   [`STALE_ADDRESS`] a previous home instead of the current one, [`TWO_ADDRESSES`] a previous
//!   home besides it. Every staff account has its current address (as `wardbox users address`
//!   or the directory sets it: one line with commas, or lines).
//! - Spellings, per copy: [`Family::A`] (development) writes US-style: `12 Elm Street`, `12 Elm
//!   St`, `12 ELM ST.`, compass points spelt or abbreviated (`North`, `N`, `N.`), the flat as
//!   `Apt 3`, `Apt. 3`, `#3`, `Unit 3` or `Apartment 3` after the street on the same line or
//!   on the next one, or left out. [`Family::B`] (held out) writes UK-style: `Flat 3` on the
//!   line above the street or before it on the same line (`Flat 3, 12 Church Road`), now and
//!   then after it, or left out; lettered flats (`Flat B`); house names (`Rose Cottage`) on the
//!   line above the number in some copies; `King's Road` and `Kings Road`; `Crescent`/`Cres`,
//!   `Gardens`/`Gdns`; upper case more often; other street names.

use std::collections::HashSet;

use super::Rng;
use super::names::{Directory, Family};

/// Share of a staff member's relatives by name who live at the staff member's home (children,
/// a spouse who took the name); the others (parents, siblings, grown children) live
/// elsewhere. Chosen before any figure was measured.
pub const RELATIVES_AT_HOME: f64 = 0.6;
/// Share of homes that are flats.
pub const FLATS: f64 = 0.3;
/// Share of patient records that give no address.
pub const NO_ADDRESS: f64 = 0.02;
/// Share of patient records that give a previous home instead of the current one.
pub const STALE_ADDRESS: f64 = 0.03;
/// Share of patient records that give a previous home besides the current one.
pub const TWO_ADDRESSES: f64 = 0.05;

/// The addresses of one stream.
#[derive(Debug, Clone, Default)]
pub struct Addresses {
    /// (user name, the account's postal address; lines separated by `\n`), every account.
    pub staff: Vec<(String, String)>,
    /// (patient id, one address line of the record), a record's lines in their order.
    pub patients: Vec<(String, String)>,
    /// Per staff member (by index): the patients who live at the staff member's home (their
    /// own record, if any, not counted).
    pub household: Vec<Vec<usize>>,
}

/// A street: its name, its type (full, abbreviated) and, in family A, a compass point.
#[derive(Debug, Clone)]
struct Street {
    name: &'static str,
    kind: (&'static str, &'static str),
    point: Option<(&'static str, &'static str)>,
}

/// A home: a building (number on a street; a house name in family B) and the flat in it.
#[derive(Debug, Clone)]
struct Home {
    number: u32,
    street: usize,
    flat: Option<String>,
    house_name: Option<&'static str>,
}

const NAMES_A: &[&str] = &[
    "Elm", "Oak", "Maple", "Cedar", "Pine", "Washington", "Lincoln", "Jefferson", "Park", "Lake", "Hill", "Main",
    "Highland", "Sunset", "Ridge", "Willow", "Chestnut", "Walnut", "Spruce", "Franklin", "Madison", "Adams", "River",
    "Meadow", "Forest", "Valley", "Spring", "Cherry", "Birch", "Laurel",
];
const KINDS_A: &[(&str, &str)] = &[
    ("Street", "St"), ("Avenue", "Ave"), ("Road", "Rd"), ("Drive", "Dr"), ("Lane", "Ln"), ("Court", "Ct"),
    ("Boulevard", "Blvd"), ("Place", "Pl"),
];
const POINTS: &[(&str, &str)] = &[("North", "N"), ("South", "S"), ("East", "E"), ("West", "W")];
const NAMES_B: &[&str] = &[
    "Church", "High", "Station", "Mill", "Victoria", "Albert", "Queen's", "King's", "Manor", "Green", "Chapel",
    "School", "Windsor", "York", "Orchard", "Beech", "Ash", "Holly", "Hawthorn", "Westfield", "Rectory", "Bishop's",
    "Priory", "Abbey", "Castle", "Bridge", "Springfield", "Grange", "Elmfield", "Nelson",
];
const KINDS_B: &[(&str, &str)] = &[
    ("Road", "Rd"), ("Street", "St"), ("Lane", "Lane"), ("Close", "Cl"), ("Crescent", "Cres"), ("Gardens", "Gdns"),
    ("Avenue", "Ave"), ("Way", "Way"), ("Grove", "Gr"), ("Terrace", "Terr"), ("Drive", "Dr"), ("Place", "Pl"),
];
const HOUSE_NAMES: &[&str] = &[
    "Rose Cottage", "The Old Rectory", "Ivy House", "Orchard View", "The Laurels", "Meadow Bank", "Fern Lodge",
    "Holly Cottage", "The Willows", "Brook House",
];

/// Make the addresses: homes for the directory's staff and patients, each record's copy
/// written in the family's ways.
pub fn addresses(family: Family, seed: u64, dir: &Directory) -> Addresses {
    let mut rng = Rng::new(seed ^ 0x6164_6472_6573);
    let streets = streets(family, &mut rng);
    let mut buildings: HashSet<(u32, usize)> = HashSet::new();
    let mut new_building = |rng: &mut Rng| loop {
        let b = (rng.int(1, 250) as u32, rng.int(0, streets.len() as i64 - 1) as usize);
        if buildings.insert(b) {
            break b;
        }
    };
    // Blocks of flats: a flat is in one of the blocks with room left, picked at random, or in
    // a new block while fewer than `OPEN_BLOCKS` have room (so flats, staff's among them, spread
    // over the town's blocks instead of filling one after another); which of the block's flats,
    // at random. A block numbers its flats one way: `1`-`24`, by floor (`2B`), or (family B) by
    // letter.
    const OPEN_BLOCKS: usize = 30;
    struct Block {
        building: (u32, usize),
        free: Vec<u32>,
        style: u8,
    }
    let mut blocks: Vec<Block> = Vec::new();
    let mut home = |rng: &mut Rng, new_building: &mut dyn FnMut(&mut Rng) -> (u32, usize)| -> Home {
        if rng.chance(FLATS) {
            let open: Vec<usize> = (0..blocks.len()).filter(|&b| !blocks[b].free.is_empty()).collect();
            let b = if open.len() < OPEN_BLOCKS {
                let size = rng.int(4, 24) as u32;
                let style = match family {
                    Family::B if rng.chance(0.25) => 2,
                    _ if size > 9 && rng.chance(0.5) => 1,
                    _ => 0,
                };
                blocks.push(Block { building: new_building(rng), free: (0..size).collect(), style });
                blocks.len() - 1
            } else {
                *rng.pick(&open)
            };
            let block = &mut blocks[b];
            let k = rng.int(0, block.free.len() as i64 - 1) as usize;
            let i = block.free.swap_remove(k);
            let (number, street) = block.building;
            let flat = match block.style {
                2 => ((b'A' + (i % 26) as u8) as char).to_string(),
                1 => format!("{}{}", i / 4 + 1, (b'A' + (i % 4) as u8) as char),
                _ => (i + 1).to_string(),
            };
            Home { number, street, flat: Some(flat), house_name: None }
        } else {
            let (number, street) = new_building(rng);
            let house_name = (family == Family::B && rng.chance(0.1)).then(|| *rng.pick(HOUSE_NAMES));
            Home { number, street, flat: None, house_name }
        }
    };

    let patients = dir.patients.len();
    let mut current: Vec<Option<Home>> = vec![None; patients];
    let mut taken: HashSet<usize> = HashSet::new();
    for own in dir.own_record.iter().flatten() {
        taken.insert(*own);
    }
    for kin in &dir.relatives {
        taken.extend(kin.iter().copied());
    }
    let mut out = Addresses::default();
    // Staff homes and households.
    let mut free: Vec<usize> = (0..patients).filter(|i| !taken.contains(i)).collect();
    let mut take_free = |rng: &mut Rng| {
        let k = rng.int(0, free.len() as i64 - 1) as usize;
        free.swap_remove(k)
    };
    for (u, (user, _)) in dir.staff.iter().enumerate() {
        let h = home(&mut rng, &mut new_building);
        out.staff.push((user.clone(), write_staff(family, &mut rng, &streets, &h)));
        if let Some(own) = dir.own_record[u] {
            current[own] = Some(h.clone());
        }
        let mut household = Vec::new();
        for &kin in &dir.relatives[u] {
            if rng.chance(RELATIVES_AT_HOME) {
                current[kin] = Some(h.clone());
                household.push(kin);
            }
        }
        let others = match rng.unit() {
            x if x < 0.35 => 0,
            x if x < 0.8 => 1,
            _ => 2,
        };
        for _ in 0..others {
            let i = take_free(&mut rng);
            current[i] = Some(h.clone());
            household.push(i);
        }
        out.household.push(household);
    }
    // The care home: a building of its own, no flats.
    let (number, street) = new_building(&mut rng);
    let care_home = Home { number, street, flat: None, house_name: None };
    for _ in 0..rng.int(45, 70) {
        let i = take_free(&mut rng);
        current[i] = Some(care_home.clone());
    }
    // Everyone else (relatives living elsewhere among them) in households of 1-6.
    let mut rest: Vec<usize> = (0..patients).filter(|&i| current[i].is_none()).collect();
    while !rest.is_empty() {
        let size = match rng.unit() {
            x if x < 0.28 => 1,
            x if x < 0.62 => 2,
            x if x < 0.78 => 3,
            x if x < 0.92 => 4,
            x if x < 0.98 => 5,
            _ => 6,
        };
        let h = home(&mut rng, &mut new_building);
        for _ in 0..size.min(rest.len()) {
            let k = rng.int(0, rest.len() as i64 - 1) as usize;
            current[rest.swap_remove(k)] = Some(h.clone());
        }
    }
    // What each record gives.
    for (i, (id, _)) in dir.patients.iter().enumerate() {
        let Some(now) = current[i].clone() else { continue };
        let x = rng.unit();
        let homes = if x < NO_ADDRESS {
            vec![]
        } else if x < NO_ADDRESS + STALE_ADDRESS {
            vec![home(&mut rng, &mut new_building)]
        } else if x < NO_ADDRESS + STALE_ADDRESS + TWO_ADDRESSES {
            let before = home(&mut rng, &mut new_building);
            if rng.chance(0.5) { vec![now, before] } else { vec![before, now] }
        } else {
            vec![now]
        };
        for h in &homes {
            for line in write_record(family, &mut rng, &streets, h) {
                out.patients.push((id.clone(), line));
            }
        }
    }
    out
}

fn streets(family: Family, rng: &mut Rng) -> Vec<Street> {
    let (names, kinds) = match family {
        Family::A => (NAMES_A, KINDS_A),
        Family::B => (NAMES_B, KINDS_B),
    };
    let mut out = Vec::new();
    for &name in names {
        // A name on one street, a few on two (`Oak Street` and `Oak Avenue`).
        let n = if rng.chance(0.25) { 2 } else { 1 };
        let mut used = HashSet::new();
        while used.len() < n {
            let kind = *rng.pick(kinds);
            if used.insert(kind.0) {
                let point = (family == Family::A && rng.chance(0.2)).then(|| *rng.pick(POINTS));
                out.push(Street { name, kind, point });
            }
        }
    }
    out
}

/// One way of writing a word that has a long and a short form: the long one, the short one,
/// or the short one with a full stop.
fn form(rng: &mut Rng, (long, short): (&str, &str), long_share: f64) -> String {
    if long == short || rng.chance(long_share) {
        long.to_string()
    } else if rng.chance(0.6) {
        short.to_string()
    } else {
        format!("{short}.")
    }
}

/// The street line of a home, as one hand writes it: `12 N. Elm St`, `12 King's Road`.
fn street_line(family: Family, rng: &mut Rng, streets: &[Street], h: &Home) -> String {
    let s = &streets[h.street];
    let mut line = h.number.to_string();
    if let Some(point) = s.point {
        line += " ";
        line += &form(rng, point, 0.4);
    }
    line += " ";
    line += &if family == Family::B && s.name.contains('\'') && rng.chance(0.4) { s.name.replace('\'', "") } else { s.name.to_string() };
    line += " ";
    line += &form(rng, s.kind, if family == Family::A { 0.5 } else { 0.6 });
    line
}

/// How one hand writes the flat: `Apt 3`, `#3`, `Flat 3`.
fn flat_word(family: Family, rng: &mut Rng, flat: &str) -> String {
    match family {
        Family::A => match rng.int(0, 4) {
            0 => format!("Apt {flat}"),
            1 => format!("Apt. {flat}"),
            2 => format!("#{flat}"),
            3 => format!("Unit {flat}"),
            _ => format!("Apartment {flat}"),
        },
        Family::B => {
            if rng.chance(0.85) {
                format!("Flat {flat}")
            } else {
                format!("Apartment {flat}")
            }
        }
    }
}

/// The lines of one copy of a home's address, without the city: the building's line, the flat
/// where this copy writes it, a house name in some copies.
fn lines(family: Family, rng: &mut Rng, streets: &[Street], h: &Home) -> Vec<String> {
    let street = street_line(family, rng, streets, h);
    let mut out = Vec::new();
    if let Some(name) = h.house_name
        && rng.chance(0.6)
    {
        out.push(name.to_string());
    }
    match &h.flat {
        None => out.push(street),
        Some(flat) => {
            let flat = flat_word(family, rng, flat);
            let x = rng.unit();
            match family {
                Family::A if x < 0.35 => out.push(format!("{street}{}{flat}", if rng.chance(0.5) { " " } else { ", " })),
                Family::A if x < 0.75 => out.extend([street, flat]),
                Family::B if x < 0.4 => out.extend([flat, street]),
                Family::B if x < 0.7 => out.push(format!("{flat}, {street}")),
                Family::B if x < 0.8 => out.push(format!("{street}, {flat}")),
                _ => out.push(street),
            }
        }
    }
    let x = rng.unit();
    let upper = if family == Family::A { 0.12 } else { 0.2 };
    if x < upper {
        out.iter_mut().for_each(|l| *l = l.to_uppercase());
    } else if x < upper + 0.04 {
        out.iter_mut().for_each(|l| *l = l.to_lowercase());
    }
    out
}

/// A patient record's `Patient.address.line` for one home.
fn write_record(family: Family, rng: &mut Rng, streets: &[Street], h: &Home) -> Vec<String> {
    lines(family, rng, streets, h)
}

/// A staff account's postal address: the lines and the city, typed on one line with commas
/// (`wardbox users address`) or kept as lines (a directory's `$`-separated lines).
fn write_staff(family: Family, rng: &mut Rng, streets: &[Street], h: &Home) -> String {
    let mut l = lines(family, rng, streets, h);
    l.push(match family {
        Family::A => format!("Springfield, OR 97{:03}", rng.int(400, 499)),
        Family::B => format!("Bristol BS{} {}{}", rng.int(1, 16), rng.int(1, 9), ["AB", "DJ", "QT", "HX"][rng.int(0, 3) as usize]),
    });
    l.join(if rng.chance(0.5) { ", " } else { "\n" })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::relations::AddressKey;
    use crate::synth::{Family, Scenario, generate};

    #[test]
    fn households_flats_and_a_care_home_in_the_development_family() {
        let st = generate(&Scenario { seed: 1, weeks: 2, incidents_per_kind: 0, family: Family::A, addresses: true, contacts: false });
        let a = &st.addresses;
        assert_eq!(a.staff.len(), 15);
        let staff: Vec<AddressKey> = a.staff.iter().map(|(u, addr)| AddressKey::of(addr).unwrap_or_else(|| panic!("{u}: {addr}"))).collect();
        assert!(staff.iter().any(|k| k.unit.is_some()), "some staff live in flats");
        assert!(a.household.iter().filter(|h| !h.is_empty()).count() >= 8, "{:?}", a.household);
        let mut lines: HashMap<&str, Vec<&str>> = HashMap::new();
        for (p, l) in &a.patients {
            lines.entry(p).or_default().push(l);
        }
        let mut per_building: HashMap<String, usize> = HashMap::new();
        for l in lines.values() {
            for h in AddressKey::homes(l.iter().copied()) {
                *per_building.entry(h.building).or_default() += 1;
            }
        }
        assert!(per_building.values().any(|&n| n >= 45), "the care home");
        assert!(lines.len() > 3800 && lines.len() < 4000, "a few records give no address: {}", lines.len());
        // Staff households live at the staff member's address, spelt otherwise now and then.
        let at_home = a
            .household
            .iter()
            .enumerate()
            .flat_map(|(u, h)| h.iter().map(move |&i| (u, i)))
            .filter(|&(u, i)| {
                let id = crate::synth::names::patient_id(i);
                lines.get(id.as_str()).is_some_and(|l| AddressKey::homes(l.iter().copied()).iter().any(|k| k.building == staff[u].building))
            })
            .count();
        let members: usize = a.household.iter().map(Vec::len).sum();
        assert!(at_home * 10 >= members * 8, "{at_home} of {members}");
    }
}
