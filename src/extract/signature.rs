//! The name / title / company heuristic for email signatures.
//!
//! A signature usually starts after a closing ("Best regards,", "Cordialement,", "Mit freundlichen
//! Grüßen", "Saludos,") or a `--` line; its first line is the name, sometimes with `| Title | Company`;
//! a nearby line holds the job title (recognised by keywords), and the company is on the title line
//! after a separator ("at", "chez", "bei", "en", "|", ",", "-") or on a line of its own.

use std::sync::LazyLock;

use regex::Regex;

/// What the heuristic found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Guess {
    pub name: Option<String>,
    pub title: Option<String>,
    pub company: Option<String>,
}

static CLOSING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?:best|kind|warm|many thanks and)?\s*(?:regards|wishes)|^(?:best|cheers|thanks|thank you|sincerely|yours(?: sincerely| truly)?|all the best)\b|^(?:bien )?cordialement|^bien à (?:vous|toi)|^salutations|^sincères salutations|^mit (?:freundlichen|besten) grüßen|^(?:viele|beste|liebe) grüße|^mfg\b|^freundliche grüße|^(?:un )?saludo|^saludos(?: cordiales)?|^atentamente|^un abrazo|^--\s*$")
        .expect("static regex")
});
static TITLE_WORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:ceo|cto|cfo|coo|cmo|cio|ciso|vp|svp|evp|founder|co-founder|cofounder|fondateur|fondatrice|gründer|gründerin|fundador|fundadora|president|président|présidente|presidente|director|directrice|directeur|directora|head of|manager|managerin|engineer|ingénieur|ingénieure|ingeniero|ingeniera|developer|développeur|développeuse|entwickler|entwicklerin|desarrollador|desarrolladora|designer|consultant|consultante|consultor|consultora|berater|beraterin|analyst|analyste|analista|officer|lead|responsable|chef de|chargée?|gérante?|geschäftsführer|geschäftsführerin|leiter|leiterin|vertrieb|gerente|jefe|jefa|partner|associate|associé|associée|socio|counsel|attorney|avocat|avocate|abogado|abogada|anwalt|anwältin|specialist|spécialiste|especialista|coordinator|coordinatrice|coordinador|coordinadora|assistant|assistante|asistente|recruiter|recruteur|owner|principal|architect|architecte|arquitecto|scientist|product|marketing|sales|commercial|commerciale|comercial|account executive|executive|researcher|professor|professeur|profesor|prokurist|inhaber|inhaberin|referent|referentin|sachbearbeiter|sachbearbeiterin)\b")
        .expect("static regex")
});
static LEGAL_SUFFIX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:inc|ltd|llc|llp|plc|gmbh|ag|kg|se|sa|sas|sarl|sasu|eurl|s\.?a\.?s?|s\.?l\.?u?|s\.?r\.?l|bv|nv|oy|ab|corp|corporation|limited|group|groupe|gruppe|grupo)\b\.?\s*$")
        .expect("static regex")
});
/// A line that is contact data, not a name/title/company.
static CONTACT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)@|https?://|www\.|\d{3}|^(?:tel|tél|phone|mobile|mob|fax|handy|m|t|p|e|w)\b\.?\s*[:.]")
        .expect("static regex")
});
static SEPARATOR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\s+(?:at|@|chez|bei(?: der)?|en|de la|en la|–|—|-)\s+|\s*[|•·]\s*|,\s+")
        .expect("static regex")
});

/// Guesses the name, title and company of the person who signed `text`.
pub fn guess(text: &str) -> Guess {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let start = lines
        .iter()
        .rposition(|l| CLOSING.is_match(l) && l.chars().count() <= 40)
        .map(|i| i + 1);
    let block: Vec<&str> = match start {
        Some(i) => lines[i..]
            .iter()
            .copied()
            .filter(|l| !l.is_empty())
            .collect(),
        None => lines.iter().copied().filter(|l| !l.is_empty()).collect(),
    };
    let Some(name_at) = block.iter().take(4).position(|l| name_part(l).is_some()) else {
        return Guess::default();
    };
    let mut g = Guess::default();
    let parts: Vec<&str> = SEPARATOR.split(block[name_at]).map(str::trim).collect();
    g.name = name_part(block[name_at]);
    // "Jane Doe | CEO | Acme" carries everything on one line.
    let rest: Vec<&str> = parts
        .iter()
        .skip(1)
        .copied()
        .filter(|p| !p.is_empty())
        .collect();
    read_title_line(&rest, &mut g);
    let mut title_line = None;
    for (i, line) in block.iter().enumerate().skip(name_at + 1).take(4) {
        if CONTACT.is_match(line) {
            continue;
        }
        if g.title.is_none() && TITLE_WORD.is_match(line) {
            let parts: Vec<&str> = SEPARATOR
                .split(line)
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect();
            read_title_line(&parts, &mut g);
            title_line = Some(i);
            continue;
        }
        // A company on its own line sits right under the title, or says what it is ("Acme GmbH").
        let under_title = title_line.is_some_and(|t| t + 1 == i)
            || (title_line.is_none() && g.title.is_some() && i == name_at + 1);
        if g.company.is_none()
            && plausible_company(line)
            && (under_title || LEGAL_SUFFIX.is_match(line))
        {
            g.company = Some(line.to_string());
        }
        if g.title.is_some() && g.company.is_some() {
            break;
        }
    }
    g
}

/// Title and company from the parts of one line: the title-like part is the title, the next
/// non-title part the company.
fn read_title_line(parts: &[&str], g: &mut Guess) {
    let Some(t) = parts.iter().position(|p| TITLE_WORD.is_match(p)) else {
        if g.company.is_none() {
            g.company = parts
                .iter()
                .find(|p| plausible_company(p))
                .map(|p| p.to_string());
        }
        return;
    };
    if g.title.is_none() {
        g.title = Some(parts[t].to_string());
    }
    if g.company.is_none() {
        g.company = parts
            .iter()
            .enumerate()
            .filter(|(i, p)| *i != t && plausible_company(p) && !TITLE_WORD.is_match(p))
            .map(|(_, p)| p.to_string())
            .next();
    }
}

/// The name at the start of a line, if the line starts with 2-4 capitalised words and no digits.
fn name_part(line: &str) -> Option<String> {
    let first = SEPARATOR.split(line).next()?.trim();
    let words: Vec<&str> = first.split_whitespace().collect();
    let ok = (2..=4).contains(&words.len())
        && first.chars().count() <= 50
        && !CONTACT.is_match(first)
        && !TITLE_WORD.is_match(first)
        && !LEGAL_SUFFIX.is_match(first)
        && words.iter().all(|w| {
            let mut chars = w.chars();
            chars.next().is_some_and(char::is_uppercase)
                && w.chars().all(|c| c.is_alphabetic() || "-'’.".contains(c))
        });
    ok.then(|| first.to_string())
}

fn plausible_company(s: &str) -> bool {
    let s = s.trim();
    !s.is_empty()
        && s.chars().count() <= 60
        && !CONTACT.is_match(s)
        && s.chars()
            .next()
            .is_some_and(|c| c.is_uppercase() || c.is_ascii_digit())
        && s.split_whitespace().count() <= 6
}
