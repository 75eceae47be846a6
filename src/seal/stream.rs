//! One sealed object, written and read as a stream. Layout:
//!
//! ```text
//!  0..4   magic "ENRS"
//!  4      format version = 1
//!  5..24  nonce prefix: 19 random bytes, new for every write
//! 24..    chunks: each is 65,536 plaintext bytes sealed (+16-byte tag); the last chunk holds 0 to
//!         65,536 bytes and is sealed as the last, so an object cut at a chunk boundary is refused
//! ```
//!
//! The cipher is XChaCha20-Poly1305 in the STREAM construction (big-endian 32-bit counter and a
//! last-chunk flag in the nonce), keyed by the object's own key ([`super::DataKey::object_key`]). A
//! random nonce prefix per write makes rewriting an object in place (an opt-out purge) safe.

use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::KeyInit;
use chacha20poly1305::aead::stream::{DecryptorBE32, EncryptorBE32};

use super::SealError;

const MAGIC: &[u8; 4] = b"ENRS";
const VERSION: u8 = 1;
const NONCE_PREFIX: usize = 19;
/// Bytes before the first chunk.
pub const HEADER_LEN: usize = 5 + NONCE_PREFIX;
/// Plaintext bytes per chunk: a download holds one chunk at a time.
pub const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;

/// Seals plaintext pushed piece by piece. Output comes out in whole chunks.
pub struct Sealer {
    encryptor: EncryptorBE32<XChaCha20Poly1305>,
    header: Option<[u8; HEADER_LEN]>,
    pending: Vec<u8>,
}

impl Sealer {
    pub fn new(object_key: &[u8; 32]) -> Self {
        let prefix: [u8; NONCE_PREFIX] = rand::random();
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(MAGIC);
        header[4] = VERSION;
        header[5..].copy_from_slice(&prefix);
        let cipher = XChaCha20Poly1305::new(object_key.into());
        Self {
            encryptor: EncryptorBE32::from_aead(cipher, prefix.as_slice().into()),
            header: Some(header),
            pending: Vec::with_capacity(CHUNK + 1),
        }
    }

    /// Takes more plaintext; returns the sealed bytes now ready (the header first, then whole chunks).
    pub fn push(&mut self, mut plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut out = Vec::new();
        if let Some(header) = self.header.take() {
            out.extend_from_slice(&header);
        }
        while !plain.is_empty() {
            // A full chunk is sealed only once a byte after it exists: otherwise it may be the last.
            if self.pending.len() == CHUNK {
                let chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK + 1));
                out.extend(
                    self.encryptor
                        .encrypt_next(chunk.as_slice())
                        .map_err(|_| TOO_LARGE)?,
                );
            }
            let take = (CHUNK - self.pending.len()).min(plain.len());
            self.pending.extend_from_slice(&plain[..take]);
            plain = &plain[take..];
        }
        Ok(out)
    }

    /// Seals what is left as the last chunk; returns the final bytes.
    pub fn finish(mut self) -> Result<Vec<u8>, SealError> {
        let mut out = Vec::new();
        if let Some(header) = self.header.take() {
            out.extend_from_slice(&header);
        }
        out.extend(
            self.encryptor
                .encrypt_last(self.pending.as_slice())
                .map_err(|_| TOO_LARGE)?,
        );
        Ok(out)
    }
}

const TOO_LARGE: SealError = SealError::Format("an object may not pass 2^32 chunks");

/// Opens a sealed object pushed piece by piece. Plaintext comes out a chunk at a time, each authenticated
/// before it is returned; [`Opener::finish`] refuses an object that was cut short.
pub struct Opener {
    key: [u8; 32],
    decryptor: Option<DecryptorBE32<XChaCha20Poly1305>>,
    pending: Vec<u8>,
}

impl Opener {
    pub fn new(object_key: &[u8; 32]) -> Self {
        Self {
            key: *object_key,
            decryptor: None,
            pending: Vec::new(),
        }
    }

    /// Takes more sealed bytes; returns the plaintext of every chunk now complete and not the last.
    pub fn push(&mut self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        self.pending.extend_from_slice(sealed);
        let mut out = Vec::new();
        if self.decryptor.is_none() {
            if self.pending.len() < HEADER_LEN {
                return Ok(out);
            }
            self.start()?;
        }
        let mut used = 0;
        let Some(decryptor) = self.decryptor.as_mut() else {
            return Ok(out);
        };
        // A whole chunk is opened only once a byte after it exists: otherwise it may be the last.
        while self.pending.len() - used > CHUNK + TAG {
            let chunk = &self.pending[used..used + CHUNK + TAG];
            out.extend(decryptor.decrypt_next(chunk).map_err(|_| SealError::Auth)?);
            used += CHUNK + TAG;
        }
        self.pending.drain(..used);
        Ok(out)
    }

    /// Opens the last chunk; an object that ends early (or was never started) is refused.
    pub fn finish(mut self) -> Result<Vec<u8>, SealError> {
        if self.decryptor.is_none() {
            if self.pending.len() < HEADER_LEN {
                return Err(SealError::Format("shorter than the header"));
            }
            self.start()?;
        }
        let decryptor = self
            .decryptor
            .take()
            .ok_or(SealError::Format("no header"))?;
        if self.pending.len() < TAG {
            return Err(SealError::Auth);
        }
        decryptor
            .decrypt_last(self.pending.as_slice())
            .map_err(|_| SealError::Auth)
    }

    fn start(&mut self) -> Result<(), SealError> {
        if &self.pending[..4] != MAGIC {
            return Err(SealError::Format("wrong magic bytes"));
        }
        if self.pending[4] != VERSION {
            return Err(SealError::Format("unknown format version"));
        }
        let cipher = XChaCha20Poly1305::new((&self.key).into());
        let prefix = &self.pending[5..HEADER_LEN];
        self.decryptor = Some(DecryptorBE32::from_aead(cipher, prefix.into()));
        self.pending.drain(..HEADER_LEN);
        Ok(())
    }
}

/// Seals a whole object at once.
pub fn seal(object_key: &[u8; 32], plain: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut sealer = Sealer::new(object_key);
    let mut out = sealer.push(plain)?;
    out.extend(sealer.finish()?);
    Ok(out)
}

/// Opens a whole object at once.
pub fn open(object_key: &[u8; 32], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut opener = Opener::new(object_key);
    let mut out = opener.push(sealed)?;
    out.extend(opener.finish()?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn sealed_in_pieces(plain: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut sealer = Sealer::new(&KEY);
        let mut out = Vec::new();
        let mut at = 0;
        for &cut in cuts {
            let end = (at + cut).min(plain.len());
            out.extend(sealer.push(&plain[at..end]).expect("push"));
            at = end;
        }
        out.extend(sealer.push(&plain[at..]).expect("push"));
        out.extend(sealer.finish().expect("finish"));
        out
    }

    fn opened_in_pieces(sealed: &[u8], piece: usize) -> Result<Vec<u8>, SealError> {
        let mut opener = Opener::new(&KEY);
        let mut out = Vec::new();
        for chunk in sealed.chunks(piece.max(1)) {
            out.extend(opener.push(chunk)?);
        }
        out.extend(opener.finish()?);
        Ok(out)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn any_plaintext_round_trips_whatever_the_piece_sizes(
            len in prop_oneof![0usize..300, (CHUNK - 2)..(CHUNK + 2), (2 * CHUNK - 1)..(2 * CHUNK + 2)],
            cuts in proptest::collection::vec(1usize..100_000, 0..4),
            piece in 1usize..200_000,
        ) {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let sealed = sealed_in_pieces(&plain, &cuts);
            prop_assert_eq!(sealed.len(), HEADER_LEN + plain.len() + TAG * plain.len().div_ceil(CHUNK).max(1));
            prop_assert_eq!(opened_in_pieces(&sealed, piece).expect("opens"), plain);
        }
    }

    #[test]
    fn a_cut_or_changed_object_or_another_key_is_refused() {
        let plain = vec![42u8; 3 * CHUNK + 10];
        let sealed = seal(&KEY, &plain).expect("seal");
        assert_eq!(open(&KEY, &sealed).expect("opens"), plain);
        // Cut at a chunk boundary: every remaining chunk authenticates, but the last is missing.
        let cut = HEADER_LEN + 2 * (CHUNK + TAG);
        assert_eq!(open(&KEY, &sealed[..cut]).err(), Some(SealError::Auth));
        let mut flipped = sealed.clone();
        flipped[HEADER_LEN + 5] ^= 1;
        assert_eq!(open(&KEY, &flipped).err(), Some(SealError::Auth));
        assert_eq!(open(&[8; 32], &sealed).err(), Some(SealError::Auth));
        assert!(matches!(
            open(&KEY, b"email\nada@example.org\n"),
            Err(SealError::Format(_))
        ));
    }

    #[test]
    fn the_same_plaintext_seals_differently_each_time_and_never_shows_through() {
        let plain = b"email\nada@analytical.example\n";
        let (a, b) = (
            seal(&KEY, plain).expect("seal"),
            seal(&KEY, plain).expect("seal"),
        );
        assert_ne!(a, b);
        assert!(!a.windows(8).any(|w| w == b"analytic"));
    }
}
