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

/// A synthetic document of the retrieval corpus.
#[derive(Debug, Clone)]
pub struct CorpusDoc {
    pub name: String,
    pub bytes: Vec<u8>,
    /// The patient's record id for notes and PDFs; `None` for FHIR Bundles (they carry their
    /// own Patient) and for library documents.
    pub record_id: Option<String>,
    pub library: bool,
}

impl CorpusDoc {
    /// Whose document this is, as ingestion takes it.
    pub fn owner(&self) -> crate::ingest::Owner {
        use crate::ingest::Owner;
        match (&self.record_id, self.library) {
            (_, true) => Owner::Library,
            (Some(record_id), false) => Owner::Patient { record_id: record_id.clone(), known: Default::default() },
            (None, false) => Owner::FromDocument,
        }
    }
}

/// A known fact: a question whose answer is in exactly one document.
#[derive(Debug, Clone)]
pub struct Fact {
    pub question: &'static str,
    /// The patient's record id, or `None` for the clinic library.
    pub record_id: Option<&'static str>,
    pub document: &'static str,
    /// A word that the right chunk contains.
    pub marker: &'static str,
}

#[derive(Debug, Clone)]
pub struct Corpus {
    pub docs: Vec<CorpusDoc>,
    pub facts: Vec<Fact>,
    /// Every identifier written into the corpus, as written.
    pub identifiers: Vec<String>,
}

struct SynthPatient {
    id: &'static str,
    mrn: &'static str,
    given: &'static str,
    family: &'static str,
    birth: &'static str,
    birth_us: &'static str,
    phone: &'static str,
    email: &'static str,
    line: &'static str,
    city: &'static str,
    zip: &'static str,
    gender: &'static str,
}

const PATIENTS: [SynthPatient; 3] = [
    SynthPatient { id: "pt-castellanos-01", mrn: "00451234", given: "Dolores", family: "Castellanos", birth: "1948-07-19", birth_us: "07/19/1948", phone: "(503) 555-0142", email: "dolores.c48@example.com", line: "1423 Juniper Street", city: "Millbrook", zip: "97006", gender: "female" },
    SynthPatient { id: "pt-lindqvist-02", mrn: "00982210", given: "Harold", family: "Lindqvist", birth: "1931-02-03", birth_us: "02/03/1931", phone: "(503) 555-0199", email: "hlindqvist@example.org", line: "77 Orchard Lane", city: "Fairview", zip: "97024", gender: "male" },
    SynthPatient { id: "pt-okafor-03", mrn: "01137745", given: "Adaeze", family: "Okafor", birth: "1990-11-28", birth_us: "11/28/1990", phone: "(971) 555-0107", email: "adaeze.okafor@example.net", line: "9 Harborview Road", city: "Port Angeles", zip: "98362", gender: "female" },
];

fn b64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
}

fn bundle(p: &SynthPatient, resources: Vec<serde_json::Value>) -> Vec<u8> {
    let mut entries = vec![serde_json::json!({"resource": {
        "resourceType": "Patient", "id": p.id,
        "identifier": [{"type": {"text": "Medical record number"}, "value": p.mrn}],
        "name": [{"given": [p.given], "family": p.family}],
        "gender": p.gender, "birthDate": p.birth,
        "telecom": [{"system": "phone", "value": p.phone}, {"system": "email", "value": p.email}],
        "address": [{"line": [p.line], "city": p.city, "state": "OR", "postalCode": p.zip}]
    }})];
    entries.extend(resources.into_iter().map(|r| serde_json::json!({"resource": r})));
    serde_json::to_vec_pretty(&serde_json::json!({"resourceType": "Bundle", "type": "collection", "entry": entries})).unwrap_or_default()
}

/// A one-page-per-`pages` PDF with a text layer in Helvetica, written with lopdf.
pub fn make_pdf(pages: &[Vec<String>]) -> Vec<u8> {
    use lopdf::content::{Content, Operation};
    use lopdf::{Document, Object, Stream, dictionary};
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! { "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica", "Encoding" => "WinAnsiEncoding" });
    let resources_id = doc.add_object(dictionary! { "Font" => dictionary! { "F1" => font_id } });
    let mut kids = Vec::new();
    for lines in pages {
        let mut ops = vec![Operation::new("BT", vec![]), Operation::new("Tf", vec!["F1".into(), 11.into()]), Operation::new("TL", vec![14.into()]), Operation::new("Td", vec![60.into(), 780.into()])];
        for l in lines {
            ops.push(Operation::new("Tj", vec![Object::string_literal(l.as_str())]));
            ops.push(Operation::new("T*", vec![]));
        }
        ops.push(Operation::new("ET", vec![]));
        let content = Content { operations: ops };
        let content_id = doc.add_object(Stream::new(dictionary! {}, content.encode().unwrap_or_default()));
        let page_id = doc.add_object(dictionary! { "Type" => "Page", "Parent" => pages_id, "Contents" => content_id });
        kids.push(page_id.into());
    }
    let count = kids.len() as i64;
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! { "Type" => "Pages", "Kids" => kids, "Count" => count, "Resources" => resources_id, "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()] }),
    );
    let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog_id);
    let mut out = Vec::new();
    let _ = doc.save_to(&mut out);
    out
}

/// The retrieval corpus: three patients (a FHIR Bundle with an inline note, SOAP notes, a
/// discharge PDF) and two clinic library documents; facts placed in known documents.
pub fn corpus() -> Corpus {
    use serde_json::json;
    let [a, b, c] = &PATIENTS;
    let mut docs = Vec::new();
    let note = |name: &str, rid: &str, text: String| CorpusDoc { name: name.to_owned(), bytes: text.into_bytes(), record_id: Some(rid.to_owned()), library: false };

    // Patient A: diabetes.
    docs.push(CorpusDoc {
        name: "castellanos-record.json".into(),
        bytes: bundle(a, vec![
            json!({"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB", "display": "ambulatory"}, "type": [{"text": "Office visit"}], "period": {"start": "2024-03-14T09:00:00Z", "end": "2024-03-14T09:40:00Z"}, "reasonCode": [{"text": "Diabetes follow-up"}]}),
            json!({"resourceType": "Condition", "code": {"text": "Type 2 diabetes mellitus with hyperglycemia"}, "clinicalStatus": {"text": "active"}, "onsetDateTime": "2011-05-02"}),
            json!({"resourceType": "Condition", "code": {"text": "Essential hypertension"}, "clinicalStatus": {"text": "active"}, "onsetDateTime": "2009-09-21"}),
            json!({"resourceType": "MedicationStatement", "status": "active", "medicationCodeableConcept": {"text": "Metformin 1000 mg tablet"}, "dosage": [{"text": "1000 mg by mouth twice daily with meals"}], "effectivePeriod": {"start": "2011-06-01"}}),
            json!({"resourceType": "MedicationStatement", "status": "active", "medicationCodeableConcept": {"text": "Lisinopril 20 mg tablet"}, "dosage": [{"text": "20 mg by mouth once daily"}]}),
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "Hemoglobin A1c"}, "valueQuantity": {"value": 9.1, "unit": "%"}, "interpretation": [{"text": "high"}], "effectiveDateTime": "2024-03-14"}),
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "Urine albumin to creatinine ratio"}, "valueQuantity": {"value": 48, "unit": "mg/g"}, "effectiveDateTime": "2024-03-14"}),
            json!({"resourceType": "DocumentReference", "status": "current", "type": {"text": "Nutrition consult"}, "date": "2024-02-02",
                   "content": [{"attachment": {"contentType": "text/plain", "data": b64(&format!("Nutrition consult for {} {} (MRN {}).\nAssessment: carbohydrate intake high at dinner; drinks two cans of regular soda daily.\nPlan: switch to diet soda, plate method, dietitian follow-up in 6 weeks. Call {} with questions.", a.given, a.family, a.mrn, a.phone))}}]}),
        ]),
        record_id: None,
        library: false,
    });
    docs.push(note("castellanos-visit-2024-03.txt", a.mrn, format!(
        "Office visit 03/14/2024\nPatient: {} {}, DOB {}\nS: Mrs. {} reports polyuria and fatigue for two months. Her daughter Rosalind drives her to visits.\nO: BP 148/88, weight 84 kg. A1c 9.1%.\nA: Type 2 diabetes, poorly controlled on metformin alone. Hypertension above goal.\nP: Start empagliflozin 10 mg once daily in addition to metformin. Increase lisinopril to 40 mg. Recheck A1c in 3 months. Home address {}, {}, OR {}.",
        a.given, a.family, a.birth_us, a.family, a.line, a.city, a.zip)));
    docs.push(note("castellanos-eye-exam.md", a.mrn, format!(
        "# Retinal screening\nDilated eye exam by Dr. Fitzgerald on March 2, 2024.\n## Findings\nMild nonproliferative diabetic retinopathy in both eyes, no macular edema.\n## Plan\nRepeat retinal exam in 12 months. Contact: {}.",
        a.email)));

    // Patient B: hip fracture, anticoagulation, age over 89.
    docs.push(CorpusDoc {
        name: "lindqvist-record.json".into(),
        bytes: bundle(b, vec![
            json!({"resourceType": "Condition", "code": {"text": "Atrial fibrillation"}, "clinicalStatus": {"text": "active"}, "onsetDateTime": "2015-01-10"}),
            json!({"resourceType": "Condition", "code": {"text": "Closed fracture of left femoral neck"}, "clinicalStatus": {"text": "resolved"}, "onsetDateTime": "2024-01-05"}),
            json!({"resourceType": "MedicationStatement", "status": "active", "medicationCodeableConcept": {"text": "Apixaban 2.5 mg tablet"}, "dosage": [{"text": "2.5 mg by mouth twice daily"}], "reasonCode": [{"text": "stroke prevention in atrial fibrillation"}]}),
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "Creatinine"}, "valueQuantity": {"value": 1.6, "unit": "mg/dL"}, "effectiveDateTime": "2024-01-06"}),
        ]),
        record_id: None,
        library: false,
    });
    let pdf_pages = vec![
        vec![
            "DISCHARGE SUMMARY".to_owned(),
            format!("Patient: {} {}   MRN: {}   DOB: {}", b.given, b.family, b.mrn, b.birth_us),
            "Admitted: 01/05/2024   Discharged: 01/11/2024".to_owned(),
            "Hospital course: 92-year-old man admitted after a fall at home with a left femoral neck".to_owned(),
            "fracture. He underwent left hip hemiarthroplasty on hospital day 2 without complication.".to_owned(),
            "Apixaban was held for 48 hours around surgery and resumed at 2.5 mg twice daily.".to_owned(),
        ],
        vec![
            "Discharge instructions:".to_owned(),
            "Weight bearing as tolerated with a walker. Physical therapy three times weekly.".to_owned(),
            format!("Follow up with orthopedics in 2 weeks. Questions: call {}.", b.phone),
        ],
    ];
    docs.push(CorpusDoc { name: "lindqvist-discharge.pdf".into(), bytes: make_pdf(&pdf_pages), record_id: Some(b.mrn.to_owned()), library: false });
    docs.push(note("lindqvist-phone-note.txt", b.mrn, format!(
        "Telephone note 01/20/2024. Spoke with son Everett {} at {}. Pain controlled with acetaminophen 650 mg every 6 hours. Mild constipation; advised polyethylene glycol daily.",
        b.family, b.phone)));

    // Patient C: asthma, allergy.
    docs.push(CorpusDoc {
        name: "okafor-record.json".into(),
        bytes: bundle(c, vec![
            json!({"resourceType": "Condition", "code": {"text": "Asthma, moderate persistent"}, "clinicalStatus": {"text": "active"}, "onsetDateTime": "2002-04-11"}),
            json!({"resourceType": "MedicationStatement", "status": "active", "medicationCodeableConcept": {"text": "Budesonide-formoterol 160/4.5 mcg inhaler"}, "dosage": [{"text": "2 puffs twice daily and as needed"}]}),
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "Peak expiratory flow"}, "valueQuantity": {"value": 380, "unit": "L/min"}, "effectiveDateTime": "2024-04-02"}),
        ]),
        record_id: None,
        library: false,
    });
    docs.push(note("okafor-visit.txt", c.mrn, format!(
        "Visit 04/02/2024 with {} {}.\nAllergies: penicillin causes anaphylaxis (throat swelling at age 6); sulfa causes rash.\nHPI: two nighttime awakenings per week from cough and wheeze since moving to {} in January.\nPlan: continue budesonide-formoterol; asthma action plan reviewed; flu shot given. Email {} for results.",
        c.given, c.family, c.city, c.email)));

    // Clinic library.
    docs.push(CorpusDoc { name: "staff-influenza-policy.md".into(), bytes: b"# Staff influenza vaccination\nThe clinic offers the influenza vaccine to all staff every October at no cost. Staff who decline must wear a surgical mask in patient areas from December through March.\n# Records\nVaccination records are kept by the practice manager.".to_vec(), record_id: None, library: true });
    docs.push(CorpusDoc { name: "after-hours.txt".into(), bytes: b"After-hours coverage: the on-call physician rotates weekly. Urgent prescription refills after hours are limited to a 3-day supply. Controlled substances are never refilled after hours.".to_vec(), record_id: None, library: true });

    let facts = vec![
        Fact { question: "Which new diabetes medication was started at the last visit?", record_id: Some(a.mrn), document: "castellanos-visit-2024-03.txt", marker: "empagliflozin" },
        Fact { question: "What was the hemoglobin A1c result?", record_id: Some(a.mrn), document: "castellanos-record.json", marker: "A1c" },
        Fact { question: "What did the eye exam show?", record_id: Some(a.mrn), document: "castellanos-eye-exam.md", marker: "retinopathy" },
        Fact { question: "How much soda does she drink?", record_id: Some(a.mrn), document: "castellanos-record.json", marker: "soda" },
        Fact { question: "What operation was done on the hip?", record_id: Some(b.mrn), document: "lindqvist-discharge.pdf", marker: "hemiarthroplasty" },
        Fact { question: "Which anticoagulant does he take and why?", record_id: Some(b.mrn), document: "lindqvist-record.json", marker: "Apixaban" },
        Fact { question: "What was recommended for constipation?", record_id: Some(b.mrn), document: "lindqvist-phone-note.txt", marker: "polyethylene" },
        Fact { question: "What happens with penicillin?", record_id: Some(c.mrn), document: "okafor-visit.txt", marker: "anaphylaxis" },
        Fact { question: "Which inhaler is she using?", record_id: Some(c.mrn), document: "okafor-record.json", marker: "Budesonide" },
        Fact { question: "When is the flu vaccine offered to staff?", record_id: None, document: "staff-influenza-policy.md", marker: "October" },
        Fact { question: "Can controlled substances be refilled at night?", record_id: None, document: "after-hours.txt", marker: "Controlled" },
    ];
    let mut identifiers = Vec::new();
    for p in &PATIENTS {
        identifiers.extend([p.id, p.mrn, p.given, p.family, p.birth, p.birth_us, p.phone, p.email, p.line, p.city, p.zip].map(str::to_owned));
    }
    identifiers.extend(["92-year-old", "Rosalind", "Everett", "Fitzgerald"].map(str::to_owned));
    // Every date of a patient's record is an identifier (any date element but the year).
    identifiers.extend(
        [
            "03/14/2024", "2024-03-14", "March 2, 2024", "2024-02-02", "2011-05-02", "2009-09-21", "2011-06-01", "2015-01-10", "2024-01-05", "2024-01-06", "01/05/2024", "01/11/2024",
            "01/20/2024", "2002-04-11", "2024-04-02", "04/02/2024",
        ]
        .map(str::to_owned),
    );
    Corpus { docs, facts, identifiers }
}
