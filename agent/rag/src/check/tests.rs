//! Hand-written tricky cases: each row is an answer, its sources, and exactly which items must
//! be marked unsupported (by their text) and how many sentences are not cited.

use super::*;

/// Check `answer` against `sources` (numbered from 1) and compare the unsupported items' texts
/// and the count of sentences not cited with what is expected.
#[track_caller]
fn case(answer: &str, sources: &[&str], unsupported: &[&str], not_cited: usize) {
    case_with(&CheckConfig::default(), answer, sources, unsupported, not_cited);
}

#[track_caller]
fn case_with(cfg: &CheckConfig, answer: &str, sources: &[&str], unsupported: &[&str], not_cited: usize) {
    let numbered: Vec<(usize, &str)> = sources.iter().enumerate().map(|(i, s)| (i + 1, *s)).collect();
    let c = check_texts(answer, &numbered, cfg);
    let got: Vec<&str> = c.items.iter().filter(|i| i.verdict == Verdict::Unsupported).map(|i| &answer[i.start..i.end]).collect();
    assert_eq!(got, unsupported, "unsupported items of {answer:?}\nall items: {:#?}", c.items);
    assert_eq!(c.counts.not_cited, not_cited, "sentences not cited in {answer:?}: {:#?}", c.sentences);
}

#[test]
fn unit_conversions_are_the_same_dose() {
    case("Paracetamol 1000 mg every 6 hours [1].", &["Acetaminophen 1 g PO q6h as needed."], &[], 0);
    case("Levothyroxine 125 mcg daily [1].", &["Levothyroxine 0.125 mg once daily."], &[], 0);
    case("Levothyroxine 125 µg daily [1].", &["levothyroxine sodium 125 micrograms daily"], &[], 0);
    case("Insulin glargine 20 IU at night [1].", &["Lantus 20 units at bedtime."], &[], 0);
    case("Give 0.5 L of saline [1].", &["500 mL normal saline bolus given."], &[], 0);
    case("Recheck in 14 days [1].", &["Recheck renal function in 2 weeks."], &[], 0);
    case("Recheck in 2 weeks [1].", &["Recheck renal function in two weeks."], &[], 0);
    case("Hemoglobin 12.1 g/dL [1].", &["Hb 121 g/L on admission."], &[], 0);
}

#[test]
fn a_wrong_dose_is_marked_and_says_what_the_source_has() {
    case("Metformin 1000 mg twice daily [1].", &["Metformin 500 mg PO twice daily; lisinopril 10 mg daily."], &["1000 mg"], 0);
    let c = check_texts("Metformin 1000 mg twice daily [1].", &[(1, "Metformin 500 mg PO twice daily.")], &CheckConfig::default());
    let item = c.items.iter().find(|i| i.verdict == Verdict::Unsupported).expect("a mark");
    assert_eq!(item.reason, "1000 mg: in none of the sources; they say metformin 500 mg [1]");
    // The dose exists in the source, but for another drug: still unsupported.
    case("Lisinopril 500 mg daily [1].", &["Metformin 500 mg PO twice daily; lisinopril 10 mg daily."], &["500 mg"], 0);
    // "1 g" is not "100 mg".
    case("Acetaminophen 100 mg [1].", &["Acetaminophen 1 g PO q6h."], &["100 mg"], 0);
}

#[test]
fn brand_and_generic_names_are_one_medicine() {
    case("She takes Eliquis 5 mg twice daily [1].", &["Started apixaban 5 mg BID; stop warfarin."], &[], 0);
    case("Apixaban was started and Coumadin stopped [1].", &["Started Eliquis 5 mg BID; stop warfarin."], &[], 0);
    case("Metformin hydrochloride XR 500 mg [1].", &["metformin 500 mg"], &[], 0);
    case("Metoprolol succinate 50 mg daily [1].", &["Toprol XL 50 mg once daily"], &[], 0);
}

#[test]
fn a_wrong_or_invented_drug_is_marked() {
    case("She takes rivaroxaban 5 mg twice daily [1].", &["Started apixaban 5 mg BID."], &["rivaroxaban"], 0);
    // The name an unchecked small model once wrote: in no dictionary, written like a medicine.
    case("Patient is on Lidowelam 20 mg daily [1].", &["Lisinopril 20 mg daily."], &["Lidowelam"], 0);
    case("Continue tolvaprazole [1].", &["Continue pantoprazole 40 mg."], &["tolvaprazole"], 0);
    // An unknown name that the source does hold is supported.
    case("Continue Zentorex 5 mg [1].", &["Zentorex 5 mg nightly (trial drug)."], &[], 0);
}

#[test]
fn dates_in_any_format_are_the_same_date() {
    case("Seen on 5 March 2024 [1].", &["Office visit 2024-03-05."], &[], 0);
    case("Seen on March 5, 2024 [1].", &["Office visit 03/05/2024."], &[], 0);
    case("Seen on 2024-03-05 [1].", &["Visit 5th Mar 2024"], &[], 0);
    case("Seen in March 2024 [1].", &["Office visit 03/14/2024."], &[], 0);
    case("Seen on March 14 [1].", &["Office visit 03/14/2024."], &[], 0);
    case("Diagnosed in 2019 [1].", &["Type 2 diabetes since June 2019."], &[], 0);
    // Day first for a clinic that writes dates that way; dotted dates always.
    let day_first = CheckConfig { numeric_dates: DateOrder::DayFirst };
    case_with(&day_first, "Seen on 3 May 2024 [1].", &["Seen 03/05/2024."], &[], 0);
    case("Seen on 3 May 2024 [1].", &["Seen 03/05/2024."], &["3 May 2024"], 0);
    case("Seen on 3 May 2024 [1].", &["Seen 03.05.2024."], &[], 0);
}

#[test]
fn an_invented_or_shifted_date_is_marked() {
    case("Seen on 2024-03-09 [1].", &["Office visit 2024-03-05."], &["2024-03-09"], 0);
    case("Diagnosed in 2018 [1].", &["Type 2 diabetes since June 2019."], &["2018"], 0);
    case("Seen on 14 April 2024 [1].", &["Office visit 03/14/2024."], &["14 April 2024"], 0);
}

#[test]
fn laterality_is_bound_to_its_site() {
    case("Pain in the left knee [1].", &["Osteoarthritis of the left knee; right hip replaced 2019."], &[], 0);
    case("Pain in the right knee [1].", &["Osteoarthritis of the left knee; right hip replaced 2019."], &["right"], 0);
    case("Bilateral knee osteoarthritis [1].", &["Osteoarthritis of both knees."], &[], 0);
    case("Left lower lobe pneumonia [1].", &["CXR: consolidation in the left lower lobe."], &[], 0);
    case("Right lower lobe pneumonia [1].", &["CXR: consolidation in the left lower lobe."], &["Right"], 0);
    // "left" as a verb is no side.
    case("The patient left before the review [1].", &["Patient left the clinic before review."], &[], 0);
}

#[test]
fn lab_values_belong_to_their_test() {
    case("A1c was 7.4% [1].", &["A1c 7.4% (goal < 7%). LDL 128 mg/dL."], &[], 0);
    case("A1c was 8.1% [1].", &["A1c 7.4% (goal < 7%). LDL 128 mg/dL."], &["8.1%"], 0);
    case("LDL 128 mg/dL and potassium 4.1 mmol/L [1].", &["LDL 128 mg/dL. K 4.1 mmol/L."], &[], 0);
    case("Blood pressure 148/88 [1].", &["O: BP 148/88, weight 84 kg."], &[], 0);
    case("Blood pressure 184/88 [1].", &["O: BP 148/88, weight 84 kg."], &["184"], 0);
    case("eGFR 48 mL/min [1].", &["eGFR 48."], &[], 0);
    case("Creatinine 1.6 mg/dL [1].", &["Creatinine 1,6 mg/dL"], &[], 0);
}

#[test]
fn sentences_without_citations_are_marked_not_cited() {
    case("Metformin 500 mg twice daily. Lisinopril 10 mg daily [1].", &["Metformin 500 mg PO twice daily; lisinopril 10 mg daily."], &[], 1);
    // A citation after the full stop belongs to the sentence before it.
    case("Metformin 500 mg twice daily. [1] Lisinopril 10 mg daily. [1]", &["Metformin 500 mg PO twice daily; lisinopril 10 mg daily."], &[], 0);
    // Headings, short fragments and "not found" need none.
    case("Plan:\nMetformin 500 mg [1].", &["metformin 500 mg"], &[], 0);
    case("Not found in the record.", &["metformin 500 mg"], &[], 0);
    case("Here is what the record says about her medicines and their doses.", &["metformin 500 mg"], &[], 1);
}

#[test]
fn found_only_in_an_uncited_source_is_supported_but_says_so() {
    let c = check_texts("Metformin 500 mg [2].", &[(1, "metformin 500 mg twice daily"), (2, "lisinopril 10 mg")], &CheckConfig::default());
    assert_eq!(c.counts.unsupported, 0);
    assert_eq!(c.counts.supported_other, 2, "{:#?}", c.items);
    assert!(c.items[0].reason.contains("found in [1], which this sentence does not cite"), "{}", c.items[0].reason);
}

#[test]
fn list_numbers_citations_and_names_are_no_items() {
    case("1. Metformin 500 mg [1]\n2. Lisinopril 10 mg [1]", &["Metformin 500 mg; lisinopril 10 mg."], &[], 0);
    let c = check_texts("Vitamin B12 injections monthly [1].", &[(1, "Cyanocobalamin (vitamin B12) 1000 mcg IM monthly.")], &CheckConfig::default());
    assert_eq!(c.counts.unsupported, 0, "{:#?}", c.items);
}

#[test]
fn segments_cover_the_answer_and_carry_the_marks() {
    let answer = "Metformin 1000 mg [1]. Also aspirin daily.";
    let c = check_texts(answer, &[(1, "Metformin 500 mg. Aspirin 81 mg daily.")], &CheckConfig::default());
    let segs = c.segments(answer);
    assert_eq!(segs.iter().map(|s| s.text.as_str()).collect::<String>(), answer);
    let marked: Vec<&str> = segs.iter().filter(|s| s.unsupported.is_some()).map(|s| s.text.as_str()).collect();
    assert_eq!(marked, vec!["1000 mg"]);
    assert!(segs.iter().any(|s| s.not_cited && s.text.contains("aspirin")), "{segs:#?}");
    assert!(c.has_unsupported());
    assert_eq!(c.counts.unsupported_by_kind.get(&ItemKind::Dose), Some(&1));
}
