//! Turning a stream of token bytes into the text a client sees.
//!
//! Two problems, both pure: a token may end in the middle of a UTF-8 character (the rest comes
//! with the next token), and a stop sequence may span tokens, so text that could be the start of
//! a stop sequence is held back until it is known not to be one. Nothing after a stop sequence,
//! and no part of it, is ever sent.

/// Collects token bytes and releases only complete UTF-8 characters.
#[derive(Debug, Default)]
pub struct Utf8Assembler {
    pending: Vec<u8>,
}

impl Utf8Assembler {
    /// Add bytes; return the text that is now complete. Invalid bytes become U+FFFD.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // The prefix up to `valid` is valid UTF-8 by definition; lossy is a no-op there.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // An incomplete character at the end: wait for the next token.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// End of stream: whatever is left is not a character.
    pub fn finish(&mut self) -> String {
        let out = if self.pending.is_empty() { String::new() } else { "\u{FFFD}".to_owned() };
        self.pending.clear();
        out
    }
}

/// What [`StopScanner::push`] decided.
#[derive(Debug, PartialEq, Eq)]
pub struct Scan {
    /// Text that may be sent now.
    pub emit: String,
    /// A stop sequence was found: generation ends, `emit` is the last text.
    pub stopped: bool,
}

/// Finds stop sequences in streamed text.
#[derive(Debug)]
pub struct StopScanner {
    stops: Vec<String>,
    held: String,
}

impl StopScanner {
    pub fn new(stops: Vec<String>) -> Self {
        let stops = stops.into_iter().filter(|s| !s.is_empty()).collect();
        StopScanner { stops, held: String::new() }
    }

    pub fn push(&mut self, text: &str) -> Scan {
        self.held.push_str(text);
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let emit = self.held[..at].to_owned();
            self.held.clear();
            return Scan { emit, stopped: true };
        }
        // Hold back the longest tail that is a proper prefix of some stop sequence.
        let keep = self
            .stops
            .iter()
            .map(|s| longest_suffix_prefix(&self.held, s))
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let emit = self.held[..cut].to_owned();
        self.held.drain(..cut);
        Scan { emit, stopped: false }
    }

    /// Generation ended for another reason: release what was held back.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`, on char boundaries.
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    let max = text.len().min(stop.len().saturating_sub(1));
    (1..=max)
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && stop.is_char_boundary(n) && text.ends_with(&stop[..n]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_tokens() {
        let mut a = Utf8Assembler::default();
        let e = "é".as_bytes();
        assert_eq!(a.push(b"caf"), "caf");
        assert_eq!(a.push(&e[..1]), "");
        assert_eq!(a.push(&e[1..]), "é");
        assert_eq!(a.push(&[0xff, b'x']), "\u{FFFD}x");
        assert_eq!(a.push(&"🙂".as_bytes()[..2]), "");
        assert_eq!(a.finish(), "\u{FFFD}");
    }

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut s = StopScanner::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let scan = s.push(p);
            out.push_str(&scan.emit);
            if scan.stopped {
                return (out, true);
            }
        }
        out.push_str(&s.finish());
        (out, false)
    }

    #[test]
    fn stop_sequences() {
        type Case<'a> = (&'a [&'a str], &'a [&'a str], (&'a str, bool));
        let cases: &[Case] = &[
            (&["\n\n"], &["Hello", " world"], ("Hello world", false)),
            (&["\n\n"], &["Hello\n", "\nmore"], ("Hello", true)),
            (&["STOP"], &["abcST", "OPdef"], ("abc", true)),
            (&["STOP"], &["abcST", "x"], ("abcSTx", false)),
            (&["STOP"], &["abcST"], ("abcST", false)),
            (&["a", "bc"], &["xxbcya"], ("xx", true)),
            (&["é!"], &["café", "é!"], ("café", true)),
            (&[""], &["anything"], ("anything", false)),
            (&[], &["x"], ("x", false)),
        ];
        for (stops, pieces, want) in cases {
            let got = run(stops, pieces);
            assert_eq!((got.0.as_str(), got.1), *want, "stops {stops:?} pieces {pieces:?}");
        }
    }

    #[test]
    fn holds_back_only_possible_prefixes() {
        let mut s = StopScanner::new(vec!["<end>".into()]);
        assert_eq!(s.push("text <e"), Scan { emit: "text ".into(), stopped: false });
        assert_eq!(s.push("x"), Scan { emit: "<ex".into(), stopped: false });
    }
}
