//! De-identification measured on a labelled synthetic set: recall and precision per Safe
//! Harbor category, printed as a table, failing below the bars set here.

use std::collections::BTreeMap;

use wardbox_rag::deid::{Category, KnownIdentifiers, Pseudonyms, deidentify, detect};
use wardbox_rag::synth::labelled_notes;

/// Overall recall below this fails the test (the issue asks for at least 0.98).
const OVERALL_RECALL_BAR: f64 = 0.98;
/// No single category may fall below this.
const CATEGORY_RECALL_BAR: f64 = 0.90;
/// Overall precision (share of removed spans that were identifiers) below this fails.
const OVERALL_PRECISION_BAR: f64 = 0.90;

#[derive(Default)]
struct Tally {
    labels: usize,
    recalled: usize,
    detected: usize,
    correct: usize,
}

#[test]
fn deid_recall_and_precision_per_category() {
    let notes = labelled_notes(0x5eed_0001, 120);
    let mut by_cat: BTreeMap<Category, Tally> = BTreeMap::new();
    let mut misses: BTreeMap<Category, Vec<String>> = BTreeMap::new();
    let mut false_hits: Vec<String> = Vec::new();
    for note in &notes {
        let spans = detect(&note.text, &KnownIdentifiers::default());
        // Recall: every alphanumeric character of the label lies inside some detected span.
        for l in &note.labels {
            let t = by_cat.entry(l.category).or_default();
            t.labels += 1;
            let covered = note.text[l.start..l.end].char_indices().all(|(i, c)| {
                let at = l.start + i;
                !c.is_alphanumeric() || spans.iter().any(|s| s.start <= at && at < s.end)
            });
            if covered {
                t.recalled += 1;
            } else {
                misses.entry(l.category).or_default().push(note.text[l.start..l.end].to_owned());
            }
        }
        // Precision: a detected span is right when it overlaps a labelled identifier.
        for s in &spans {
            let t = by_cat.entry(s.category).or_default();
            t.detected += 1;
            if note.labels.iter().any(|l| s.start < l.end && l.start < s.end) {
                t.correct += 1;
            } else {
                let from = s.start.saturating_sub(20);
                let from = (0..=from).rev().find(|i| note.text.is_char_boundary(*i)).unwrap_or(0);
                false_hits.push(format!("{:?} {:?} in …{}…", s.category, &note.text[s.start..s.end], &note.text[from..s.end]));
            }
        }
    }
    let (mut labels, mut recalled, mut detected, mut correct) = (0, 0, 0, 0);
    println!("{:<11} {:>6} {:>8} {:>9} {:>10}", "category", "labels", "recall", "detected", "precision");
    for (c, t) in &by_cat {
        labels += t.labels;
        recalled += t.recalled;
        detected += t.detected;
        correct += t.correct;
        let r = if t.labels == 0 { f64::NAN } else { t.recalled as f64 / t.labels as f64 };
        let p = if t.detected == 0 { f64::NAN } else { t.correct as f64 / t.detected as f64 };
        println!("{:<11} {:>6} {:>8.3} {:>9} {:>10.3}", c.tag(), t.labels, r, t.detected, p);
    }
    let recall = recalled as f64 / labels as f64;
    let precision = correct as f64 / detected as f64;
    println!("{:<11} {:>6} {:>8.3} {:>9} {:>10.3}", "OVERALL", labels, recall, detected, precision);
    for (c, m) in &misses {
        println!("missed {}: {:?}", c.tag(), &m[..m.len().min(8)]);
    }
    for f in false_hits.iter().take(25) {
        println!("false hit: {f}");
    }
    for c in Category::ALL {
        let t = by_cat.get(&c).expect("every category is in the set");
        assert!(t.labels >= 20, "{} has only {} labels", c.tag(), t.labels);
        let r = t.recalled as f64 / t.labels as f64;
        assert!(r >= CATEGORY_RECALL_BAR, "{} recall {r:.3} below {CATEGORY_RECALL_BAR}", c.tag());
    }
    assert!(recall >= OVERALL_RECALL_BAR, "overall recall {recall:.3} below {OVERALL_RECALL_BAR}");
    assert!(precision >= OVERALL_PRECISION_BAR, "overall precision {precision:.3} below {OVERALL_PRECISION_BAR}");
}

#[test]
fn deidentified_text_holds_no_labelled_identifier() {
    // Whatever detect() finds, deidentify() must remove completely (the misses are what the
    // recall test above counts).
    for note in labelled_notes(0x5eed_0002, 60) {
        let mut scope = Pseudonyms::new_random();
        let out = deidentify(&note.text, &KnownIdentifiers::default(), &mut scope).text;
        let spans = detect(&note.text, &KnownIdentifiers::default());
        for l in &note.labels {
            let (c, v) = (l.category, &note.text[l.start..l.end]);
            if !spans.iter().any(|s| s.start <= l.start && l.end <= s.end) && c != Category::Name {
                continue;
            }
            if c == Category::Name && !v.split([' ', ',']).all(|w| w.is_empty() || spans.iter().any(|s| note.text[s.start..s.end].contains(w))) {
                continue;
            }
            // A two-digit age also occurs inside other numbers ("1934"): checked by detect above.
            if c == Category::Age {
                continue;
            }
            assert!(!out.contains(v), "{} {v:?} survived in: {out}", c.tag());
        }
        let _ = note.values();
    }
}
