//! Result rows: what is stored per row, and how it is rendered as CSV or NDJSON. Pure.
//!
//! # Formula neutralisation (CSV only)
//! A spreadsheet opening a CSV executes a cell that starts with `=`, `+`, `-` or `@`, and some also act on
//! a leading tab or carriage return. Uploaded files and upstream answers are both untrusted, so every
//! CSV cell we write (input cells, header cells and enrichment cells alike) that starts with one of those
//! characters gets a single quote `'` in front. This deliberately includes E.164 phone numbers
//! (`+33612345678` is written `'+33612345678`) and negative numbers: a phone is text, not a formula,
//! and a spreadsheet shows the quoted form as the plain number while never evaluating it. Programs that
//! want the exact values should use the NDJSON format.
//!
//! # NDJSON
//! One JSON object per row. JSON has no formula semantics, so NDJSON values are written exactly as read
//! and found, without neutralisation.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::seams::RowSource;
use crate::profile::{Profile, Ranked, Sourced};

/// The enrichment columns, in order, after the input columns.
pub const ENRICH_COLUMNS: [&str; 12] = [
    "enrichd_status",
    "enrichd_name",
    "enrichd_job_title",
    "enrichd_company",
    "enrichd_company_domain",
    "enrichd_emails",
    "enrichd_phones",
    "enrichd_profiles",
    "enrichd_location",
    "enrichd_confidence",
    "enrichd_note",
    "enrichd_sources",
];

/// How multi-valued cells are joined.
const JOIN: &str = " | ";

/// The flattened enrichment of one row, as stored and as rendered.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Enrichment {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company_domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The highest confidence among the values shown, in [0, 1].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
}

impl Enrichment {
    pub fn from_profile(p: &Profile) -> Self {
        let best = |r: &Option<Ranked>| r.as_ref().map(|r| r.best.value.to_string());
        let company = p.company.as_ref();
        let mut confidences: Vec<f64> = Vec::new();
        let mut note = |r: Option<&Ranked>| {
            if let Some(r) = r {
                confidences.push(r.best.confidence);
            }
        };
        note(p.name.as_ref());
        note(p.job_title.as_ref());
        note(company.and_then(|c| c.name.as_ref()));
        note(company.and_then(|c| c.domain.as_ref()));
        note(p.location.as_ref());
        confidences.extend(
            p.emails
                .iter()
                .chain(&p.phones)
                .chain(&p.profiles)
                .map(|s| s.confidence),
        );
        let confidence = confidences
            .into_iter()
            .filter(|c| c.is_finite())
            .fold(None, |m: Option<f64>, c| Some(m.map_or(c, |m| m.max(c))))
            .map(|c| (c.clamp(0.0, 1.0) * 100.0).round() / 100.0);
        Self {
            name: best(&p.name),
            job_title: best(&p.job_title),
            company: company.and_then(|c| best(&c.name)),
            company_domain: company.and_then(|c| best(&c.domain)),
            emails: p.emails.iter().map(with_detail).collect(),
            phones: p.phones.iter().map(|s| s.value.to_string()).collect(),
            profiles: p.profiles.iter().map(|s| s.value.to_string()).collect(),
            location: best(&p.location),
            confidence,
        }
    }

    fn cells(&self) -> [String; 9] {
        let one = |v: &Option<String>| v.clone().unwrap_or_default();
        [
            one(&self.name),
            one(&self.job_title),
            one(&self.company),
            one(&self.company_domain),
            self.emails.join(JOIN),
            self.phones.join(JOIN),
            self.profiles.join(JOIN),
            one(&self.location),
            self.confidence
                .map(|c| format!("{c:.2}"))
                .unwrap_or_default(),
        ]
    }
}

/// `a@b.com (valid)`: the address's status, or what a source said about it.
fn with_detail(s: &Sourced) -> String {
    if let Some(status) = s.status {
        return format!("{} ({})", s.value, status.as_str());
    }
    match &s.detail {
        Some(d) if !d.trim().is_empty() => format!("{} ({})", s.value, d.trim()),
        _ => s.value.to_string(),
    }
}

/// One processed row as stored in a part object (one JSON line each).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredRow {
    /// 1-based data row number in the input (the header is not counted).
    pub row: u64,
    pub cells: Vec<String>,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrichment: Option<Enrichment>,
    /// Why the row was not enriched, or which of its cells were left out and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Each source asked for the row and what became of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<RowSource>,
}

impl StoredRow {
    /// The `enrichd_sources` cell: `gravatar:hit github:miss`.
    pub fn sources_cell(&self) -> String {
        let each: Vec<String> = self
            .sources
            .iter()
            .map(|s| format!("{}:{}", s.name, s.status))
            .collect();
        each.join(" ")
    }

    /// Whether the row could not be enriched: every source failed, or no identifier in it was valid.
    pub fn failed(&self) -> bool {
        self.status == "error" || self.status.starts_with("invalid:")
    }

    /// The row as a miss reads: the tenant's input and note, nothing enrichd added, and a `miss` for
    /// every source that found the person. What a row of a person on the exclusion list becomes when
    /// it is written or served. `impersonal` sources (facts about a domain, guesses that ask nobody)
    /// keep their statuses: a real miss at the same domain shows them the same. A row that is a
    /// miss already is left as it is.
    pub fn as_miss(&mut self, impersonal: &[Arc<str>]) {
        if self.enrichment.take().is_none() {
            return;
        }
        self.status = "not_found".into();
        for s in &mut self.sources {
            if s.status == "hit" && !impersonal.iter().any(|i| **i == *s.name) {
                s.status = "miss".into();
            }
        }
    }
}

/// Makes a cell safe to open in a spreadsheet (see the module doc).
pub fn neutralise(cell: &str) -> Cow<'_, str> {
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => Cow::Owned(format!("'{cell}")),
        _ => Cow::Borrowed(cell),
    }
}

/// Result download format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Ndjson,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Ndjson => "ndjson",
        }
    }
}

/// Renders the header and rows of a result. Holds only the header between calls.
pub struct Renderer {
    format: Format,
    delimiter: u8,
    headers: Vec<String>,
    /// NDJSON keys for the input cells: headers made unique (`email`, `email_2`, ...).
    keys: Vec<String>,
}

impl Renderer {
    pub fn new(format: Format, delimiter: u8, headers: Vec<String>) -> Self {
        let mut keys: Vec<String> = Vec::with_capacity(headers.len());
        for (i, h) in headers.iter().enumerate() {
            let base = if h.trim().is_empty() {
                format!("column_{}", i + 1)
            } else {
                h.clone()
            };
            let mut key = base.clone();
            let mut n = 2;
            while keys.contains(&key) {
                key = format!("{base}_{n}");
                n += 1;
            }
            keys.push(key);
        }
        Self {
            format,
            delimiter,
            headers,
            keys,
        }
    }

    /// The bytes before the first row: the CSV header line (NDJSON has none).
    pub fn head(&self, bom: bool) -> Bytes {
        match self.format {
            Format::Ndjson => Bytes::new(),
            Format::Csv => {
                let mut out = Vec::new();
                if bom {
                    out.extend_from_slice(b"\xEF\xBB\xBF");
                }
                let cells = self
                    .headers
                    .iter()
                    .map(String::as_str)
                    .chain(ENRICH_COLUMNS);
                self.csv_line(&mut out, cells);
                Bytes::from(out)
            }
        }
    }

    /// Renders a run of rows (tests).
    #[cfg(test)]
    pub fn rows(&self, rows: &[StoredRow]) -> Bytes {
        let mut out = Vec::with_capacity(rows.len() * 128);
        for r in rows {
            self.row(r, &mut out);
        }
        Bytes::from(out)
    }

    /// Renders one row onto `out`.
    pub fn row(&self, r: &StoredRow, out: &mut Vec<u8>) {
        match self.format {
            Format::Csv => {
                let extra = r.enrichment.clone().unwrap_or_default().cells();
                let width = self.headers.len();
                let input = r
                    .cells
                    .iter()
                    .map(String::as_str)
                    .chain(std::iter::repeat(""))
                    .take(width);
                let sources = r.sources_cell();
                let cells = input
                    .chain(std::iter::once(r.status.as_str()))
                    .chain(extra.iter().map(String::as_str))
                    .chain(std::iter::once(r.note.as_deref().unwrap_or_default()))
                    .chain(std::iter::once(sources.as_str()));
                self.csv_line(out, cells);
            }
            Format::Ndjson => {
                let input: serde_json::Map<String, serde_json::Value> = self
                    .keys
                    .iter()
                    .zip(r.cells.iter().chain(std::iter::repeat(&String::new())))
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect();
                let sources: serde_json::Map<String, serde_json::Value> = r
                    .sources
                    .iter()
                    .map(|s| (s.name.clone(), serde_json::Value::String(s.status.clone())))
                    .collect();
                let line = serde_json::json!({
                    "row": r.row,
                    "input": input,
                    "status": r.status,
                    "enrichment": r.enrichment,
                    "note": r.note,
                    "sources": sources,
                });
                // Serialising a `Value` of strings and numbers cannot fail.
                if serde_json::to_writer(&mut *out, &line).is_ok() {
                    out.push(b'\n');
                }
            }
        }
    }

    fn csv_line<'a>(&self, out: &mut Vec<u8>, cells: impl Iterator<Item = &'a str>) {
        let mut w = csv::WriterBuilder::new()
            .delimiter(self.delimiter)
            .terminator(csv::Terminator::CRLF)
            .from_writer(out);
        let record: Vec<Cow<'_, str>> = cells.map(neutralise).collect();
        // Writing to a Vec cannot fail for I/O reasons.
        let _ = w.write_record(record.iter().map(|c| c.as_bytes()));
        let _ = w.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_a_spreadsheet_would_execute_are_quoted() {
        let cases = [
            ("=SUM(1)", "'=SUM(1)"),
            ("+33612345678", "'+33612345678"),
            ("-1", "'-1"),
            ("@x", "'@x"),
            ("\tX", "'\tX"),
            ("\rX", "'\rX"),
            ("plain text", "plain text"),
            ("a=b", "a=b"),
            ("", ""),
            ("ada@example.com", "ada@example.com"),
        ];
        for (cell, want) in cases {
            assert_eq!(neutralise(cell), want, "{cell:?}");
        }
    }

    fn row(cells: &[&str], enrichment: Option<Enrichment>) -> StoredRow {
        StoredRow {
            row: 1,
            cells: cells.iter().map(|s| s.to_string()).collect(),
            status: "found".into(),
            enrichment,
            note: None,
            sources: vec![
                RowSource {
                    name: "gravatar".into(),
                    status: "hit".into(),
                },
                RowSource {
                    name: "github".into(),
                    status: "miss".into(),
                },
            ],
        }
    }

    #[test]
    fn csv_puts_input_first_then_enrichment_and_neutralises_both() {
        let r = Renderer::new(Format::Csv, b';', vec!["Email".into(), "Note".into()]);
        let e = Enrichment {
            name: Some("Ada".into()),
            emails: vec!["ada@x.com (valid)".into(), "a@y.com".into()],
            phones: vec!["+33612345678".into()],
            confidence: Some(0.9),
            ..Enrichment::default()
        };
        let text = String::from_utf8(
            [
                r.head(false),
                r.rows(&[row(&["ada@x.com", "=1+1"], Some(e))]),
            ]
            .concat(),
        )
        .expect("utf8");
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines[0], format!("Email;Note;{}", ENRICH_COLUMNS.join(";")));
        assert_eq!(
            lines[1],
            "ada@x.com;'=1+1;found;Ada;;;;ada@x.com (valid) | a@y.com;'+33612345678;;;0.90;;gravatar:hit github:miss"
        );
    }

    #[test]
    fn ndjson_keeps_values_exact_and_unique_keys() {
        let r = Renderer::new(Format::Ndjson, b',', vec!["email".into(), "email".into()]);
        let out = r.rows(&[row(&["=x", "+1"], None)]);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json line");
        assert_eq!(v["input"]["email"], "=x");
        assert_eq!(v["input"]["email_2"], "+1");
        assert_eq!(v["status"], "found");
        assert!(v["enrichment"].is_null());
        assert_eq!(v["sources"]["gravatar"], "hit");
        assert_eq!(v["sources"]["github"], "miss");
    }

    #[test]
    fn a_row_made_a_miss_keeps_what_a_miss_shows_and_nothing_else() {
        let enriched = Enrichment::from_profile(&Profile::default());
        let mut r = row(&["ada@x.com"], Some(enriched));
        r.sources.push(RowSource {
            name: "dns".into(),
            status: "hit".into(),
        });
        let dns: Arc<str> = Arc::from("dns");

        r.as_miss(&[Arc::clone(&dns)]);

        assert_eq!(r.status, "not_found");
        assert!(r.enrichment.is_none());
        assert_eq!(r.cells, ["ada@x.com"], "the tenant's input stays");
        assert_eq!(r.sources_cell(), "gravatar:miss github:miss dns:hit");
        // A miss already (a mirrored row) is left exactly as it is.
        let mut miss = row(&["bob@x.com"], None);
        miss.status = "not_found".into();
        let before = miss.clone();
        miss.as_miss(&[dns]);
        assert_eq!(miss, before);
    }

    #[test]
    fn emails_carry_their_status_detail() {
        let mut p = Profile::default();
        p.emails.push(Sourced {
            value: "ada@x.com".into(),
            confidence: 0.8,
            sources: std::sync::Arc::from([std::sync::Arc::from("s")]),
            detail: Some("valid".into()),
            status: None,
            evidence: None,
        });
        let e = Enrichment::from_profile(&p);
        assert_eq!(e.emails, ["ada@x.com (valid)"]);
        assert_eq!(e.confidence, Some(0.8));
        // A blank detail adds no empty brackets.
        p.emails[0].detail = Some("  ".into());
        assert_eq!(Enrichment::from_profile(&p).emails, ["ada@x.com"]);
    }

    #[test]
    fn a_row_failed_when_its_sources_failed_or_nothing_in_it_was_valid() {
        for (status, failed) in [
            ("error", true),
            ("invalid:phone", true),
            ("invalid:email", true),
            ("found", false),
            ("not_found", false),
            ("skipped", false),
        ] {
            let mut r = row(&["x"], None);
            r.status = status.into();
            assert_eq!(r.failed(), failed, "{status}");
        }
    }

    #[test]
    fn formats_are_named_as_the_download_asks_for_them() {
        assert_eq!(
            (Format::Csv.as_str(), Format::Ndjson.as_str()),
            ("csv", "ndjson")
        );
    }
}
