#!/usr/bin/env python3
"""Answer/source pairs for the answer checker (agent/rag/src/check.rs), with known planted errors.

Each record holds numbered source passages (as retrieval would return them) and an answer that
cites them. Most answers restate the sources in other words the checker must accept: brand for
generic, converted units (1 g / 1000 mg, 0.125 mg / 125 mcg, 2 weeks / 14 days), other date
formats. Most answers also carry one planted error the checker must mark: a wrong dose, a wrong
or invented drug, the other side (left/right), an invented date, a wrong lab value, or a
sentence whose citation was dropped. Labels are byte offsets into the answer's UTF-8 text.

The records are split by template family: the checker was developed on the dev half
(check_dev.jsonl); the test half (check_test.jsonl) has its own families, written before the
checker was run on them, and is never tuned on. Seeded: the files are reproducible.

    python3 agent/rag/eval/gen_check_eval.py   # writes agent/rag/eval/check_{dev,test}.jsonl
"""

import datetime
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))

# generic, brand, doses, unit, how it is taken
DRUGS = [
    ("metformin", "Glucophage", [500, 850, 1000], "mg", "twice daily"),
    ("lisinopril", "Zestril", [5, 10, 20, 40], "mg", "once daily"),
    ("atorvastatin", "Lipitor", [10, 20, 40, 80], "mg", "at night"),
    ("amlodipine", "Norvasc", [2.5, 5, 10], "mg", "once daily"),
    ("apixaban", "Eliquis", [2.5, 5], "mg", "twice daily"),
    ("levothyroxine", "Synthroid", [25, 50, 75, 88, 100, 125], "mcg", "every morning"),
    ("furosemide", "Lasix", [20, 40, 80], "mg", "every morning"),
    ("omeprazole", "Prilosec", [20, 40], "mg", "before breakfast"),
    ("sertraline", "Zoloft", [50, 100, 150], "mg", "once daily"),
    ("acetaminophen", "Tylenol", [500, 650, 1000], "mg", "every 6 hours as needed"),
    ("insulin glargine", "Lantus", [10, 14, 18, 24, 30], "units", "at bedtime"),
    ("amoxicillin", "Amoxil", [250, 500, 875], "mg", "three times daily"),
    ("prednisone", "Deltasone", [5, 10, 20, 40], "mg", "each morning"),
    ("gabapentin", "Neurontin", [100, 300, 600], "mg", "three times daily"),
    ("metoprolol", "Lopressor", [25, 50, 100], "mg", "twice daily"),
    ("empagliflozin", "Jardiance", [10, 25], "mg", "once daily"),
    ("sitagliptin", "Januvia", [25, 50, 100], "mg", "once daily"),
    ("warfarin", "Coumadin", [1, 2, 3, 5, 7.5], "mg", "in the evening"),
    ("clopidogrel", "Plavix", [75], "mg", "once daily"),
    ("tamsulosin", "Flomax", [0.4], "mg", "at night"),
]

# Names that look like medicines and are none (a small model's inventions).
INVENTED = ["Lidowelam", "Tarnoprazole", "Velamistatin", "Corbexipril", "Nuvoxolol", "Prenatrizide", "Halomectin", "Zorvadipine",
            "Feloxamab", "Quintazepam", "Duraxofen", "Mentolisartan"]

# name as written, unit, low, high, decimals
LABS = [
    ("A1c", "%", 5.6, 11.5, 1),
    ("LDL", "mg/dL", 60, 190, 0),
    ("potassium", "mmol/L", 3.2, 5.9, 1),
    ("creatinine", "mg/dL", 0.6, 2.4, 1),
    ("eGFR", "mL/min", 18, 95, 0),
    ("hemoglobin", "g/dL", 8.5, 16.5, 1),
    ("sodium", "mmol/L", 128, 146, 0),
    ("TSH", "mIU/L", 0.2, 9.5, 1),
]

SITES = ["knee", "hip", "shoulder", "ankle", "wrist", "elbow", "eye", "ear", "breast", "kidney"]
FINDINGS = {
    "knee": "osteoarthritis", "hip": "osteoarthritis", "shoulder": "rotator cuff tear", "ankle": "sprain", "wrist": "distal radius fracture",
    "elbow": "epicondylitis", "eye": "cataract", "ear": "otitis media", "breast": "cyst", "kidney": "calculus",
}
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]


def fmt_num(v):
    return ("%g" % v) if isinstance(v, float) else str(v)


def dose_text(value, unit, style):
    """A dose as written: style 'same', or a converted unit ('alt')."""
    if style == "alt":
        if unit == "mg" and value >= 1000 and value % 1000 == 0:
            return "%g g" % (value / 1000)
        if unit == "mg" and value < 1:
            return "%g mcg" % (value * 1000)
        if unit == "mcg":
            return "%g mg" % (value / 1000)
        if unit == "units":
            return "%s IU" % fmt_num(value)
    return "%s %s" % (fmt_num(value), unit)


def date_text(d, style):
    if style == "iso":
        return d.isoformat()
    if style == "us":
        return "%02d/%02d/%04d" % (d.month, d.day, d.year)
    if style == "long":
        return "%d %s %d" % (d.day, MONTHS[d.month - 1], d.year)
    if style == "american":
        return "%s %d, %d" % (MONTHS[d.month - 1], d.day, d.year)
    if style == "short":
        return "%d %s %d" % (d.day, MONTHS[d.month - 1][:3], d.year)
    raise ValueError(style)


def rand_date(rng):
    return datetime.date(2019, 1, 1) + datetime.timedelta(days=rng.randrange(0, 6 * 365))


def lab_value(rng, lab):
    _, _, lo, hi, dec = lab
    v = round(rng.uniform(lo, hi), dec)
    return v if dec else int(v)


def lab_text(v, dec):
    return ("%.*f" % (dec, v)) if dec else str(v)


class Answer:
    """An answer built from literal text and slots, so a slot's byte span is known."""

    def __init__(self):
        self.parts = []  # (text, slot or None)

    def lit(self, text):
        self.parts.append((text, None))
        return self

    def slot(self, kind, text, **info):
        self.parts.append((text, dict(kind=kind, **info)))
        return self

    def slots(self):
        return [p for p in self.parts if p[1] is not None]

    def render(self):
        out, labels, pos = [], [], 0
        for text, slot in self.parts:
            b = len(text.encode("utf-8"))
            if slot is not None and slot.get("planted"):
                labels.append({"kind": slot["planted"], "start": pos, "end": pos + b})
            out.append(text)
            pos += b
        return "".join(out), labels


# --- Facts of one synthetic patient ---------------------------------------------------------

def patient(rng):
    drugs = rng.sample(DRUGS, 4)
    meds = [(g, b, rng.choice(doses), unit, how) for g, b, doses, unit, how in drugs]
    labs = [(lab, lab_value(rng, lab)) for lab in rng.sample(LABS, 3)]
    site = rng.choice(SITES)
    side = rng.choice(["left", "right"])
    dates = sorted(rand_date(rng) for _ in range(3))
    return dict(meds=meds, labs=labs, site=site, side=side, dates=dates, other_site=rng.choice([s for s in SITES if s != site]))


def med_line(m, rng, style="same"):
    g, b, v, unit, how = m
    name = g if rng.random() < 0.6 else b
    return "%s %s %s" % (name, dose_text(v, unit, style), how)


# --- Template families: each writes sources for a patient and an answer over them ------------
# A family returns (sources: list of str, answer: Answer). Slots carry what can be mutated.

def med_slots(a, m, rng, cite, alt_units, brand_prob=0.5):
    g, b, v, unit, how = m
    name = b if rng.random() < brand_prob else g
    a.slot("drug", name, med=m)
    a.lit(" ")
    a.slot("dose", dose_text(v, unit, "alt" if alt_units and rng.random() < 0.6 else "same"), med=m)
    a.lit(" %s %s" % (how, cite))


def lab_slot(a, lab, v):
    a.slot("lab", lab_text(v, lab[4]), lab=lab, value=v)


def date_slot(a, d, rng, styles):
    a.slot("date", date_text(d, rng.choice(styles)), date=d)


def side_slot(a, side):
    a.slot("side", side, side=side)


# ---- dev families ----

def dev_clinic_visit(p, rng):
    m1, m2, m3, _ = p["meds"]
    (l1, v1), (l2, v2), _ = p["labs"]
    d = p["dates"][2]
    src = [
        "Office visit %s. S: Follows up for diabetes and hypertension. O: %s %s %s, %s %s %s. A: Stable. P: Continue %s; start %s %s %s. Recheck labs in 3 months."
        % (date_text(d, "us"), l1[0], lab_text(v1, l1[4]), l1[1], l2[0], lab_text(v2, l2[4]), l2[1], med_line(m1, rng), m2[0], dose_text(m2[2], m2[3], "same"), m2[4]),
        "Medication list: %s; %s." % (med_line(m3, rng), med_line(m1, rng)),
    ]
    a = Answer()
    a.lit("At the visit on ")
    date_slot(a, d, rng, ["long", "american", "iso"])
    a.lit(" [1], ")
    a.slot("drug", rng.choice([m2[0], m2[1]]), med=m2)
    a.lit(" ")
    a.slot("dose", dose_text(m2[2], m2[3], "alt" if rng.random() < 0.5 else "same"), med=m2)
    a.lit(" %s was started [1]. %s was " % (m2[4], l1[0]))
    lab_slot(a, l1, v1)
    a.lit(" %s [1]. They also take " % l1[1])
    med_slots(a, m3, rng, "[2].", True)
    return src, a


def dev_lab_report(p, rng):
    (l1, v1), (l2, v2), (l3, v3) = p["labs"]
    d = p["dates"][1]
    src = [
        "Laboratory report, collected %s.\n%s: %s %s\n%s: %s %s\n%s: %s %s" % (date_text(d, "iso"), l1[0], lab_text(v1, l1[4]), l1[1], l2[0], lab_text(v2, l2[4]), l2[1], l3[0], lab_text(v3, l3[4]), l3[1]),
        "Comment: results reviewed with the patient; repeat in 6 weeks.",
    ]
    a = Answer()
    a.lit("- ")
    a.lit(l1[0] + ": ")
    lab_slot(a, l1, v1)
    a.lit(" %s [1]\n- %s: " % (l1[1], l2[0]))
    lab_slot(a, l2, v2)
    a.lit(" %s [1]\n- Collected on " % l2[1])
    date_slot(a, d, rng, ["us", "long", "short"])
    a.lit(" [1]\n- Repeat in 6 weeks [2]")
    return src, a


def dev_radiology(p, rng):
    site, side = p["site"], p["side"]
    other = "right" if side == "left" else "left"
    d = p["dates"][0]
    m = p["meds"][0]
    src = [
        "X-ray of the %s %s on %s: %s. The %s %s is normal." % (side, site, date_text(d, "long"), FINDINGS[site], other, p["other_site"]),
        "Plan: analgesia with %s; review in clinic." % med_line(m, rng),
    ]
    a = Answer()
    a.lit("Imaging of the ")
    side_slot(a, side)
    a.lit(" %s on " % site)
    date_slot(a, d, rng, ["iso", "american", "us"])
    a.lit(" showed %s [1]. Pain relief: " % FINDINGS[site])
    med_slots(a, m, rng, "[2].", False)
    return src, a


def dev_discharge(p, rng):
    m1, m2, m3, m4 = p["meds"]
    d_in, d_out = p["dates"][1], p["dates"][2]
    src = [
        "Discharge summary. Admitted %s, discharged %s. Diagnosis: community-acquired pneumonia of the %s lower lobe."
        % (date_text(d_in, "iso"), date_text(d_out, "iso"), p["side"]),
        "Discharge medications: %s; %s; %s. Follow up with the GP in 2 weeks." % (med_line(m1, rng), med_line(m2, rng), med_line(m3, rng)),
    ]
    a = Answer()
    a.lit("The patient was discharged on ")
    date_slot(a, d_out, rng, ["long", "american", "short"])
    a.lit(" after pneumonia of the ")
    side_slot(a, p["side"])
    a.lit(" lower lobe [1]. Medicines at discharge: ")
    for i, m in enumerate([m1, m2]):
        a.slot("drug", rng.choice([m[0], m[1]]), med=m)
        a.lit(" ")
        a.slot("dose", dose_text(m[2], m[3], "alt" if rng.random() < 0.5 else "same"), med=m)
        a.lit(" and " if i == 0 else " [2]. ")
    a.lit("GP follow-up in %s [2]." % rng.choice(["2 weeks", "14 days", "two weeks"]))
    return src, a


def dev_med_rec(p, rng):
    meds = p["meds"]
    src = ["Medication reconciliation:\n" + "\n".join("- " + med_line(m, rng, "alt" if rng.random() < 0.4 else "same") for m in meds)]
    a = Answer()
    for m in meds[:3]:
        a.lit("* ")
        med_slots(a, m, rng, "[1]", True)
        a.lit("\n")
    return src, a


def dev_anticoag(p, rng):
    d1, d2 = p["dates"][1], p["dates"][2]
    inr1, inr2 = round(rng.uniform(1.4, 3.8), 1), round(rng.uniform(1.8, 3.2), 1)
    w = [m for m in DRUGS if m[0] == "warfarin"][0]
    dose = rng.choice(w[2])
    wm = ("warfarin", "Coumadin", dose, "mg", "in the evening")
    src = [
        "Anticoagulation clinic %s: INR %s. Warfarin %s mg in the evening, unchanged. Next INR %s." % (date_text(d1, "us"), inr1, fmt_num(dose), date_text(d2, "us")),
        "Indication: atrial fibrillation. Target INR 2.0-3.0.",
    ]
    a = Answer()
    a.lit("On ")
    date_slot(a, d1, rng, ["long", "iso", "american"])
    a.lit(" the INR was ")
    a.slot("lab", str(inr1), lab=("INR", "", 0, 0, 1), value=inr1)
    a.lit(" and ")
    a.slot("drug", rng.choice(["warfarin", "Coumadin"]), med=wm)
    a.lit(" stayed at ")
    a.slot("dose", dose_text(dose, "mg", "same"), med=wm)
    a.lit(" [1]. The next INR is due ")
    date_slot(a, d2, rng, ["long", "iso", "short"])
    a.lit(" [1].")
    return src, a


# ---- test families (held out) ----

def test_handover(p, rng):
    m1, m2, _, _ = p["meds"]
    (l1, v1), _, _ = p["labs"]
    src = [
        "Nursing handover, night shift. Bed 4. Given %s at 22:00 as charted. Latest %s %s %s, doctor informed. Dressing on the %s %s intact."
        % (med_line(m1, rng), l1[0], lab_text(v1, l1[4]), l1[1], p["side"], p["site"]),
        "Due in the morning: %s." % med_line(m2, rng),
    ]
    a = Answer()
    a.lit("Overnight the patient received ")
    med_slots(a, m1, rng, "[1].", True)
    a.lit(" The latest %s was " % l1[0])
    lab_slot(a, l1, v1)
    a.lit(" %s [1]. The dressing on the " % l1[1])
    side_slot(a, p["side"])
    a.lit(" %s is intact [1]. Morning dose: " % p["site"])
    med_slots(a, m2, rng, "[2].", True)
    return src, a


def test_gp_letter(p, rng):
    m1, m2, m3, _ = p["meds"]
    (l1, v1), (l2, v2), _ = p["labs"]
    d = p["dates"][2]
    src = [
        "Dear Dr Okafor, I reviewed your patient in the renal clinic on %s. %s was %s %s and %s %s %s."
        % (date_text(d, "long"), l1[0], lab_text(v1, l1[4]), l1[1], l2[0], lab_text(v2, l2[4]), l2[1]),
        "I have increased %s to %s and would be grateful if you could continue %s. Yours sincerely."
        % (m1[0], dose_text(m1[2], m1[3], "same") + " " + m1[4], med_line(m2, rng)),
    ]
    a = Answer()
    a.lit("The renal clinic saw the patient on ")
    date_slot(a, d, rng, ["iso", "us", "american"])
    a.lit(" [1]; %s was " % l2[0])
    lab_slot(a, l2, v2)
    a.lit(" %s [1]. The dose of " % l2[1])
    a.slot("drug", rng.choice([m1[0], m1[1]]), med=m1)
    a.lit(" was raised to ")
    a.slot("dose", dose_text(m1[2], m1[3], "alt" if rng.random() < 0.5 else "same"), med=m1)
    a.lit(" [2], and the GP is asked to continue ")
    a.slot("drug", rng.choice([m2[0], m2[1]]), med=m2)
    a.lit(" [2].")
    return src, a


def test_ed_note(p, rng):
    site, side = p["site"], p["side"]
    hr, sbp, dbp = rng.randrange(58, 120), rng.randrange(100, 170), rng.randrange(60, 100)
    m = p["meds"][0]
    d = p["dates"][2]
    src = [
        "ED attendance %s. Fall onto the %s %s. HR %d, BP %d/%d. Swelling and tenderness; no deformity." % (date_text(d, "us"), side, site, hr, sbp, dbp),
        "Regular medicines: %s. Discharged with a support and advice." % med_line(m, rng),
    ]
    a = Answer()
    a.lit("After a fall on ")
    date_slot(a, d, rng, ["long", "iso"])
    a.lit(" the ")
    side_slot(a, side)
    a.lit(" %s was swollen and tender [1]. Heart rate " % site)
    a.slot("lab", str(hr), lab=("heart rate", "", 0, 0, 0), value=hr)
    a.lit(", blood pressure %d/%d [1]. Usual medicine: " % (sbp, dbp))
    a.slot("drug", rng.choice([m[0], m[1]]), med=m)
    a.lit(" [2].")
    return src, a


def test_phone(p, rng):
    m1 = p["meds"][1]
    d1, d2 = p["dates"][1], p["dates"][2]
    src = [
        "Telephone follow-up %s. Tolerating %s well. No side effects reported." % (date_text(d1, "iso"), med_line(m1, rng, "alt" if rng.random() < 0.5 else "same")),
        "Booked a review for %s; bring home readings." % date_text(d2, "long"),
    ]
    a = Answer()
    a.lit("On the call of ")
    date_slot(a, d1, rng, ["american", "us", "short"])
    a.lit(" the patient was tolerating ")
    med_slots(a, m1, rng, "[1].", True)
    a.lit(" A review is booked for ")
    date_slot(a, d2, rng, ["iso", "american"])
    a.lit(" [2].")
    return src, a


def test_thyroid(p, rng):
    dose = rng.choice([25, 50, 75, 88, 100, 125, 150])
    lm = ("levothyroxine", "Synthroid", dose, "mcg", "every morning")
    tsh = round(rng.uniform(0.3, 9.0), 1)
    d = p["dates"][2]
    src = [
        "Endocrine review %s. TSH %s mIU/L on levothyroxine sodium %s mcg daily. Euthyroid clinically." % (date_text(d, "short"), tsh, dose),
        "Plan: continue the same dose; TSH again in 8 weeks.",
    ]
    a = Answer()
    a.lit("At the endocrine review (")
    date_slot(a, d, rng, ["iso", "long", "us"])
    a.lit(") the TSH was ")
    a.slot("lab", str(tsh), lab=("TSH", "mIU/L", 0, 0, 1), value=tsh)
    a.lit(" mIU/L on ")
    a.slot("drug", rng.choice(["levothyroxine", "Synthroid"]), med=lm)
    a.lit(" ")
    a.slot("dose", dose_text(dose, "mcg", "alt" if rng.random() < 0.5 else "same"), med=lm)
    a.lit(" daily [1]. TSH is to be repeated in %s [2]." % rng.choice(["8 weeks", "56 days", "eight weeks"]))
    return src, a


def test_eye_ear(p, rng):
    site = rng.choice(["eye", "ear"])
    side = p["side"]
    drops = ("latanoprost", "Xalatan", 1, "drop", "at night") if site == "eye" else ("ofloxacin", "Ocuflox", 4, "drops", "twice daily")
    d = p["dates"][1]
    src = [
        "Clinic %s: %s %s %s. Started %s %d %s into the %s %s %s." % (date_text(d, "iso"), side, site, "raised pressure" if site == "eye" else "discharge", drops[0], drops[2], drops[3], side, site, drops[4]),
        "Review in 4 weeks with repeat examination of both %ss." % site,
    ]
    a = Answer()
    a.lit("The ")
    side_slot(a, side)
    a.lit(" %s was treated from " % site)
    date_slot(a, d, rng, ["long", "us"])
    a.lit(" with ")
    a.slot("drug", rng.choice([drops[0], drops[1]]), med=drops)
    a.lit(" %d %s %s [1]. Review in 4 weeks [2]." % (drops[2], drops[3], drops[4]))
    return src, a


DEV = [dev_clinic_visit, dev_lab_report, dev_radiology, dev_discharge, dev_med_rec, dev_anticoag]
TEST = [test_handover, test_gp_letter, test_ed_note, test_phone, test_thyroid, test_eye_ear]

# --- Planting ------------------------------------------------------------------------------


def plant(a, sources, rng):
    """Mutate one slot so the answer states something no source holds; returns the kind."""
    joined = "\n".join(sources)
    options = []
    for i, (text, slot) in enumerate(a.parts):
        if slot is None:
            continue
        options.append((slot["kind"], i))
    rng.shuffle(options)
    for kind, i in options:
        text, slot = a.parts[i]
        new = None
        if kind == "dose":
            g, b, v, unit, how = slot["med"]
            pool = [x for d in DRUGS if d[0] == g for x in d[2]] or [v]
            pool = [x for x in pool + [v * 2, v * 3] if x != v]
            rng.shuffle(pool)
            for x in pool:
                cand = dose_text(x, unit, "same")
                if fmt_num(x) not in joined:
                    new, planted = cand, "wrong_dose"
                    break
        elif kind == "drug":
            g = slot["med"][0]
            if rng.random() < 0.3:
                cand = rng.choice(INVENTED)
            else:
                other = rng.choice([d for d in DRUGS if d[0] != g])
                cand = rng.choice([other[0], other[1]])
            # Neither name of the replacement may stand in a source (a brand for a generic
            # there is the same medicine).
            names = [cand] + [n for d in DRUGS if cand in (d[0], d[1]) for n in (d[0], d[1])]
            if all(n.lower() not in joined.lower() and n.split()[0].lower() not in joined.lower() for n in names):
                new, planted = cand, "wrong_drug"
        elif kind == "side":
            cand = "right" if slot["side"] == "left" else "left"
            new, planted = cand, "swapped_side"
        elif kind == "date":
            d = slot["date"]
            for _ in range(10):
                nd = d + datetime.timedelta(days=rng.choice([-1, 1]) * rng.randrange(1, 90))
                if rng.random() < 0.3:
                    nd = d.replace(year=d.year + rng.choice([-1, 1])) if not (d.month == 2 and d.day == 29) else nd
                if all(date_text(nd, s) not in joined for s in ["iso", "us", "long"]) and nd.month != d.month:
                    new, planted = text.replace(text, date_text(nd, rng.choice(["iso", "long", "american"]))), "invented_date"
                    break
        elif kind == "lab":
            v = slot["value"]
            dec = slot["lab"][4]
            for _ in range(10):
                delta = rng.choice([-1, 1]) * rng.uniform(0.1, 0.4) * max(abs(v), 1)
                nv = round(v + delta, dec) if dec else int(round(v + delta))
                t = lab_text(nv, dec) if dec else str(nv)
                if nv != v and t not in joined:
                    new, planted = t, "wrong_lab_value"
                    break
        if new is not None:
            a.parts[i] = (new, dict(slot, planted=planted))
            return planted
    return None


def drop_citation(answer_text, labels, rng):
    """Remove the citation of one sentence; label that sentence. Returns new text and labels."""
    import re

    cites = [m for m in re.finditer(r" ?\[\d\]", answer_text)]
    if not cites:
        return answer_text, labels, False
    m = rng.choice(cites)
    s, e = m.start(), m.end()
    # Only a sentence's only citation: a sentence with another one is still cited.
    prev_end = max(answer_text[:s].rfind(". "), answer_text[:s].rfind("\n"), 0)
    nxt = [x for x in (answer_text.find(". ", e), answer_text.find("\n", e)) if x >= 0]
    sentence = answer_text[prev_end:min(nxt) if nxt else len(answer_text)]
    if sentence.count("[") != 1:
        return answer_text, labels, False
    b_s, b_e = len(answer_text[:s].encode()), len(answer_text[:e].encode())
    removed = b_e - b_s
    new = answer_text[:s] + answer_text[e:]
    out = []
    for l in labels:
        if l["start"] >= b_e:
            l = dict(l, start=l["start"] - removed, end=l["end"] - removed)
        out.append(l)
    # The sentence: from the previous sentence end (or line start) to this point.
    before = new[:s]
    cut = max(before.rfind(". "), before.rfind("\n"), before.rfind("]. "))
    start_char = cut + 2 if cut >= 0 and before[cut] == "." else (cut + 1 if cut >= 0 else 0)
    out.append({"kind": "uncited_sentence", "start": len(new[:start_char].encode()), "end": len(new[:s].encode())})
    return new, out, True


def generate(families, seed, per_family):
    rng = random.Random(seed)
    records = []
    for fam in families:
        for i in range(per_family):
            p = patient(rng)
            sources, a = fam(p, rng)
            roll = rng.random()
            planted = None
            if roll < 0.75:
                planted = plant(a, sources, rng)
            text, labels = a.render()
            if rng.random() < 0.15:
                text, labels, _ = drop_citation(text, labels, rng)
            records.append({"family": fam.__name__, "sources": sources, "answer": text, "planted": labels})
    return records


def main():
    for name, fams, seed in [("dev", DEV, 18001), ("test", TEST, 18002)]:
        recs = generate(fams, seed, 60)
        with open(os.path.join(HERE, "check_%s.jsonl" % name), "w", encoding="utf-8") as f:
            for r in recs:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        planted = sum(len(r["planted"]) for r in recs)
        print(name, len(recs), "records,", planted, "planted labels")


if __name__ == "__main__":
    main()
