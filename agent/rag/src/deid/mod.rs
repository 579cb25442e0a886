//! De-identification before anything is embedded or indexed.
//!
//! The HIPAA Safe Harbor identifiers (45 CFR 164.514(b)(2)) found by [`detect`] are replaced by
//! stable per-patient pseudonyms: the same name in two notes of one patient becomes the same
//! `[NAME-3]`; every date of a patient moves by the same secret number of days, so intervals
//! survive ("seen 2 weeks after surgery"); ages over 89 become `90+`. The mapping back lives in
//! [`Pseudonyms`], which the index keeps in its own table and reads only to re-identify an
//! answer for a user allowed to see that patient.
//!
//! Not covered in text: full-face photographs and biometric images (the ingester takes no
//! images), and identifiers no rule or dictionary knows of and no structured record names
//! (the recall test below measures how often that happens on a synthetic set).

mod detect;
pub(crate) use detect::is_english;
mod numbers;
mod places;

use std::collections::HashMap;
use std::sync::LazyLock;

use jiff::civil::Date;
use regex::Regex;
use serde::{Deserialize, Serialize};

pub use detect::{KnownIdentifiers, Span, detect};

/// A Safe Harbor identifier category. The tag is what appears in pseudonyms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Category {
    Name,
    /// Street address, PO box, apartment.
    Address,
    /// City, county, town: a geographic unit smaller than a state.
    Location,
    Zip,
    /// Any date element but the year.
    Date,
    /// An age over 89.
    Age,
    Phone,
    Fax,
    Email,
    Ssn,
    Mrn,
    HealthPlan,
    Account,
    License,
    Vehicle,
    Device,
    Url,
    Ip,
    Biometric,
    /// Any other unique identifying number or code.
    OtherId,
}

impl Category {
    pub const ALL: [Category; 20] = [
        Category::Name,
        Category::Address,
        Category::Location,
        Category::Zip,
        Category::Date,
        Category::Age,
        Category::Phone,
        Category::Fax,
        Category::Email,
        Category::Ssn,
        Category::Mrn,
        Category::HealthPlan,
        Category::Account,
        Category::License,
        Category::Vehicle,
        Category::Device,
        Category::Url,
        Category::Ip,
        Category::Biometric,
        Category::OtherId,
    ];

    pub fn tag(self) -> &'static str {
        match self {
            Category::Name => "NAME",
            Category::Address => "ADDRESS",
            Category::Location => "LOCATION",
            Category::Zip => "ZIP",
            Category::Date => "DATE",
            Category::Age => "AGE",
            Category::Phone => "PHONE",
            Category::Fax => "FAX",
            Category::Email => "EMAIL",
            Category::Ssn => "SSN",
            Category::Mrn => "MRN",
            Category::HealthPlan => "PLAN",
            Category::Account => "ACCOUNT",
            Category::License => "LICENSE",
            Category::Vehicle => "VEHICLE",
            Category::Device => "DEVICE",
            Category::Url => "URL",
            Category::Ip => "IP",
            Category::Biometric => "BIOMETRIC",
            Category::OtherId => "ID",
        }
    }

    pub fn from_tag(tag: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.tag() == tag)
    }
}

/// One pseudonym handed out: what the index stores in its mapping table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    pub category: Category,
    pub index: u32,
    /// The normalised original (lowercase; digits only for numbers), the lookup key.
    pub norm: String,
    /// The original as first seen, used when re-identifying.
    pub original: String,
}

impl MapEntry {
    pub fn pseudonym(&self) -> String {
        format!("[{}-{}]", self.category.tag(), self.index)
    }
}

/// One patient's (or the clinic library's) pseudonym state.
#[derive(Debug, Clone)]
pub struct Pseudonyms {
    /// Days added to every date of this patient; secret, never zero, at least a month.
    pub shift_days: i32,
    by_norm: HashMap<(Category, String), u32>,
    by_index: HashMap<(Category, u32), MapEntry>,
    next: HashMap<Category, u32>,
    /// Entries made since the last [`Pseudonyms::take_new`], for the store to persist.
    fresh: Vec<MapEntry>,
}

impl Pseudonyms {
    /// A new scope with a random shift of 30 to 365 days, forwards or backwards.
    pub fn new_random() -> Self {
        let magnitude: i32 = rand::random_range(30..=365);
        let sign = if rand::random::<bool>() { 1 } else { -1 };
        Self::with_shift(sign * magnitude)
    }

    pub fn with_shift(shift_days: i32) -> Self {
        Self { shift_days, by_norm: HashMap::new(), by_index: HashMap::new(), next: HashMap::new(), fresh: Vec::new() }
    }

    /// Rebuild from stored entries.
    pub fn load(shift_days: i32, entries: impl IntoIterator<Item = MapEntry>) -> Self {
        let mut p = Self::with_shift(shift_days);
        for e in entries {
            let next = p.next.entry(e.category).or_insert(1);
            *next = (*next).max(e.index + 1);
            p.by_norm.insert((e.category, e.norm.clone()), e.index);
            p.by_index.insert((e.category, e.index), e);
        }
        p
    }

    /// The pseudonym index for an original, making one if it is new.
    fn index_for(&mut self, category: Category, original: &str) -> u32 {
        let norm = normalise(category, original);
        if let Some(i) = self.by_norm.get(&(category, norm.clone())) {
            return *i;
        }
        let next = self.next.entry(category).or_insert(1);
        let index = *next;
        *next += 1;
        let entry = MapEntry { category, index, norm: norm.clone(), original: original.to_owned() };
        self.by_norm.insert((category, norm), index);
        self.by_index.insert((category, index), entry.clone());
        self.fresh.push(entry);
        index
    }

    /// Entries created since the last call, to be written to the mapping table.
    pub fn take_new(&mut self) -> Vec<MapEntry> {
        std::mem::take(&mut self.fresh)
    }

    pub fn len(&self) -> usize {
        self.by_index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }

    pub fn original(&self, category: Category, index: u32) -> Option<&str> {
        self.by_index.get(&(category, index)).map(|e| e.original.as_str())
    }
}

/// The lookup key of an original: case and punctuation do not make a new person or number.
fn normalise(category: Category, original: &str) -> String {
    match category {
        Category::Phone | Category::Fax | Category::Ssn | Category::Zip => {
            let d: String = original.chars().filter(char::is_ascii_digit).collect();
            // A leading country code 1 does not make a new number.
            if matches!(category, Category::Phone | Category::Fax) && d.len() == 11 && d.starts_with('1') { d[1..].to_owned() } else { d }
        }
        _ => original.to_lowercase().chars().filter(|c| c.is_alphanumeric() || matches!(c, '@' | '.' | '-' | '/' | ':')).collect(),
    }
}

/// A de-identified text and what was taken out of it.
#[derive(Debug, Clone)]
pub struct Deidentified {
    pub text: String,
    /// How many identifiers of each category were replaced (counts only, never the values).
    pub counts: HashMap<Category, usize>,
}

/// Replace every identifier in `text` with this patient's pseudonyms.
pub fn deidentify(text: &str, known: &KnownIdentifiers, scope: &mut Pseudonyms) -> Deidentified {
    let spans = detect(text, known);
    let mut out = String::with_capacity(text.len());
    let mut counts = HashMap::new();
    let mut at = 0;
    for s in spans {
        out.push_str(&text[at..s.start]);
        let original = &text[s.start..s.end];
        out.push_str(&replacement(s.category, original, scope));
        *counts.entry(s.category).or_insert(0) += 1;
        at = s.end;
    }
    out.push_str(&text[at..]);
    Deidentified { text: out, counts }
}

fn replacement(category: Category, original: &str, scope: &mut Pseudonyms) -> String {
    match category {
        Category::Age => "90+".to_owned(),
        Category::Date => match shift_date(original, scope.shift_days) {
            Some(shifted) => shifted,
            None => format!("[DATE-{}]", scope.index_for(category, original)),
        },
        // Names part by part, so "John Smith", "Smith, John" and "Mr. Smith" share pseudonyms.
        Category::Name => {
            let mut out = String::new();
            let mut word = String::new();
            let flush = |word: &mut String, out: &mut String, scope: &mut Pseudonyms| {
                if !word.is_empty() {
                    let w = word.trim_end_matches('.');
                    out.push_str(&format!("[NAME-{}]", scope.index_for(Category::Name, w)));
                    word.clear();
                }
            };
            for c in original.chars() {
                if c.is_whitespace() || c == ',' {
                    flush(&mut word, &mut out, scope);
                    out.push(c);
                } else {
                    word.push(c);
                }
            }
            flush(&mut word, &mut out, scope);
            out
        }
        _ => format!("[{}-{}]", category.tag(), scope.index_for(category, original)),
    }
}

const MONTH_NAMES: [&str; 12] =
    ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];

static NUMBERS: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    Regex::new(r"\d+|[A-Za-z]+").expect("static regex")
});

/// The parts of a date as written: a full date, a month and day, or a month and year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DateParts {
    Full(Date),
    MonthDay(i8, i8),
    MonthYear(i16, i8),
}

fn month_of(word: &str) -> Option<i8> {
    let w = word.to_lowercase();
    if w.len() < 3 {
        return None;
    }
    MONTH_NAMES.iter().position(|m| m.to_lowercase().starts_with(&w[..3])).map(|i| i as i8 + 1)
}

fn year_of(digits: &str) -> Option<i16> {
    let n: i16 = digits.parse().ok()?;
    match digits.len() {
        4 => Some(n),
        2 => Some(if n <= 29 { 2000 + n } else { 1900 + n }),
        _ => None,
    }
}

fn parse_date(text: &str) -> Option<DateParts> {
    let parts: Vec<&str> = NUMBERS.find_iter(text).map(|m| m.as_str()).collect();
    let month_word = parts.iter().position(|p| p.chars().all(char::is_alphabetic) && month_of(p).is_some());
    let nums: Vec<&str> = parts.iter().copied().filter(|p| p.chars().all(|c| c.is_ascii_digit())).collect();
    let full = |y: i16, m: i8, d: i8| Date::new(y, m, d).ok().map(DateParts::Full);
    match month_word {
        None => {
            // Numeric: year first (ISO) or US month/day/year. A time after ISO is ignored.
            let [a, b, c, ..] = nums.as_slice() else { return None };
            if a.len() == 4 {
                full(a.parse().ok()?, b.parse().ok()?, c.parse().ok()?)
            } else {
                full(year_of(c)?, a.parse().ok()?, b.parse().ok()?)
            }
        }
        Some(i) => {
            let month = month_of(parts[i])?;
            let year = nums.iter().find(|n| n.len() == 4).and_then(|n| year_of(n));
            let day: Option<i8> = nums.iter().find(|n| n.len() <= 2).and_then(|n| n.parse().ok()).filter(|d| (1..=31).contains(d));
            // "14-Mar-24": a two-digit year after the month.
            let year = year.or_else(|| {
                let after: Vec<&&str> = parts[i + 1..].iter().filter(|p| p.chars().all(|c| c.is_ascii_digit())).collect();
                let before_day = parts[..i].iter().any(|p| p.chars().all(|c| c.is_ascii_digit()));
                if before_day && after.len() == 1 && after[0].len() == 2 { year_of(after[0]) } else { None }
            });
            let day = if year.is_some() && nums.len() == 1 && nums[0].len() == 2 && parts[..i].iter().all(|p| !p.chars().all(|c| c.is_ascii_digit())) {
                None
            } else {
                day
            };
            match (year, day) {
                (Some(y), Some(d)) => full(y, month, d),
                (Some(y), None) => Some(DateParts::MonthYear(y, month)),
                (None, Some(d)) => Some(DateParts::MonthDay(month, d)),
                (None, None) => None,
            }
        }
    }
}

/// Move a written date by `days`, keeping as much of its precision as it had.
fn shift_date(text: &str, days: i32) -> Option<String> {
    let span = jiff::Span::new().days(days);
    match parse_date(text)? {
        DateParts::Full(d) => d.checked_add(span).ok().map(|d| d.to_string()),
        DateParts::MonthDay(m, d) => {
            // Year 2000 is a leap year, so 29 February is a valid input.
            let shifted = Date::new(2000, m, d).ok()?.checked_add(span).ok()?;
            Some(format!("{} {}", MONTH_NAMES[shifted.month() as usize - 1], shifted.day()))
        }
        DateParts::MonthYear(y, m) => {
            let shifted = Date::new(y, m, 15).ok()?.checked_add(span).ok()?;
            Some(format!("{} {}", MONTH_NAMES[shifted.month() as usize - 1], shifted.year()))
        }
    }
}

static PSEUDONYM: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    Regex::new(r"\[([A-Z]+)-(\d+)\]").expect("static regex")
});
static ISO_DATE: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    Regex::new(r"\b(\d{4})-(\d{2})-(\d{2})\b").expect("static regex")
});

/// Put the originals back into a text written over de-identified sources: pseudonyms become
/// the originals and ISO dates move back by the patient's shift. Only for a user allowed to
/// see this patient; the caller decides that.
pub fn reidentify(text: &str, scope: &Pseudonyms) -> String {
    // Dates first, in the de-identified text only: an original put back for a pseudonym is
    // the original and must not be shifted again (a value taken for another identifier can
    // look like an ISO date).
    let dates_back = ISO_DATE.replace_all(text, |c: &regex::Captures<'_>| {
        let back = (|| {
            let d = Date::new(c[1].parse().ok()?, c[2].parse().ok()?, c[3].parse().ok()?).ok()?;
            d.checked_add(jiff::Span::new().days(-scope.shift_days)).ok()
        })();
        back.map_or_else(|| c[0].to_owned(), |d| d.to_string())
    });
    PSEUDONYM
        .replace_all(&dates_back, |c: &regex::Captures<'_>| {
            let original = Category::from_tag(&c[1]).and_then(|cat| c[2].parse().ok().and_then(|i| scope.original(cat, i)));
            original.map_or_else(|| c[0].to_owned(), str::to_owned)
        })
        .into_owned()
}

/// [`reidentify`] for text that arrives in pieces (a streamed answer). A pseudonym or a date
/// can be split across pieces ("[NA" + "ME-1]", "2024-0" + "3-14"), so the text that could still
/// be part of one is held back: an unclosed "[" that may become a pseudonym, and trailing digits
/// or dashes (a date may continue or end there). Everything before is released at once, so the
/// clinician sees each word as the model writes it rather than one word late (at 5-40 words a
/// second on a CPU, 25-200 ms on the first token). A date's `\b` looks at the character before
/// it, which may have been released already: the last released character is kept and put in
/// front of the next text for the match, and taken off again. Neither pattern can span a cut,
/// so the released parts re-identify exactly as they will within the whole text.
#[derive(Debug)]
pub struct StreamingReidentifier<'a> {
    scope: &'a Pseudonyms,
    pending: String,
    /// The last character released, for the word boundary of a date right after it.
    before: Option<char>,
}

impl<'a> StreamingReidentifier<'a> {
    pub fn new(scope: &'a Pseudonyms) -> Self {
        Self { scope, pending: String::new(), before: None }
    }

    /// Add a piece; returns the re-identified text that is now safe to show (may be empty).
    pub fn push(&mut self, piece: &str) -> String {
        self.pending.push_str(piece);
        let cut = releasable(&self.pending);
        let ready: String = self.pending.drain(..cut).collect();
        self.release(&ready)
    }

    /// The rest, at the end of the stream.
    pub fn finish(mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        self.release(&rest)
    }

    fn release(&mut self, ready: &str) -> String {
        let Some(last) = ready.chars().next_back() else { return String::new() };
        let out = match self.before {
            // The kept character is neither a digit, a dash nor inside a pseudonym (see
            // `releasable`), so no match includes it and it comes back unchanged.
            Some(c) => reidentify(&format!("{c}{ready}"), self.scope).split_off(c.len_utf8()),
            None => reidentify(ready, self.scope),
        };
        self.before = Some(last);
        out
    }
}

/// How much of `text` (a byte length) can be re-identified now: all of it but a trailing
/// unclosed "[" that may still become a pseudonym, and the trailing digits and dashes before
/// that (a date may continue, or its end may still be followed by a digit).
fn releasable(text: &str) -> usize {
    let mut end = text.len();
    if let Some(open) = text.rfind('[')
        && may_become_pseudonym(&text[open..])
    {
        end = open;
    }
    text[..end].trim_end_matches(|c: char| c.is_ascii_digit() || c == '-').len()
}

/// Whether `s` (starting with "[") is a prefix of `[TAG-n]` without its closing bracket.
fn may_become_pseudonym(s: &str) -> bool {
    let rest = &s[1..];
    let tag_end = rest.find(|c: char| !c.is_ascii_uppercase()).unwrap_or(rest.len());
    match rest[tag_end..].strip_prefix('-') {
        None => tag_end == rest.len(),
        Some(number) => number.chars().all(|c| c.is_ascii_digit()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_pieces_reidentify_like_the_whole_text() {
        let mut scope = Pseudonyms::with_shift(40);
        let d = deidentify("Maria Lopez was seen 03/14/2024 at 555-201-3344.", &KnownIdentifiers::default(), &mut scope).text;
        let whole = reidentify(&d, &scope);
        // Every split into pieces of 1..=5 characters gives the same text.
        for size in 1..=5 {
            let chars: Vec<char> = d.chars().collect();
            let mut s = StreamingReidentifier::new(&scope);
            let mut out = String::new();
            for piece in chars.chunks(size) {
                out.push_str(&s.push(&piece.iter().collect::<String>()));
            }
            out.push_str(&s.finish());
            assert_eq!(out, whole, "pieces of {size}");
        }
        assert!(whole.contains("Maria Lopez") && whole.contains("2024-03-14"), "{whole}");
    }

    #[test]
    fn a_streamed_word_is_released_as_it_comes_not_one_word_late() {
        let scope = Pseudonyms::with_shift(40);
        let mut s = StreamingReidentifier::new(&scope);
        assert_eq!(s.push("The"), "The", "the first word waits for nothing");
        assert_eq!(s.push(" new"), " new");
        // What may still be a pseudonym or a date is held, and only that.
        assert_eq!(s.push(" dose [NA"), " dose ");
        assert_eq!(s.push("ME-1] on 2024-0"), "[NAME-1] on ");
        assert_eq!(s.push("4-23."), "2024-03-14.");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn every_split_of_tricky_text_reidentifies_like_the_whole_text() {
        let mut scope = Pseudonyms::with_shift(40);
        let d = deidentify("Maria Lopez was seen 03/14/2024.", &KnownIdentifiers::default(), &mut scope).text;
        assert!(d.contains("[NAME-1]") && d.contains("2024-04-23"), "{d}");
        // Dates glued to words or digits are not dates (`\b`), unknown tags stay, a released
        // character right before a date decides its boundary.
        let texts = [
            "The2024-04-23 x",
            "12024-04-23 and 2024-04-234 and (2024-04-23) and [NAME-1]2024-04-23.",
            "a [NAME-1][NAME-2] b [name-1] c [NAME-] d [NAME-1 e [-1] f [NOSUCH-9] g",
            "2024-04-23",
            "x-2024-04-23-y [NAME-12] [[NAME-1]] é2024-04-23 ü [NAME-1]",
        ];
        for text in texts {
            let whole = reidentify(text, &scope);
            let chars: Vec<char> = text.chars().collect();
            for i in 0..=chars.len() {
                for j in i..=chars.len() {
                    let piece = |a: usize, b: usize| chars[a..b].iter().collect::<String>();
                    let mut s = StreamingReidentifier::new(&scope);
                    let mut out = s.push(&piece(0, i));
                    out.push_str(&s.push(&piece(i, j)));
                    out.push_str(&s.push(&piece(j, chars.len())));
                    out.push_str(&s.finish());
                    assert_eq!(out, whole, "{text:?} cut at {i} and {j}");
                }
            }
        }
        assert_eq!(reidentify("on 2024-04-23 [NAME-1]", &scope), "on 2024-03-14 Maria");
    }

    #[test]
    fn same_person_same_pseudonym_across_forms() {
        let mut scope = Pseudonyms::with_shift(40);
        let a = deidentify("Mr. John Smith was seen.", &KnownIdentifiers::default(), &mut scope).text;
        let b = deidentify("Smith, John called back.", &KnownIdentifiers::default(), &mut scope).text;
        assert_eq!(a, "Mr. [NAME-1] [NAME-2] was seen.");
        assert_eq!(b, "[NAME-2], [NAME-1] called back.");
    }

    #[test]
    fn dates_shift_consistently_and_back() {
        let mut scope = Pseudonyms::with_shift(40);
        let d = deidentify("Seen 03/14/2024 and again on March 24, 2024; DOB 1931-02-01.", &KnownIdentifiers::default(), &mut scope);
        assert_eq!(d.text, "Seen 2024-04-23 and again on 2024-05-03; DOB 1931-03-13.");
        assert_eq!(reidentify(&d.text, &scope), "Seen 2024-03-14 and again on 2024-03-24; DOB 1931-02-01.");
    }

    #[test]
    fn date_forms_parse() {
        assert_eq!(shift_date("14-Mar-24", 1), Some("2024-03-15".into()));
        assert_eq!(shift_date("5th of June 2019", 0), Some("2019-06-05".into()));
        assert_eq!(shift_date("Feb 28", 2), Some("March 1".into()));
        assert_eq!(shift_date("August 2020", 30), Some("September 2020".into()));
        assert_eq!(shift_date("2023-11-02T08:30:00Z", -2), Some("2023-10-31".into()));
    }

    #[test]
    fn an_original_that_looks_like_a_date_is_put_back_unshifted() {
        // "2027-01-15 09" was once taken for a phone number; its original came back shifted.
        let mut scope = Pseudonyms::with_shift(100);
        let d = deidentify("saved at 2027-01-15 09:30 UTC, seen 2027-01-15", &KnownIdentifiers::default(), &mut scope);
        assert_eq!(reidentify(&d.text, &scope), "saved at 2027-01-15 09:30 UTC, seen 2027-01-15", "{}", d.text);
    }

    #[test]
    fn reidentify_restores_pseudonyms_and_leaves_unknown_ones() {
        let mut scope = Pseudonyms::with_shift(-30);
        let d = deidentify("Call Maria at 555-201-3344.", &KnownIdentifiers::default(), &mut scope);
        assert_eq!(d.text, "Call [NAME-1] at [PHONE-1].");
        assert_eq!(reidentify("[NAME-1] can be reached at [PHONE-1]; [NAME-9] unknown.", &scope), "Maria can be reached at 555-201-3344; [NAME-9] unknown.");
        let saved = scope.take_new();
        assert_eq!(saved.len(), 2);
        let again = Pseudonyms::load(-30, saved);
        assert_eq!(again.original(Category::Phone, 1), Some("555-201-3344"));
    }

    #[test]
    fn known_identifiers_are_removed_even_without_a_rule() {
        let mut known = KnownIdentifiers::default();
        known.push(Category::Name, "Xochitl Quispe");
        known.push(Category::Mrn, "QX-77");
        known.push(Category::Phone, "5552013344");
        let mut scope = Pseudonyms::with_shift(40);
        let d = deidentify("quispe said xochitl's chart QX-77; ring 555 201 3344", &known, &mut scope);
        assert!(!d.text.to_lowercase().contains("quispe") && !d.text.to_lowercase().contains("xochitl"), "{}", d.text);
        assert!(!d.text.contains("QX-77") && !d.text.contains("3344"), "{}", d.text);
    }
}
