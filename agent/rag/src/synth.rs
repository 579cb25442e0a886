//! Synthetic clinical text for the tests and the bench: every value here is invented, and the
//! generator records where each identifier was put, so de-identification can be scored.
//!
//! No real patient data exists anywhere in this repository; this module is why none is needed.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use crate::deid::Category;

/// An identifier placed in a synthetic note: its byte range and category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub start: usize,
    pub end: usize,
    pub category: Category,
}

#[derive(Debug, Clone)]
pub struct LabelledNote {
    pub text: String,
    pub labels: Vec<Label>,
}

impl LabelledNote {
    /// The identifier strings of this note.
    pub fn values(&self) -> Vec<(Category, &str)> {
        self.labels.iter().map(|l| (l.category, &self.text[l.start..l.end])).collect()
    }
}

// Names: most from the census lists (as most real names are), some deliberately outside them
// (they must be caught by context: a title, a cue word, a credential).
const FIRST: &[&str] = &[
    "Maria", "James", "Linda", "Robert", "Patricia", "Michael", "Jennifer", "David", "Elizabeth", "Thomas",
    "Dolores", "Gerald", "Yolanda", "Marcus", "Beatrice", "Harold", "Rosalind", "Dwayne", "Consuelo", "Everett",
    "Adaeze", "Xiomara", "Thandiwe", "Bartholomew", "Siobhan", "Nkechi", "Yusuf", "Anneliese",
];
const LAST: &[&str] = &[
    "Smith", "Johnson", "Garcia", "Martinez", "Anderson", "Thompson", "Robinson", "Clark", "Lewis", "Walker",
    "Kowalski", "Nakamura", "Castellanos", "Lindqvist", "Fitzgerald", "Okafor", "Delgado", "Brennan", "Schultz", "Hoffman",
    "Okonkwo-Bright", "O'Sullivan", "McAllister", "Abernathy", "Vukovic", "Ferreira", "Quispe", "Haldorsen",
];
const STREETS: &[&str] = &["Maple", "Birch", "Harborview", "Old Mill", "Juniper", "Cedar Hollow", "Lakeshore", "Orchard"];
const SUFFIXES: &[&str] = &["Street", "St.", "Avenue", "Ave", "Road", "Rd.", "Lane", "Drive", "Court", "Boulevard"];
const CITIES: &[&str] = &["Brookhaven", "Springfield", "Tucson", "Fairview", "Millbrook", "Cedar Rapids", "Port Angeles", "Greenville"];
const STATES: &[&str] = &["IL", "AZ", "OR", "NY", "TX", "Iowa", "Ohio", "WA"];
const MONTHS: &[&str] = &["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
const MON3: &[&str] = &["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Sentences without identifiers that look like they might have some: doses, vitals,
/// eponyms, scores, times, ratios. They keep precision honest.
const FILLER: &[&str] = &[
    "BP 132/84, HR 78, RR 16, T 98.4 F, SpO2 96% on room air.",
    "Metformin 500 mg PO twice daily; lisinopril 10 mg daily.",
    "A1c 7.4% (goal < 7%). LDL 128 mg/dL.",
    "History of Parkinson disease and Bell's palsy, stable.",
    "Apgar 8/9. Glasgow Coma Scale 15.",
    "Follow up in 3 months or sooner if symptoms worsen.",
    "Patient denies chest pain, shortness of breath, or syncope.",
    "Foley catheter removed at 0600; voiding without difficulty.",
    "Take 1/2 tablet at bedtime for 2 weeks.",
    "Hemoglobin 11.2 g/dL, platelets 245 K/uL, WBC 7.8.",
    "Assessment: Type 2 diabetes mellitus with hyperglycemia.",
    "Plan: continue current regimen, recheck labs in 6 weeks.",
    "Crohn disease in remission on mesalamine 1.2 g daily.",
    "She reports walking 20 minutes three times a week.",
    "Smoking history: 15 pack-years, quit in 2010.",
    "Morning glucose readings 110 to 145.",
    "Right knee effusion; McMurray test negative.",
    "Will continue physical therapy twice weekly.",
    "Grace period for refills discussed with the pharmacy.",
    "Hope to taper prednisone over the next month.",
    "Started Eliquis 5 mg BID; stop Coumadin.",
    "Referred to Physical Therapy and Cardiology.",
    "Discussed with Infectious Disease; Vancomycin continued.",
    "MMSE 24/30. PHQ-9 score 12.",
    "Seen at 14:30 in the Emergency Department.",
    "Echo: EF 55%, no wall motion abnormality.",
    "Tylenol 650 mg as needed; avoid Advil.",
    "Ordered CBC, BMP, TSH and Vitamin D.",
    "Hodgkin lymphoma in 2004, treated with ABVD.",
    "Graves disease on methimazole 10 mg.",
    "Mother with Alzheimer disease; Father with MI at 62.",
    "Lives alone; daughter visits on weekends.",
    "Uses a Walker at home; Morse Fall Scale 45.",
    "Received Pfizer COVID-19 vaccine and Shingrix.",
    "Allergies: Penicillin (rash), Sulfa.",
];

/// One generated identifier.
struct Piece {
    text: String,
    category: Category,
}

fn p(text: impl Into<String>, category: Category) -> Piece {
    Piece { text: text.into(), category }
}

struct Gen {
    rng: StdRng,
}

impl Gen {
    fn pick<'a>(&mut self, from: &'a [&'a str]) -> &'a str {
        from.choose(&mut self.rng).copied().unwrap_or("x")
    }
    fn digits(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b'0' + self.rng.random_range(0..10u8))).collect()
    }
    fn upper(&mut self, n: usize) -> String {
        const L: &[u8] = b"ABCDEFGHJKLMNPRSTUVWXYZ";
        (0..n).map(|_| char::from(L[self.rng.random_range(0..L.len())])).collect()
    }
    fn name(&mut self, form: usize) -> (Option<&'static str>, String, Option<&'static str>) {
        let f = self.pick(FIRST);
        let l = self.pick(LAST);
        let titles = ["Mr.", "Mrs.", "Ms.", "Dr."];
        let title = titles[self.rng.random_range(0..titles.len())];
        match form % 7 {
            0 => (None, format!("{f} {l}"), None),
            1 => (Some(title), l.to_owned(), None),
            2 => (None, format!("{l}, {f}"), None),
            3 => (None, format!("{} {}", f.to_uppercase(), l.to_uppercase()), None),
            4 => (None, format!("{f} {}. {l}", self.upper(1)), None),
            5 => (Some(title), format!("{f} {l}"), None),
            _ => (None, format!("{f} {l}"), Some("MD")),
        }
    }
    fn phone(&mut self) -> String {
        let (a, b, c) = (format!("5{}", self.digits(2)), self.digits(3), self.digits(4));
        match self.rng.random_range(0..5) {
            0 => format!("({a}) {b}-{c}"),
            1 => format!("{a}-{b}-{c}"),
            2 => format!("{a}.{b}.{c}"),
            3 => format!("+1 {a} {b} {c}"),
            _ => format!("{a}-{b}-{c} ext. {}", self.digits(3)),
        }
    }
    fn date(&mut self) -> String {
        let y = self.rng.random_range(1930..2026);
        let m = self.rng.random_range(1..=12usize);
        let d = self.rng.random_range(1..=28);
        match self.rng.random_range(0..9) {
            0 => format!("{m:02}/{d:02}/{y}"),
            1 => format!("{m}/{d}/{:02}", y % 100),
            2 => format!("{y}-{m:02}-{d:02}"),
            3 => format!("{} {d}, {y}", MONTHS[m - 1]),
            4 => format!("{d} {} {y}", MON3[m - 1]),
            5 => format!("{}. {d}", MON3[m - 1]),
            6 => format!("{} {y}", MONTHS[m - 1]),
            7 => format!("{d:02}-{}-{:02}", MON3[m - 1], y % 100),
            _ => format!("{d}th of {} {y}", MONTHS[m - 1]),
        }
    }

    /// A sentence holding one identifier of `category` in one of its surface forms, as
    /// (text before, piece, text after); or a composite sentence of several pieces.
    fn sentence(&mut self, category: Category) -> Vec<Result<String, Piece>> {
        use Category as C;
        let t = |s: &str| Ok(s.to_owned());
        let form = self.rng.random_range(0..16usize);
        match category {
            C::Name => {
                let (title, name, cred) = self.name(form);
                let lead = ["Seen today: ", "Spoke with ", "Referred by ", "Accompanied by her daughter ", "Electronically signed: ", "Patient "];
                let mut v = vec![t(lead[form % lead.len()])];
                if let Some(ti) = title {
                    v.push(Ok(format!("{ti} ")));
                }
                v.push(Err(p(name, C::Name)));
                if let Some(c) = cred {
                    v.push(Ok(format!(", {c}")));
                }
                v.push(t(". "));
                v
            }
            C::Address => {
                let n = self.rng.random_range(1..9999);
                let s = self.pick(STREETS);
                let x = self.pick(SUFFIXES);
                let text = match form % 4 {
                    0 => format!("{n} {s} {x}"),
                    1 => format!("{n} N. {s} {x}, Apt {}{}", self.digits(1), self.upper(1)),
                    2 => format!("PO Box {}", self.digits(4)),
                    _ => format!("{n} {s} {x} Suite {}", self.digits(3)),
                };
                vec![t("Home address on file: "), Err(p(text, C::Address)), t(". ")]
            }
            C::Location => {
                let c = self.pick(CITIES);
                match form % 4 {
                    0 => vec![t("Lives in "), Err(p(c, C::Location)), t(" with her son. ")],
                    1 => vec![t("Address: "), Err(p(c, C::Location)), Ok(format!(", {} ", self.pick(STATES))), t(". ")],
                    2 => vec![t("Recently moved from "), Err(p(c, C::Location)), t(". ")],
                    _ => vec![t("Transferred from "), Err(p(format!("{c} County"), C::Location)), t(" hospital. ")],
                }
            }
            C::Zip => {
                let z = if form % 3 == 0 { format!("{}-{}", self.digits(5), self.digits(4)) } else { self.digits(5) };
                match form % 3 {
                    0 => vec![t("Mailing zip: "), Err(p(z, C::Zip)), t(". ")],
                    1 => vec![Err(p(self.pick(CITIES), C::Location)), Ok(format!(", {} ", self.pick(&["OR", "TX", "NY"]))), Err(p(z, C::Zip)), t(". ")],
                    _ => vec![t("ZIP code "), Err(p(z, C::Zip)), t(". ")],
                }
            }
            C::Date => {
                let d = self.date();
                let lead = ["Admitted on ", "DOB: ", "Last seen ", "Surgery date ", "Next visit "];
                vec![t(lead[form % lead.len()]), Err(p(d, C::Date)), t(". ")]
            }
            C::Age => {
                let a = self.rng.random_range(90..=104).to_string();
                match form % 5 {
                    0 => vec![t("A "), Err(p(a, C::Age)), t("-year-old woman with CHF. ")],
                    1 => vec![t("Age "), Err(p(a, C::Age)), t(". ")],
                    2 => vec![t("He is "), Err(p(a, C::Age)), t(" years old. ")],
                    3 => vec![Err(p(a, C::Age)), t(" y/o male, ambulatory. ")],
                    _ => vec![t("Aged "), Err(p(a, C::Age)), t(", lives independently. ")],
                }
            }
            C::Phone => {
                let lead = ["Call back at ", "Phone: ", "Cell ", "Daughter's number is ", "Tel "];
                let ph = self.phone();
                vec![t(lead[form % lead.len()]), Err(p(ph, C::Phone)), t(". ")]
            }
            C::Fax => {
                let ph = self.phone();
                let lead = ["Fax: ", "Please fax records to ", "fax "];
                vec![t(lead[form % lead.len()]), Err(p(ph, C::Fax)), t(". ")]
            }
            C::Email => {
                let f = self.pick(FIRST).to_lowercase();
                let l = self.pick(LAST).to_lowercase().replace('\'', "");
                let dom = ["example.com", "mail.example.org", "clinic-example.net"];
                let e = format!("{f}.{l}{}@{}", self.digits(2), dom[form % dom.len()]);
                vec![t("Email: "), Err(p(e, C::Email)), t(". ")]
            }
            C::Ssn => {
                let (a, b, c) = (self.digits(3), self.digits(2), self.digits(4));
                match form % 3 {
                    0 => vec![t("SSN "), Err(p(format!("{a}-{b}-{c}"), C::Ssn)), t(". ")],
                    1 => vec![t("SSN: "), Err(p(format!("{a} {b} {c}"), C::Ssn)), t(". ")],
                    _ => vec![t("Social security number "), Err(p(format!("{a}{b}{c}"), C::Ssn)), t(". ")],
                }
            }
            C::Mrn => {
                let v = match form % 4 {
                    0 => self.digits(8),
                    1 => format!("{}-{}", self.digits(4), self.digits(3)),
                    2 => format!("{}{}", self.upper(1), self.digits(7)),
                    _ => format!("{}-{}", self.digits(2), self.digits(4)),
                };
                let lead = ["MRN: ", "MRN ", "Medical record number ", "Chart #: "];
                vec![t(lead[form % lead.len()]), Err(p(v, C::Mrn)), t(". ")]
            }
            C::HealthPlan => {
                let v = match form % 4 {
                    0 => format!("{}{}{}-{}{}-{}{}", self.digits(1), self.upper(2), self.digits(1), self.upper(2), self.digits(1), self.upper(2), self.digits(2)),
                    1 => format!("{}{}", self.upper(3), self.digits(9)),
                    2 => format!("{}-{}-{}A", self.digits(3), self.digits(2), self.digits(1)),
                    _ => self.digits(8),
                };
                let lead = ["Medicare ID ", "Member ID: ", "Policy number ", "Medicaid # "];
                vec![t(lead[form % lead.len()]), Err(p(v, C::HealthPlan)), t(". ")]
            }
            C::Account => {
                let v = match form % 3 {
                    0 => format!("{}-{}", self.digits(5), self.digits(4)),
                    1 => format!("{}-{}-{}", self.digits(4), self.digits(3), self.digits(2)),
                    _ => format!("B-{}", self.digits(5)),
                };
                let lead = ["Acct #: ", "Account number ", "Billing number "];
                vec![t(lead[form % lead.len()]), Err(p(v, C::Account)), t(". ")]
            }
            C::License => {
                let (lead, v) = match form % 5 {
                    0 => ("DL: ", format!("{}{}", self.upper(1), self.digits(7))),
                    1 => ("Driver's license number ", format!("{}{}-{}-{}", self.upper(1), self.digits(3), self.digits(4), self.digits(4))),
                    2 => ("DEA # ", format!("{}{}", self.upper(2), self.digits(7))),
                    3 => ("NPI ", self.digits(10)),
                    _ => ("Nursing license no. ", format!("RN-{}", self.digits(6))),
                };
                vec![t(lead), Err(p(v, C::License)), t(". ")]
            }
            C::Vehicle => {
                let (lead, v) = match form % 3 {
                    0 => ("License plate ", format!("{}{}{}", self.digits(1), self.upper(3), self.digits(3))),
                    1 => ("VIN ", format!("1{}{}{}", self.upper(4), self.digits(6), "A004352")),
                    _ => ("Car plate: ", format!("{}-{}", self.upper(3), self.digits(4))),
                };
                vec![t("Parking pass issued. "), t(lead), Err(p(v, C::Vehicle)), t(". ")]
            }
            C::Device => {
                let (lead, v) = match form % 4 {
                    0 => ("Pacemaker serial number ", format!("PM-{}-{}", self.digits(4), self.digits(4))),
                    1 => ("S/N: ", format!("{}{}-{}{}", self.digits(2), self.upper(1), self.digits(3), self.upper(1))),
                    2 => ("Insulin pump SN ", format!("{}{}-{}", self.digits(2), self.upper(1), self.digits(5))),
                    _ => ("Glucometer MAC ", format!("00:1A:{}:{}:4D:5E", self.digits(2), self.digits(2))),
                };
                vec![t(lead), Err(p(v, C::Device)), t(". ")]
            }
            C::Url => {
                let v = match form % 3 {
                    0 => format!("https://portal.example-clinic.org/patient/{}", self.digits(4)),
                    1 => format!("www.{}family.example.net", self.pick(LAST).to_lowercase().replace('\'', "")),
                    _ => format!("http://example.com/u/{}", self.digits(5)),
                };
                vec![t("Shared photos at "), Err(p(v, C::Url)), t(" per patient. ")]
            }
            C::Ip => {
                let v = match form % 3 {
                    0 => format!("192.168.{}.{}", self.rng.random_range(0..255), self.rng.random_range(1..255)),
                    1 => format!("10.{}.{}.{}", self.rng.random_range(0..255), self.rng.random_range(0..255), self.rng.random_range(1..255)),
                    _ => format!("2001:db8::{:x}:{:x}", self.rng.random_range(1..65535), self.rng.random_range(1..65535)),
                };
                vec![t("Home monitor reports from IP "), Err(p(v, C::Ip)), t(". ")]
            }
            C::Biometric => {
                let (lead, v) = match form % 3 {
                    0 => ("Fingerprint ID ", format!("FP-{}-X", self.digits(5))),
                    1 => ("Retinal scan ID ", format!("RS-{}", self.digits(4))),
                    _ => ("Voiceprint id ", format!("VP{}", self.digits(5))),
                };
                vec![t(lead), Err(p(v, C::Biometric)), t(" enrolled. ")]
            }
            C::OtherId => {
                let (lead, v) = match form % 4 {
                    0 => ("Claim number ", format!("CLM-{}", self.digits(6))),
                    1 => ("Case # ", format!("{}-{}", self.rng.random_range(2000..2026), self.digits(5))),
                    2 => ("Employee ID ", format!("E-{}", self.digits(5))),
                    _ => ("Badge ", self.digits(5)),
                };
                vec![t(lead), Err(p(v, C::OtherId)), t(". ")]
            }
        }
    }
}

/// `n` notes, each a mix of clinical filler and identifier sentences covering every category
/// (each category appears in every note at least once across its surface forms over the set).
pub fn labelled_notes(seed: u64, n: usize) -> Vec<LabelledNote> {
    let mut g = Gen { rng: StdRng::seed_from_u64(seed) };
    (0..n)
        .map(|i| {
            let mut text = String::new();
            let mut labels = Vec::new();
            // Each note: every category once (rotating the start), filler between.
            let cats = Category::ALL;
            for k in 0..cats.len() {
                let category = cats[(i + k) % cats.len()];
                if g.rng.random_bool(0.5) {
                    text.push_str(g.pick(FILLER));
                    text.push(' ');
                }
                for part in g.sentence(category) {
                    match part {
                        Ok(s) => text.push_str(&s),
                        Err(piece) => {
                            let start = text.len();
                            text.push_str(&piece.text);
                            labels.push(Label { start, end: text.len(), category: piece.category });
                        }
                    }
                }
                if g.rng.random_bool(0.3) {
                    text.push('\n');
                }
            }
            LabelledNote { text, labels }
        })
        .collect()
}
