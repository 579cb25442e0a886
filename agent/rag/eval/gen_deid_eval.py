#!/usr/bin/env python3
"""Labelled evaluation text for de-identification, from clinical templates filled with Faker
surrogates of many locales. Reproducible: the same seed writes the same files.

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install faker
    /tmp/venv/bin/python agent/rag/eval/gen_deid_eval.py     # writes agent/rag/eval/*.jsonl

The set is split BY TEMPLATE: the detector is developed on `deid_dev.jsonl` (DEV_TEMPLATES)
and reported on `deid_test.jsonl` (TEST_TEMPLATES), whose templates were written before any
detector output on them was seen and are never used to tune it. Likewise `medical_dev.jsonl`
and `medical_test.jsonl` hold identifier-free medical text (abstract-like sentences with
eponyms, drugs, trial arms, statistics) for the precision measure.

Every value is invented by Faker; no real person is in these files. Each record:
  {"id", "template", "kind", "locale", "text", "labels": [{"start", "end", "category", "value"}]}
with byte offsets into the UTF-8 text, categories as the Rust `Category` tags (NAME, ADDRESS,
LOCATION, ZIP, DATE, AGE, PHONE, FAX, EMAIL, SSN, MRN, PLAN, ACCOUNT, LICENSE, VEHICLE, DEVICE,
URL, IP).
"""

import datetime
import json
import os
import random
import re
import sys

from faker import Faker

SEED = 20261129
DOCS_PER_TEMPLATE = 14
MEDICAL_PER_TEMPLATE = 25

LOCALES = [
    "en_US", "en_GB", "en_AU", "en_CA", "en_IN", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL",
    "pt_BR", "pl_PL", "sv_SE", "cs_CZ", "tr_TR", "da_DK",
]

# ---------------------------------------------------------------- surrogate values

MONTHS = {
    "en": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"],
    "de": ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober", "November", "Dezember"],
    "fr": ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre", "novembre", "décembre"],
    "es": ["enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre", "noviembre", "diciembre"],
    "it": ["gennaio", "febbraio", "marzo", "aprile", "maggio", "giugno", "luglio", "agosto", "settembre", "ottobre", "novembre", "dicembre"],
    "nl": ["januari", "februari", "maart", "april", "mei", "juni", "juli", "augustus", "september", "oktober", "november", "december"],
    "pt": ["janeiro", "fevereiro", "março", "abril", "maio", "junho", "julho", "agosto", "setembro", "outubro", "novembro", "dezembro"],
    "pl": ["stycznia", "lutego", "marca", "kwietnia", "maja", "czerwca", "lipca", "sierpnia", "września", "października", "listopada", "grudnia"],
}


def lang_of(locale):
    return locale.split("_")[0]


def a_date(rng, lo=1930, hi=2025):
    start = datetime.date(lo, 1, 1)
    return start + datetime.timedelta(days=rng.randrange((datetime.date(hi, 12, 31) - start).days))


def date_text(rng, locale, d=None):
    d = d or a_date(rng, 2015, 2025)
    en = MONTHS["en"]
    forms = [
        lambda: f"{d.month:02d}/{d.day:02d}/{d.year}",
        lambda: f"{d.day:02d}/{d.month:02d}/{d.year}",
        lambda: f"{d.day}.{d.month}.{d.year}",
        lambda: f"{d.day:02d}.{d.month:02d}.{d.year}",
        lambda: d.isoformat(),
        lambda: f"{d.day}-{en[d.month - 1][:3]}-{d.year}",
        lambda: f"{en[d.month - 1]} {d.day}, {d.year}",
        lambda: f"{d.day} {en[d.month - 1]} {d.year}",
        lambda: f"{en[d.month - 1][:3]} {d.day}",
        lambda: f"{en[d.month - 1]} {d.year}",
        lambda: f"{d.month}/{d.day}/{d.year % 100:02d}",
    ]
    lang = lang_of(locale)
    if lang in MONTHS and lang != "en":
        local = MONTHS[lang][d.month - 1]
        forms += {
            "de": [lambda: f"{d.day}. {local} {d.year}"] * 3,
            "fr": [lambda: f"{d.day} {local} {d.year}"] * 3,
            "es": [lambda: f"{d.day} de {local} de {d.year}"] * 3,
            "it": [lambda: f"{d.day} {local} {d.year}"] * 3,
            "nl": [lambda: f"{d.day} {local} {d.year}"] * 3,
            "pt": [lambda: f"{d.day} de {local} de {d.year}"] * 3,
            "pl": [lambda: f"{d.day} {local} {d.year}"] * 3,
        }[lang]
    return rng.choice(forms)()


def dob_text(rng, locale):
    return date_text(rng, locale, a_date(rng, 1930, 2005))


def person(fake, rng):
    first, last = fake.first_name(), fake.last_name()
    shape = rng.random()
    if shape < 0.55:
        return f"{first} {last}"
    if shape < 0.7:
        return f"{first} {fake.random_uppercase_letter()}. {last}"
    if shape < 0.85:
        return f"{last}, {first}"
    return f"{first} {last}-{fake.last_name()}" if rng.random() < 0.4 else f"{first} {fake.first_name()} {last}"


def phone(fake, rng, locale):
    p = fake.phone_number().replace("\n", " ")
    r = rng.random()
    if locale == "en_US" and r < 0.25:
        p = re.sub(r"x\d+$", "", p).strip() + rng.choice([" x", " ext. ", " ext ", "x"]) + str(rng.randrange(10, 9999))
    return p


def mrn(rng):
    return rng.choice([
        lambda: f"{rng.randrange(10**7, 10**8):08d}",
        lambda: f"{rng.choice('ABHKMRZ')}{rng.randrange(10**6, 10**7)}",
        lambda: f"{rng.choice('HMR')}-{rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}",
        lambda: f"{rng.randrange(10, 99)}-{rng.randrange(10000, 99999)}",
    ])()


def plan_id(rng):
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    return rng.choice([
        lambda: "".join(rng.choice(letters) for _ in range(3)) + str(rng.randrange(10**8, 10**9)),
        lambda: f"{rng.choice(letters)}{rng.randrange(10**9, 10**10)}",
        lambda: f"{rng.randrange(1, 9)}{rng.choice(letters)}{rng.choice(letters)}{rng.randrange(1, 9)}-{rng.choice(letters)}{rng.choice(letters)}{rng.randrange(1, 9)}-{rng.choice(letters)}{rng.choice(letters)}{rng.randrange(10, 99)}",
        lambda: f"{''.join(rng.choice(letters) for _ in range(2))}-{rng.randrange(10000, 99999)}-{rng.randrange(10, 99)}",
    ])()


def iban(fake, rng):
    i = fake.iban()
    if rng.random() < 0.5:
        i = " ".join(i[k:k + 4] for k in range(0, len(i), 4))
    return i


def card(fake, rng):
    c = fake.credit_card_number()
    if rng.random() < 0.4 and len(c) == 16:
        c = " ".join(c[k:k + 4] for k in range(0, 16, 4))
    elif rng.random() < 0.3 and len(c) == 16:
        c = "-".join(c[k:k + 4] for k in range(0, 16, 4))
    return c


def licence(rng):
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    return rng.choice([
        lambda: f"{rng.choice(letters)}{rng.randrange(10**7, 10**8)}",
        lambda: f"{rng.choice(letters)}{rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}-{rng.randrange(1000, 9999)}",
        lambda: f"{rng.randrange(10**8, 10**9)}",
    ])()


def device_serial(rng):
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    return rng.choice([
        lambda: f"{''.join(rng.choice(letters) for _ in range(3))}{rng.randrange(10**5, 10**6)}{rng.choice(letters)}",
        lambda: f"SN{rng.randrange(10**6, 10**7)}",
        lambda: f"{rng.randrange(1000, 9999)}-{''.join(rng.choice(letters) for _ in range(2))}-{rng.randrange(100, 999)}",
    ])()


def age_over_89(rng):
    return str(rng.randrange(90, 106))


class Fill:
    """One document's surrogates: names and places chosen once, so a note speaks of one person."""

    def __init__(self, rng, locale):
        self.rng = rng
        self.locale = locale
        self.fake = Faker(locale)
        self.fake.seed_instance(rng.randrange(2**31))
        self.us = Faker("en_US")
        self.us.seed_instance(rng.randrange(2**31))
        f = self.fake
        self.values = {
            "patient": person(f, rng),
            "first": f.first_name(),
            "last": f.last_name(),
            "relative": f"{f.first_name()} {f.last_name()}",
            "relative_first": f.first_name(),
            "doctor": f"{f.first_name()} {f.last_name()}",
            "doctor_last": f.last_name(),
            "nurse": f.first_name(),
            "city": f.city(),
            "city2": f.city(),
        }

    def slot(self, name):
        """(text, category or None) for one slot."""
        f, rng, v = self.fake, self.rng, self.values
        if name in v:
            cat = "LOCATION" if name.startswith("city") else "NAME"
            return v[name], cat
        if name == "street":
            return f.street_address().replace("\n", " "), "ADDRESS"
        if name == "postcode":
            return f.postcode(), "ZIP"
        if name == "pobox":
            return rng.choice(["PO Box", "P.O. Box", "Postfach", "BP", "Apartado"]) + f" {rng.randrange(10, 99999)}", "ADDRESS"
        if name == "military":
            u = self.us
            return rng.choice([u.military_apo(), u.military_dpo(), f"{u.military_ship()} {u.last_name()}"]), "ADDRESS"
        if name == "military_tail":
            u = self.us
            return f"{rng.choice(['APO', 'FPO', 'DPO'])} {u.military_state()}", None
        if name == "uszip":
            return self.us.zipcode(), "ZIP"
        if name == "date":
            return date_text(rng, self.locale), "DATE"
        if name == "dob":
            return dob_text(rng, self.locale), "DATE"
        if name == "phone":
            return phone(f, rng, self.locale), "PHONE"
        if name == "usphone":
            return phone(self.us, rng, "en_US"), "PHONE"
        if name == "fax":
            return f.phone_number().replace("\n", " "), "FAX"
        if name == "email":
            return f.email(), "EMAIL"
        if name == "ssn":
            return f.ssn(), "SSN"
        if name == "usssn":
            return self.us.ssn(), "SSN"
        if name == "mrn":
            return mrn(rng), "MRN"
        if name == "plan":
            return plan_id(rng), "PLAN"
        if name == "iban":
            return iban(f, rng), "ACCOUNT"
        if name == "card":
            return card(f, rng), "ACCOUNT"
        if name == "plate":
            return f.license_plate(), "VEHICLE"
        if name == "licence":
            return licence(rng), "LICENSE"
        if name == "url":
            return f.url(), "URL"
        if name == "ip":
            return f.ipv4(), "IP"
        if name == "age":
            return age_over_89(rng), "AGE"
        if name == "serial":
            return device_serial(rng), "DEVICE"
        if name == "state":
            return self.us.state_abbr(), None
        if name == "country":
            return f.current_country(), None
        if name == "n":
            return str(rng.randrange(2, 40)), None
        if name == "dose":
            return str(rng.choice([5, 10, 20, 25, 40, 50, 100, 250, 500])), None
        raise KeyError(name)


SLOT = re.compile(r"\{([a-z_0-9]+)\}")


def render(template, fill):
    out = bytearray()
    labels = []
    pos = 0
    for m in SLOT.finditer(template):
        out += template[pos:m.start()].encode()
        value, cat = fill.slot(m.group(1))
        start = len(out)
        out += value.encode()
        if cat:
            labels.append({"start": start, "end": len(out), "category": cat, "value": value})
        pos = m.end()
    out += template[pos:].encode()
    return out.decode(), labels


# ---------------------------------------------------------------- templates

# Development half: the detector may be tuned on what these produce.
DEV_TEMPLATES = [
    ("soap", """SOAP NOTE
Patient: {patient}    DOB: {dob}    MRN: {mrn}
Date of service: {date}
S: {first} reports two weeks of productive cough and low-grade fever. Lives with her daughter {relative_first} in {city}.
O: T 38.1 C, HR 92, BP 128/76, SpO2 95% on room air. Crackles at the right base.
A: Community-acquired pneumonia, CURB-65 score 1.
P: Amoxicillin {dose} mg three times daily for 5 days. Follow up with Dr. {doctor_last} in one week. Call {phone} with questions.
Signed: {doctor}, MD"""),
    ("discharge", """DISCHARGE SUMMARY
Name: {patient}
Address: {street}, {postcode} {city}
Admitted: {date}   Discharged: {date}
Attending physician: Dr. {doctor}
Diagnosis: Acute exacerbation of COPD (GOLD 3). Oxygen weaned to room air.
Medications on discharge: tiotropium, salbutamol as needed, prednisolone taper.
Follow-up: respiratory clinic in 4 weeks. GP informed by fax to {fax}.
Contact on file: {email}"""),
    ("nursing", """Nursing note {date} 07:40
Pt {patient} resting comfortably, pain 3/10. Wife {relative} visited and asked to be called at {phone}.
Bed alarm on. Falls risk reassessed (Morse 45). Skin intact, Braden 18.
Handover to {nurse}, RN at 19:00."""),
    ("referral", """Dear Dr. {doctor_last},

Re: {patient}, born {dob}, of {street}, {city} {postcode}

Thank you for seeing this {age}-year-old gentleman with progressive memory loss over 18 months. MMSE 21/30.
His son {relative} can be reached at {phone} or {email}.
Insurance member ID: {plan}

Yours sincerely,
{doctor}"""),
    ("sentences", """My name is {patient} and I was born on {dob}.
Last name? {last}. First name? {first}.
Please follow up with {doctor} at the {city} clinic.
Send the results to {email} or fax {fax}."""),
    ("billing", """Billing record for {patient}
Account holder address: {street}
{city}, {postcode}
Card on file: {card}
Bank: IBAN {iban}
Social security number: {ssn}
Medicare: {plan}"""),
    ("us_letter", """{patient}
{street}
{city}, {state} {uszip}
Phone {usphone}

Dear {first},
Your appointment on {date} has been confirmed. Please bring your driver's license {licence} and insurance card ({plan})."""),
    ("military", """Patient {patient} is an active-duty sailor. Mailing address: {military}, {military_tail} {uszip}.
Seen on {date} for a sports injury of the left knee; MRI ordered. Contact: {usphone}. SSN {usssn}."""),
    ("device", """Device clinic {date}
{patient} ({age} y/o), pacemaker serial {serial}, interrogated remotely from IP {ip}.
Battery 8 years. No arrhythmia episodes. Portal: {url}
Next check with Dr. {doctor_last}."""),
    ("vehicle", """Emergency department triage {date}
{patient} brought in by her neighbour {relative} after a low-speed car crash. Vehicle plate {plate}.
GCS 15, no loss of consciousness. Collar cleared by NEXUS criteria.
Home: {street}, {city}."""),
    ("pobox", """Correspondence address for {patient}: {pobox}, {postcode} {city}.
Telephone {phone}. Please post the clinic letter from {date} to this address, attention {relative}."""),
    ("progress", """Progress note, ward 4B, {date}
{first} {last} is a {age}-year-old woman admitted from her home in {city} with delirium.
Overnight she was agitated; haloperidol was avoided given Parkinson disease.
Plan discussed with her niece {relative} ({phone}). Reviewed with {doctor}."""),
    ("intake", """New patient intake form
Full name: {patient}
Date of birth: {dob}
Home address: {street}
Town/City: {city}
Postcode: {postcode}
Mobile: {phone}
E-mail: {email}
National ID / SSN: {ssn}
Emergency contact: {relative}, {phone}"""),
    ("telehealth", """Telehealth visit {date}. Connected from {ip}. {patient} joined by video from {city}; her husband {relative_first} was present.
She asks that results be sent to {email}. Prescription sent to the pharmacy on {street}."""),
]

# Test half: written before any detector output on them was seen; never used for tuning.
TEST_TEMPLATES = [
    ("soap", """S/O/A/P  {date}
Subjective: {patient} presents with three days of dysuria and urinary frequency. Her partner {relative} drove her in from {city}.
Objective: afebrile, suprapubic tenderness, urine dipstick leukocytes 2+, nitrites positive.
Assessment: uncomplicated cystitis.
Plan: nitrofurantoin {dose} mg twice daily for 5 days; return if flank pain. Pharmacy callback number {phone}.
{doctor}, NP"""),
    ("discharge", """Hospital discharge letter
Patient name: {patient}
Patient address: {street}, {city}, {postcode}
Date of birth: {dob}     Hospital no.: {mrn}
Date of admission: {date}     Date of discharge: {date}
Consultant: {doctor}
Summary: NSTEMI treated with PCI to the LAD; dual antiplatelet therapy for 12 months. Echo LVEF 45%.
Please repeat renal function in one week. Queries to the cardiology secretary on {phone} or by fax {fax}."""),
    ("nursing", """NURSING PROGRESS {date}
{patient} (bed 12) settled overnight. IV fluids running. Daughter {relative} phoned at 02:15 from {city}, updated.
Mobilised with a frame. Family asks that post go to {street}, {postcode}.
Report given to {nurse} (charge nurse)."""),
    ("referral", """REFERRAL
To: Dr. {doctor}, Department of Neurology
From: {relative}, general practitioner
Patient: {patient}   D.O.B. {dob}
Address: {street}, {postcode} {city}
Phone: {phone}
Reason: tremor at rest of the right hand, bradykinesia. ?Parkinson's disease. DaTscan requested.
Patient's insurance policy no. {plan}"""),
    ("sentences", """Hello, my name's {patient}, I live at {street} in {city}.
You can reach me on {phone} or write to {email}.
Surname: {last}   Given name: {first}
I would like to book a follow-up with Dr {doctor_last} after my scan on {date}."""),
    ("payment", """Payment authorisation
I, {patient}, authorise the clinic to charge my card {card} for the co-payment.
Refunds to account {iban}.
Billing address: {street}, {postcode} {city}
Signature on file, {date}"""),
    ("us_intake", """PATIENT REGISTRATION
Name: {patient}      SSN: {usssn}
Street: {street}
City/State/ZIP: {city}, {state} {uszip}
Home phone: {usphone}
Driver license no: {licence}
Primary insurance member #: {plan}
Employer contact: {relative}"""),
    ("military", """Referral for a veteran's spouse, {patient}. Current address {military}, {military_tail} {uszip}; previously {street}, {city}.
Follow-up video call booked for {date}; phone {usphone}."""),
    ("implant", """Cochlear implant programming, {date}
{patient}, {age} years old, right ear device serial number {serial}. Remote fitting session from address {ip}.
Instructions uploaded to {url}. Next appointment with {doctor}."""),
    ("police", """ED note {date}: {patient} walked in after a cycling collision with a van (registration {plate}). Accompanied by friend {relative}.
Abrasions to both forearms, tetanus updated. Lives alone in {city}."""),
    ("postbox", """Letters returned unopened; new mailing address supplied by {patient}: {pobox}, {city} {postcode}.
Verified by phone ({phone}) on {date}."""),
    ("geriatric", """Geriatric assessment, {date}
Mrs {last} ({first}), aged {age}, lives with her grandson {relative_first} near {city}.
Barthel index 60/100. Clock drawing abnormal. Known Alzheimer disease and Hashimoto thyroiditis.
Home visit booked at {street}. Discussed with {doctor}."""),
    ("form", """Contact details update
Family name: {last}
First name(s): {first}
Birth date: {dob}
Residence: {street}, {postcode} {city}
Tel: {phone}
Email address: {email}
Personal identity number: {ssn}
Next of kin: {relative}"""),
    ("chat", """Portal message received {date}: "Hi, this is {patient}. I moved to {city} last month, new address {street}. My new number is {phone}. Thanks, {first}"
Reply sent by {nurse} from the nursing team."""),
]

# Identifier-free medical text: abstract-like sentences. Slots are filled from term lists only.
DISEASES = [
    "Parkinson's disease", "Crohn's disease", "Hodgkin lymphoma", "Alzheimer's disease", "Cushing syndrome", "Addison's disease",
    "Graves' disease", "Hashimoto thyroiditis", "Guillain-Barré syndrome", "Kawasaki disease", "Huntington's disease",
    "Raynaud phenomenon", "Sjögren syndrome", "Ménière's disease", "Down syndrome", "Wilson's disease", "Barrett's oesophagus",
    "Paget's disease of bone", "Tourette syndrome", "Marfan syndrome", "Ehlers-Danlos syndrome", "Kaposi sarcoma",
    "Burkitt lymphoma", "Ewing sarcoma", "Wilms tumour", "Bell's palsy", "Lyme disease", "Behçet's disease", "Still's disease",
    "Takayasu arteritis", "Wegener's granulomatosis", "Creutzfeldt-Jakob disease", "Duchenne muscular dystrophy",
    "type 2 diabetes", "heart failure", "chronic kidney disease", "atrial fibrillation", "COPD", "asthma", "HIV infection",
    "multiple sclerosis", "rheumatoid arthritis", "systemic lupus erythematosus", "ulcerative colitis", "psoriasis",
]
DRUGS = [
    "metformin", "empagliflozin", "semaglutide", "apixaban", "rivaroxaban", "warfarin", "atorvastatin", "rosuvastatin", "lisinopril",
    "sacubitril/valsartan", "adalimumab", "infliximab", "ustekinumab", "vedolizumab", "levodopa", "donepezil", "lecanemab",
    "methotrexate", "tocilizumab", "dolutegravir", "tenofovir", "Humira", "Keytruda", "pembrolizumab", "nivolumab",
    "amoxicillin", "doxycycline", "ceftriaxone", "insulin glargine", "prednisolone", "hydroxychloroquine",
]
METHODS = [
    "Kaplan-Meier estimates", "Cox proportional hazards models", "the Mann-Whitney U test", "Fisher's exact test",
    "the Wilcoxon signed-rank test", "Bonferroni correction", "the Student t test", "Pearson correlation", "Spearman correlation",
    "a Bayesian hierarchical model", "Poisson regression", "the Hosmer-Lemeshow test", "Bland-Altman analysis",
    "the Glasgow Coma Scale", "the Apgar score", "the Charlson comorbidity index", "the Likert scale", "the Mini-Mental State Examination",
]
ORGS = ["WHO", "CDC", "NICE", "the FDA", "the EMA", "ESC", "AHA", "KDIGO", "GOLD", "Cochrane", "MEDLINE", "Embase", "PubMed"]
COUNTRIES = ["Denmark", "Germany", "Brazil", "Japan", "India", "Canada", "Spain", "Italy", "the Netherlands", "Poland", "Sweden", "Kenya"]
SIGNS = ["Murphy's sign", "McBurney's point", "Babinski sign", "Romberg test", "Kernig's sign", "Trousseau sign", "Chvostek sign",
         "the Epley manoeuvre", "the Heimlich manoeuvre", "a Foley catheter", "a Swan-Ganz catheter", "the Whipple procedure",
         "Nissen fundoplication", "Roux-en-Y gastric bypass", "Hartmann's procedure", "the Valsalva manoeuvre"]

MED_DEV = [
    "Background: {disease} remains a leading cause of morbidity. Methods: We enrolled {n} adults treated with {drug} and used {method}.",
    "Both groups were comparable at baseline (group: {x} versus {y} years).",
    "According to {org} guidance, patients with {disease} should receive {drug} unless contraindicated.",
    "Results: Health-related quality of life improved; the Health Survey score rose by {x} points (95% CI {y} to {z}).",
    "The trial was conducted in {country} and {country2} between {year} and {year2}.",
    "Brain MRI showed no new lesions; {sign} was negative in all participants.",
    "Adults living with HIV were eligible if their viral load was suppressed on {drug}.",
    "In conclusion, {drug} reduced hospitalisation for {disease} (hazard ratio {x}, P = 0.0{n}).",
]
MED_TEST = [
    "Objective: To compare {drug} with {drug2} in {disease}. Design: randomised, double-blind trial across {n} centres in {country}.",
    "Participants in group {n} received {drug}; {method} were applied to the primary outcome.",
    "The {org} criteria were used to classify {disease}; secondary outcomes included {sign}.",
    "Survey respondents (n = {n}) reported that Both arms were acceptable, and Health Canada approved the protocol in {year}.",
    "Among patients with {disease} and {disease2}, mortality at {n} months was {x}% versus {y}%.",
    "Data were extracted from {org} and {org2}; heterogeneity was assessed with I² = {n}%.",
    "Limitations: Brain imaging was not repeated, and the WHO classification changed during the study.",
    "Eponyms such as {disease} and {sign} are retained in the index; {method} was prespecified.",
]


class MedFill:
    def __init__(self, rng):
        self.rng = rng

    def slot(self, name):
        r = self.rng
        table = {
            "disease": DISEASES, "disease2": DISEASES, "drug": DRUGS, "drug2": DRUGS, "method": METHODS, "org": ORGS, "org2": ORGS,
            "country": COUNTRIES, "country2": COUNTRIES, "sign": SIGNS,
        }
        if name in table:
            return r.choice(table[name]), None
        if name in ("x", "y", "z"):
            return f"{r.randrange(1, 9)}.{r.randrange(0, 9)}", None
        if name == "n":
            return str(r.randrange(2, 99)), None
        if name in ("year", "year2"):
            return str(r.randrange(1995, 2025)), None
        raise KeyError(name)


def write(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def notes(split, templates, rng):
    out = []
    for t_index, (kind, template) in enumerate(templates):
        for k in range(DOCS_PER_TEMPLATE):
            locale = LOCALES[(t_index * DOCS_PER_TEMPLATE + k) % len(LOCALES)]
            text, labels = render(template, Fill(rng, locale))
            out.append({"id": f"{split}-{t_index:02d}-{k:02d}", "template": f"{split}-{t_index:02d}", "kind": kind, "locale": locale, "text": text, "labels": labels})
    return out


def medical(split, templates, rng):
    out = []
    for t_index, template in enumerate(templates):
        for k in range(MEDICAL_PER_TEMPLATE):
            text, _ = render(template, MedFill(rng))
            out.append({"id": f"{split}-med-{t_index:02d}-{k:02d}", "template": f"{split}-med-{t_index:02d}", "text": text})
    return out


def main():
    # Some Faker locales pick from sets, whose order follows string hashing: fix it.
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    here = os.path.dirname(os.path.abspath(__file__))
    Faker.seed(SEED)
    rng = random.Random(SEED)
    write(os.path.join(here, "deid_dev.jsonl"), notes("dev", DEV_TEMPLATES, rng))
    write(os.path.join(here, "deid_test.jsonl"), notes("test", TEST_TEMPLATES, rng))
    write(os.path.join(here, "medical_dev.jsonl"), medical("dev", MED_DEV, rng))
    write(os.path.join(here, "medical_test.jsonl"), medical("test", MED_TEST, rng))
    return 0


if __name__ == "__main__":
    sys.exit(main())
