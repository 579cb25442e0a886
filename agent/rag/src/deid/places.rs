//! Places smaller than a state: street addresses by their components in several countries'
//! orders (number first or last, street type before or after the name, PO boxes, military
//! mail), postal codes by country shape when an address or a city is beside them, and cities by
//! the words around them ("lives with her son in …", "City: …", "the … clinic").
//!
//! Pure code: text in, spans out.

use std::sync::LazyLock;

use regex::Regex;

use super::Category;
use super::detect::{Span, is_place_word_safe};

fn re(pattern: &str) -> Regex {
    super::detect::compile(pattern)
}

/// A capitalised word of any script, possibly with an apostrophe ("Sull'Arno", "Ørestad").
const CAP: &str = r"\p{Lu}[\p{Ll}\p{M}]+(?:['’]\p{L}[\p{Ll}\p{M}]*)?";
/// Particles inside street and place names.
const PARTICLE: &str = r"(?:d[aeiou]s?|de\s+la|del|della|delle|dei|degli|di|van|von|der|den|het|le|la|les|du|des|al|el|sur|sous|am|an|im|auf|y|e|i|na|nad|pod|under|upon|on)";
/// Street types written before the name (Romance, Slavic, Turkish, some English).
const STREET_BEFORE: &str = r"(?:rue|avenue|av\.|boulevard|bd\.?|chemin|impasse|all[ée]e|place|quai|route|cours|passage|calle|c/|avenida|avda\.?|plaza|paseo|camino|carretera|cuesta|ronda|traves[ií]a|v[ií]a|viale|piazza|piazzale|corso|vicolo|largo|strada|borgo|contrada|incrocio|rotonda|stretto|canale|vico|rua|travessa|pra[çc]a|alameda|rodovia|estrada|jardim|vila|lagoa|quadra|setor|conjunto|residencial|ladeira|viela|morro|aeroporto|ch[áa]cara|col[ôo]nia|condom[íi]nio|distrito|esplanada|esta[çc][ãa]o|fazenda|feira|loteamento|n[úu]cleo|parque|p[áa]tio|recanto|s[íi]tio|trecho|trevo|vereda|viaduto|vial|ul\.|ulica|al\.|aleja|plac|pl\.|os\.|osiedle|skwer|rynek|bulwar|n[áa]m[ěe]st[ií]|n[áa]m\.|t[řr][ií]da|sokak|sok\.|sk\.|cadde(?:si)?|cad\.|mahallesi|mah\.|bulvar[ıi])";
/// Street types joined to the end of the name ("Hauptstraße", "Skolvägen", "Herlufsholmvej").
const STREET_JOINED: &str = r"(?:boulevard|plantsoen|markt|pad|baan|wal|burg|stra(?:ß|ss)e|str\.|weg|platz|allee|gasse|ring|damm|ufer|steig|pfad|chaussee|straat|laan|plein|gracht|singel|kade|dijk|hof|steeg|vej|gade|str[æa]de|all[ée]|v[äa]gen|gatan|v[äa]g|gr[äa]nd|torget|veien|gata|gaten|ova|sk[áa]|n[íi]|ovo)";
/// USPS Publication 28 street suffixes (and common abbreviations).
const STREET_AFTER: &str = r"(?:Alley|Aly|Annex|Arcade|Avenue|Ave|Bayou|Beach|Bend|Bluffs?|Bottom|Boulevard|Blvd|Branch|Bridge|Brooks?|Burgs?|Bypass|Camp|Canyon|Cape|Causeway|Centers?|Centre|Circles?|Cir|Cliffs?|Close|Club|Commons?|Corners?|Course|Courts?|Ct|Coves?|Creek|Crescent|Crest|Crossing|Crossroad|Curve|Dale|Dam|Divide|Drives?|Dr|Estates?|Expressway|Extensions?|Falls?|Ferry|Fields?|Flats?|Fords?|Forest|Forges?|Forks?|Fort|Freeway|Gardens?|Gate|Gateway|Glens?|Greens?|Groves?|Harbors?|Haven|Heights|Highway|Hwy|Hills?|Hollow|Inlet|Islands?|Isle|Junctions?|Keys?|Knolls?|Lakes?|Land|Landing|Lane|Ln|Light|Lights|Loaf|Locks?|Lodge|Loop|Mall|Manors?|Meadows?|Mews|Mills?|Mission|Motorway|Mount|Mountains?|Neck|Orchard|Oval|Overpass|Parks?|Parkways?|Pkwy|Pass|Passage|Path|Pike|Pines?|Place|Pl|Plains?|Plaza|Points?|Ports?|Prairie|Radial|Ramp|Ranch|Rapids?|Rest|Ridges?|River|Road|Roads|Rd|Route|Row|Rue|Run|Shoals?|Shores?|Skyway|Springs?|Spurs?|Squares?|Sq|Station|Stravenue|Streams?|Streets?|St|Summit|Terrace|Ter|Throughway|Trace|Track|Trafficway|Trail|Trl|Trailer|Tunnel|Turnpike|Underpass|Unions?|Valleys?|Viaduct|Views?|Villages?|Ville|Vista|Walks?|Wall|Ways?|Wells?|Wharf|Wynd|Reserve|Parade|Esplanade|Promenade|Rise|Grange|Circuit|Crescent|Gardens|Vale|Chase|Green|Marg|Nagar|Chowk|Ganj)";
/// A unit after or before a street ("Apt. 756", "Suite 622", "Piano 0", "Flat 3").
const UNIT: &str = r"(?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|Fl|Room|Rm|Piso|Piano|Stock|Etage|Bus|lok\.|m\.|H\.?\s?No)\.?\s*#?\s*\d+[A-Za-z]?";
/// Postal codes by country shape.
const POSTCODE: &str = r"(?:[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}|[A-Z]\d[A-Z]\s?\d[A-Z]\d|\d{4}\s?[A-Z]{2}|\d{5}-\d{3,4}|\d{2}-\d{3}|\d{3}\s\d{2}|\d{4,6}|\d{8})";

struct Rules {
    street_before: Regex,
    street_joined: Regex,
    street_after: Regex,
    unit: Regex,
    po_box: Regex,
    military: Regex,
    postcode_city: Regex,
    distinct_postcode: Regex,
    postcode_keyword: Regex,
    address_label: Regex,
    city_label: Regex,
    living_in: Regex,
    the_place_clinic: Regex,
    preposition_place: Regex,
    line_postcode: Regex,
    address_tail: Regex,
}

static RULES: LazyLock<Rules> = LazyLock::new(|| Rules {
    street_before: re(&format!(
        r"(?i:\b{STREET_BEFORE})\s+(?:{PARTICLE}\s+){{0,2}}{CAP}(?:[\s-]+(?:{PARTICLE}\s+){{0,2}}{CAP}){{0,3}}(?:,?\s+(?:n[º°o]\.?\s*)?\d{{1,5}}[A-Za-z]?(?:[/-]\d{{1,4}}[A-Za-z]?)?\b)?"
    )),
    street_joined: re(&format!(r"\b\p{{Lu}}[\p{{L}}\p{{M}}-]*(?i:{STREET_JOINED})\s+\d{{1,5}}[A-Za-z]?(?:[/-]\d{{1,4}}[A-Za-z]?)?\b")),
    street_after: re(&format!(r"\b\d{{1,6}}[A-Za-z]?(?:[-/]\d{{1,4}})?,?\s+(?:[NSEW]\.?\s+)?(?:{CAP}\s+){{1,3}}{STREET_AFTER}\b\.?")),
    unit: re(&format!(r"\b{UNIT}\b")),
    po_box: re(r"(?i)\b(?:P\.?\s?O\.?\s*Box|Post\s+Office\s+Box|Postfach|Apartado(?:\s+de\s+Correos)?|Caixa\s+Postal|Casella\s+Postale|Skrytka\s+pocztowa|Postbus|Bo[iî]te\s+Postale)\s+\d{1,6}\b|\bBP\s+\d{5}\b"),
    military: re(r"\b(?:PSC|CMR|Unit)\s+\d{3,5},?\s+Box\s+\d{1,5}\b|\b(?:USNS|USS|USCGC)\s+\p{Lu}[\p{L}.'-]*(?:[ ]\p{Lu}[\p{L}.'-]*){0,3}|\b(?:APO|FPO|DPO)\s+(?:AE|AP|AA)\b"),
    postcode_city: re(&format!(r"\b({POSTCODE})\s+({CAP}(?:[\s-]+(?:{PARTICLE}[\s-]+)?{CAP}){{0,3}})")),
    distinct_postcode: re(r"\b(?:[A-Z]{1,2}\d[A-Z\d]?\s\d[A-Z]{2}|[A-Z]\d[A-Z]\s?\d[A-Z]\d)\b"),
    postcode_keyword: re(&format!(r"(?i:\b(?:post\s*code|postal\s*code|zip(?:\s*code)?|PLZ|CEP|code\s+postal|c\.p\.|CAP)\b)\s*[:#]?\s*({POSTCODE})\b")),
    address_label: re(r"(?im)\b(?:(?:home|street|postal|mailing|billing|correspondence|patient|new|current|previous|permanent|residential|work)\s+)?(?:address(?:es)?|addr\.?|residence|street|anschrift|adresse|direcci[óo]n|indirizzo|endere[çc]o|adres|domicile|domicilio)\s*(?::|\bis\b|\bon file\b)?\s*"),
    city_label: re(&format!(r"(?m)\b\b(?i:town/city|city/town|city|town|village|ort|stadt|ville|ciudad|citt[àa]|cidade|plaats|miasto|municipality|place of residence)\s*[:/]\s*({CAP}(?:[\s-]+(?:{PARTICLE}[\s-]+)?{CAP}){{0,3}})")),
    living_in: re(&format!(
        r"\b(?i:lives|living|lived|live|resides|residing|resident|moved|relocated|born|grew\s+up|visiting|travel(?:l)?ed|home|transferred|arrived|came|comes|commutes|works|working|drove|driven|phoned|called|calling|joined|based|stays|staying|admitted|referred)\b[^.\n;]{{0,50}}?\b(?i:in|near|from|to|at|outside|around)\s+({CAP}(?:[\s-]+(?:{PARTICLE}[\s-]+)?{CAP}){{0,3}})"
    )),
    the_place_clinic: re(&format!(r"\b(?i:the)\s+({CAP}(?:[\s-]+(?:{PARTICLE}[\s-]+)?{CAP}){{0,2}})\s+(?:clinic|hospital|office|practice|surgery|centre|center|branch|site|pharmacy|health centre|medical centre)\b")),
    preposition_place: re(&format!(r"\b(?:in|near|from|to|outside)\s+({CAP}(?:[\s-]+(?:{PARTICLE}[\s-]+)?{CAP}){{0,2}})")),
    line_postcode: re(&format!(r"\b({POSTCODE})\b")),
    address_tail: re(&format!(
        r"^(?:,?\s+(?P<zip1>{POSTCODE}),?\s+(?P<city1>{CAP}(?:[\s-]+(?:{PARTICLE}[\s-]+)?{CAP}){{0,3}})|,?\s+(?P<city2>{CAP}(?:[\s-]+(?:{PARTICLE}[\s-]+)?{CAP}){{0,3}})(?:,?\s+(?:[A-Z]{{2}}\s+)?(?P<zip2>{POSTCODE}))?)\b"
    )),
});

/// Where an address written after a label ends: the line, a semicolon, or a sentence.
fn address_value_end(text: &str, from: usize) -> usize {
    let rest = &text[from..];
    let mut end = rest.find(['\n', ';', '"', '(']).unwrap_or(rest.len()).min(120);
    while !rest.is_char_boundary(end) {
        end -= 1;
    }
    let mut cut = end;
    // A period followed by a space ends the address unless it closes a short abbreviation
    // ("St.", "Apt.", "ul.").
    for (i, _) in rest[..end].match_indices(". ") {
        let before = rest[..i].trim_end();
        let word = before.rsplit(|c: char| !c.is_alphanumeric()).next().unwrap_or("");
        let capitals = !word.is_empty() && word.chars().all(char::is_uppercase);
        if word.chars().count() > 3 || capitals || before.len() < i || before.ends_with(|c: char| c.is_ascii_digit()) {
            cut = i;
            break;
        }
    }
    from + rest[..cut].trim_end_matches(['.', ',', ' ']).len()
}

/// Whether some word of a candidate place is no ordinary word, country, eponym or acronym
/// ("South Dumdum" is a place; "South Africa", "Parkinson Disease" are not).
fn unknown_place(candidate: &str) -> bool {
    candidate.split([' ', '-']).filter(|w| w.chars().next().is_some_and(char::is_uppercase)).any(|w| !is_place_word_safe(w))
}

/// Whether the text at `start` begins a sentence (only punctuation or a line break before it).
fn sentence_start(text: &str, start: usize) -> bool {
    let before = text[..start].trim_end_matches([' ', '\t', '"', '(']);
    before.is_empty() || before.ends_with(['.', '!', '?', '\n', ':'])
}

/// Places found, and the values of address labels ("Address: …"): those are removed where no
/// more specific span covers them (see [`address_fill`]), so the street, the city and the
/// postal code keep their own categories.
pub(crate) struct Found {
    pub spans: Vec<Span>,
    pub address_values: Vec<(usize, usize)>,
}

/// The parts of an address value that no other span covers and that hold a number or a word
/// that is no ordinary word, state or country: removed as address.
pub(crate) fn address_fill(text: &str, values: &[(usize, usize)], covered: &[Span]) -> Vec<Span> {
    let mut out = Vec::new();
    for &(start, end) in values {
        let mut at = start;
        let mut pieces = Vec::new();
        // `covered` is sorted by start: begin at the first span that can reach this value.
        let first = covered.partition_point(|s| s.end <= start);
        for s in covered[first..].iter().take_while(|s| s.start < end).filter(|s| start < s.end) {
            if s.start > at {
                pieces.push((at, s.start));
            }
            at = at.max(s.end);
        }
        if at < end {
            pieces.push((at, end));
        }
        for (a, b) in pieces {
            for part in split_keep_offsets(&text[a..b], a) {
                let (ps, pe) = part;
                let piece = &text[ps..pe];
                let meaningful = piece.chars().any(|c| c.is_ascii_digit())
                    || piece.split_whitespace().any(|w| w.chars().any(char::is_alphabetic) && !is_place_word_safe(w));
                if meaningful {
                    let whole_code = LINE_POSTCODE_ONLY.is_match(piece);
                    let category = if whole_code {
                        Category::Zip
                    } else if piece.chars().any(|c| c.is_ascii_digit()) {
                        Category::Address
                    } else {
                        Category::Location
                    };
                    out.push(Span { start: ps, end: pe, category });
                }
            }
        }
    }
    out
}

static LINE_POSTCODE_ONLY: LazyLock<Regex> = LazyLock::new(|| re(&format!(r"^(?:[A-Z]{{2}}\s+)?{POSTCODE}$")));

/// Comma-separated parts of a piece, trimmed, with their offsets in the text.
fn split_keep_offsets(piece: &str, base: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    for part in piece.split(',') {
        let lead = part.len() - part.trim_start_matches([' ', '.', ';', '-', '\t']).len();
        let body = part.trim_matches([' ', '.', ';', '-', '\t']);
        if !body.is_empty() {
            out.push((base + at + lead, base + at + lead + body.len()));
        }
        at += part.len() + 1;
    }
    out
}

pub(crate) fn spans(text: &str) -> Found {
    let r = &*RULES;
    let mut out = Vec::new();
    let mut address_values = Vec::new();
    let push = |out: &mut Vec<Span>, start: usize, end: usize, category: Category| {
        if end > start {
            out.push(Span { start, end, category });
        }
    };
    for rx in [&r.street_before, &r.street_joined, &r.street_after, &r.unit, &r.po_box, &r.military] {
        for m in rx.find_iter(text) {
            // "place a catheter", "route of administration": a street type needs a name after it,
            // which the pattern asks for; a street type at a sentence start in lowercase text is
            // still an address only when a number or a comma-separated place follows.
            push(&mut out, m.start(), m.end(), Category::Address);
        }
    }
    // After an address label: the whole value, street to city and postal code.
    for m in r.address_label.find_iter(text) {
        let from = m.end();
        let starts_right = text[from..].chars().next().is_some_and(char::is_alphanumeric);
        if !starts_right || from == m.start() {
            continue;
        }
        let mut end = address_value_end(text, from);
        // An address block goes on over short lines holding a postal code ("City, 12345").
        while let Some(next) = text[end..].strip_prefix('\n') {
            let line = next.split('\n').next().unwrap_or("");
            if line.len() < 60 && !line.contains(':') && r.line_postcode.is_match(line) && line.chars().any(char::is_alphabetic) {
                end += 1 + line.len();
            } else {
                break;
            }
        }
        let value = &text[from..end];
        // A label followed by prose ("Address: see above") is not an address.
        if value.chars().any(|c| c.is_ascii_digit()) || value.contains(',') {
            address_values.push((from, end));
        }
    }
    for c in r.city_label.captures_iter(text) {
        if let Some(g) = c.get(1) {
            push(&mut out, g.start(), g.end(), Category::Location);
        }
    }
    for c in r.postcode_city.captures_iter(text) {
        let (Some(code), Some(city)) = (c.get(1), c.get(2)) else { continue };
        // "2019 Denmark", "1234 Patients": a year or a count before an ordinary word.
        if unknown_place(city.as_str()) && !(code.as_str().len() == 4 && code.as_str().starts_with(['1', '2']) && code.as_str()[..2].parse::<u8>().is_ok_and(|y| y == 19 || y == 20)) {
            push(&mut out, code.start(), code.end(), Category::Zip);
            push(&mut out, city.start(), city.end(), Category::Location);
        }
    }
    for m in r.distinct_postcode.find_iter(text) {
        push(&mut out, m.start(), m.end(), Category::Zip);
    }
    for c in r.postcode_keyword.captures_iter(text) {
        if let Some(g) = c.get(1) {
            push(&mut out, g.start(), g.end(), Category::Zip);
        }
    }
    // What follows a street on its line: the city and the postal code, in either order
    // ("Herlufsholmvej 6, 8759 Kalvehave", "Via Verdi 5, Granada", "Furugatan 2, Landskrona 12345").
    let addresses: Vec<usize> = out.iter().filter(|s| s.category == Category::Address).map(|s| s.end).collect();
    for end in addresses {
        let line_end = text[end..].find('\n').map_or(text.len(), |i| end + i);
        for c in r.address_tail.captures_iter(&text[end..line_end]).take(1) {
            if let Some(g) = c.name("city1").or(c.name("city2")).filter(|g| unknown_place(g.as_str())) {
                push(&mut out, end + g.start(), end + g.end(), Category::Location);
            }
            for name in ["zip1", "zip2"] {
                if let Some(g) = c.name(name) {
                    push(&mut out, end + g.start(), end + g.end(), Category::Zip);
                }
            }
        }
    }
    for rx in [&r.living_in, &r.the_place_clinic] {
        for c in rx.captures_iter(text) {
            let Some(g) = c.get(1) else { continue };
            if unknown_place(g.as_str()) {
                push(&mut out, g.start(), g.end(), Category::Location);
            }
        }
    }
    for c in r.preposition_place.captures_iter(text) {
        let Some(g) = c.get(1) else { continue };
        let after = text[g.end()..].trim_start();
        // Eponyms and named things: "in Parkinson disease", "from Cochrane reviews".
        let named_thing = after.starts_with(|c: char| c.is_lowercase()) && super::detect::is_eponym_context(after);
        if unknown_place(g.as_str()) && !named_thing && !sentence_start(text, c.get(0).map_or(0, |m| m.start())) {
            push(&mut out, g.start(), g.end(), Category::Location);
        }
    }
    Found { spans: out, address_values }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<(&str, Category)> {
        let f = spans(text);
        let mut s = f.spans.clone();
        s.extend(address_fill(text, &f.address_values, &f.spans));
        s.sort_by_key(|s| (s.start, s.end));
        s.into_iter().map(|s| (&text[s.start..s.end], s.category)).collect()
    }

    #[test]
    fn streets_in_several_orders() {
        for (text, street) in [
            ("Lives at Hauptstraße 12 with his wife.", "Hauptstraße 12"),
            ("Adresse: 5 rue de la Paix", "rue de la Paix"),
            ("sent to Via Giuseppe Verdi 14", "Via Giuseppe Verdi 14"),
            ("at aleja Okrężna 776 in the city", "aleja Okrężna 776"),
            ("at 1777 Kramer Court yesterday", "1777 Kramer Court"),
            ("PO Box 4471", "PO Box 4471"),
            ("PSC 9320, Box 0595", "PSC 9320, Box 0595"),
        ] {
            let f = found(text);
            assert!(f.iter().any(|(s, c)| s.contains(street) && *c == Category::Address), "{text}: {f:?}");
        }
    }

    #[test]
    fn postal_codes_and_cities_with_context() {
        let f = found("Address: Herlufsholmvej 6, 8759 Kalvehave\nCity: Ostrowiec Świętokrzyski\nLives with her son in Venhorst.");
        for want in ["Kalvehave", "Ostrowiec Świętokrzyski", "Venhorst"] {
            assert!(f.iter().any(|(s, _)| s.contains(want)), "{want}: {f:?}");
        }
    }

    #[test]
    fn medical_prose_has_no_places() {
        let f = found("In 2019 Denmark enrolled 1234 Patients; place a catheter; the route of administration; seen in Parkinson disease and in COPD.");
        assert!(f.is_empty(), "{f:?}");
    }
}
