//! The on-disk byte layout of the exclusion log. Pure: encoding and decoding only, no I/O.
//!
//! ```text
//! header (32 bytes)                      record (56 bytes)
//!  0..8   magic "ENRDXCL1"                0..2   key version (u16 LE)
//!  8..10  format version (u16 LE) = 1     2      kind code
//! 10..12  record size (u16 LE) = 56       3      origin code
//! 12..16  reserved, zero                  4      flags: bit 0 = hash truncated to 16 bytes
//! 16..24  key id                          5..8   reserved, zero
//! 24..32  blake3(bytes 0..24)[..8]        8..16  unix seconds (u64 LE)
//!                                        16..48  keyed hash (32 bytes; last 16 zero if truncated)
//!                                        48..56  blake3(bytes 0..48)[..8]
//! ```

use crate::domain::IdentifierKind;
use crate::exclusion::entry::{Hashed, Origin, kind_code, kind_from_code};

pub const MAGIC: [u8; 8] = *b"ENRDXCL1";
pub const FORMAT_VERSION: u16 = 1;
pub const HEADER_LEN: usize = 32;
pub const RECORD_LEN: usize = 56;
const RECORD_BODY: usize = 48;
const FLAG_TRUNCATED: u8 = 1;

/// One entry as stored in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub key_version: u16,
    pub hashed: Hashed,
    pub origin: Origin,
    /// Unix seconds when the opt-out was recorded.
    pub timestamp: u64,
}

impl Record {
    pub fn kind(&self) -> IdentifierKind {
        self.hashed.kind()
    }
}

/// Why a header cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderProblem {
    Magic,
    Checksum,
    Version(u16),
    RecordSize(u16),
}

/// Why a full-length record slot is not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordProblem {
    Checksum,
    /// The checksum is right but a code is unknown: written by a newer enrichd.
    UnknownCode,
}

fn checksum(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&blake3::hash(bytes).as_bytes()[..8]);
    out
}

pub fn encode_header(key_id: [u8; 8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[10..12].copy_from_slice(&(RECORD_LEN as u16).to_le_bytes());
    h[16..24].copy_from_slice(&key_id);
    let sum = checksum(&h[..24]);
    h[24..32].copy_from_slice(&sum);
    h
}

/// The key id a valid header names.
pub fn decode_header(h: &[u8; HEADER_LEN]) -> Result<[u8; 8], HeaderProblem> {
    if h[0..8] != MAGIC {
        return Err(HeaderProblem::Magic);
    }
    if h[24..32] != checksum(&h[..24]) {
        return Err(HeaderProblem::Checksum);
    }
    let version = u16::from_le_bytes([h[8], h[9]]);
    if version != FORMAT_VERSION {
        return Err(HeaderProblem::Version(version));
    }
    let size = u16::from_le_bytes([h[10], h[11]]);
    if usize::from(size) != RECORD_LEN {
        return Err(HeaderProblem::RecordSize(size));
    }
    let mut key_id = [0u8; 8];
    key_id.copy_from_slice(&h[16..24]);
    Ok(key_id)
}

pub fn encode_record(r: &Record) -> [u8; RECORD_LEN] {
    let mut b = [0u8; RECORD_LEN];
    b[0..2].copy_from_slice(&r.key_version.to_le_bytes());
    // Hashed can only be built for personal kinds, which all have codes.
    b[2] = kind_code(r.hashed.kind()).unwrap_or(0);
    b[3] = r.origin.code();
    b[4] = if r.hashed.is_full() {
        0
    } else {
        FLAG_TRUNCATED
    };
    b[8..16].copy_from_slice(&r.timestamp.to_le_bytes());
    b[16..48].copy_from_slice(r.hashed.digest());
    let sum = checksum(&b[..RECORD_BODY]);
    b[RECORD_BODY..].copy_from_slice(&sum);
    b
}

pub fn decode_record(b: &[u8; RECORD_LEN]) -> Result<Record, RecordProblem> {
    if b[RECORD_BODY..] != checksum(&b[..RECORD_BODY]) {
        return Err(RecordProblem::Checksum);
    }
    let kind = kind_from_code(b[2]).ok_or(RecordProblem::UnknownCode)?;
    let origin = Origin::from_code(b[3]).ok_or(RecordProblem::UnknownCode)?;
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&b[16..48]);
    let hashed = if b[4] & FLAG_TRUNCATED == 0 {
        Hashed::full(kind, digest)
    } else {
        let mut prefix = [0u8; 16];
        prefix.copy_from_slice(&digest[..16]);
        Hashed::truncated(kind, prefix)
    }
    .ok_or(RecordProblem::UnknownCode)?;
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&b[8..16]);
    Ok(Record {
        key_version: u16::from_le_bytes([b[0], b[1]]),
        hashed,
        origin,
        timestamp: u64::from_le_bytes(ts),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            key_version: 3,
            hashed: Hashed::full(IdentifierKind::Phone, [9; 32]).expect("personal"),
            origin: Origin::Expansion,
            timestamp: 1_700_000_000,
        }
    }

    #[test]
    fn records_round_trip() {
        let full = record();
        let truncated = Record {
            hashed: Hashed::truncated(IdentifierKind::Email, [5; 16]).expect("personal"),
            ..full
        };
        for r in [full, truncated] {
            assert_eq!(decode_record(&encode_record(&r)), Ok(r));
        }
    }

    #[test]
    fn any_flipped_bit_in_a_record_is_detected() {
        let good = encode_record(&record());
        for byte in 0..RECORD_LEN {
            let mut bad = good;
            bad[byte] ^= 0x10;
            assert!(
                decode_record(&bad).is_err(),
                "flip at byte {byte} went unnoticed"
            );
        }
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = encode_header([1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(decode_header(&h), Ok([1, 2, 3, 4, 5, 6, 7, 8]));
        let mut bad = h;
        bad[0] = b'X';
        assert_eq!(decode_header(&bad), Err(HeaderProblem::Magic));
        let mut bad = h;
        bad[17] ^= 1;
        assert_eq!(decode_header(&bad), Err(HeaderProblem::Checksum));
    }

    /// A header whose checksum is right but whose format version or record size is not ours: written
    /// by another enrichd, refused by name rather than misread.
    #[test]
    fn a_checksummed_header_of_another_version_or_record_size_is_refused_by_name() {
        let resummed = |mut h: [u8; HEADER_LEN]| {
            let sum = checksum(&h[..24]);
            h[24..32].copy_from_slice(&sum);
            h
        };
        let good = encode_header([7; 8]);
        let mut newer = good;
        newer[8..10].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(
            decode_header(&resummed(newer)),
            Err(HeaderProblem::Version(2))
        );
        let mut wider = good;
        wider[10..12].copy_from_slice(&64u16.to_le_bytes());
        assert_eq!(
            decode_header(&resummed(wider)),
            Err(HeaderProblem::RecordSize(64))
        );
        assert_eq!(decode_header(&resummed(good)), Ok([7; 8]));
    }

    #[test]
    fn a_record_names_the_kind_of_its_hash_and_unknown_codes_are_refused() {
        let r = record();
        assert_eq!(r.kind(), IdentifierKind::Phone);
        let email = Record {
            hashed: Hashed::full(IdentifierKind::Email, [9; 32]).expect("personal"),
            ..r
        };
        assert_eq!(email.kind(), IdentifierKind::Email);
        // The kind code (byte 2) or the origin code (byte 3) unknown, under a valid checksum.
        for byte in [2, 3] {
            let mut b = encode_record(&r);
            b[byte] = 0xEE;
            let sum = checksum(&b[..RECORD_BODY]);
            b[RECORD_BODY..].copy_from_slice(&sum);
            assert_eq!(
                decode_record(&b),
                Err(RecordProblem::UnknownCode),
                "byte {byte}"
            );
        }
    }
}
