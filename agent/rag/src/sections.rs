//! Minimum necessary: which kinds of sections of a record a task may draw on. A chunk's section
//! label (a SOAP part, a Markdown heading, a FHIR resource type; packed chunks join several
//! with " / ") is sorted into a class by its words; a task's filter keeps the classes it needs.
//! A label no rule recognises ("Note", a PDF's first page) is `Other` and always allowed: a
//! filter may narrow what a task sees, never starve it of a record written without headings.
//! Pure; the agent decides which role and task get which filter (`docs/rag.md`).

/// What a section is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionClass {
    /// Medications, prescriptions, allergies.
    Medications,
    /// Assessment, diagnoses, problem list, conditions.
    Problems,
    /// Plan, follow-up, instructions.
    Plan,
    /// Results: labs, vitals, examination, imaging (the "Objective" part).
    Results,
    /// History: the "Subjective" part, history of the present illness, social and family history.
    History,
    /// Anything else.
    Other,
}

impl SectionClass {
    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// Words of a label → its class, first match wins (a "Medication plan" is medications).
const RULES: &[(&[&str], SectionClass)] = &[
    (&["medication", "meds", "prescri", "drug", "allerg", "immuniz", "vaccin"], SectionClass::Medications),
    (&["assessment", "diagnos", "problem", "impression", "condition"], SectionClass::Problems),
    (&["plan", "follow", "instruction", "recommend", "disposition", "discharge", "careplan"], SectionClass::Plan),
    (&["objective", "lab", "result", "observation", "vital", "exam", "imaging", "radiolog", "diagnosticreport", "procedure"], SectionClass::Results),
    (&["subjective", "history", "hpi", "complaint", "social", "family", "review of systems"], SectionClass::History),
];

/// The class of one section heading.
pub fn classify(heading: &str) -> SectionClass {
    let h = heading.to_lowercase();
    RULES.iter().find(|(words, _)| words.iter().any(|w| h.contains(w))).map_or(SectionClass::Other, |(_, c)| *c)
}

/// A set of section classes a task may draw on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionFilter(u8);

impl SectionFilter {
    /// Every section.
    pub const ALL: SectionFilter = SectionFilter(u8::MAX);

    /// Only these classes (and `Other`, always).
    pub fn only(classes: &[SectionClass]) -> Self {
        SectionFilter(classes.iter().fold(SectionClass::Other.bit(), |acc, c| acc | c.bit()))
    }

    pub fn is_all(self) -> bool {
        self == Self::ALL
    }

    pub fn allows(self, class: SectionClass) -> bool {
        self.0 & class.bit() != 0
    }

    /// A chunk's label (several headings joined by " / " when sections were packed) is allowed
    /// when any of its sections is.
    pub fn allows_label(self, label: &str) -> bool {
        self.is_all() || label.split(" / ").any(|h| self.allows(classify(h)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_of_notes_fhir_and_markdown_are_classified_by_their_words() {
        for (heading, class) in [
            ("Subjective", SectionClass::History),
            ("Objective", SectionClass::Results),
            ("Assessment", SectionClass::Problems),
            ("Plan", SectionClass::Plan),
            ("MedicationStatement", SectionClass::Medications),
            ("AllergyIntolerance", SectionClass::Medications),
            ("Condition", SectionClass::Problems),
            ("Observation", SectionClass::Results),
            ("Social history", SectionClass::History),
            ("Discharge medications", SectionClass::Medications),
            ("Note", SectionClass::Other),
            ("Document: page 1", SectionClass::Other),
        ] {
            assert_eq!(classify(heading), class, "{heading}");
        }
    }

    #[test]
    fn a_filter_keeps_its_classes_and_never_drops_unclassified_text() {
        let meds = SectionFilter::only(&[SectionClass::Medications, SectionClass::Plan]);
        assert!(meds.allows_label("MedicationStatement") && meds.allows_label("Plan") && meds.allows_label("Note"));
        assert!(!meds.allows_label("Observation") && !meds.allows_label("Social history"));
        assert!(meds.allows_label("Objective / Plan"), "a packed chunk with one allowed section");
        assert!(SectionFilter::ALL.allows_label("Social history"));
    }
}
