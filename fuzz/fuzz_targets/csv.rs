//! CSV sniffing and column mapping: the streaming scanner (encoding, BOM, delimiter, quoting) fed in
//! chunks whose size the first byte chooses, then the header mapping.
#![no_main]

use std::collections::{BTreeMap, VecDeque};

use enrichd::batch::{BatchLimits, ColumnMap, Encoding, Scanner};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first % 64) + 1;
    let limits = BatchLimits {
        max_bytes: 1 << 20,
        max_rows: 10_000,
        max_columns: 64,
        max_field_bytes: 4096,
    };
    let _ = Encoding::guess(body).decode(body);
    let mut scanner = Scanner::new(limits, None);
    let mut out = VecDeque::new();
    for piece in body.chunks(chunk) {
        if scanner.feed(piece, &mut out).is_err() {
            return;
        }
    }
    if scanner.finish(&mut out).is_err() {
        return;
    }
    let Some(header) = out.pop_front() else {
        return;
    };
    let headers: Vec<String> = header
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    if let Ok(map) = ColumnMap::new(&headers, &BTreeMap::new()) {
        assert_eq!(map.by_index.len(), headers.len(), "one entry per column");
        for row in &out {
            let cells: Vec<String> = row
                .iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            let _ = map.input(&cells);
        }
    }
});
