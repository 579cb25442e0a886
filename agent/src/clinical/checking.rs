//! The answer checker (`wardbox_rag::check`) as the clinician's page and the audit record see
//! it: the answer as shown (re-identified) against the passages as shown, cut into marked
//! pieces for the page, and counts (never text) for the audit record.

use std::time::Instant;

use serde_json::json;
use wardbox_rag::check::{self, CheckConfig, Counts};

use crate::web::clinical::{AnswerCheck, CheckedText};

/// Check `answer` against the numbered `sources`; the view for the page and the counts.
pub fn check_answer(answer: &str, sources: &[(usize, String)], cfg: &CheckConfig) -> (AnswerCheck, Counts) {
    let started = Instant::now();
    let passages: Vec<(usize, &str)> = sources.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let checked = check::check_texts(answer, &passages, cfg);
    let segments = checked
        .segments(answer)
        .into_iter()
        .map(|s| CheckedText { text: s.text, unsupported: s.unsupported, not_cited: s.not_cited })
        .collect();
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let counts = checked.counts;
    (AnswerCheck { segments, items: counts.items, unsupported: counts.unsupported, not_cited: counts.not_cited, micros }, counts)
}

/// The check's counts for the audit record: numbers by kind, no text.
pub fn audit_counts(counts: &Counts) -> serde_json::Value {
    json!({
        "items": counts.items,
        "supported_cited": counts.supported_cited,
        "supported_other": counts.supported_other,
        "unsupported": counts.unsupported,
        "unsupported_by_kind": counts.unsupported_by_kind.iter().map(|(k, n)| (k.as_str().to_owned(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "sentences": counts.sentences,
        "not_cited": counts.not_cited,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_covers_the_answer_and_the_audit_counts_hold_no_text() {
        let answer = "Metformin 1000 mg twice daily [1]. Lisinopril 10 mg daily.";
        let sources = vec![(1, "Metformin 500 mg twice daily; lisinopril 10 mg daily.".to_owned())];
        let (view, counts) = check_answer(answer, &sources, &CheckConfig::default());
        assert_eq!(view.segments.iter().map(|s| s.text.as_str()).collect::<String>(), answer);
        assert_eq!((view.unsupported, view.not_cited), (1, 1));
        let marked: Vec<&str> = view.segments.iter().filter(|s| s.unsupported.is_some()).map(|s| s.text.as_str()).collect();
        assert_eq!(marked, vec!["1000 mg"]);
        let audit = audit_counts(&counts).to_string();
        assert!(audit.contains("\"unsupported\":1") && audit.contains("\"dose\":1") && audit.contains("\"not_cited\":1"), "{audit}");
        assert!(!audit.to_lowercase().contains("metformin") && !audit.contains("1000"), "{audit}");
    }
}
