//! `store.url`: where shared state lives, parsed once at the edge.

use std::fmt;
use std::path::{Path, PathBuf};

/// A parsed `store.url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// `file://DIR`: one process, state under a local directory (the default: the data dir).
    File(PathBuf),
    /// `s3://BUCKET[/PREFIX]`: S3-compatible object storage shared by every replica.
    S3 { bucket: String, prefix: String },
}

impl StoreUrl {
    /// Parses `file://DIR` (absolute `file:///var/lib/enrichd` or relative `file://./data`) or
    /// `s3://bucket/prefix`. The error is a sentence naming what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("file://") {
            if path.is_empty() {
                return Err("file:// needs a directory, e.g. file:///var/lib/enrichd".into());
            }
            return Ok(Self::File(PathBuf::from(path)));
        }
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !valid {
                return Err(format!(
                    "'{bucket}' is not an S3 bucket name (3-63 lower-case letters, digits, '-' or '.')"
                ));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|p| p == "." || p == "..") {
                return Err("the prefix after the bucket may not hold '.' or '..' segments".into());
            }
            return Ok(Self::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        Err("must start with file:// or s3:// (for example s3://my-bucket/enrichd)".into())
    }

    /// The default: `file://<data_dir>`.
    pub fn default_for(data_dir: &Path) -> Self {
        Self::File(data_dir.to_path_buf())
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, Self::S3 { .. })
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(dir) => write!(f, "file://{}", dir.display()),
            Self::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_s3_urls_parse() {
        assert_eq!(
            StoreUrl::parse("file:///var/lib/enrichd"),
            Ok(StoreUrl::File("/var/lib/enrichd".into()))
        );
        assert_eq!(
            StoreUrl::parse("file://./data"),
            Ok(StoreUrl::File("./data".into()))
        );
        assert_eq!(
            StoreUrl::parse("s3://enrichd-prod/eu/1/"),
            Ok(StoreUrl::S3 {
                bucket: "enrichd-prod".into(),
                prefix: "eu/1".into()
            })
        );
        let bare = StoreUrl::parse("s3://bucket").expect("bucket alone");
        assert_eq!(bare.to_string(), "s3://bucket");
        assert!(bare.is_shared());
    }

    #[test]
    fn other_urls_are_refused_with_a_reason() {
        for (bad, says) in [
            ("http://x", "file:// or s3://"),
            ("file://", "needs a directory"),
            ("s3://", "bucket name"),
            ("s3://Upper/x", "bucket name"),
            ("s3://bucket/../x", "'..'"),
        ] {
            let err = StoreUrl::parse(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
