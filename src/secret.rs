//! 32-byte secrets given as 64 hex characters (the exclusion key, the storage key, the webhook key):
//! parsing, and the development key a first run may generate into the data directory.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use rand::TryRngCore;
use secrecy::zeroize::Zeroize;

/// Parses 64 hex characters (surrounding whitespace ignored). `None` for anything else.
pub fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    let mut bytes = [0u8; 32];
    if text.len() != 64 || hex::decode_to_slice(text, &mut bytes).is_err() {
        return None;
    }
    Some(bytes)
}

/// 32 bytes from the operating system's random generator.
pub fn random32() -> io::Result<[u8; 32]> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|_| io::Error::other("the operating system's random generator failed"))?;
    Ok(bytes)
}

/// Generates a secret and writes it as hex to `path`: mode 0600, created new (an existing file is never
/// overwritten), fsynced with its directory, so a crash cannot leave a key that was used but not kept.
pub fn generate_into(path: &Path) -> io::Result<[u8; 32]> {
    let bytes = random32()?;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    let mut text = hex::encode(bytes);
    text.push('\n');
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all());
    text.zeroize();
    written?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(bytes)
}

/// Fsyncs a directory so a file created or renamed in it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_64_hex_characters_parse() {
        assert_eq!(parse_hex32(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(
            parse_hex32(&format!("  {}\n", "01".repeat(32))),
            Some([1; 32])
        );
        for bad in ["", "ab", &"zz".repeat(32), &"ab".repeat(33)] {
            assert_eq!(parse_hex32(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_generated_secret_is_private_and_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("k");
        let first = generate_into(&path).expect("generated");
        let text = fs::read_to_string(&path).expect("file");
        assert_eq!(parse_hex32(&text), Some(first));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(generate_into(&path).is_err(), "an existing key is kept");
    }
}
