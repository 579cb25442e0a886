//! Numbers that identify, found by what they are rather than by the word before them: card
//! numbers by their Luhn check digit, IBANs by ISO 13616 mod-97, phone numbers of any country
//! (with or without `+`, with extensions), and long identifier-like codes.
//!
//! Pure code: text in, spans out.

use std::sync::LazyLock;

use regex::Regex;

use super::Category;
use super::detect::Span;

fn re(pattern: &str) -> Regex {
    super::detect::compile(pattern)
}

/// Luhn (ISO/IEC 7812) check over the digits of `s`.
pub(crate) fn luhn_ok(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(*d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// ISO 13616: move the first four characters to the end, letters to 10..35, mod 97 == 1.
pub(crate) fn iban_ok(compact: &str) -> bool {
    let b = compact.as_bytes();
    if !(15..=34).contains(&b.len()) || !b[..2].iter().all(u8::is_ascii_uppercase) || !b[2..4].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut rem = 0u32;
    for &c in b[4..].iter().chain(&b[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
    }
    rem == 1
}

static IBAN: LazyLock<Regex> = LazyLock::new(|| re(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{1,4}){3,9}\b"));
/// 13 to 19 digits, in groups separated by single spaces or dashes.
static CARD: LazyLock<Regex> = LazyLock::new(|| re(r"\b\d(?:[ -]?\d){12,18}\b"));
/// A phone number: optional `+`/`00` country code, digits in groups separated by spaces,
/// dots, dashes, slashes or brackets; optional extension.
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)(?:\+|\b00)?\(?\d[\d(). \t/-]{5,22}\d(?:[ \t]*(?:x|ext\.?|extension|poste|durchwahl)[ \t]*\d{1,5})?\b")
});
static EXTENSION: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)(?:x|ext\.?|extension|poste|durchwahl)\s*\d{1,5}$"));
/// Words that, shortly before a number, say it is a phone number.
const PHONE_CUES: &[&str] = &[
    "phone", "tel", "telephone", "call", "cell", "mobile", "mob", "fax", "pager", "contact", "reach", "ring", "number", "no.", "on ",
    "whatsapp", "sms", "text", "tél", "telefon", "telefono", "teléfono", "telefone", "handy", "gsm", "portable", "callback", "phoned",
];

/// A date or a measure written with separators is not a phone number, nor is a date with a
/// four-digit year followed by an hour ("2027-01-15 09", "15.01.2027 09:30"): its digit count
/// and grouping are a phone's.
fn looks_like_date_or_measure(s: &str) -> bool {
    static DATE: LazyLock<Regex> = LazyLock::new(|| re(r"^\d{1,4}[./-]\d{1,2}[./-]\d{1,4}$"));
    static DATE_AND_HOUR: LazyLock<Regex> = LazyLock::new(|| {
        re(r"^(?:\d{4}[./-]\d{1,2}[./-]\d{1,2}|\d{1,2}[./-]\d{1,2}[./-]\d{4})[ T\t]\d{1,2}(?:[:.]\d{2}){0,2}$")
    });
    static RANGE: LazyLock<Regex> = LazyLock::new(|| re(r"^\d{1,4}(?:[.,]\d+)?\s*[-/]\s*\d{1,4}(?:[.,]\d+)?$"));
    DATE.is_match(s) || DATE_AND_HOUR.is_match(s) || RANGE.is_match(s)
}

pub(crate) fn spans(text: &str) -> Vec<Span> {
    let mut out = Vec::new();
    for m in IBAN.find_iter(text) {
        let compact: String = m.as_str().chars().filter(|c| !c.is_whitespace()).collect();
        if iban_ok(&compact) {
            out.push(Span { start: m.start(), end: m.end(), category: Category::Account });
        }
    }
    for m in CARD.find_iter(text) {
        let digits: Vec<u8> = m.as_str().bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect();
        // Separators, when present, group the digits in fours (or 4-6-5 for 15-digit cards).
        if (13..=19).contains(&digits.len()) && luhn_ok(&digits) && !digits.iter().all(|d| *d == digits[0]) {
            out.push(Span { start: m.start(), end: m.end(), category: Category::Account });
        }
    }
    for m in PHONE.find_iter(text) {
        let raw = m.as_str().trim_end();
        let mut start = m.start();
        // A bracket opened before the number but not inside it belongs to the text.
        let s = if raw.starts_with('(') && !raw[1..].contains(')') {
            start += 1;
            &raw[1..]
        } else {
            raw
        };
        let core = EXTENSION.find(s).map_or(s, |e| s[..e.start()].trim_end());
        let digits = core.chars().filter(char::is_ascii_digit).count();
        if !(7..=15).contains(&digits) {
            continue;
        }
        let international = core.starts_with('+') || core.starts_with("00");
        let before_from = text[..start].char_indices().rev().nth(30).map_or(0, |(i, _)| i);
        let before = text[before_from..start].to_lowercase();
        let cued = PHONE_CUES.iter().any(|c| before.contains(c));
        let groups = core.split(|c: char| !c.is_ascii_digit()).filter(|g| !g.is_empty()).count();
        // A date or a range is not a phone number, unless a phone word stands before it and it
        // is no span of years ("fax to 7599-1490").
        static YEARS: LazyLock<Regex> = LazyLock::new(|| re(r"^(?:19|20)\d{2}\s*[-/]\s*(?:19|20)?\d{2}$"));
        if looks_like_date_or_measure(core) && !(cued && !YEARS.is_match(core) && digits >= 7) {
            continue;
        }
        // Without a cue, a number needs a country code, a national trunk prefix (0) with a
        // phone's length, or a phone's grouping and length: a lone run of digits is more often a
        // count, an id or a measure.
        let trunk = core.trim_start_matches('(').starts_with('0') && digits >= 9;
        if !(international || cued || trunk || groups >= 3 && digits >= 9) {
            continue;
        }
        let end = start + s.len();
        out.push(Span { start, end, category: Category::Phone });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<(&str, Category)> {
        spans(text).into_iter().map(|s| (&text[s.start..s.end], s.category)).collect()
    }

    #[test]
    fn check_digits() {
        assert!(luhn_ok(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]));
        assert!(!luhn_ok(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2]));
        assert!(iban_ok("GB82WEST12345698765432"));
        assert!(iban_ok("DE89370400440532013000"));
        assert!(!iban_ok("DE89370400440532013001"));
    }

    #[test]
    fn cards_and_ibans_without_a_keyword() {
        let f = found("Paid with 4111 1111 1111 1111, refund to DE89 3704 0044 0532 0130 00 please.");
        assert!(f.contains(&("4111 1111 1111 1111", Category::Account)), "{f:?}");
        assert!(f.contains(&("DE89 3704 0044 0532 0130 00", Category::Account)), "{f:?}");
        // A wrong check digit is not a card.
        assert!(found("ref 4111 1111 1111 1112").iter().all(|(_, c)| *c != Category::Account));
    }

    #[test]
    fn phones_of_many_countries_and_extensions() {
        for (text, phone) in [
            ("Call +49 30 12345678 today", "+49 30 12345678"),
            ("Tel. 020 7946 0958", "020 7946 0958"),
            ("office (555) 201-3344 x123.", "(555) 201-3344 x123"),
            ("reach her on 555.201.3344 ext. 12", "555.201.3344 ext. 12"),
            ("mobile 0612345678", "0612345678"),
        ] {
            let f = found(text);
            assert!(f.contains(&(phone, Category::Phone)), "{text}: {f:?}");
        }
    }

    #[test]
    fn measures_and_dates_are_not_phones() {
        for text in [
            "BP 128/82, HR 74",
            "Seen 12.03.2024 and 2024-03-12",
            "dose 10-20 mg",
            "n = 1234567 adults",
            "95% CI 1.2-3.4",
            "review 2027-01-15 09 h",
            "seen 15.01.2027 09:30 in clinic",
        ] {
            assert!(found(text).is_empty(), "{text}: {:?}", found(text));
        }
    }
}
