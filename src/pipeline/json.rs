//! A [`Lookup`] as JSON, written straight into a buffer: byte for byte what `serde_json` writes for
//! the same value (the property test below holds it to that), without serde's per-field machinery.
//!
//! Every found answer is about a kilobyte of keys, short strings and numbers. Through serde each key
//! is escaped byte by byte and each field goes through the generic serializer and `io::Write`; here a
//! key is one copy of a literal and a string that needs no escaping (nearly all of them) is one scan
//! and one copy. The derived `Serialize` stays for the streams, the CLI and tests.

use std::collections::BTreeMap;

use super::{Lookup, SourceReport};
use crate::profile::{Company, Profile, Ranked, Sourced};

/// A member's name as written before its value, `"name":`, as one literal.
macro_rules! key {
    ($name:literal) => {
        concat!("\"", $name, "\":")
    };
}

/// Appends `lookup` as JSON to `out`.
pub fn write_lookup(lookup: &Lookup, out: &mut Vec<u8>) {
    let mut o = Object::open(out);
    o.key(key!("found"))
        .extend_from_slice(bool_text(lookup.found));
    let out = o.key(key!("profile"));
    match &lookup.profile {
        Some(profile) => write_profile(profile, out),
        None => out.extend_from_slice(b"null"),
    }
    write_array(o.key(key!("sources")), &lookup.sources, write_report);
    write_u64(o.key(key!("took_ms")), lookup.took_ms);
    write_f64(o.key(key!("cost")), lookup.cost);
    o.close();
}

fn write_report(r: &SourceReport, out: &mut Vec<u8>) {
    let mut o = Object::open(out);
    write_str(o.key(key!("name")), &r.name);
    write_str(o.key(key!("status")), r.status.as_str());
    write_u64(o.key(key!("latency_ms")), r.latency_ms);
    o.close();
}

fn write_profile(p: &Profile, out: &mut Vec<u8>) {
    let mut o = Object::open(out);
    o.ranked(key!("name"), &p.name);
    o.ranked(key!("first_name"), &p.first_name);
    o.ranked(key!("last_name"), &p.last_name);
    o.ranked(key!("job_title"), &p.job_title);
    if let Some(company) = &p.company {
        write_company(company, o.key(key!("company")));
    }
    o.ranked(key!("location"), &p.location);
    o.list(key!("emails"), &p.emails);
    o.list(key!("phones"), &p.phones);
    o.list(key!("profiles"), &p.profiles);
    o.ranked(key!("photo"), &p.photo);
    o.ranked(key!("bio"), &p.bio);
    o.list(key!("websites"), &p.websites);
    if !p.facts.is_empty() {
        write_facts(&p.facts, o.key(key!("facts")));
    }
    o.close();
}

fn write_company(c: &Company, out: &mut Vec<u8>) {
    let mut o = Object::open(out);
    o.ranked(key!("name"), &c.name);
    o.ranked(key!("domain"), &c.domain);
    o.close();
}

fn write_facts(facts: &BTreeMap<&'static str, Ranked>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (name, ranked)) in facts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Fact names are code, but written like any string so they can never break the document.
        write_str(out, name);
        out.push(b':');
        write_ranked(ranked, out);
    }
    out.push(b'}');
}

fn write_ranked(r: &Ranked, out: &mut Vec<u8>) {
    let mut o = Object::open(out);
    o.sourced_fields(&r.best);
    if !r.alternatives.is_empty() {
        write_sourced_list(&r.alternatives, o.key(key!("alternatives")));
    }
    o.close();
}

fn write_sourced(s: &Sourced, out: &mut Vec<u8>) {
    let mut o = Object::open(out);
    o.sourced_fields(s);
    o.close();
}

fn write_sourced_list(list: &[Sourced], out: &mut Vec<u8>) {
    write_array(out, list, write_sourced);
}

/// `[a,b,...]`, each item written by `write`.
fn write_array<T>(out: &mut Vec<u8>, items: &[T], write: impl Fn(&T, &mut Vec<u8>)) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(item, out);
    }
    out.push(b']');
}

/// A JSON object being written: knows whether a member came before.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> Object<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, empty: true }
    }

    /// Starts a member, `member` being its name as [`key!`] writes it, and returns the buffer for its
    /// value.
    fn key(&mut self, member: &'static str) -> &mut Vec<u8> {
        debug_assert!(
            member.len() > 3
                && member.starts_with('"')
                && member.ends_with("\":")
                && !needs_escape(&member.as_bytes()[1..member.len() - 2]),
            "{member:?} is not a key! literal"
        );
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.extend_from_slice(member.as_bytes());
        self.out
    }

    /// The member and the ranked value when there is one; nothing otherwise (serde's
    /// `skip_serializing_if`).
    fn ranked(&mut self, member: &'static str, r: &Option<Ranked>) {
        if let Some(r) = r {
            write_ranked(r, self.key(member));
        }
    }

    /// The member and the list when it has values; nothing otherwise.
    fn list(&mut self, member: &'static str, list: &[Sourced]) {
        if !list.is_empty() {
            write_sourced_list(list, self.key(member));
        }
    }

    /// A [`Sourced`] value's members, in the order its `Serialize` writes them.
    fn sourced_fields(&mut self, s: &Sourced) {
        write_str(self.key(key!("value")), &s.value);
        write_f64(self.key(key!("confidence")), s.confidence);
        write_array(self.key(key!("sources")), &s.sources, |name, out| {
            write_str(out, name);
        });
        if let Some(detail) = &s.detail {
            write_str(self.key(key!("detail")), detail);
        }
        if let Some(status) = s.status {
            write_str(self.key(key!("status")), status.as_str());
        }
        if let Some(evidence) = &s.evidence {
            write_str(self.key(key!("evidence")), evidence);
        }
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

fn bool_text(b: bool) -> &'static [u8] {
    if b { b"true" } else { b"false" }
}

/// Whether any byte of `bytes` must be escaped in a JSON string. Written as one pass without an early
/// exit so that it compiles to a vectorised loop.
fn needs_escape(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |any, &b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

/// `s` as a JSON string, escaped as `serde_json` escapes: `\"`, `\\`, the short forms `\b \f \n \r \t`,
/// `\u00xx` (lower-case hex) for the other control characters, everything else as it is.
fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    if !needs_escape(bytes) {
        out.extend_from_slice(bytes);
    } else {
        let mut run = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let short = match b {
                b'"' => b'"',
                b'\\' => b'\\',
                0x08 => b'b',
                0x0c => b'f',
                b'\n' => b'n',
                b'\r' => b'r',
                b'\t' => b't',
                0x00..=0x1f => b'u',
                _ => continue,
            };
            out.extend_from_slice(&bytes[run..i]);
            run = i + 1;
            if short == b'u' {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ]);
            } else {
                out.extend_from_slice(&[b'\\', short]);
            }
        }
        out.extend_from_slice(&bytes[run..]);
    }
    out.push(b'"');
}

fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        // `n % 10` is below 10: the cast keeps it exactly.
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// As `serde_json` writes an `f64`: the shortest form that reads back the same (the same formatter
/// it uses), `null` when not finite.
fn write_f64(out: &mut Vec<u8>, x: f64) {
    if x.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(x).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::profile::EmailStatus;
    use crate::sources::SourceStatus;

    fn serde_bytes(lookup: &Lookup) -> Vec<u8> {
        serde_json::to_vec(lookup).expect("a lookup serialises")
    }

    fn ours(lookup: &Lookup) -> Vec<u8> {
        let mut out = Vec::new();
        write_lookup(lookup, &mut out);
        out
    }

    /// Text with what JSON escaping cares about: quotes, backslashes, every control character, the
    /// solidus (never escaped), DEL, and characters of two, three and four bytes.
    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                4 => prop::char::range('a', 'z'),
                1 => prop::char::range('\u{0}', '\u{1f}'),
                1 => prop::sample::select(vec!['"', '\\', '/', '\u{7f}', 'é', '€', '😀', ' ']),
            ],
            0..12,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    fn confidence() -> impl Strategy<Value = f64> {
        prop_oneof![
            8 => 0.0..=1.0f64,
            1 => prop::sample::select(vec![0.0, 1.0, 0.1, 0.377, 1e-7, 123456789.0, f64::NAN, f64::INFINITY]),
        ]
    }

    fn status() -> impl Strategy<Value = Option<EmailStatus>> {
        prop::option::of(prop::sample::select(vec![
            EmailStatus::Valid,
            EmailStatus::Invalid,
            EmailStatus::AcceptAll,
            EmailStatus::Webmail,
            EmailStatus::Disposable,
            EmailStatus::Unknown,
        ]))
    }

    fn sourced() -> impl Strategy<Value = Sourced> {
        (
            text(),
            confidence(),
            prop::collection::vec(text(), 0..3),
            prop::option::of(text()),
            status(),
            prop::option::of(text()),
        )
            .prop_map(
                |(value, confidence, sources, detail, status, evidence)| Sourced {
                    value,
                    confidence,
                    sources: sources.into_iter().map(Arc::from).collect(),
                    detail,
                    status,
                    evidence,
                    id: None,
                },
            )
    }

    fn ranked() -> impl Strategy<Value = Option<Ranked>> {
        prop::option::of(
            (sourced(), prop::collection::vec(sourced(), 0..3))
                .prop_map(|(best, alternatives)| Ranked { best, alternatives }),
        )
    }

    fn list() -> impl Strategy<Value = Vec<Sourced>> {
        prop::collection::vec(sourced(), 0..3)
    }

    fn profile() -> impl Strategy<Value = Profile> {
        let names = (ranked(), ranked(), ranked(), ranked());
        let company = prop::option::of(
            (ranked(), ranked()).prop_map(|(name, domain)| Company { name, domain }),
        );
        let rest = (ranked(), list(), list(), list(), ranked(), ranked(), list());
        let facts = prop::collection::btree_map(
            prop::sample::select(vec!["registrar", "mail_provider", "odd \"fact\"\n"]),
            ranked().prop_filter_map("a fact has a value", |r| r),
            0..3,
        );
        (names, company, rest, facts).prop_map(
            |(
                (name, first_name, last_name, job_title),
                company,
                (location, emails, phones, profiles, photo, bio, websites),
                facts,
            )| Profile {
                name,
                first_name,
                last_name,
                job_title,
                company,
                location,
                emails,
                phones,
                profiles,
                photo,
                bio,
                websites,
                facts,
            },
        )
    }

    fn report() -> impl Strategy<Value = SourceReport> {
        (
            text(),
            prop::sample::select(SourceStatus::ALL.to_vec()),
            any::<u64>(),
        )
            .prop_map(|(name, status, latency_ms)| SourceReport {
                name: Arc::from(name),
                status,
                latency_ms,
            })
    }

    fn lookup() -> impl Strategy<Value = Lookup> {
        (
            any::<bool>(),
            prop::option::of(profile()),
            prop::collection::vec(report(), 0..4),
            any::<u64>(),
            prop_oneof![Just(0.0), 0.0..1000.0f64, Just(f64::NAN)],
            any::<bool>(),
        )
            .prop_map(
                |(found, profile, sources, took_ms, cost, withheld)| Lookup {
                    found,
                    profile: profile.map(Box::new),
                    sources,
                    took_ms,
                    cost,
                    withheld,
                },
            )
    }

    proptest! {
        #[test]
        fn writes_exactly_what_serde_json_writes(lookup in lookup()) {
            let ours = ours(&lookup);
            let theirs = serde_bytes(&lookup);
            prop_assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
        }
    }

    #[test]
    fn a_miss_is_the_short_answer_serde_writes() {
        let miss = Lookup {
            found: false,
            profile: None,
            sources: vec![SourceReport {
                name: Arc::from("gravatar"),
                status: SourceStatus::Miss,
                latency_ms: 12,
            }],
            took_ms: 13,
            cost: 0.0,
            withheld: true,
        };
        assert_eq!(
            String::from_utf8(ours(&miss)).ok().as_deref(),
            Some(
                r#"{"found":false,"profile":null,"sources":[{"name":"gravatar","status":"miss","latency_ms":12}],"took_ms":13,"cost":0.0}"#
            )
        );
    }

    #[test]
    fn escapes_control_characters_quotes_and_backslashes_as_serde_does() {
        let text = "a\"b\\c\u{8}\u{c}\n\r\t\u{1}\u{1f}/\u{7f}é";
        let mut out = Vec::new();
        write_str(&mut out, text);
        let written = String::from_utf8(out).ok();
        assert_eq!(
            written.as_deref(),
            Some("\"a\\\"b\\\\c\\b\\f\\n\\r\\t\\u0001\\u001f/\u{7f}é\""),
        );
        assert_eq!(written, serde_json::to_string(text).ok());
    }
}
