//! keys.openpgp.org's Verifying Key Server (VKS): `GET /vks/v1/by-email/{email}` answers the
//! ASCII-armored public key (`application/pgp-keys`) whose verified user IDs include that address, or
//! 404. The key's User ID packets ("Name (comment) <email>") give names and further addresses.
//!
//! Armor and packet parsing follow RFC 4880 / RFC 9580: base64 between the BEGIN/END lines (armor
//! headers and the CRC-24 line skipped), then packets with old- or new-format headers.

use std::sync::Arc;

use base64::Engine;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::spec::{Deps, HTTP, SourceConfig, Spec};
use super::{Fetched, Source, SourceError, Upstream};
use crate::domain::{Email, Identifier, PersonName};
use crate::profile::{Field, Observation};

pub const SPEC: Spec = Spec {
    name: "openpgp",
    schemes: HTTP,
    defaults: || SourceConfig::new("https://keys.openpgp.org", 2_000, 60, 0.8),
    build: |c: &SourceConfig, deps: &Deps| {
        let upstream = Upstream::new(deps.http.clone(), &c.base_url)
            .with_header("accept", "application/pgp-keys")
            .with_max_body(256 * 1024);
        Arc::new(OpenPgp { upstream })
    },
};

/// The User ID packet tag.
const TAG_USER_ID: u8 = 13;

pub struct OpenPgp {
    upstream: Upstream,
}

/// Why a key could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PgpError {
    #[error("no PGP PUBLIC KEY BLOCK armor")]
    NoArmor,
    #[error("the armored key is not valid base64")]
    Base64,
    #[error("packet at byte {0} has an invalid header")]
    Header(usize),
    #[error("packet at byte {0} runs past the end of the key")]
    Truncated(usize),
}

impl Source for OpenPgp {
    fn name(&self) -> &str {
        SPEC.name
    }

    fn accepts(&self, id: &Identifier) -> bool {
        matches!(id, Identifier::Email(_))
    }

    fn lookup<'a>(
        &'a self,
        id: &'a Identifier,
    ) -> BoxFuture<'a, Result<Vec<Observation>, SourceError>> {
        async move {
            let Identifier::Email(email) = id else {
                return Ok(Vec::new());
            };
            let encoded: String =
                url::form_urlencoded::byte_serialize(email.as_str().as_bytes()).collect();
            let path = format!("/vks/v1/by-email/{encoded}");
            match self.upstream.get_bytes(&path, &["pgp-keys"]).await? {
                Fetched::NotFound => Ok(Vec::new()),
                Fetched::Found(body) => {
                    let text = String::from_utf8_lossy(&body);
                    let ids = user_ids(&text).map_err(|e| SourceError::Malformed(e.to_string()))?;
                    Ok(observations(&ids))
                }
            }
        }
        .boxed()
    }
}

/// The User IDs of an ASCII-armored public key, in key order.
pub fn user_ids(armored: &str) -> Result<Vec<String>, PgpError> {
    let packets = dearmor(armored)?;
    Ok(packets_with_tag(&packets, TAG_USER_ID)?
        .into_iter()
        .map(|body| String::from_utf8_lossy(body).trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

/// The binary key inside the first `PGP PUBLIC KEY BLOCK` armor.
fn dearmor(armored: &str) -> Result<Vec<u8>, PgpError> {
    let mut lines = armored.lines().map(str::trim);
    lines
        .by_ref()
        .find(|l| *l == "-----BEGIN PGP PUBLIC KEY BLOCK-----")
        .ok_or(PgpError::NoArmor)?;
    let mut b64 = String::new();
    let mut in_headers = true;
    let mut ended = false;
    for line in lines {
        if line.starts_with("-----END PGP PUBLIC KEY BLOCK-----") {
            ended = true;
            break;
        }
        if in_headers {
            // Armor headers ("Comment: ...") run until the first blank line; a key without them starts
            // with base64 at once.
            if line.is_empty() {
                in_headers = false;
                continue;
            }
            if line.contains(": ") {
                continue;
            }
            in_headers = false;
        }
        if line.starts_with('=') && line.len() == 5 {
            continue; // the CRC-24 checksum line
        }
        b64.push_str(line);
    }
    if !ended {
        return Err(PgpError::NoArmor);
    }
    base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| PgpError::Base64)
}

/// The bodies of the packets with `tag`, walking old- and new-format packet headers.
fn packets_with_tag(data: &[u8], tag: u8) -> Result<Vec<&[u8]>, PgpError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let start = pos;
        let header = data[pos];
        if header & 0x80 == 0 {
            return Err(PgpError::Header(start));
        }
        pos += 1;
        let (packet_tag, len) = if header & 0x40 != 0 {
            (header & 0x3f, new_length(data, &mut pos, start)?)
        } else {
            let len = match header & 0x03 {
                0 => read_be(data, &mut pos, 1, start)?,
                1 => read_be(data, &mut pos, 2, start)?,
                2 => read_be(data, &mut pos, 4, start)?,
                _ => data.len() - pos, // indeterminate: to the end
            };
            ((header >> 2) & 0x0f, len)
        };
        let end = pos
            .checked_add(len)
            .filter(|e| *e <= data.len())
            .ok_or(PgpError::Truncated(start))?;
        if packet_tag == tag {
            out.push(&data[pos..end]);
        }
        pos = end;
    }
    Ok(out)
}

/// A new-format body length (RFC 9580 4.2.1). Partial lengths never occur in key packets and are
/// refused.
fn new_length(data: &[u8], pos: &mut usize, start: usize) -> Result<usize, PgpError> {
    let first = *data.get(*pos).ok_or(PgpError::Truncated(start))? as usize;
    *pos += 1;
    match first {
        0..=191 => Ok(first),
        192..=223 => {
            let second = *data.get(*pos).ok_or(PgpError::Truncated(start))? as usize;
            *pos += 1;
            Ok(((first - 192) << 8) + second + 192)
        }
        255 => read_be(data, pos, 4, start),
        _ => Err(PgpError::Header(start)),
    }
}

fn read_be(data: &[u8], pos: &mut usize, n: usize, start: usize) -> Result<usize, PgpError> {
    let bytes = data.get(*pos..*pos + n).ok_or(PgpError::Truncated(start))?;
    *pos += n;
    Ok(bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize))
}

/// Splits "Name (comment) <email>" into its name and email parts.
pub fn split_user_id(uid: &str) -> (Option<String>, Option<String>) {
    let (name_part, email) = match (uid.rfind('<'), uid.rfind('>')) {
        (Some(open), Some(close)) if open < close => {
            (&uid[..open], Some(uid[open + 1..close].trim().to_string()))
        }
        _ if uid.contains('@') && !uid.contains(' ') => ("", Some(uid.to_string())),
        _ => (uid, None),
    };
    let name = match (name_part.find('('), name_part.rfind(')')) {
        (Some(open), Some(close)) if open < close => {
            format!("{}{}", &name_part[..open], &name_part[close + 1..])
        }
        _ => name_part.to_string(),
    };
    let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
    ((!name.is_empty()).then_some(name), email)
}

fn observations(uids: &[String]) -> Vec<Observation> {
    let mut out = Vec::new();
    for uid in uids {
        let (name, email) = split_user_id(uid);
        if let Some(n) = name.and_then(|n| PersonName::parse(&n).ok()) {
            out.push(Observation::new(Field::FullName, n.as_str()).with_detail("openpgp user id"));
        }
        if let Some(e) = email.and_then(|e| Email::parse(&e).ok()) {
            // The key server publishes only user IDs whose address it verified.
            out.push(
                Observation::email(e)
                    .with_detail("openpgp user id")
                    .verified(),
            );
        }
    }
    out
}

#[cfg(test)]
#[path = "openpgp_tests.rs"]
mod tests;
