//! Finding HIPAA Safe Harbor identifiers in free text: pattern rules, keyword-anchored rules,
//! names (dictionaries, titles and cue words, form labels, and a vocabulary rule for names no
//! list has), the validated numbers of [`super::numbers`], the places of [`super::places`], and
//! the exact identifiers that structured records (FHIR) give us.
//!
//! Pure code: text in, spans out. Recall matters more than precision here (a missed identifier
//! leaks into the index; a false hit only costs the model a word), so ambiguous cases lean
//! towards removal, except for what is certainly not personal: ordinary English words beside a
//! cue word, eponyms, countries, medical terms, acronyms. Every span covers whole words.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;

use super::Category;

/// A detected identifier: a byte range of the text and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub category: Category,
}

/// Identifiers known exactly from structured data (a FHIR Patient, the clinic's registry):
/// every occurrence of them in this patient's free text is removed, whatever the rules say.
#[derive(Debug, Clone, Default)]
pub struct KnownIdentifiers {
    pub items: Vec<(Category, String)>,
}

impl KnownIdentifiers {
    pub fn push(&mut self, category: Category, value: impl Into<String>) {
        let value = value.into();
        if !value.trim().is_empty() {
            self.items.push((category, value.trim().to_owned()));
        }
    }

    pub fn extend(&mut self, other: &KnownIdentifiers) {
        self.items.extend(other.items.iter().cloned());
    }
}

static FIRST_NAMES: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("../../data/first_names.txt").lines().map(str::trim).filter(|l| !l.is_empty()).collect());
static LAST_NAMES: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("../../data/last_names.txt").lines().map(str::trim).filter(|l| !l.is_empty()).collect());

/// Words that the census name lists contain but that are, in a clinical note, far more often
/// ordinary words: months, weekdays, anatomy, eponymous diseases, common verbs and nouns.
/// They still count as names after a title ("Dr. Hope") or beside another name ("Will Smith").
static STOPWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../../data/stopwords.txt")
        .split_whitespace()
        .filter(|w| !w.starts_with('#'))
        .collect()
});

/// Ordinary English words (SCOWL, lowercase entries only: no proper nouns).
static ENGLISH: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("../../data/english_words.txt").lines().map(str::trim).filter(|l| !l.is_empty()).collect());

pub(crate) fn is_english(lower: &str) -> bool {
    ENGLISH.contains(lower)
}

fn word_list(text: &'static str) -> HashSet<&'static str> {
    text.lines().filter(|l| !l.starts_with('#')).flat_map(str::split_whitespace).collect()
}

/// Medical eponyms and named scales ("Parkinson", "Apgar", "Kaplan-Meier").
static EPONYMS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| word_list(include_str!("../../data/eponyms.txt")));
/// Countries, peoples, languages, regions and health bodies.
static COUNTRIES: LazyLock<HashSet<&'static str>> = LazyLock::new(|| word_list(include_str!("../../data/countries.txt")));

fn is_eponym(lower: &str) -> bool {
    let base = lower.trim_end_matches("'s").trim_end_matches("’s").trim_end_matches('\'');
    // Derived words name things too: "Parkinsonism", "Parkinsonian", "Cushingoid".
    let derived = ["ism", "ian", "oid", "ic"].iter().any(|suffix| base.strip_suffix(suffix).is_some_and(|stem| EPONYMS.contains(stem)));
    EPONYMS.contains(base) || derived || base.contains('-') && base.split('-').all(|p| EPONYMS.contains(p))
}

/// Word endings of drugs, diseases and procedures: a capitalised word ending so is a term.
fn medical_shaped(lower: &str) -> bool {
    const ENDINGS: &[&str] = &[
        "itis", "osis", "emia", "aemia", "ectomy", "otomy", "ostomy", "plasty", "scopy", "graphy", "pathy", "ology", "algia",
        "uria", "mab", "tinib", "ciclib", "pril", "sartan", "olol", "statin", "mycin", "cillin", "floxacin", "azole", "navir",
        "tegravir", "ciclovir", "gliptin", "gliflozin", "glutide", "parin", "xaban", "dipine", "prazole", "tidine", "triptan",
        "lukast", "semide", "thiazide", "zepam", "zolam", "oxetine", "ipramine", "apine", "idone", "profen", "coxib", "lukin",
        "ceptor", "kinase", "virus", "bacter", "coccus", "plasma", "therapy", "gram", "scope", "lysis", "trophy", "plegia", "meter",
        "metry", "graph",
    ];
    lower.len() > 5 && ENDINGS.iter().any(|e| lower.ends_with(e))
}

/// A month name in one of the languages the date rules read (for words that are no place).
fn is_month_word(lower: &str) -> bool {
    MONTH_WORDS.iter().any(|(w, _)| *w == lower)
}

/// Whether a capitalised word is, on its own, certainly not a place or a person: an ordinary
/// English word, a country or people, an eponym, a month, a medical term, or an acronym.
pub(crate) fn is_place_word_safe(word: &str) -> bool {
    let lower = word.trim_end_matches(['.', ',']).to_lowercase();
    let lower = lower.trim_end_matches("'s").trim_end_matches("’s");
    let letters: Vec<char> = word.chars().filter(|c| c.is_alphabetic()).collect();
    let acronym = letters.len() >= 2 && letters.iter().all(|c| c.is_uppercase());
    acronym
        || is_english(lower)
        || COUNTRIES.contains(lower)
        || is_eponym(lower)
        || is_stopword(lower)
        || is_month_word(lower)
        || medical_shaped(lower)
        || TITLES.contains(&lower)
}

/// Whether the words after a capitalised word make it an eponym ("… disease", "…'s sign",
/// "… score"): then it names a thing, not a person or a place.
pub(crate) fn is_eponym_context(after: &str) -> bool {
    const HEADS: &[&str] = &[
        "disease", "syndrome", "sign", "test", "score", "scale", "palsy", "sarcoma", "lymphoma", "tumour", "tumor", "procedure",
        "manoeuvre", "maneuver", "catheter", "classification", "criteria", "criterion", "index", "ratio", "equation", "formula",
        "reflex", "phenomenon", "estimate", "model", "correction", "correlation", "regression", "analysis", "analyses",
        "coefficient", "distribution", "method", "law", "triad", "node", "cell", "disorder", "ulcer", "fracture", "point",
        "position", "operation", "repair", "fundoplication", "oesophagus", "esophagus", "thyroiditis", "encephalopathy",
        "arteritis", "granulomatosis", "dystrophy", "anomaly", "staging", "stage", "grade", "exact", "signed-rank", "rank",
        "bodies", "body", "gangrene", "hernia", "cyst", "contracture", "chorea", "ataxia", "aphasia", "area", "variant",
        "shunt", "tube", "stain", "approach", "incision", "space", "gland", "duct", "canal", "bypass", "protocol", "rule",
        "curve", "plot", "chi", "-",
    ];
    let t = after.trim_start();
    let rest = ["'s", "’s", "'", "’"].iter().find_map(|p| t.strip_prefix(p)).unwrap_or(t).trim_start();
    let word: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '-').collect::<String>().to_lowercase();
    HEADS.contains(&word.as_str())
}

fn is_stopword(lower: &str) -> bool {
    STOPWORDS.contains(lower)
}

fn is_first(lower: &str) -> bool {
    FIRST_NAMES.contains(lower)
}

fn is_last(lower: &str) -> bool {
    LAST_NAMES.contains(lower)
}

const MONTHS: &str = r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sept?(?:ember)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)";
/// Month names of the other languages the date rules read, with their number. Written dates in
/// German, French, Spanish, Italian, Dutch, Portuguese, Polish and the Nordic languages.
pub(crate) const MONTH_WORDS: &[(&str, i8)] = &[
    ("januar", 1), ("janvier", 1), ("enero", 1), ("gennaio", 1), ("januari", 1), ("janeiro", 1), ("stycznia", 1), ("styczeń", 1),
    ("februar", 2), ("février", 2), ("febrero", 2), ("febbraio", 2), ("februari", 2), ("fevereiro", 2), ("lutego", 2), ("luty", 2),
    ("märz", 3), ("mars", 3), ("marzo", 3), ("maart", 3), ("março", 3), ("marca", 3), ("marzec", 3),
    ("avril", 4), ("abril", 4), ("aprile", 4), ("kwietnia", 4), ("kwiecień", 4),
    ("mai", 5), ("mayo", 5), ("maggio", 5), ("mei", 5), ("maio", 5), ("maja", 5), ("maj", 5),
    ("juni", 6), ("juin", 6), ("junio", 6), ("giugno", 6), ("junho", 6), ("czerwca", 6), ("czerwiec", 6),
    ("juli", 7), ("juillet", 7), ("julio", 7), ("luglio", 7), ("julho", 7), ("lipca", 7), ("lipiec", 7),
    ("august", 8), ("août", 8), ("agosto", 8), ("augustus", 8), ("sierpnia", 8), ("sierpień", 8), ("augusti", 8),
    ("september", 9), ("septembre", 9), ("septiembre", 9), ("settembre", 9), ("setembro", 9), ("września", 9), ("wrzesień", 9),
    ("oktober", 10), ("octobre", 10), ("octubre", 10), ("ottobre", 10), ("outubro", 10), ("października", 10), ("październik", 10),
    ("november", 11), ("novembre", 11), ("noviembre", 11), ("novembro", 11), ("listopada", 11), ("listopad", 11),
    ("dezember", 12), ("décembre", 12), ("diciembre", 12), ("dicembre", 12), ("december", 12), ("dezembro", 12), ("grudnia", 12), ("grudzień", 12),
    ("april", 4), ("oktober", 10),
];

/// Any month word of [`MONTH_WORDS`], for the written-date rules.
fn foreign_months() -> String {
    let mut words: Vec<&str> = MONTH_WORDS.iter().map(|(w, _)| *w).collect();
    // Longest first, so that "marzo" is not cut to "mar"; the same word in two languages once.
    words.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    words.dedup();
    format!("(?:{})", words.join("|"))
}
const STATES: &str = r"(?:AS|GU|MP|PR|VI|PW|FM|MH|AA|AE|AP|AL|AK|AZ|AR|CA|CO|CT|DE|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|DC|Alabama|Alaska|Arizona|Arkansas|California|Colorado|Connecticut|Delaware|Florida|Georgia|Hawaii|Idaho|Illinois|Indiana|Iowa|Kansas|Kentucky|Louisiana|Maine|Maryland|Massachusetts|Michigan|Minnesota|Mississippi|Missouri|Montana|Nebraska|Nevada|New Hampshire|New Jersey|New Mexico|New York|North Carolina|North Dakota|Ohio|Oklahoma|Oregon|Pennsylvania|Rhode Island|South Carolina|South Dakota|Tennessee|Texas|Utah|Vermont|Virginia|Washington|West Virginia|Wisconsin|Wyoming)";
/// A capitalised word of any script ("Zürich", "Łódź", "São").
const CAP_WORD: &str = r"\p{Lu}[\p{Ll}\p{M}]+";
const STREET_SUFFIX: &str = r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Way|Terrace|Ter|Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq|Trail|Trl|Alley|Row|Crescent|Close|Loop|Pike|Run)";

fn re(pattern: &str) -> Regex {
    compile(pattern)
}

/// Compile a de-identification pattern. Word boundaries are ASCII (`(?-u:\b)`): a Unicode `\b`
/// stops the fast regex engines on any non-ASCII text and makes detection several times slower.
/// So that a word starting with a non-ASCII capital ("Łódź") still matches, no boundary is
/// asked before a capital of any script; every span is widened to whole words of any script
/// afterwards ([`detect`]), so an ASCII boundary never leaves part of a word.
pub(crate) fn compile(pattern: &str) -> Regex {
    let pattern = pattern.replace(r"\b(\p{Lu}", r"(\p{Lu}").replace(r"\b\p{Lu}", r"\p{Lu}").replace(r"\b", r"(?-u:\b)");
    // The patterns are constants of this module, tested: a bad one is a bug caught by every
    // test run, not a runtime condition.
    #[allow(clippy::expect_used)]
    Regex::new(&pattern).expect("a de-identification pattern failed to compile")
}

/// A rule: a regex whose capture group `group` (0 = whole match) is the identifier.
struct Rule {
    re: Regex,
    group: usize,
    category: Category,
    /// The match is the value after a keyword and must pass [`plausible_keyword_value`].
    keyword_value: bool,
}

/// Whether the token after an id keyword can be an identifier: it holds a digit and is not a
/// plain small or decimal number ("group: 3.3", "case 2", "visit 1" are counts and measures).
fn plausible_keyword_value(value: &str) -> bool {
    static MEASURE: LazyLock<Regex> = LazyLock::new(|| re(r"^(?:\d{1,3}|\d+[.,]\d+)$"));
    value.chars().any(|c| c.is_ascii_digit()) && !MEASURE.is_match(value)
}

/// Keyword-anchored identifiers: "MRN: 12345678", "Medicare ID 1EG4-TE5-MK72". The value must
/// hold a digit, so "MRN unknown" removes nothing. Longer keywords come first so that "license
/// plate" is a vehicle, not a licence.
fn keyword_rules() -> Vec<Rule> {
    // The whole token after the keyword if it holds a digit ("serial" in "pacemaker serial
    // number X" is not the value); [`plausible_keyword_value`] then decides.
    const VALUE: &str = r"(\d[A-Za-z0-9./-]*|[A-Za-z][A-Za-z./-]*\d[A-Za-z0-9./-]*)";
    // "number", "no.", "#", "ID", ":" in any order people write them ("Chart #: 18-8888",
    // "license no. RN-1234", "Member ID: X"). Each part optional; none consumes the value.
    const SEP: &str = r"(?:\s*(?:number|num|id|code|no)\b\.?)?\s*#?\s*(?::|=|\bis\b|\bwas\b)?\s*#?\s*\(?";
    let table: &[(&str, Category)] = &[
        (r"licen[cs]e\s+plates?|plates?|tag\s+number|VIN|vehicle\s+identification|vehicle\s+id|registration", Category::Vehicle),
        (r"fingerprint|finger\s+print|retina(?:l)?\s+scan|iris\s+scan|voice\s*print|palm\s*print|biometric(?:\s+template)?|face\s+template", Category::Biometric),
        (r"serial|s/n|SN|device\s+identifier|device|UDI|IMEI|implant|pacemaker|pump|model\s+serial|lot", Category::Device),
        (r"MRN|medical\s+record|med\s+rec|record|chart|hospital\s+number|patient\s+number", Category::Mrn),
        (r"member|subscriber|policy|group|health\s+plan|insurance|insurance\s+card|medicaid|medicare|MBI|beneficiary|plan|payer\s+id|HICN", Category::HealthPlan),
        (r"account|acct|billing|invoice|bank\s+account|routing|credit\s+card|card", Category::Account),
        (r"licen[cs]e|driver'?s\s+licen[cs]e|DL|DEA|NPI|certificate|cert|permit|passport|board\s+certification|state\s+licen[cs]e", Category::License),
        (r"SSN|SS#|social\s+security|social", Category::Ssn),
        (r"patient\s+id|employee\s+id|employee|student|badge|case|claim|visit|encounter|ID|identifier|reference|ref", Category::OtherId),
    ];
    table
        .iter()
        .map(|(kw, category)| Rule {
            re: re(&format!(r"(?i)\b(?:{kw})\b{SEP}{VALUE}")),
            group: 1,
            category: *category,
            keyword_value: true,
        })
        .collect()
}

fn pattern_rules() -> Vec<Rule> {
    let mut rules = vec![
        Rule { re: re(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"), group: 0, category: Category::Email, keyword_value: false },
        Rule { re: re(r#"(?i)\b(?:https?://|ftp://|www\.)[^\s<>"')\]]+"#), group: 0, category: Category::Url, keyword_value: false },
        Rule { re: re(r"(?i)\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|org|net|edu|gov|io|health|info|us)/[^\s<>]*"), group: 0, category: Category::Url, keyword_value: false },
        Rule {
            re: re(r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b"),
            group: 0,
            category: Category::Ip,
            keyword_value: false,
        },
        Rule { re: re(r"(?i)\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\b"), group: 0, category: Category::Ip, keyword_value: false },
        Rule { re: re(r"(?i)(?:\b[0-9a-f]{1,4}:){1,6}:(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,5})?\b"), group: 0, category: Category::Ip, keyword_value: false },
        // MAC addresses identify a device.
        Rule { re: re(r"(?i)\b(?:[0-9a-f]{2}[:-]){5}[0-9a-f]{2}\b"), group: 0, category: Category::Device, keyword_value: false },
        Rule { re: re(r"\b\d{3}-\d{2}-\d{4}\b"), group: 0, category: Category::Ssn, keyword_value: false },
        Rule { re: re(r"(?i)\b(?:ssn|ss#|social security(?: number| no\.?| #)?)[\s:#]*(\d{3}[\s.-]?\d{2}[\s.-]?\d{4})\b"), group: 1, category: Category::Ssn, keyword_value: false },
        // North American phone numbers in their usual spellings; fax is decided from context.
        Rule {
            re: re(r"(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\b\d{3}[\s.-])\d{3}[\s.-]\d{4}\b(?:\s*(?:x|ext\.?)\s*\d{1,5})?"),
            group: 0,
            category: Category::Phone,
            keyword_value: false,
        },
        Rule { re: re(r"(?i)\b(?:phone|tel|telephone|cell|mobile|fax|call|pager|contact)\b[\s:#.]*(\+?\d{10,11})\b"), group: 1, category: Category::Phone, keyword_value: false },
        Rule { re: re(r"\+\d{1,3}[\s.-]\d{1,4}[\s.-]\d{3,4}[\s.-]\d{3,4}\b"), group: 0, category: Category::Phone, keyword_value: false },
        // Plates are written in groups ("58 GBD 89", "EQ 74 424"): the keyword takes up to four.
        Rule {
            re: re(r"\b(?i:licen[cs]e\s+plates?|(?:vehicle|car|number)\s+plates?|plates?|registration|reg\.)\s*(?i:number|no\.?|#)?\s*[:#]?\s*\(?([A-Z0-9]{1,4}(?:[ -][A-Z0-9]{1,4}){1,3}|[A-Z0-9-]{4,10})\b"),
            group: 1,
            category: Category::Vehicle,
            keyword_value: true,
        },
        // UK National Insurance numbers ("QQ 12 34 56 C").
        Rule { re: re(r"\b[A-Z]{2}\s?\d{2}\s?\d{2}\s?\d{2}\s?[A-D]\b"), group: 0, category: Category::Ssn, keyword_value: false },
        // Vehicle identification numbers: 17 characters, no I, O or Q, letters and digits.
        Rule { re: re(r"\b[A-HJ-NPR-Z0-9]{17}\b"), group: 0, category: Category::Vehicle, keyword_value: false },
        // Dates: every element but the year is an identifier.
        // A four-digit year needs no word boundary after it: text from PDFs comes glued
        // ("DOB: 02/03/1931Admitted").
        Rule { re: re(r"\b(?:0?[1-9]|1[0-2])[/.-](?:0?[1-9]|[12]\d|3[01])[/.-](?:\d{4}|\d{2}\b)"), group: 0, category: Category::Date, keyword_value: false },
        Rule { re: re(r"\b(?:19|20)\d{2}[-/.](?:0?[1-9]|1[0-2])[-/.](?:0?[1-9]|[12]\d|3[01])(?:T\d{2}:\d{2}(?::\d{2})?(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?)?\b"), group: 0, category: Category::Date, keyword_value: false },
        Rule {
            re: re(&format!(r"(?i)\b(?:\d{{1,2}})(?:st|nd|rd|th)?(?:\s+of)?[\s-]+{MONTHS}\.?,?[\s-]+(?:\d{{4}}|\d{{2}})\b")),
            group: 0,
            category: Category::Date,
            keyword_value: false,
        },
        Rule {
            re: re(&format!(r"(?i)\b{MONTHS}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?\b(?:,?\s+\d{{4}})?")),
            group: 0,
            category: Category::Date,
            keyword_value: false,
        },
        Rule { re: re(&format!(r"(?i)\b{MONTHS}\.?,?\s+(?:of\s+)?(?:19|20)\d{{2}}\b")), group: 0, category: Category::Date, keyword_value: false },
        Rule { re: re(&format!(r"(?i)\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{MONTHS}\b")), group: 0, category: Category::Date, keyword_value: false },
        // Day first, as most of the world writes it: "24.03.1986", "25/07/2017" (day over 12).
        Rule { re: re(r"\b(?:0?[1-9]|[12]\d|3[01])[/.-](?:0?[1-9]|1[0-2])[/.-](?:19|20)\d{2}\b"), group: 0, category: Category::Date, keyword_value: false },
        Rule { re: re(r"\b(?:1[3-9]|2\d|3[01])[/.-](?:0?[1-9]|1[0-2])[/.-]\d{2}\b"), group: 0, category: Category::Date, keyword_value: false },
        // Written dates in other languages: "14. März 2024", "14 de marzo de 2024", "24 lipca 1956".
        Rule {
            re: re(&format!(r"(?i)\b\d{{1,2}}\.?\s+(?:de\s+)?{}\.?,?\s+(?:de\s+)?(?:19|20)\d{{2}}\b", foreign_months())),
            group: 0,
            category: Category::Date,
            keyword_value: false,
        },
        Rule { re: re(&format!(r"(?i)\b{}\s+(?:de\s+)?(?:19|20)\d{{2}}\b", foreign_months())), group: 0, category: Category::Date, keyword_value: false },
        // Ages over 89 ("92-year-old", "age 95", "aged 101", "94 y/o"): only the number goes.
        Rule { re: re(r"(?i)\b(9\d|1[0-2]\d)(?:\s*|-)(?:years?|yrs?|y/?o|y\.o\.|yo|year-old|-year-old)\b"), group: 1, category: Category::Age, keyword_value: false },
        Rule { re: re(r"(?i)\b(?:age|aged|ages)[\s:]*(9\d|1[0-2]\d)\b"), group: 1, category: Category::Age, keyword_value: false },
        Rule { re: re(r"(?i)\b(9\d|1[0-2]\d)\s*(?:yo|y/o)\b"), group: 1, category: Category::Age, keyword_value: false },
        // Street addresses and PO boxes: geographic units smaller than a state.
        Rule {
            re: re(&format!(
                r"\b\d{{1,6}}(?:-\d{{1,4}})?\s+(?:[NSEW]\.?\s+)?(?:(?:[A-Z][A-Za-z'-]*|\d{{1,3}}(?:st|nd|rd|th))\.?\s+){{1,3}}{STREET_SUFFIX}\b\.?(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Fl|Floor|Room|Rm|#)\.?\s*#?\s*[A-Za-z0-9-]+)?"
            )),
            group: 0,
            category: Category::Address,
            keyword_value: false,
        },
        Rule { re: re(r"(?i)\bP\.?\s?O\.?\s+Box\s+\d+"), group: 0, category: Category::Address, keyword_value: false },
        Rule { re: re(r"(?i)\b(?:Apt|Apartment|Suite|Unit)\.?\s*#?\s*\d+[A-Za-z]?\b"), group: 0, category: Category::Address, keyword_value: false },
        // "City, ST 12345": the city and the ZIP go, the state stays (Safe Harbor allows it).
        Rule {
            re: re(&format!(r"\b({CAP_WORD}(?:[ -]{CAP_WORD}){{0,2}}),\s+{STATES}\b")),
            group: 1,
            category: Category::Location,
            keyword_value: false,
        },
        Rule { re: re(&format!(r"\b{STATES}\s+(\d{{5}}(?:-\d{{4}})?)\b")), group: 1, category: Category::Zip, keyword_value: false },
        Rule { re: re(r"(?i)\b(?:zip|zip\s*code|postal\s*code|zipcode)[\s:#]*(\d{5}(?:-\d{4})?)\b"), group: 1, category: Category::Zip, keyword_value: false },
        Rule { re: re(r"\b\d{5}-\d{4}\b"), group: 0, category: Category::Zip, keyword_value: false },
        Rule { re: re(&format!(r"\b({CAP_WORD}(?:\s+{CAP_WORD})?\s+(?:County|Parish|Borough|Township|Village))\b")), group: 1, category: Category::Location, keyword_value: false },
        Rule {
            re: re(&format!(r"\b(?i:lives|living|lived|resides|residing|moved|relocated|born|grew up|visiting|travel(?:l)?ed|trip|home|transferred|arrived|came|commutes|works)\s+(?i:in|to|from|at|near)\s+({CAP_WORD}(?:[ -]{CAP_WORD}){{0,2}})")),
            group: 1,
            category: Category::Location,
            keyword_value: false,
        },
    ];
    rules.extend(keyword_rules());
    rules
}

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(pattern_rules);

/// A word-ish token: letters, apostrophes, hyphens, and an optional trailing period for
/// initials and titles.
static TOKEN: LazyLock<Regex> = LazyLock::new(|| re(r"\p{L}[\p{L}\p{M}'’-]*\.?"));
static TITLES: &[&str] = &["mr", "mrs", "ms", "miss", "mx", "dr", "prof", "professor", "sr", "sra", "nurse", "rev"];
/// Words after which a capitalised word is a person: role labels in notes and forms.
static NAME_CUES: &[&str] = &[
    "patient", "pt", "name", "attending", "provider", "physician", "pcp", "surgeon", "resident", "intern",
    "signed", "seen", "referred", "cc", "spouse", "wife", "husband", "son", "daughter", "mother", "father",
    "sister", "brother", "contact", "guardian", "caregiver", "partner", "friend", "neighbor", "neighbour",
    "by", "dictated", "author", "aunt", "uncle", "grandson", "granddaughter", "niece", "nephew", "mom", "dad",
];
/// Credentials after a name ("Jane Roe, MD"): the name before them is a person.
static CREDENTIALS: &[&str] = &["md", "do", "rn", "np", "pa", "pa-c", "lpn", "cna", "phd", "dds", "dmd", "facp", "mph", "aprn", "crna", "pharmd"];

#[derive(Debug, Clone)]
struct Tok {
    start: usize,
    end: usize,
    /// Lowercase, without trailing period or possessive.
    key: String,
    capitalised: bool,
    all_caps: bool,
    initial: bool,
}

fn tokens(text: &str) -> Vec<Tok> {
    TOKEN
        .find_iter(text)
        .map(|m| {
            let raw = m.as_str();
            let trimmed = raw.trim_end_matches('.');
            let base = trimmed.trim_end_matches("'s").trim_end_matches("’s");
            let first = base.chars().next().unwrap_or('a');
            let letters: Vec<char> = base.chars().filter(|c| c.is_alphabetic()).collect();
            let all_caps = letters.len() > 1 && letters.iter().all(|c| c.is_uppercase());
            // The span excludes the possessive and a sentence-ending period.
            let end = m.start() + base.len();
            Tok {
                start: m.start(),
                end,
                key: base.to_lowercase().replace('’', "'"),
                capitalised: first.is_uppercase(),
                all_caps,
                initial: letters.len() == 1 && first.is_uppercase() && raw.ends_with('.'),
            }
        })
        .collect()
}

/// Whether only spaces (and at most one comma) separate two tokens, so they read as one name.
fn adjacent(text: &str, a: &Tok, b: &Tok) -> bool {
    let gap = &text[a.end..b.start];
    let gap = gap.trim_start_matches('.');
    gap.len() <= 3 && gap.chars().all(|c| c == ' ' || c == ',') && !gap.contains("  ")
}

/// O'Sullivan, McAllister, MacLeod, D'Angelo: surnames by their shape.
fn surname_shaped(key: &str) -> bool {
    (key.starts_with("o'") || key.starts_with("d'") || key.starts_with("mc") || key.starts_with("mac")) && key.len() >= 4
        || key.contains('-') && key.split('-').all(|p| p.len() >= 2)
}

/// Whether a token after a cue word ("by", "with", "patient") can be the name: capitalised or
/// in capitals, not an ordinary word ("by Health", "living with HIV", "recommended by WHO")
/// unless the name lists have it ("seen by Baker"), and in capitals only when long or listed
/// (short capitals are acronyms).
fn cue_may_name(t: &Tok, next: Option<&Tok>) -> bool {
    if !(t.capitalised || t.all_caps) || is_stopword(&t.key) || t.key.len() < 2 {
        return false;
    }
    if is_english(&t.key) && !in_dict(t) {
        return false;
    }
    // A name in capitals on a form ("PATIENT: YUSUF BRENNAN") comes with another capitalised part.
    !t.all_caps || in_dict(t) || t.key.chars().count() > 5 || next.is_some_and(|n| n.all_caps && !is_english(&n.key))
}

fn in_dict(t: &Tok) -> bool {
    let k = t.key.as_str();
    is_first(k) || is_last(k) || k.split('-').all(|p| is_first(p) || is_last(p)) && k.contains('-')
}

/// Names: titles, cue words, credentials, first+last dictionary pairs, and single first names
/// not on the stoplist. Every token of a name found once is then removed wherever else it
/// occurs in the document ("Mr. Okafor" makes every "Okafor" go).
fn name_spans(text: &str, known_name_parts: &[String]) -> Vec<Span> {
    let toks = tokens(text);
    let mut is_name = vec![false; toks.len()];
    for i in 0..toks.len() {
        let t = &toks[i];
        let prev = i.checked_sub(1).map(|j| &toks[j]);
        // After a title: the next one to three capitalised tokens (initials included).
        if TITLES.contains(&t.key.as_str()) && (t.capitalised || t.all_caps) {
            let mut j = i + 1;
            let mut taken = 0;
            while j < toks.len() && taken < 3 && adjacent(text, &toks[j - 1], &toks[j]) {
                let n = &toks[j];
                // "Dr. da Conceição", "Mr. van der Berg": a particle joins the name that follows.
                let particle = PARTICLES.contains(&n.key.as_str()) && toks.get(j + 1).is_some_and(|m| adjacent(text, n, m) && (m.capitalised || PARTICLES.contains(&m.key.as_str())));
                if particle {
                    is_name[j] = true;
                    j += 1;
                    continue;
                }
                if !(n.capitalised || n.all_caps) || CREDENTIALS.contains(&n.key.as_str()) {
                    break;
                }
                // "Mrs. Clark. Home address": a period after a whole word ends the name.
                if taken > 0 && !toks[j - 1].initial && text[toks[j - 1].end..n.start].contains('.') {
                    break;
                }
                if taken > 0 && !(in_dict(n) || n.initial) && is_stopword(&n.key) {
                    break;
                }
                is_name[j] = true;
                taken += 1;
                j += 1;
            }
            continue;
        }
        let first = is_first(&t.key);
        let last = is_last(&t.key);
        let next = toks.get(i + 1).filter(|n| adjacent(text, t, n));
        // First + Last (or First + Initial + Last), both capitalised, both in the lists.
        if (t.capitalised || t.all_caps) && first
            && let Some(n) = next {
                let (n2, skip) = if n.initial { (toks.get(i + 2).filter(|m| adjacent(text, n, m)), true) } else { (Some(n), false) };
                if let Some(n2) = n2
                    && (n2.capitalised || n2.all_caps) && (is_last(&n2.key) || is_first(&n2.key) || surname_shaped(&n2.key) || skip)
                        && !(is_stopword(&t.key) && is_stopword(&n2.key))
                    {
                        is_name[i] = true;
                        if skip {
                            is_name[i + 1] = true;
                            is_name[i + 2] = true;
                        } else {
                            is_name[i + 1] = true;
                        }
                    }
            }
        // "Last, First" as in registration lists.
        if (t.capitalised || t.all_caps) && last && !is_stopword(&t.key)
            && let Some(n) = toks.get(i + 1) {
                let gap = &text[t.end..n.start];
                if gap.trim() == "," && (n.capitalised || n.all_caps) && is_first(&n.key) && !is_stopword(&n.key) {
                    is_name[i] = true;
                    is_name[i + 1] = true;
                }
            }
        // A capitalised first name on its own ("Maria reports ...").
        if t.capitalised && !t.all_caps && first && !is_stopword(&t.key) && t.key.len() >= 3 && !is_eponym(&t.key) {
            is_name[i] = true;
        }
        // After a cue word ("Patient: Okafor", "wife Adaeze"), one or two capitalised tokens.
        if let Some(p) = prev {
            let gap = &text[p.end..t.start];
            let prev2 = i.checked_sub(2).map(|j| &toks[j]);
            let verb_with = p.key == "with"
                && prev2.is_some_and(|q| ["spoke", "talked", "met", "visited", "lives", "living", "staying", "accompanied", "arrived", "came", "up", "booked", "book", "consult", "discussed", "discuss", "reviewed", "appointment", "meeting", "session"].contains(&q.key.as_str()));
            if (NAME_CUES.contains(&p.key.as_str()) || verb_with)
                && gap.len() <= 3
                && gap.chars().all(|c| c == ' ' || c == ':' || c == ',')
                && cue_may_name(t, next)
                && !(is_eponym(&t.key) && is_eponym_context(&text[t.end..]))
            {
                is_name[i] = true;
                if let Some(n) = next
                    && (n.capitalised || n.all_caps) && !is_stopword(&n.key) && !CREDENTIALS.contains(&n.key.as_str()) {
                        is_name[i + 1] = true;
                    }
            }
        }
        // Before a credential ("Okafor, MD"; "Adaeze Okafor RN"): the capitalised run before it.
        if CREDENTIALS.contains(&t.key.as_str()) && (t.all_caps || t.key.contains('-')) {
            let mut j = i;
            let mut taken = 0;
            while j > 0 && taken < 3 {
                let p = &toks[j - 1];
                let gap = &text[p.end..toks[j].start];
                if !(gap.trim().is_empty() || gap.trim() == ",") || gap.len() > 3 || !(p.capitalised || p.all_caps) || is_stopword(&p.key) && !in_dict(p) {
                    break;
                }
                if TITLES.contains(&p.key.as_str()) {
                    break;
                }
                is_name[j - 1] = true;
                taken += 1;
                j -= 1;
            }
        }
    }
    context_names(text, &toks, &mut is_name);
    // Extend a found name over the capitalised tokens after it ("Linda Okafor", "Marcus J.
    // O'Sullivan"), and take an unknown capitalised token before a surname ("Nkechi Johnson").
    for i in 0..toks.len().saturating_sub(1) {
        let n = &toks[i + 1];
        // A sentence break ends a name: "... Thompson. Home address ..." is two sentences.
        let gap = &text[toks[i].end..n.start];
        let joined = adjacent(text, &toks[i], n) && !gap.contains(',') && (toks[i].initial || !gap.contains('.'));
        let n_ok = (n.capitalised || n.all_caps) && !is_stopword(&n.key) && !CREDENTIALS.contains(&n.key.as_str()) && !TITLES.contains(&n.key.as_str());
        if is_name[i] && !is_name[i + 1] && joined && n_ok && (n.key.len() >= 2 || n.initial) {
            is_name[i + 1] = true;
        }
        if is_name[i] && toks[i].initial && joined && n_ok {
            is_name[i + 1] = true;
        }
        let t = &toks[i];
        if !is_name[i] && joined && (t.capitalised || t.all_caps) && !is_stopword(&t.key) && t.key.len() >= 3
            && !TITLES.contains(&t.key.as_str()) && !CREDENTIALS.contains(&t.key.as_str())
            && n_ok && (is_last(&n.key) || surname_shaped(&n.key)) && is_name[i + 1]
        {
            is_name[i] = true;
        }
    }
    // Propagate: every token ever seen as part of a name in this text, or known from the
    // structured record, goes wherever it appears (any case).
    // A name found by a rule reaches only occurrences written as a name (capitalised): "Hope"
    // the person does not take the word "hope". Parts from the structured record are certain
    // and go in any case.
    let seen: HashSet<String> = toks.iter().zip(&is_name).filter(|(t, n)| **n && !t.initial && t.key.len() >= 2).map(|(t, _)| t.key.clone()).collect();
    let known: HashSet<String> = known_name_parts.iter().map(|p| p.to_lowercase()).filter(|k| k.len() >= 2).collect();
    for (i, t) in toks.iter().enumerate() {
        if is_name[i] || TITLES.contains(&t.key.as_str()) {
            continue;
        }
        // A hyphenated token holding a name part ("castellanos-record") goes too.
        let holds = |set: &HashSet<String>| set.contains(&t.key) || t.key.contains('-') && t.key.split('-').any(|p| set.contains(p));
        if holds(&known) || (t.capitalised || t.all_caps) && holds(&seen) {
            is_name[i] = true;
        }
    }
    toks.iter()
        .zip(&is_name)
        .filter(|(t, n)| **n && !TITLES.contains(&t.key.as_str()))
        .map(|(t, _)| {
            // An initial keeps its period out of the span only when the period ends a sentence;
            // simpler and safe: include it.
            let end = if t.initial { (t.end + 1).min(text.len()) } else { t.end };
            Span { start: t.start, end, category: Category::Name }
        })
        .collect()
}

/// Particles inside names ("da Conceição", "van der Berg", "de la Cruz").
static PARTICLES: &[&str] = &["da", "de", "del", "della", "der", "den", "di", "do", "dos", "das", "du", "van", "von", "la", "le", "ten", "ter", "bin", "ibn", "al", "el", "y"];
/// Form labels whose value is a person ("Patient name:", "Next of kin:", "Consultant:").
static NAME_LABELS: &[&str] = &[
    "name", "names", "patient", "surname", "forename", "forenames", "kin", "contact", "consultant", "attending", "physician",
    "doctor", "gp", "nurse", "provider", "from", "to", "signed", "signature", "guardian", "spouse", "referrer", "author", "cc",
    "re", "holder", "by", "clinician", "therapist", "pharmacist", "caregiver", "carer", "parent", "mother", "father", "employer",
];
/// Words before a name in letters and speech ("Dear …", "my name is …", "Thanks, …").
static NAME_LEADS: &[&str] = &["dear", "hi", "hello", "thanks", "thank", "regards", "sincerely", "faithfully", "cheers", "is", "i", "am", "called", "named", "s", "sig"];
/// Verbs after a person at the start of a sentence ("Jolanthe reports …").
static PERSON_VERBS: &[&str] = &[
    "reports", "reported", "presents", "presented", "denies", "denied", "states", "stated", "says", "said", "asks", "asked",
    "is", "was", "has", "had", "joined", "walked", "phoned", "called", "resting", "rested", "settled", "drove", "agrees",
    "agreed", "declined", "lives", "lived", "moved", "visited", "came", "comes", "complains", "complained", "returns",
    "returned", "tolerated", "remains", "feels", "felt", "notes", "noted", "would", "will", "wants", "wishes", "needs",
    "brought", "arrived", "attended", "underwent", "received", "continues", "understands", "consented", "signed", "and",
];

/// A capitalised word that only a person or a place can be: not an ordinary English word,
/// eponym, country, month, medical term or acronym.
fn suspect(t: &Tok) -> bool {
    t.capitalised && !t.all_caps && t.key.chars().count() >= 2 && !is_place_word_safe(&t.key) && !CREDENTIALS.contains(&t.key.as_str())
}

/// Names by their position, for names no list has: the value of a name label ("Surname: …"),
/// the words after "Dear", "my name is", "Thanks,", a line that is only a name (a signature),
/// and capitalised words no vocabulary knows that stand where a person stands (beside another
/// name part, after a cue word, or before a verb such as "reports").
fn context_names(text: &str, toks: &[Tok], is_name: &mut [bool]) {
    let gap = |a: &Tok, b: &Tok| &text[a.end..b.start];
    // Take the name-shaped run starting at `i` (capitalised tokens, initials, particles, and one
    // "Last, First" comma); returns how many were taken.
    let take_run = |is_name: &mut [bool], i: usize, strict: bool| -> usize {
        let mut j = i;
        let mut commas = 0;
        while j < toks.len() && j - i < 5 {
            let n = &toks[j];
            if j > i {
                let g = gap(&toks[j - 1], n);
                let g = if toks[j - 1].initial { g.strip_prefix('.').unwrap_or(g) } else { g };
                let comma = g.trim() == ",";
                if !(g.trim().is_empty() || comma && commas == 0) || g.contains('\n') || g.len() > 3 {
                    break;
                }
                if comma {
                    commas += 1;
                }
            }
            // A particle inside a name, or starting one ("van Tuijl"), when a capitalised part follows.
            let particle = PARTICLES.contains(&n.key.as_str()) && toks.get(j + 1).is_some_and(|m| m.capitalised || PARTICLES.contains(&m.key.as_str()));
            let name_like = (n.capitalised || n.all_caps) && !CREDENTIALS.contains(&n.key.as_str()) && !TITLES.contains(&n.key.as_str());
            if !(name_like || particle) || strict && !(suspect(n) || in_dict(n) || n.initial || particle) {
                break;
            }
            // A comma-joined word must itself look like a name part ("Nowak, Anna").
            if j > i && gap(&toks[j - 1], n).contains(',') && !(suspect(n) || is_first(&n.key)) {
                break;
            }
            is_name[j] = true;
            j += 1;
        }
        j - i
    };
    for i in 0..toks.len() {
        let t = &toks[i];
        let next = toks.get(i + 1);
        // Form label: "Patient name: …", "Family name: …", "Next of kin: …".
        if NAME_LABELS.contains(&t.key.as_str())
            && let Some(n) = next
            && {
                let g = gap(t, n);
                g.trim_start().starts_with([':', '-', '?']) && !g.contains('\n')
            }
            && (n.capitalised || n.all_caps || PARTICLES.contains(&n.key.as_str()))
            && !TITLES.contains(&n.key.as_str())
        {
            take_run(is_name, i + 1, false);
            continue;
        }
        // Letters and speech: "Dear Ana", "my name is Ana", "Thanks, Ana", "I, Ana Silva, …".
        if NAME_LEADS.contains(&t.key.as_str())
            && let Some(n) = next
            && !gap(t, n).contains('\n')
            && n.capitalised
            && !TITLES.contains(&n.key.as_str())
        {
            let g = gap(t, n);
            let is_lead = match t.key.as_str() {
                "is" => i >= 2 && toks[i - 1].key == "name" && toks[i - 2].key == "my" || i >= 1 && toks[i - 1].key == "this",
                "i" | "am" => g.trim() == "," || t.key == "am",
                "s" => i >= 1 && toks[i - 1].key.ends_with("name") || text[..t.start].ends_with("name'") || text[..t.start].ends_with("name’"),
                "sig" => g.contains(':'),
                _ => true,
            };
            if is_lead && (suspect(n) || in_dict(n)) {
                take_run(is_name, i + 1, true);
            }
        }
        // The vocabulary rule: an unknown capitalised word beside a name part, after a cue word,
        // or at a sentence start before a person's verb.
        if suspect(t) && !is_name[i] && !is_eponym_context(&text[t.end..]) {
            let prev = i.checked_sub(1).map(|j| &toks[j]);
            let joined_prev = prev.is_some_and(|p| gap(p, t).trim().is_empty() && !gap(p, t).contains('\n'));
            let joined_next = next.is_some_and(|n| gap(t, n).trim().is_empty() && !gap(t, n).contains('\n'));
            let comma_prev = prev.is_some_and(|p| gap(p, t).trim() == "," && (suspect(p) || is_last(&p.key) && p.capitalised));
            let comma_next = next.is_some_and(|n| gap(t, n).trim() == "," && (suspect(n) || is_first(&n.key) && n.capitalised));
            let pair = joined_prev && prev.is_some_and(|p| suspect(p) || is_name[i - 1] || p.initial)
                || joined_next && next.is_some_and(|n| suspect(n) || in_dict(n) && n.capitalised && !n.all_caps || n.initial)
                || comma_prev
                || comma_next;
            let after_cue = prev.is_some_and(|p| NAME_CUES.contains(&p.key.as_str()) || p.key == "for" || PARTICLES.contains(&p.key.as_str()) && i >= 2 && is_name[i - 2]);
            let before_verb = next.is_some_and(|n| PERSON_VERBS.contains(&n.key.as_str()) && gap(t, n).trim().is_empty());
            let before_credential = next.is_some_and(|n| CREDENTIALS.contains(&n.key.as_str()) && n.all_caps);
            if pair || after_cue || before_verb || before_credential {
                is_name[i] = true;
            }
        }
    }
    // "Arie van Loon", "Kyan van der Lede": particles after a name part or an unknown word,
    // ending in a capitalised word, are the rest of the name.
    for i in 0..toks.len() {
        if !(is_name[i] || suspect(&toks[i])) {
            continue;
        }
        let mut k = i + 1;
        while toks.get(k).is_some_and(|m| PARTICLES.contains(&m.key.as_str()) && gap(&toks[k - 1], m).trim().is_empty()) {
            k += 1;
        }
        if k > i + 1 && toks.get(k).is_some_and(|m| m.capitalised && gap(&toks[k - 1], m).trim().is_empty()) {
            for flag in is_name.iter_mut().take(k + 1).skip(i) {
                *flag = true;
            }
        }
    }
    // A line that is only a name: a signature, an address block's first line.
    let mut line_start = 0;
    let mut first_tok = 0;
    for line in text.split_inclusive('\n') {
        let line_end = line_start + line.len();
        while first_tok < toks.len() && toks[first_tok].start < line_start {
            first_tok += 1;
        }
        let idx: Vec<usize> = (first_tok..toks.len()).take_while(|&k| toks[k].start < line_end).filter(|&k| toks[k].end <= line_end).collect();
        let bare: String = line.chars().filter(|c| !c.is_alphabetic() && !c.is_whitespace() && !matches!(c, ',' | '.' | '-' | '\'' | '’')).collect();
        if (2..=4).contains(&idx.len()) && bare.is_empty() {
            let parts: Vec<&Tok> = idx.iter().map(|&k| &toks[k]).filter(|t| !CREDENTIALS.contains(&t.key.as_str())).collect();
            let all_name_shaped = parts.iter().all(|t| (t.capitalised || PARTICLES.contains(&t.key.as_str())) && !TITLES.contains(&t.key.as_str()));
            let unknown = parts.iter().filter(|t| suspect(t) || in_dict(t) || t.initial || PARTICLES.contains(&t.key.as_str())).count();
            if all_name_shaped && parts.len() >= 2 && unknown == parts.len() {
                for &k in &idx {
                    if !CREDENTIALS.contains(&toks[k].key.as_str()) {
                        is_name[k] = true;
                    }
                }
            }
        }
        line_start = line_end;
    }
}

/// Exact occurrences (case-insensitive, on word boundaries) of identifiers known from
/// structured data. Phone-like values also match with any punctuation between the digits.
fn known_spans(text: &str, known: &KnownIdentifiers) -> Vec<Span> {
    let mut out = Vec::new();
    for (category, value) in &known.items {
        let digits: String = value.chars().filter(char::is_ascii_digit).collect();
        let pattern = if matches!(category, Category::Phone | Category::Fax | Category::Ssn) && digits.len() >= 7 {
            let sep = r"[\s().-]*";
            format!(r"(?:\+?1{sep})?{}", digits.chars().map(|c| c.to_string()).collect::<Vec<_>>().join(sep))
        } else if *category == Category::Name {
            continue; // names go through name_spans' propagation, part by part
        } else {
            regex::escape(value)
        };
        let Ok(rx) = Regex::new(&format!(r"(?i)(?:^|\b|\B){pattern}(?:\b|$|\B)")) else { continue };
        for m in rx.find_iter(text) {
            let s = m.as_str();
            // Word boundaries by hand: regex's \b after a non-word character is not a boundary.
            let before_ok = text[..m.start()].chars().next_back().is_none_or(|c| !c.is_alphanumeric());
            let after_ok = text[m.end()..].chars().next().is_none_or(|c| !c.is_alphanumeric());
            if before_ok && after_ok && !s.trim().is_empty() {
                out.push(Span { start: m.start(), end: m.end(), category: *category });
            }
        }
    }
    out
}

/// The phone rule cannot see "Fax:" before a number; decide from the words just before it.
fn refine_phone(text: &str, span: &mut Span) {
    if span.category != Category::Phone {
        return;
    }
    let from = text[..span.start].char_indices().rev().nth(24).map_or(0, |(i, _)| i);
    let before = text[from..span.start].to_lowercase();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let before = &before[line_start..];
    let fax = before.rfind("fax");
    let phone = ["phone", "tel", "cell", "mobile", "call", "ph"].iter().filter_map(|w| before.rfind(w)).max();
    if fax.is_some() && fax > phone {
        span.category = Category::Fax;
    }
}

/// Where a "month day" match is really a word: "may 3 times", "March 2 weeks", "a 5 mar".
fn false_date(text: &str, span: &Span) -> bool {
    let s = &text[span.start..span.end];
    let first = s.chars().next().unwrap_or(' ');
    if first.is_alphabetic() && first.is_lowercase() {
        let word: String = s.chars().take_while(|c| c.is_alphabetic()).collect();
        if ["may", "mar", "march", "jan", "sept", "dec", "june", "july"].contains(&word.as_str()) {
            return true;
        }
    }
    // Only the next word matters; lowering the whole rest of the text would make long
    // documents quadratic.
    let after: String = text[span.end..].trim_start().chars().take(12).collect::<String>().to_lowercase();
    ["times", "weeks", "days", "hours", "mg", "tabs", "units", "minutes"].iter().any(|w| after.starts_with(w)) && !s.contains(',')
}

/// Every identifier in `text`, with overlaps resolved (the longer span wins; on a tie, the more
/// specific category), sorted by position.
pub fn detect(text: &str, known: &KnownIdentifiers) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    for rule in RULES.iter() {
        for caps in rule.re.captures_iter(text) {
            let Some(m) = caps.get(rule.group) else { continue };
            let mut end = m.end();
            // URLs and ids do not end in sentence punctuation.
            while end > m.start() && matches!(text.as_bytes()[end - 1], b'.' | b',' | b';' | b':' | b')') && rule.category != Category::Date {
                end -= 1;
            }
            if end <= m.start() {
                continue;
            }
            if rule.keyword_value && !plausible_keyword_value(&text[m.start()..end]) {
                continue;
            }
            let mut span = Span { start: m.start(), end, category: rule.category };
            refine_phone(text, &mut span);
            if span.category == Category::Date && false_date(text, &span) {
                continue;
            }
            if span.category == Category::Vehicle && rule.group == 0 {
                // A bare 17-character run is a VIN only when it mixes letters and digits.
                let s = &text[span.start..span.end];
                if !(s.chars().any(|c| c.is_ascii_digit()) && s.chars().any(|c| c.is_ascii_alphabetic())) {
                    continue;
                }
            }
            if span.category == Category::Location {
                // "Seen by Dr. Roe, MD": MD here is a credential, not Maryland.
                let after = text[span.end..].trim_start_matches([',', ' ']);
                let cred = ["MD", "DO", "PA", "NP", "RN"].iter().any(|c| after.starts_with(c) && !after[c.len()..].trim_start().starts_with(|ch: char| ch.is_ascii_digit()));
                if cred {
                    continue;
                }
                if is_stopword(&text[span.start..span.end].to_lowercase()) {
                    continue;
                }
            }
            spans.push(span);
        }
    }
    let name_parts: Vec<String> = known
        .items
        .iter()
        .filter(|(c, _)| *c == Category::Name)
        .flat_map(|(_, v)| v.split([' ', ',']).filter(|p| !p.is_empty()).map(str::to_owned).collect::<Vec<_>>())
        .collect();
    spans.extend(super::numbers::spans(text));
    let places = super::places::spans(text);
    spans.extend(places.spans);
    spans.extend(name_spans(text, &name_parts));
    spans.extend(known_spans(text, known));
    let mut spans = resolve(spans);
    spans.extend(super::places::address_fill(text, &places.address_values, &spans));
    let spans = resolve(spans).into_iter().map(|s| whole_words(text, s)).collect();
    // Widening can make neighbours overlap; merge them again.
    resolve(spans)
}

/// Part of a word: a letter or digit of any script, or a combining mark (a decomposed "á" is
/// "a" + U+0301).
fn word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '\u{300}'..='\u{36f}' | '\u{1ab0}'..='\u{1aff}' | '\u{1dc0}'..='\u{1dff}' | '\u{20d0}'..='\u{20ff}' | '\u{fe20}'..='\u{fe2f}')
}

/// Widen a span to whole words: a replacement that keeps part of a word ("[NAME-1]álffy")
/// leaks the rest of it.
fn whole_words(text: &str, mut span: Span) -> Span {
    while let Some(c) = text[..span.start].chars().next_back().filter(|c| word_char(*c)) {
        span.start -= c.len_utf8();
    }
    while let Some(c) = text[span.end..].chars().next().filter(|c| word_char(*c)) {
        span.end += c.len_utf8();
    }
    span
}

/// Merge overlapping spans into disjoint ones: the longest wins, ties go to the earlier
/// (more specific) category; a shorter span inside a longer one is dropped, a partial overlap
/// is merged into one span of the winner's category so nothing of either is left.
fn resolve(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_by_key(|s| (s.start, std::cmp::Reverse(s.end)));
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        if let Some(last) = out.last_mut()
            && s.start < last.end {
                if s.end > last.end {
                    let keep = if s.end - s.start > last.end - last.start { s.category } else { last.category };
                    last.end = s.end;
                    last.category = keep;
                }
                continue;
            }
        out.push(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<(String, Category)> {
        detect(text, &KnownIdentifiers::default()).into_iter().map(|s| (text[s.start..s.end].to_owned(), s.category)).collect()
    }

    #[test]
    fn rules_compile_and_find_the_obvious() {
        let f = found("Call 555-201-3344 or email jo.ann@example.org; MRN: 00123456.");
        assert!(f.contains(&("555-201-3344".into(), Category::Phone)), "{f:?}");
        assert!(f.contains(&("jo.ann@example.org".into(), Category::Email)), "{f:?}");
        assert!(f.contains(&("00123456".into(), Category::Mrn)), "{f:?}");
    }

    #[test]
    fn clinical_numbers_are_not_identifiers() {
        let f = found("BP 128/82, HR 74, T 98.6 F, SpO2 97%. Metformin 500 mg twice daily for 2 weeks. A1c 7.2%. Follow up in 3 months. She may 2 times a day.");
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn fax_is_told_from_phone_by_context() {
        let f = found("Tel: (555) 201-3344  Fax: (555) 201-3345");
        assert_eq!(f, vec![("(555) 201-3344".into(), Category::Phone), ("(555) 201-3345".into(), Category::Fax)]);
    }

    #[test]
    fn names_from_titles_pairs_and_propagation() {
        let f = found("Mr. Okonkwo-Bright was seen with his wife Adaeze. Okonkwo-Bright denies pain. John Smith, MD.");
        let names: Vec<&str> = f.iter().filter(|(_, c)| *c == Category::Name).map(|(s, _)| s.as_str()).collect();
        assert_eq!(names, vec!["Okonkwo-Bright", "Adaeze", "Okonkwo-Bright", "John", "Smith"]);
    }

    #[test]
    fn city_state_and_lives_in() {
        let f = found("Address: Springfield, IL 62704. Lives in Millbrook. Transferred from Tucson.");
        assert_eq!(
            f,
            vec![
                ("Springfield".into(), Category::Location),
                ("62704".into(), Category::Zip),
                ("Millbrook".into(), Category::Location),
                ("Tucson".into(), Category::Location)
            ]
        );
    }

    #[test]
    fn trial_arms_and_measures_are_not_plan_ids() {
        let f = found("Median survival, group: 3.3 months; group 2 versus group 1; case 4 of 12. Group number: GRP-20931.");
        assert_eq!(f, vec![("GRP-20931".into(), Category::HealthPlan)]);
    }

    #[test]
    fn acronyms_and_words_after_cue_words_are_not_names() {
        let f = found("Adults living with HIV, as recommended by WHO, were seen by Health services.");
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn a_name_reaches_only_occurrences_written_as_a_name() {
        let text = "Dr. Hope reviewed the scan. There is hope; Hope will call.";
        let f = found(text);
        assert_eq!(f, vec![("Hope".into(), Category::Name), ("Hope".into(), Category::Name)], "{f:?}");
    }

    #[test]
    fn names_of_any_script_are_replaced_whole() {
        for (text, name) in [("Mr. Pálffy was seen.", "Pálffy"), ("Seen with Mrs. Łukasiewicz today.", "Łukasiewicz"), ("Dr. Ødegård signed.", "Ødegård")] {
            let f = found(text);
            assert!(f.contains(&(name.to_owned(), Category::Name)), "{text}: {f:?}");
        }
    }

    /// Property: whatever the text, every span starts and ends on a word boundary (no letter,
    /// digit or combining mark of any script on both sides of a cut).
    #[test]
    fn spans_always_cover_whole_words() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        const PIECES: &[&str] = &[
            "Mr.", "Dr.", "Mrs.", "Pálffy", "Łódź", "José", "Müller", "O'Brien", "Smith", "John", "Nguyễn", "Ørsted", "Zoë",
            "a\u{301}", "é", "ß", "İ", "ﬁ", "Ⅻ", "٣", "日本", "Иванов", "Σωκράτης", "Kowalczykówna", "x", "ext.", "555-201-3344",
            "ID:", "MRN:", "12345678", "group:", "3.3", "03/14/2024", "March", "14,", "2024", "St.", "12", "Main", "Street", "Springfield,",
            "IL", "62704", "lives", "in", "with", "by", "the", " ", " ", ", ", ". ", "\n", "-", "'", "@", "jo@x.org", "#", "9", "Ä",
        ];
        let mut rng = StdRng::seed_from_u64(0x5eed);
        for case in 0..3000 {
            let n = rng.random_range(1..14);
            let mut text = String::new();
            for _ in 0..n {
                text.push_str(PIECES[rng.random_range(0..PIECES.len())]);
                if rng.random_bool(0.6) {
                    text.push(' ');
                }
            }
            for s in detect(&text, &KnownIdentifiers::default()) {
                let before = text[..s.start].chars().next_back();
                let first = text[s.start..].chars().next();
                let last = text[..s.end].chars().next_back();
                let after = text[s.end..].chars().next();
                let cut = |a: Option<char>, b: Option<char>| a.is_some_and(word_char) && b.is_some_and(word_char);
                assert!(!cut(before, first) && !cut(last, after), "case {case}: {:?} cut from {text:?}", &text[s.start..s.end]);
            }
        }
    }

    #[test]
    fn ages_over_89_only() {
        let f = found("A 92-year-old woman; her husband is 88 years old; aged 101.");
        assert_eq!(f, vec![("92".into(), Category::Age), ("101".into(), Category::Age)]);
    }
}
