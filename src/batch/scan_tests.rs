//! Messy-file cases for the streaming scanner, fed in tiny chunks to cross every boundary.

use std::collections::VecDeque;

use super::error::{BatchError, Limit};
use super::scan::{Encoding, Scanner};
use super::settings::BatchLimits;

fn scan_with(input: &[u8], limits: BatchLimits) -> Result<Vec<Vec<String>>, BatchError> {
    scan_full(input, limits).map(|(rows, _)| rows)
}

fn scan_full(input: &[u8], limits: BatchLimits) -> Result<(Vec<Vec<String>>, Scanner), BatchError> {
    let mut s = Scanner::new(limits, None);
    let mut out = VecDeque::new();
    for chunk in input.chunks(3) {
        s.feed(chunk, &mut out)?;
    }
    s.finish(&mut out)?;
    let enc = s.encoding();
    let rows = out
        .into_iter()
        .map(|r| r.iter().map(|c| enc.decode(c)).collect())
        .collect();
    Ok((rows, s))
}

fn scan(input: &[u8]) -> (Vec<Vec<String>>, Scanner) {
    match scan_full(input, BatchLimits::default()) {
        Ok(ok) => ok,
        Err(e) => panic!("scan failed: {e}"),
    }
}

#[test]
fn utf8_with_and_without_bom_and_windows_1252_read_the_same() {
    let cases: [(&[u8], bool, Encoding); 3] = [
        (
            b"\xEF\xBB\xBFemail,Pr\xC3\xA9nom\nz@x.com,Zo\xC3\xAB\n",
            true,
            Encoding::Utf8,
        ),
        (
            b"email,Pr\xC3\xA9nom\nz@x.com,Zo\xC3\xAB\n",
            false,
            Encoding::Utf8,
        ),
        (
            b"email,Pr\xE9nom\nz@x.com,Zo\xEB\n",
            false,
            Encoding::Windows1252,
        ),
    ];
    for (input, bom, enc) in cases {
        let (rows, s) = scan(input);
        assert_eq!(rows, [["email", "Prénom"], ["z@x.com", "Zoë"]], "{input:?}");
        assert_eq!(s.had_bom(), bom);
        assert_eq!(s.encoding(), enc);
    }
}

#[test]
fn delimiter_is_sniffed_from_the_header_line() {
    let cases: [(&[u8], u8); 4] = [
        (b"email,name\na@b.com,Ada\n", b','),
        (b"email;name\na@b.com;Ada, Countess\n", b';'),
        (b"email\tname\na@b.com\tAda\n", b'\t'),
        (b"\"e;mail\",name\na@b.com,Ada\n", b','),
    ];
    for (input, want) in cases {
        let (rows, s) = scan(input);
        assert_eq!(s.delimiter(), want, "{input:?}");
        assert_eq!(rows[1][0], "a@b.com");
        assert_eq!(rows.len(), 2);
    }
}

#[test]
fn quoted_newlines_and_crlf_are_one_record_each() {
    let (rows, _) =
        scan(b"email,note\r\na@b.com,\"line one\r\nline two\"\r\nc@d.com,\"say \"\"hi\"\"\"\r\n");
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1][1], "line one\r\nline two");
    assert_eq!(rows[2][1], "say \"hi\"");
}

#[test]
fn short_rows_are_padded_and_trailing_empty_cells_dropped() {
    let (rows, _) = scan(b"email,name\na@b.com\nc@d.com,Ada,,\n");
    assert_eq!(rows[1], ["a@b.com", ""]);
    assert_eq!(rows[2], ["c@d.com", "Ada"]);
}

#[test]
fn each_limit_is_enforced_with_its_row_and_column() {
    let small = BatchLimits {
        max_bytes: u64::MAX,
        max_rows: 2,
        max_columns: 3,
        max_field_bytes: 8,
    };
    let err = scan_with(b"email\na@b.co\nc@d.co\ne@f.co\n", small).expect_err("rows");
    assert!(matches!(err, BatchError::TooLarge(Limit::Rows(2))), "{err}");
    let err = scan_with(b"email,a,b,c\n", small).expect_err("columns");
    assert!(
        matches!(
            err,
            BatchError::TooManyColumns {
                row: 1,
                limit: 3,
                ..
            }
        ),
        "{err}"
    );
    let err = scan_with(b"email,name\nx@y.co,Adaaaaaaaaaa\n", small).expect_err("field");
    match err {
        BatchError::FieldTooLong { row, column, limit } => {
            assert_eq!((row, column.as_str(), limit), (2, "name", 8));
        }
        other => panic!("unexpected {other}"),
    }
    let err = scan_with(b"email\nx@y.co,extra\n", small).expect_err("ragged");
    assert!(
        matches!(
            err,
            BatchError::RaggedRow {
                row: 2,
                found: 2,
                expected: 1
            }
        ),
        "{err}"
    );
}
