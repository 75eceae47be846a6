//! A push-based CSV scanner: bytes in, raw records out, limits enforced as it goes. Pure: no I/O.
//!
//! It never holds more than one record plus the header line, so memory does not grow with the file.
//! It strips a UTF-8 byte order mark, sniffs the delimiter (`,` `;` or tab) from the header line,
//! follows quoted fields across newlines, accepts LF, CR and CRLF line ends, and checks as it goes
//! whether the whole input is valid UTF-8 (otherwise the file is read as Windows-1252, of which
//! Latin-1 is a subset for printable text). The structural bytes (`"` `,` `;` tab CR LF) are the same
//! in both encodings, so parsing happens on raw bytes and decoding happens per cell afterwards.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::error::{BatchError, Limit};
use super::settings::BatchLimits;

/// The text encoding of an uploaded file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    Utf8,
    Windows1252,
}

impl Encoding {
    pub fn decode(self, bytes: &[u8]) -> String {
        match self {
            Self::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
            Self::Windows1252 => encoding_rs::WINDOWS_1252
                .decode_without_bom_handling(bytes)
                .0
                .into_owned(),
        }
    }

    /// The encoding a piece of text most likely has on its own.
    pub fn guess(bytes: &[u8]) -> Self {
        if std::str::from_utf8(bytes).is_ok() {
            Self::Utf8
        } else {
            Self::Windows1252
        }
    }
}

/// One record: its fields as raw bytes.
pub type RawRecord = Vec<Vec<u8>>;

const BOM: &[u8] = b"\xEF\xBB\xBF";
/// The header line is looked for within this many bytes; past it, what we have is sniffed.
const SNIFF_MAX: usize = 64 * 1024;
const DELIMITERS: [u8; 3] = [b',', b';', b'\t'];

enum State {
    Sniffing(Vec<u8>),
    Parsing(Box<csv_core::Reader>),
}

/// Streaming CSV scanner. Record 0 is the header.
pub struct Scanner {
    limits: BatchLimits,
    state: State,
    delimiter: Option<u8>,
    bom: bool,
    utf8: Utf8Check,
    tmp: Vec<u8>,
    field: Vec<u8>,
    record: RawRecord,
    records: u64,
    headers: Vec<String>,
}

impl Scanner {
    /// `delimiter` is sniffed from the header line when `None`.
    pub fn new(limits: BatchLimits, delimiter: Option<u8>) -> Self {
        Self {
            limits,
            state: State::Sniffing(Vec::new()),
            delimiter,
            bom: false,
            utf8: Utf8Check::default(),
            tmp: vec![0; 16 * 1024],
            field: Vec::new(),
            record: Vec::new(),
            records: 0,
            headers: Vec::new(),
        }
    }

    /// Feeds the next chunk; complete records are appended to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut VecDeque<RawRecord>) -> Result<(), BatchError> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.utf8.push(chunk);
        match &mut self.state {
            State::Sniffing(buf) => {
                buf.extend_from_slice(chunk);
                if header_line_len(buf).is_some() || buf.len() >= SNIFF_MAX {
                    self.start_parsing(out)?;
                }
                Ok(())
            }
            State::Parsing(_) => self.parse(chunk, out),
        }
    }

    /// Signals the end of input and flushes the last record.
    pub fn finish(&mut self, out: &mut VecDeque<RawRecord>) -> Result<(), BatchError> {
        if matches!(self.state, State::Sniffing(_)) {
            self.start_parsing(out)?;
        }
        self.utf8.finish();
        self.parse(&[], out)
    }

    pub fn delimiter(&self) -> u8 {
        self.delimiter.unwrap_or(b',')
    }

    pub fn had_bom(&self) -> bool {
        self.bom
    }

    /// Whether every byte seen so far is valid UTF-8 (final after [`Scanner::finish`]).
    pub fn encoding(&self) -> Encoding {
        if self.utf8.valid() {
            Encoding::Utf8
        } else {
            Encoding::Windows1252
        }
    }

    /// Records completed so far, the header included.
    pub fn records(&self) -> u64 {
        self.records
    }

    fn start_parsing(&mut self, out: &mut VecDeque<RawRecord>) -> Result<(), BatchError> {
        let State::Sniffing(buf) = &mut self.state else {
            return Ok(());
        };
        let mut buf = std::mem::take(buf);
        if buf.starts_with(BOM) {
            self.bom = true;
            buf.drain(..BOM.len());
        }
        let delimiter = *self.delimiter.get_or_insert_with(|| {
            sniff_delimiter(&buf[..header_line_len(&buf).unwrap_or(buf.len())])
        });
        let reader = csv_core::ReaderBuilder::new().delimiter(delimiter).build();
        self.state = State::Parsing(Box::new(reader));
        if buf.is_empty() {
            return Ok(());
        }
        self.parse(&buf, out)
    }

    /// Runs the parser over `input` (empty = end of input).
    fn parse(&mut self, mut input: &[u8], out: &mut VecDeque<RawRecord>) -> Result<(), BatchError> {
        // An empty input means end of file to csv-core: only `finish` may pass one.
        let at_end = input.is_empty();
        loop {
            if input.is_empty() && !at_end {
                return Ok(());
            }
            let State::Parsing(reader) = &mut self.state else {
                return Ok(());
            };
            let (res, nin, nout) = reader.read_field(input, &mut self.tmp);
            input = &input[nin..];
            self.field.extend_from_slice(&self.tmp[..nout]);
            if self.field.len() as u64 > self.limits.max_field_bytes {
                return Err(BatchError::FieldTooLong {
                    row: self.records + 1,
                    column: column_name(&self.headers, self.record.len()),
                    limit: self.limits.max_field_bytes,
                });
            }
            match res {
                csv_core::ReadFieldResult::InputEmpty | csv_core::ReadFieldResult::End => {
                    return Ok(());
                }
                csv_core::ReadFieldResult::OutputFull => {}
                csv_core::ReadFieldResult::Field { record_end } => {
                    self.record.push(std::mem::take(&mut self.field));
                    if self.record.len() as u64 > self.limits.max_columns {
                        return Err(BatchError::TooManyColumns {
                            row: self.records + 1,
                            columns: self.record.len() as u64,
                            limit: self.limits.max_columns,
                        });
                    }
                    if record_end {
                        let record = std::mem::take(&mut self.record);
                        out.push_back(self.complete(record)?);
                    }
                }
            }
        }
    }

    /// Checks a finished record against the header and the row limit.
    fn complete(&mut self, mut record: RawRecord) -> Result<RawRecord, BatchError> {
        let row = self.records + 1;
        self.records += 1;
        if self.records == 1 {
            self.headers = record
                .iter()
                .map(|h| Encoding::guess(h).decode(h))
                .collect();
            return Ok(record);
        }
        if self.records - 1 > self.limits.max_rows {
            return Err(BatchError::TooLarge(Limit::Rows(self.limits.max_rows)));
        }
        let width = self.headers.len();
        if record.len() > width {
            if record[width..].iter().any(|f| !f.is_empty()) {
                return Err(BatchError::RaggedRow {
                    row,
                    found: record.len() as u64,
                    expected: width as u64,
                });
            }
            record.truncate(width);
        }
        record.resize(width, Vec::new());
        Ok(record)
    }
}

fn column_name(headers: &[String], idx: usize) -> String {
    headers
        .get(idx)
        .filter(|h| !h.trim().is_empty())
        .cloned()
        .unwrap_or_else(|| format!("#{}", idx + 1))
}

/// Length of the first line (up to its newline, outside quotes), if it is complete.
fn header_line_len(buf: &[u8]) -> Option<usize> {
    let mut quoted = false;
    for (i, b) in buf.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'\n' | b'\r' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// The delimiter that occurs most often outside quotes in the header line; `,` when none does.
fn sniff_delimiter(line: &[u8]) -> u8 {
    let mut counts = [0usize; 3];
    let mut quoted = false;
    for b in line {
        if *b == b'"' {
            quoted = !quoted;
        } else if !quoted && let Some(i) = DELIMITERS.iter().position(|d| d == b) {
            counts[i] += 1;
        }
    }
    let mut best = 0;
    for i in 1..DELIMITERS.len() {
        if counts[i] > counts[best] {
            best = i;
        }
    }
    DELIMITERS[best]
}

/// Incremental UTF-8 validation across chunk boundaries.
#[derive(Default)]
struct Utf8Check {
    invalid: bool,
    /// The start of a multi-byte sequence cut by a chunk boundary (at most 3 bytes).
    carry: Vec<u8>,
}

impl Utf8Check {
    fn valid(&self) -> bool {
        !self.invalid
    }

    fn push(&mut self, chunk: &[u8]) {
        if self.invalid {
            return;
        }
        let joined;
        let bytes = if self.carry.is_empty() {
            chunk
        } else {
            joined = [self.carry.as_slice(), chunk].concat();
            &joined
        };
        match std::str::from_utf8(bytes) {
            Ok(_) => self.carry.clear(),
            Err(e) if e.error_len().is_none() => {
                self.carry = bytes[e.valid_up_to()..].to_vec();
            }
            Err(_) => {
                self.invalid = true;
                self.carry.clear();
            }
        }
    }

    fn finish(&mut self) {
        if !self.carry.is_empty() {
            self.invalid = true;
        }
    }
}
