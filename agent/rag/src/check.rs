//! Checking an answer against its sources, deterministically: find the clinically load-bearing
//! items of the answer (medication names, doses with their units, lab values and other numbers,
//! dates, left/right) and look for each in the passages the sentence cites, then in the other
//! retrieved passages. An item found in no passage is *unsupported*; a sentence that states
//! something without any `[n]` is *not cited*. Every verdict carries a reason a clinician can
//! read ("1000 mg: the sources give metformin 500 mg [1]").
//!
//! The matching is normalisation, not judgement: units are converted (`1 g` = `1000 mg`,
//! `125 mcg` = `0.125 mg`, `2 weeks` = `14 days`), dates are read in any common format (ISO,
//! `5 March 2024`, `March 5, 2024`, numeric in the clinic's order), brand names map to their
//! generic (`data/drugs.txt`), salt and release forms are ignored, and a number near a drug or
//! lab name belongs to it, so a dose found only under another drug does not count. Pure: text
//! in, spans out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::answer::Source;

/// How a numeric date like `03/05/2024` is read: 5 March (month first, US) or 3 May (day
/// first, most of the world). Dotted dates (`05.03.2024`) are always day first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DateOrder {
    #[default]
    MonthFirst,
    DayFirst,
}

/// The checker's settings (the clinic's locale).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckConfig {
    pub numeric_dates: DateOrder,
}

/// What kind of load-bearing item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    Medication,
    /// A quantity with a dose unit (mass, volume, units).
    Dose,
    /// A number that belongs to a lab test or a vital sign.
    LabValue,
    /// Any other number (durations, counts, scores).
    Number,
    Date,
    Laterality,
}

impl ItemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Medication => "medication",
            ItemKind::Dose => "dose",
            ItemKind::LabValue => "lab_value",
            ItemKind::Number => "number",
            ItemKind::Date => "date",
            ItemKind::Laterality => "laterality",
        }
    }
}

/// Where an item was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// In a passage the sentence cites.
    Cited,
    /// In a retrieved passage the sentence does not cite.
    OtherSource,
    /// In no retrieved passage.
    Unsupported,
}

/// One load-bearing item of the answer and its verdict. `start..end` are byte offsets into the
/// checked answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckedItem {
    pub kind: ItemKind,
    pub start: usize,
    pub end: usize,
    pub verdict: Verdict,
    /// The source numbers the item was found in.
    pub found_in: Vec<usize>,
    /// Why, in words ("found in [1]", "in none of the sources").
    pub reason: String,
}

/// A sentence of the answer and the sources it cites.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SentenceCheck {
    pub start: usize,
    pub end: usize,
    pub citations: Vec<usize>,
    /// States something (a load-bearing item, or five words or more) without any citation.
    pub not_cited: bool,
}

/// Counts for the audit record and the banner: numbers only, never text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub items: usize,
    pub supported_cited: usize,
    pub supported_other: usize,
    pub unsupported: usize,
    pub unsupported_by_kind: BTreeMap<ItemKind, usize>,
    pub sentences: usize,
    pub not_cited: usize,
}

/// The whole check of one answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub items: Vec<CheckedItem>,
    pub sentences: Vec<SentenceCheck>,
    pub counts: Counts,
}

/// A piece of the answer for display: consecutive pieces cover the answer exactly; a piece is
/// marked when it is an unsupported item and/or lies in a sentence that is not cited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Segment {
    pub text: String,
    /// The reason an unsupported item is unsupported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub not_cited: bool,
}

impl Check {
    pub fn has_unsupported(&self) -> bool {
        self.counts.unsupported > 0
    }

    /// The answer cut into display segments (see [`Segment`]).
    pub fn segments(&self, answer: &str) -> Vec<Segment> {
        let marked: Vec<&CheckedItem> = self.items.iter().filter(|i| i.verdict == Verdict::Unsupported).collect();
        let uncited: Vec<&SentenceCheck> = self.sentences.iter().filter(|s| s.not_cited).collect();
        let mut cuts: BTreeSet<usize> = [0, answer.len()].into_iter().collect();
        for i in &marked {
            cuts.extend([i.start, i.end]);
        }
        for s in &uncited {
            cuts.extend([s.start, s.end]);
        }
        let cuts: Vec<usize> = cuts.into_iter().filter(|c| answer.is_char_boundary(*c)).collect();
        let mut out: Vec<Segment> = Vec::new();
        for w in cuts.windows(2) {
            let (a, b) = (w[0], w[1]);
            if a == b {
                continue;
            }
            let unsupported = marked.iter().find(|i| i.start <= a && b <= i.end).map(|i| i.reason.clone());
            let not_cited = uncited.iter().any(|s| s.start <= a && b <= s.end);
            match out.last_mut() {
                Some(last) if last.unsupported == unsupported && last.not_cited == not_cited && unsupported.is_none() => {
                    last.text.push_str(&answer[a..b])
                }
                _ => out.push(Segment { text: answer[a..b].to_owned(), unsupported, not_cited }),
            }
        }
        out
    }
}

/// Check an answer against the retrieved sources (numbered as the answer cites them).
pub fn check(answer: &str, sources: &[Source], cfg: &CheckConfig) -> Check {
    let texts: Vec<(usize, &str)> = sources.iter().map(|s| (s.n, s.text.as_str())).collect();
    check_texts(answer, &texts, cfg)
}

/// [`check`] over plain `(number, passage)` pairs.
pub fn check_texts(answer: &str, sources: &[(usize, &str)], cfg: &CheckConfig) -> Check {
    let source_facts: Vec<(usize, Vec<Fact>, String)> =
        sources.iter().map(|(n, t)| (*n, facts(t, cfg, true), t.to_lowercase())).collect();
    let answer_facts = facts(answer, cfg, false);
    let mut sentences: Vec<SentenceCheck> = split_sentences(answer)
        .into_iter()
        .map(|(start, end)| SentenceCheck { start, end, citations: cited_numbers(&answer[start..end]), not_cited: false })
        .collect();
    let mut items = Vec::new();
    for fact in &answer_facts {
        let sentence = sentences.iter().find(|s| s.start <= fact.start && fact.start < s.end);
        let cited: Vec<usize> = sentence.map(|s| s.citations.clone()).unwrap_or_default();
        items.push(judge(answer, &unbind_unknown_subject(fact, &source_facts), &cited, &source_facts));
    }
    for s in &mut sentences {
        let text = &answer[s.start..s.end];
        let has_item = answer_facts.iter().any(|f| s.start <= f.start && f.start < s.end);
        let words = WORD.find_iter(text).count();
        let heading = text.trim_end().ends_with(':');
        s.not_cited = s.citations.is_empty() && !heading && (has_item || words >= 5) && !is_not_found(text);
    }
    let mut counts = Counts { items: items.len(), sentences: sentences.len(), ..Counts::default() };
    for i in &items {
        match i.verdict {
            Verdict::Cited => counts.supported_cited += 1,
            Verdict::OtherSource => counts.supported_other += 1,
            Verdict::Unsupported => {
                counts.unsupported += 1;
                *counts.unsupported_by_kind.entry(i.kind).or_default() += 1;
            }
        }
    }
    counts.not_cited = sentences.iter().filter(|s| s.not_cited).count();
    Check { items, sentences, counts }
}

/// "Not found in the record." and its variants need no citation.
fn is_not_found(sentence: &str) -> bool {
    let s = sentence.trim().to_lowercase();
    s.starts_with("not found in the record") || s.starts_with("the record does not") || s.starts_with("the sources do not")
}

// --- Facts: what a text says, normalised ---------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Left,
    Right,
    Both,
}

impl Side {
    fn word(self) -> &'static str {
        match self {
            Side::Left => "left",
            Side::Right => "right",
            Side::Both => "bilateral",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Key {
    /// A medicine by its generic name (or, for a name no dictionary has, the word itself).
    Drug { name: String, known: bool },
    /// A number, converted to its base unit ("" for a bare number), with the drug or lab it
    /// belongs to when one stands near it.
    Quantity { value: f64, unit: &'static str, subject: Option<String> },
    Date { year: Option<i32>, month: Option<u8>, day: Option<u8> },
    Side { side: Side, site: String },
}

#[derive(Debug, Clone, PartialEq)]
struct Fact {
    start: usize,
    end: usize,
    kind: ItemKind,
    key: Key,
}

fn fmt_value(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

impl Key {
    fn describe(&self) -> String {
        match self {
            Key::Drug { name, .. } => name.clone(),
            Key::Quantity { value, unit, subject } => {
                let q = if unit.is_empty() { fmt_value(*value) } else { format!("{} {unit}", fmt_value(*value)) };
                match subject {
                    Some(s) => format!("{s} {q}"),
                    None => q,
                }
            }
            Key::Date { year, month, day } => match (year, month, day) {
                (Some(y), Some(m), Some(d)) => format!("{y:04}-{m:02}-{d:02}"),
                (Some(y), Some(m), None) => format!("{y:04}-{m:02}"),
                (Some(y), None, _) => format!("{y:04}"),
                (None, Some(m), Some(d)) => format!("{} {d}", MONTHS[usize::from(*m) - 1].0),
                _ => "a date".into(),
            },
            Key::Side { side, site } => format!("{} {site}", side.word()),
        }
    }
}

/// How an answer's item matches a source's fact.
#[derive(Debug, PartialEq)]
enum Match {
    Yes,
    /// Same kind and value family, different in what matters (another dose for the same drug,
    /// the other side of the same knee): the source's fact tells the clinician what it says.
    Conflict,
    No,
}

fn same_value(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn compare(answer: &Key, source: &Key) -> Match {
    match (answer, source) {
        (Key::Drug { name: a, .. }, Key::Drug { name: b, .. }) => {
            if a == b {
                Match::Yes
            } else {
                Match::No
            }
        }
        (Key::Quantity { value: va, unit: ua, subject: sa }, Key::Quantity { value: vb, unit: ub, subject: sb }) => {
            let units = ua == ub || ua.is_empty() || ub.is_empty();
            let subjects = match (sa, sb) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            };
            if same_value(*va, *vb) && units && subjects {
                Match::Yes
            } else if sa.is_some() && sa == sb && (ua == ub) {
                Match::Conflict
            } else {
                Match::No
            }
        }
        (Key::Quantity { value, unit: "", subject: None }, Key::Date { year: Some(y), .. }) if same_value(*value, f64::from(*y)) => Match::Yes,
        (Key::Date { year: ya, month: ma, day: da }, Key::Date { year: yb, month: mb, day: db }) => {
            // Each part the answer states must agree with the source; a part the source leaves
            // out (a year-less "March 14") does not contradict.
            let part = |a: &Option<i32>, b: &Option<i32>| a.is_none() || b.is_none() || a == b;
            let ok = part(ya, yb)
                && part(&ma.map(i32::from), &mb.map(i32::from))
                && part(&da.map(i32::from), &db.map(i32::from))
                // The source must say at least as much as the answer about each stated part.
                && (ya.is_none() || yb.is_some())
                && (ma.is_none() || mb.is_some())
                && (da.is_none() || db.is_some());
            if ok { Match::Yes } else { Match::No }
        }
        (Key::Side { side: a, site: sa }, Key::Side { side: b, site: sb }) => {
            if sa != sb {
                Match::No
            } else if a == b {
                Match::Yes
            } else {
                Match::Conflict
            }
        }
        _ => Match::No,
    }
}

/// A number whose drug or lab no source mentions is checked by its value alone: the name is
/// marked already (an invented or wrong drug), and its dose is not a second finding.
fn unbind_unknown_subject(fact: &Fact, sources: &[(usize, Vec<Fact>, String)]) -> Fact {
    let Key::Quantity { value, unit, subject: Some(subject) } = &fact.key else { return fact.clone() };
    let mentioned = sources.iter().any(|(_, facts, lower)| {
        contains_word(lower, subject)
            || facts.iter().any(|f| match &f.key {
                Key::Drug { name, .. } => name == subject,
                Key::Quantity { subject: Some(s), .. } => s == subject,
                _ => false,
            })
    });
    if mentioned {
        fact.clone()
    } else {
        Fact { key: Key::Quantity { value: *value, unit, subject: None }, ..fact.clone() }
    }
}

fn judge(answer: &str, fact: &Fact, cited: &[usize], sources: &[(usize, Vec<Fact>, String)]) -> CheckedItem {
    let text = &answer[fact.start..fact.end];
    let mut found_cited = Vec::new();
    let mut found_other = Vec::new();
    let mut conflicts: Vec<(usize, String)> = Vec::new();
    for (n, facts, lower) in sources {
        let mut hit = facts.iter().any(|f| compare(&fact.key, &f.key) == Match::Yes);
        // A medicine no dictionary knows counts when its word stands in the passage.
        if !hit
            && let Key::Drug { name, known: false } = &fact.key {
                hit = contains_word(lower, name);
            }
        if hit {
            if cited.contains(n) { found_cited.push(*n) } else { found_other.push(*n) }
        } else {
            for f in facts.iter().filter(|f| compare(&fact.key, &f.key) == Match::Conflict) {
                let d = f.key.describe();
                if !conflicts.iter().any(|(m, e)| *m == *n && *e == d) {
                    conflicts.push((*n, d));
                }
            }
        }
    }
    let refs = |ns: &[usize]| ns.iter().map(|n| format!("[{n}]")).collect::<Vec<_>>().join(", ");
    let (verdict, found_in, reason) = if !found_cited.is_empty() {
        let r = format!("{text}: found in {}", refs(&found_cited));
        (Verdict::Cited, found_cited, r)
    } else if !found_other.is_empty() {
        let r = if cited.is_empty() {
            format!("{text}: found in {}; the sentence cites no source", refs(&found_other))
        } else {
            format!("{text}: found in {}, which this sentence does not cite", refs(&found_other))
        };
        (Verdict::OtherSource, found_other, r)
    } else if !conflicts.is_empty() {
        let said = conflicts.iter().take(3).map(|(n, d)| format!("{d} [{n}]")).collect::<Vec<_>>().join(", ");
        (Verdict::Unsupported, Vec::new(), format!("{text}: in none of the sources; they say {said}"))
    } else {
        (Verdict::Unsupported, Vec::new(), format!("{text}: in none of the sources"))
    };
    CheckedItem { kind: fact.kind, start: fact.start, end: fact.end, verdict, found_in, reason }
}

fn contains_word(haystack_lower: &str, word: &str) -> bool {
    let bytes = haystack_lower.as_bytes();
    haystack_lower.match_indices(word).any(|(i, m)| {
        let before = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        let after = i + m.len() >= bytes.len() || !bytes[i + m.len()].is_ascii_alphanumeric();
        before && after
    })
}

// --- Dictionaries --------------------------------------------------------------------------

/// Every name of a medicine (generic, brand, alternative spelling), lowercase → generic.
static DRUGS: LazyLock<HashMap<String, String>> = LazyLock::new(|| {
    let mut map = HashMap::new();
    for line in include_str!("../data/drugs.txt").lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (generic, brands) = line.split_once('|').unwrap_or((line, ""));
        let generic = generic.trim().to_lowercase();
        for name in std::iter::once(generic.as_str()).chain(brands.split(',').map(str::trim)).filter(|n| !n.is_empty()) {
            map.insert(name.to_lowercase(), generic.clone());
        }
    }
    map
});

/// Words that follow a generic name without changing the medicine: salts and release forms.
const SALT_WORDS: &[&str] = &[
    "hydrochloride", "hcl", "sodium", "potassium", "calcium", "magnesium", "succinate", "tartrate", "besylate", "besilate", "maleate",
    "mesylate", "mesilate", "fumarate", "sulfate", "sulphate", "citrate", "acetate", "phosphate", "bromide", "dihydrate",
    "monohydrate", "hyclate", "xr", "er", "sr", "xl", "cr", "la", "dr", "ir", "mr", "odt", "retard",
];

/// Lab tests and vital signs: every name → the canonical one. A name with capitals is matched
/// as written (K, Na, Hb), the others in any case.
const LABS: &[(&str, &[&str])] = &[
    ("a1c", &["a1c", "hba1c", "hemoglobin a1c", "haemoglobin a1c", "glycated hemoglobin", "glycated haemoglobin"]),
    ("egfr", &["egfr", "gfr"]),
    ("creatinine", &["creatinine", "cr"]),
    ("potassium", &["potassium", "K"]),
    ("sodium", &["sodium", "Na"]),
    ("ldl", &["ldl", "ldl cholesterol", "ldl-c"]),
    ("hdl", &["hdl", "hdl cholesterol"]),
    ("cholesterol", &["cholesterol", "total cholesterol"]),
    ("triglycerides", &["triglycerides", "trig"]),
    ("glucose", &["glucose", "blood glucose", "fasting glucose", "blood sugar"]),
    ("hemoglobin", &["hemoglobin", "haemoglobin", "Hb", "Hgb", "hgb"]),
    ("platelets", &["platelets", "platelet count", "plt"]),
    ("wbc", &["wbc", "white cell count", "white blood cells"]),
    ("inr", &["inr"]),
    ("tsh", &["tsh"]),
    ("free t4", &["free t4", "ft4"]),
    ("blood pressure", &["bp", "blood pressure"]),
    ("heart rate", &["heart rate", "HR", "pulse"]),
    ("temperature", &["temperature", "temp"]),
    ("weight", &["weight", "weighs"]),
    ("bmi", &["bmi"]),
    ("oxygen saturation", &["spo2", "oxygen saturation", "sats", "o2 sat", "saturation"]),
    ("respiratory rate", &["respiratory rate", "RR"]),
    ("alt", &["alt"]),
    ("ast", &["ast"]),
    ("bilirubin", &["bilirubin"]),
    ("albumin", &["albumin"]),
    ("crp", &["crp", "c-reactive protein"]),
    ("troponin", &["troponin"]),
    ("bnp", &["bnp", "nt-probnp"]),
    ("psa", &["psa"]),
    ("ferritin", &["ferritin"]),
    ("urea", &["urea", "bun"]),
    ("uacr", &["uacr", "albumin to creatinine ratio", "albumin-to-creatinine ratio"]),
    ("lactate", &["lactate"]),
];

/// Lab names looked up in any case, and those matched only as written.
type LabNames = (HashMap<String, &'static str>, HashMap<&'static str, &'static str>);

static LAB_NAMES: LazyLock<LabNames> = LazyLock::new(|| {
    let (mut any_case, mut exact) = (HashMap::new(), HashMap::new());
    for (canonical, names) in LABS {
        for name in *names {
            if name.chars().any(char::is_uppercase) {
                exact.insert(*name, *canonical);
            } else {
                any_case.insert((*name).to_owned(), *canonical);
            }
        }
    }
    (any_case, exact)
});

/// Body sites that take a side. Plurals are reduced before the look-up.
const SITES: &[&str] = &[
    "knee", "hip", "shoulder", "ankle", "wrist", "elbow", "hand", "foot", "feet", "leg", "arm", "eye", "ear", "lung", "lobe", "kidney",
    "breast", "ovary", "testis", "testicle", "flank", "groin", "chest", "heel", "toe", "finger", "thumb", "femur", "tibia", "fibula",
    "radius", "ulna", "humerus", "clavicle", "thigh", "calf", "forearm", "shin", "buttock", "temple", "cheek", "tonsil", "adnexa",
    "ureter", "hemithorax", "hemisphere", "atrium", "ventricle", "carotid", "leg", "limb", "side", "sided", "hemiparesis", "weakness",
    "ptosis", "pupil", "retina", "cornea", "lens", "knees", "hips", "eyes", "ears", "lungs", "kidneys", "breasts",
];

/// Words between a side and its site that say nothing about the site itself.
const SITE_MODIFIERS: &[&str] =
    &["lower", "upper", "middle", "mid", "distal", "proximal", "anterior", "posterior", "medial", "lateral", "inner", "outer", "total", "the", "of", "and"];

fn site_of(word: &str) -> Option<String> {
    let w = word.to_lowercase();
    let w = w.strip_prefix('-').unwrap_or(&w).to_owned();
    let singular = match w.as_str() {
        "feet" => "foot".to_owned(),
        "knees" | "hips" | "eyes" | "ears" | "lungs" | "kidneys" | "breasts" => w.trim_end_matches('s').to_owned(),
        "sided" => "side".to_owned(),
        _ => w.clone(),
    };
    SITES.contains(&w.as_str()).then_some(singular)
}

/// Drug-name endings (INN stems): an unknown, non-English word with one of these is taken for a
/// medicine, so an invented name ("Lidowelam") is checked like a known one.
const DRUG_STEMS: &[&str] = &[
    "pril", "sartan", "olol", "alol", "ilol", "statin", "dipine", "azepam", "zolam", "azolam", "prazole", "tidine", "gliptin",
    "gliflozin", "glutide", "xaban", "gatran", "parin", "mab", "tinib", "ciclib", "vir", "cillin", "mycin", "micin", "floxacin",
    "cycline", "conazole", "azole", "olone", "asone", "isone", "afil", "triptan", "setron", "oxetine", "triptyline", "apine", "idone",
    "thiazide", "semide", "lukast", "terol", "tropium", "dronate", "formin", "glinide", "glitazone", "caine", "profen", "coxib",
    "fenac", "codone", "morphone", "pam", "lam", "barbital", "zodone", "navir", "tegravir", "lisib", "amide", "oxin", "arone",
];

const MONTHS: &[(&str, &str)] = &[
    ("January", "jan"),
    ("February", "feb"),
    ("March", "mar"),
    ("April", "apr"),
    ("May", "may"),
    ("June", "jun"),
    ("July", "jul"),
    ("August", "aug"),
    ("September", "sep"),
    ("October", "oct"),
    ("November", "nov"),
    ("December", "dec"),
];

fn month_of(word: &str) -> Option<u8> {
    let w = word.trim_end_matches('.').to_lowercase();
    let w = if w == "sept" { "sep".to_owned() } else { w };
    MONTHS.iter().position(|(full, short)| w == full.to_lowercase() || w == *short).map(|i| i as u8 + 1)
}

/// A unit read: (base unit, factor to it, is a dose unit).
type Unit = (&'static str, f64, bool);

/// Units → (base unit, factor to it, is a dose unit).
fn unit_of(raw: &str) -> Option<Unit> {
    let u = raw.to_lowercase().replace('μ', "µ");
    let u = u.trim_end_matches('.');
    Some(match u {
        "kg" | "kilogram" | "kilograms" => ("kg", 1.0, true),
        "g" | "gm" | "gram" | "grams" => ("mg", 1000.0, true),
        "mg" | "milligram" | "milligrams" => ("mg", 1.0, true),
        "mcg" | "µg" | "ug" | "microgram" | "micrograms" => ("mg", 0.001, true),
        "ng" | "nanogram" | "nanograms" => ("mg", 0.000_001, true),
        "l" | "litre" | "liter" | "litres" | "liters" => ("mL", 1000.0, true),
        "ml" | "millilitre" | "milliliter" | "millilitres" | "milliliters" | "cc" => ("mL", 1.0, true),
        "unit" | "units" | "u" | "iu" | "international units" => ("unit", 1.0, true),
        "mg/kg" => ("mg/kg", 1.0, true),
        "mcg/kg" | "µg/kg" => ("mg/kg", 0.001, true),
        "units/kg" => ("unit/kg", 1.0, true),
        "mmol/l" => ("mmol/L", 1.0, false),
        "mmol/mol" => ("mmol/mol", 1.0, false),
        "mmol" => ("mmol", 1.0, true),
        "meq/l" => ("mEq/L", 1.0, false),
        "meq" => ("mEq", 1.0, true),
        "mg/dl" => ("mg/dL", 1.0, false),
        "g/dl" => ("g/L", 10.0, false),
        "g/l" => ("g/L", 1.0, false),
        "mg/l" => ("mg/L", 1.0, false),
        "mg/g" => ("mg/g", 1.0, false),
        "µmol/l" | "umol/l" => ("µmol/L", 1.0, false),
        "ng/ml" => ("ng/mL", 1.0, false),
        "pg/ml" => ("pg/mL", 1.0, false),
        "miu/l" | "mu/l" => ("mIU/L", 1.0, false),
        "ml/min" | "ml/min/1.73m2" | "ml/min/1.73 m2" => ("mL/min", 1.0, false),
        "%" | "percent" => ("%", 1.0, false),
        "mmhg" => ("mmHg", 1.0, false),
        "bpm" | "beats/min" => ("bpm", 1.0, false),
        "°c" | "c" | "degrees" => ("°C", 1.0, false),
        "/min" | "breaths/min" => ("/min", 1.0, false),
        "x10^9/l" | "×10^9/l" | "x 10^9/l" => ("10^9/L", 1.0, false),
        "day" | "days" => ("day", 1.0, false),
        "week" | "weeks" | "wk" | "wks" => ("day", 7.0, false),
        "month" | "months" => ("month", 1.0, false),
        "year" | "years" | "yr" | "yrs" => ("year", 1.0, false),
        "hour" | "hours" | "h" | "hr" | "hrs" => ("hour", 1.0, false),
        "minute" | "minutes" | "min" | "mins" => ("minute", 1.0, false),
        "tablet" | "tablets" | "tab" | "tabs" => ("tablet", 1.0, true),
        "puff" | "puffs" => ("puff", 1.0, true),
        "drop" | "drops" => ("drop", 1.0, true),
        _ => return None,
    })
}

const NUMBER_WORDS: &[(&str, f64)] = &[
    ("one", 1.0), ("two", 2.0), ("three", 3.0), ("four", 4.0), ("five", 5.0), ("six", 6.0), ("seven", 7.0), ("eight", 8.0),
    ("nine", 9.0), ("ten", 10.0), ("eleven", 11.0), ("twelve", 12.0), ("fourteen", 14.0), ("fifteen", 15.0), ("twenty", 20.0),
    ("thirty", 30.0), ("forty", 40.0), ("fifty", 50.0), ("sixty", 60.0), ("ninety", 90.0), ("hundred", 100.0),
];

// --- Extraction ----------------------------------------------------------------------------

#[allow(clippy::expect_used)]
fn re(p: &str) -> Regex {
    Regex::new(p).expect("static regex")
}

static WORD: LazyLock<Regex> = LazyLock::new(|| re(r"[A-Za-z][A-Za-z0-9]*(?:['\-][A-Za-z0-9]+)*"));
static EVERY_HOURS: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)\bq\s?(\d{1,2})\s?h(?:rs?|ours?)?\b"));
static CITE: LazyLock<Regex> = LazyLock::new(|| re(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]"));
static ISO_DATE: LazyLock<Regex> = LazyLock::new(|| re(r"\b(\d{4})-(\d{1,2})(?:-(\d{1,2}))?\b"));
static NUMERIC_DATE: LazyLock<Regex> = LazyLock::new(|| re(r"\b(\d{1,2})([/.])(\d{1,2})[/.](\d{4}|\d{2})\b"));
static MONTH_YEAR_NUMERIC: LazyLock<Regex> = LazyLock::new(|| re(r"\b(\d{1,2})/(\d{4})\b"));
static DAY_MONTH: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)\b(\d{1,2})(?:st|nd|rd|th)?(?:\s+of)?\s+(january|february|march|april|may|june|july|august|september|october|november|december|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)\.?(?:,?\s+(\d{4}))?\b")
});
static MONTH_DAY: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)\b(january|february|march|april|may|june|july|august|september|october|november|december|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)\.?\s+(?:(\d{1,2})(?:st|nd|rd|th)?\b(?:,?\s+(\d{4}))?|(\d{4}))\b")
});
/// A number (thousands separators, decimal point or comma), optionally a second one after "/"
/// (blood pressure), then optionally a unit.
static QUANTITY: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)(\d{1,3}(?:,\d{3})+|\d+(?:[.,]\d+)?)(?:\s?(%|percent|mg/kg|mcg/kg|µg/kg|μg/kg|units/kg|mmol/l|mmol/mol|mmol|meq/l|meq|mg/dl|g/dl|g/l|mg/l|mg/g|µmol/l|umol/l|ng/ml|pg/ml|miu/l|mu/l|ml/min(?:/1\.73\s?m2)?|mmhg|bpm|beats/min|breaths/min|°c|x\s?10\^9/l|×10\^9/l|kg|kilograms?|mcg|µg|μg|ug|micrograms?|milligrams?|mg|ng|grams?|gm|g|millilit(?:re|er)s?|ml|cc|lit(?:re|er)s?|l|international units|units?|iu|u|days?|weeks?|wks?|wk|months?|years?|yrs?|yr|hours?|hrs?|hr|h|minutes?|mins?|min|tablets?|tabs?|puffs?|drops?)\b|\s?(%))?")
});

struct Extractor<'t> {
    text: &'t str,
    taken: Vec<(usize, usize)>,
    facts: Vec<Fact>,
    /// (start, end, canonical) of drug and lab names: the subjects numbers belong to.
    subjects: Vec<(usize, usize, String)>,
}

impl<'t> Extractor<'t> {
    fn free(&self, start: usize, end: usize) -> bool {
        !self.taken.iter().any(|(a, b)| start < *b && *a < end)
    }

    fn take(&mut self, start: usize, end: usize) {
        self.taken.push((start, end));
    }

    fn push(&mut self, start: usize, end: usize, kind: ItemKind, key: Key) {
        self.take(start, end);
        self.facts.push(Fact { start, end, kind, key });
    }
}

fn two_digit_year(y: &str) -> Option<i32> {
    let n: i32 = y.parse().ok()?;
    Some(if y.len() == 2 { if n < 50 { 2000 + n } else { 1900 + n } } else { n })
}

fn valid(month: i32, day: i32) -> bool {
    (1..=12).contains(&month) && (1..=31).contains(&day)
}

/// The facts a text states. `spelled_numbers`: read "two weeks" as 14 days too (for sources:
/// an answer may write the digits for what a note spelled out).
fn facts(text: &str, cfg: &CheckConfig, spelled_numbers: bool) -> Vec<Fact> {
    let mut x = Extractor { text, taken: Vec::new(), facts: Vec::new(), subjects: Vec::new() };
    for m in CITE.find_iter(text) {
        x.take(m.start(), m.end());
    }
    dates(&mut x, cfg);
    words(&mut x);
    quantities(&mut x, spelled_numbers);
    unknown_drugs(&mut x);
    bind_subjects(&mut x);
    x.facts.sort_by_key(|f| f.start);
    x.facts
}

fn dates(x: &mut Extractor<'_>, cfg: &CheckConfig) {
    let text = x.text;
    for c in ISO_DATE.captures_iter(text) {
        let (Some(y), Some(m)) = (c[1].parse::<i32>().ok(), c[2].parse::<i32>().ok()) else { continue };
        let d = c.get(3).and_then(|d| d.as_str().parse::<i32>().ok());
        if !(1900..=2100).contains(&y) || !valid(m, d.unwrap_or(1)) {
            continue;
        }
        let whole = c.get(0).map_or((0, 0), |g| (g.start(), g.end()));
        x.push(whole.0, whole.1, ItemKind::Date, Key::Date { year: Some(y), month: Some(m as u8), day: d.map(|d| d as u8) });
    }
    for c in NUMERIC_DATE.captures_iter(text) {
        let whole = c.get(0).map_or((0, 0), |g| (g.start(), g.end()));
        if !x.free(whole.0, whole.1) {
            continue;
        }
        let (Some(a), Some(b), Some(y)) = (c[1].parse::<i32>().ok(), c[3].parse::<i32>().ok(), two_digit_year(&c[4])) else { continue };
        // A dot is a day-first date everywhere it is written that way.
        let (m, d) = if &c[2] == "." || cfg.numeric_dates == DateOrder::DayFirst { (b, a) } else { (a, b) };
        if !valid(m, d) || &c[2] == "." && c[4].len() == 2 {
            continue;
        }
        x.push(whole.0, whole.1, ItemKind::Date, Key::Date { year: Some(y), month: Some(m as u8), day: Some(d as u8) });
    }
    for c in MONTH_YEAR_NUMERIC.captures_iter(text) {
        let whole = c.get(0).map_or((0, 0), |g| (g.start(), g.end()));
        let (Some(m), Some(y)) = (c[1].parse::<i32>().ok(), c[2].parse::<i32>().ok()) else { continue };
        if x.free(whole.0, whole.1) && (1..=12).contains(&m) && (1900..=2100).contains(&y) {
            x.push(whole.0, whole.1, ItemKind::Date, Key::Date { year: Some(y), month: Some(m as u8), day: None });
        }
    }
    for c in DAY_MONTH.captures_iter(text) {
        let whole = c.get(0).map_or((0, 0), |g| (g.start(), g.end()));
        let (Some(d), Some(m)) = (c[1].parse::<i32>().ok(), month_of(&c[2])) else { continue };
        let y = c.get(3).and_then(|y| y.as_str().parse::<i32>().ok());
        if x.free(whole.0, whole.1) && valid(i32::from(m), d) {
            x.push(whole.0, whole.1, ItemKind::Date, Key::Date { year: y, month: Some(m), day: Some(d as u8) });
        }
    }
    for c in MONTH_DAY.captures_iter(text) {
        let whole = c.get(0).map_or((0, 0), |g| (g.start(), g.end()));
        let Some(m) = month_of(&c[1]) else { continue };
        // "may" is also a verb: only with a day or a year after it, capitalised.
        if &c[1] == "may" {
            continue;
        }
        let d = c.get(2).and_then(|d| d.as_str().parse::<i32>().ok());
        let y = c.get(3).or(c.get(4)).and_then(|y| y.as_str().parse::<i32>().ok());
        if d.is_some_and(|d| !valid(i32::from(m), d)) || y.is_some_and(|y| !(1900..=2100).contains(&y)) {
            continue;
        }
        if x.free(whole.0, whole.1) {
            x.push(whole.0, whole.1, ItemKind::Date, Key::Date { year: y, month: Some(m), day: d.map(|d| d as u8) });
        }
    }
}

/// Medicines (dictionary, up to three words, with salt words after them), lab names (as
/// subjects), and sides with their body site.
fn words(x: &mut Extractor<'_>) {
    let text = x.text;
    let toks: Vec<(usize, usize)> = WORD.find_iter(text).map(|m| (m.start(), m.end())).collect();
    // Words joined by single spaces only: a name does not run across punctuation.
    let joined = |i: usize, n: usize| -> Option<(usize, usize, String)> {
        if i + n > toks.len() {
            return None;
        }
        for k in i..i + n - 1 {
            if text[toks[k].1..toks[k + 1].0] != *" " {
                return None;
            }
        }
        Some((toks[i].0, toks[i + n - 1].1, text[toks[i].0..toks[i + n - 1].1].to_owned()))
    };
    let mut i = 0;
    while i < toks.len() {
        let mut advanced = false;
        for n in (1..=3).rev() {
            let Some((start, mut end, phrase)) = joined(i, n) else { continue };
            if !x.free(start, end) {
                continue;
            }
            let lower = phrase.to_lowercase();
            if let Some(generic) = DRUGS.get(&lower) {
                let mut used = n;
                while let Some(&(s, e)) = toks.get(i + used) {
                    if &text[end..s] == " " && SALT_WORDS.contains(&text[s..e].to_lowercase().as_str()) {
                        end = e;
                        used += 1;
                    } else {
                        break;
                    }
                }
                x.subjects.push((start, end, generic.clone()));
                x.push(start, end, ItemKind::Medication, Key::Drug { name: generic.clone(), known: true });
                i += used;
                advanced = true;
                break;
            }
            let (any_case, exact) = &*LAB_NAMES;
            if let Some(lab) = exact.get(phrase.as_str()).copied().or_else(|| any_case.get(&lower).copied()) {
                x.subjects.push((start, end, lab.to_owned()));
                x.take(start, end);
                i += n;
                advanced = true;
                break;
            }
        }
        if advanced {
            continue;
        }
        let (start, end) = toks[i];
        let lower = text[start..end].to_lowercase();
        let side = match lower.as_str() {
            "left" => Some(Side::Left),
            "right" => Some(Side::Right),
            "bilateral" | "bilaterally" | "both" => Some(Side::Both),
            "left-sided" => Some(Side::Left),
            "right-sided" => Some(Side::Right),
            _ => None,
        };
        if let Some(side) = side {
            if lower.ends_with("-sided") {
                x.push(start, end, ItemKind::Laterality, Key::Side { side, site: "side".into() });
            } else {
                // The site: the first body site among the next three words, skipping modifiers.
                let mut site = None;
                for &(s, e) in toks.iter().skip(i + 1).take(3) {
                    let w = &text[s..e];
                    if let Some(found) = site_of(w) {
                        site = Some(found);
                        break;
                    }
                    if !SITE_MODIFIERS.contains(&w.to_lowercase().as_str()) {
                        break;
                    }
                }
                // Without a body site, "left" is a verb or a direction, not a side.
                if let Some(site) = site {
                    x.push(start, end, ItemKind::Laterality, Key::Side { side, site });
                }
            }
        }
        i += 1;
    }
}

/// Numbers, with their unit converted and the drug or lab they belong to.
fn quantities(x: &mut Extractor<'_>, spelled_numbers: bool) {
    let text = x.text;
    let bytes = text.as_bytes();
    let mut found: Vec<(usize, usize, f64, Option<Unit>)> = Vec::new();
    for c in QUANTITY.captures_iter(text) {
        let Some(whole) = c.get(0) else { continue };
        let num = &c[1];
        let (start, mut end) = (whole.start(), whole.end());
        // Part of a word or a longer number ("A1c", "B12", "v2.3"): not a quantity.
        if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'.') {
            continue;
        }
        if end < bytes.len() && c.get(2).is_none() && c.get(3).is_none() && bytes[end].is_ascii_alphabetic() {
            continue;
        }
        if !x.free(start, end) {
            // Keep only the number when the unit ran into something taken.
            let n_end = c.get(1).map_or(end, |g| g.end());
            if !x.free(start, n_end) {
                continue;
            }
            end = n_end;
        }
        let value: f64 = if num.contains(',') && num.len() > 4 && num.split(',').skip(1).all(|g| g.len() == 3) {
            num.replace(',', "").parse().unwrap_or(f64::NAN)
        } else {
            num.replace(',', ".").parse().unwrap_or(f64::NAN)
        };
        if value.is_nan() {
            continue;
        }
        let unit_text = if end == whole.end() { c.get(2).or(c.get(3)).map(|u| u.as_str()) } else { None };
        // "1." at the start of a line is a list number, not a fact.
        let line_start = text[..start].rfind('\n').map_or(0, |p| p + 1);
        if unit_text.is_none() && text[line_start..start].trim().is_empty() && text[end..].starts_with(['.', ')']) {
            continue;
        }
        let unit = unit_text.and_then(|u| unit_of(&u.split_whitespace().collect::<Vec<_>>().join(" ")));
        found.push((start, end, value, unit));
    }
    // "q6h": every 6 hours.
    for c in EVERY_HOURS.captures_iter(text) {
        let Some(whole) = c.get(0) else { continue };
        if x.free(whole.start(), whole.end()) && let Ok(n) = c[1].parse::<f64>() {
            found.push((whole.start(), whole.end(), n, unit_of("hours")));
        }
    }
    if spelled_numbers {
        for m in WORD.find_iter(text) {
            let lower = m.as_str().to_lowercase();
            let Some(&(_, value)) = NUMBER_WORDS.iter().find(|(w, _)| *w == lower) else { continue };
            if !x.free(m.start(), m.end()) {
                continue;
            }
            let next = WORD.find_at(text, m.end()).filter(|n| text[m.end()..n.start()].trim().is_empty());
            let unit = next.and_then(|n| unit_of(n.as_str()));
            let end = if unit.is_some() { next.map_or(m.end(), |n| n.end()) } else { m.end() };
            found.push((m.start(), end, value, unit));
        }
    }
    for (start, end, value, unit) in found {
        let (base, factor, dose) = unit.unwrap_or(("", 1.0, false));
        let value = value * factor;
        // A bare four-digit year is a date.
        if base.is_empty() && value.fract() == 0.0 && (1900.0..=2100.0).contains(&value) && end - start == 4 {
            x.push(start, end, ItemKind::Date, Key::Date { year: Some(value as i32), month: None, day: None });
            continue;
        }
        // The subject is bound once every name is known (`bind_subjects`).
        x.push(start, end, if dose { ItemKind::Dose } else { ItemKind::Number }, Key::Quantity { value, unit: base, subject: None });
    }
}

/// Give each number the drug or lab it belongs to; a number of a lab test is a lab value.
fn bind_subjects(x: &mut Extractor<'_>) {
    let bound: Vec<Option<String>> = x
        .facts
        .iter()
        .map(|f| match f.key {
            Key::Quantity { .. } => subject_for(x, f.start, f.end),
            _ => None,
        })
        .collect();
    for (fact, bound) in x.facts.iter_mut().zip(bound) {
        if let Key::Quantity { subject, .. } = &mut fact.key {
            if fact.kind == ItemKind::Number && bound.as_ref().is_some_and(|s| LABS.iter().any(|(lab, _)| lab == s)) {
                fact.kind = ItemKind::LabValue;
            }
            *subject = bound;
        }
    }
}

/// The drug or lab a number belongs to: the nearest name before it in the same sentence (close
/// by), else one right after it ("20 mg of lisinopril", "500 mg metformin"), else the nearest
/// before it further back in the sentence.
fn subject_for(x: &Extractor<'_>, start: usize, end: usize) -> Option<String> {
    let text = x.text;
    let sentence_start = text[..start].rfind(['.', ';', '\n']).filter(|p| !text[p + 1..].starts_with(|c: char| c.is_ascii_digit())).map_or(0, |p| p + 1);
    let sentence_end = text[end..].find(['\n', ';']).map_or(text.len(), |p| end + p);
    let before = x.subjects.iter().filter(|(_, e, _)| *e <= start && *e >= sentence_start).max_by_key(|(_, e, _)| *e);
    let after = x.subjects.iter().filter(|(s, _, _)| *s >= end && *s <= sentence_end).min_by_key(|(s, _, _)| *s);
    match (before, after) {
        (Some(b), _) if start - b.1 <= 25 => Some(b.2.clone()),
        (_, Some(a)) if a.0 - end <= 12 && text[end..a.0].trim().trim_start_matches("of").trim().is_empty() => Some(a.2.clone()),
        (Some(b), _) if start - b.1 <= 80 => Some(b.2.clone()),
        _ => None,
    }
}

/// A word no dictionary knows that is written like a medicine: with a drug-name ending, or
/// followed by a dose.
fn unknown_drugs(x: &mut Extractor<'_>) {
    let text = x.text;
    let doses: Vec<usize> = x.facts.iter().filter(|f| f.kind == ItemKind::Dose).map(|f| f.start).collect();
    let mut found = Vec::new();
    for m in WORD.find_iter(text) {
        let word = m.as_str();
        let lower = word.to_lowercase();
        if word.len() < 5 || !x.free(m.start(), m.end()) || !lower.chars().all(|c| c.is_ascii_alphabetic()) {
            continue;
        }
        if crate::deid::is_english(&lower) || DRUGS.contains_key(&lower) || unit_of(&lower).is_some() || month_of(&lower).is_some() {
            continue;
        }
        let stem = DRUG_STEMS.iter().any(|s| lower.ends_with(s) && lower.len() > s.len() + 2);
        let before_dose = doses.iter().any(|d| *d >= m.end() && text[m.end()..*d].trim().is_empty());
        if stem || before_dose {
            found.push((m.start(), m.end(), lower));
        }
    }
    for (start, end, lower) in found {
        x.subjects.push((start, end, lower.clone()));
        x.push(start, end, ItemKind::Medication, Key::Drug { name: lower, known: false });
    }
}

// --- Sentences and citations ---------------------------------------------------------------

/// Abbreviations after which a full stop does not end a sentence.
const ABBREVIATIONS: &[&str] = &["e.g", "i.e", "dr", "mr", "mrs", "ms", "vs", "approx", "no", "st", "etc", "cf", "fig", "pt"];

/// Sentences as byte ranges: split after `.`, `!` or `?` followed by white space, and at line
/// ends; a citation right after the full stop ("... daily. [2]") belongs to the sentence before.
fn split_sentences(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let mut cut = None;
        if b == b'\n' {
            cut = Some(i + 1);
        } else if matches!(b, b'.' | b'!' | b'?') && (i + 1 == bytes.len() || bytes[i + 1].is_ascii_whitespace()) {
            let word_start = text[..i].rfind(|c: char| c.is_whitespace()).map_or(0, |p| p + 1);
            let last_word = text[word_start..i].to_lowercase();
            if b != b'.' || !ABBREVIATIONS.contains(&last_word.as_str()) {
                let mut j = i + 1;
                // Trailing citations and closing brackets stay with this sentence.
                loop {
                    let rest = &text[j..];
                    let trimmed = rest.trim_start_matches([' ', '\t']);
                    let skipped = rest.len() - trimmed.len();
                    if let Some(m) = CITE.find(trimmed).filter(|m| m.start() == 0) {
                        j += skipped + m.end();
                        if text[j..].starts_with('.') {
                            j += 1;
                        }
                    } else {
                        break;
                    }
                }
                cut = Some(j);
            }
        }
        if let Some(c) = cut {
            if !text[start..c].trim().is_empty() {
                out.push(trimmed_range(text, start, c));
            }
            start = c;
            i = c;
            continue;
        }
        i += 1;
    }
    if !text[start..].trim().is_empty() {
        out.push(trimmed_range(text, start, text.len()));
    }
    out
}

fn trimmed_range(text: &str, start: usize, end: usize) -> (usize, usize) {
    let s = &text[start..end];
    let lead = s.len() - s.trim_start().len();
    let trail = s.len() - s.trim_end().len();
    (start + lead, end - trail)
}

fn cited_numbers(sentence: &str) -> Vec<usize> {
    let mut out = BTreeSet::new();
    for c in CITE.captures_iter(sentence) {
        out.extend(c[1].split(',').filter_map(|n| n.trim().parse::<usize>().ok()));
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests;
