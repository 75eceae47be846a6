//! The OpenPGP source against a loopback VKS speaking keys.openpgp.org's format.

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use base64::Engine;

use super::*;
use crate::sources::fake;

/// CRC-24 of RFC 9580 6.1, so the fixture carries a real checksum line.
fn crc24(data: &[u8]) -> u32 {
    let mut crc: u32 = 0x00B7_04CE;
    for b in data {
        crc ^= (*b as u32) << 16;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x0100_0000 != 0 {
                crc ^= 0x0186_4CFB;
            }
        }
    }
    crc & 0x00FF_FFFF
}

fn new_format(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![0xC0 | tag];
    match body.len() {
        n @ 0..=191 => p.push(n as u8),
        n @ 192..=8383 => {
            let m = n - 192;
            p.push(((m >> 8) + 192) as u8);
            p.push((m & 0xff) as u8);
        }
        n => {
            p.push(255);
            p.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
    p.extend_from_slice(body);
    p
}

fn old_format_two_byte_length(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80 | (tag << 2) | 1];
    p.extend_from_slice(&(body.len() as u16).to_be_bytes());
    p.extend_from_slice(body);
    p
}

/// A key as keys.openpgp.org serves it: v4 Ed25519 primary key, user IDs with signatures, a subkey.
fn key_fixture() -> String {
    let mut public_key = vec![4, 0x65, 0x5f, 0x00, 0x00, 22, 9];
    public_key.extend_from_slice(&[0x2b, 0x06, 0x01, 0x04, 0x01, 0xda, 0x47, 0x0f, 0x01]);
    public_key.extend_from_slice(&[0x01, 0x07, 0x40]);
    public_key.extend_from_slice(&[0x11; 32]);
    let signature = vec![4, 0x13, 22, 10, 0, 0, 0, 0, 0xab, 0xcd, 0, 0];
    let mut key = new_format(6, &public_key);
    key.extend(new_format(
        13,
        "Ada Lovelace (work) <ada@analytical.example>".as_bytes(),
    ));
    key.extend(new_format(2, &signature));
    key.extend(old_format_two_byte_length(
        13,
        "Ada King <ada.king@example.org>".as_bytes(),
    ));
    key.extend(old_format_two_byte_length(2, &signature));
    key.extend(new_format(14, &public_key));
    key.extend(new_format(2, &[0x55; 300]));
    let b64 = base64::engine::general_purpose::STANDARD.encode(&key);
    let crc = crc24(&key).to_be_bytes();
    let crc_line = base64::engine::general_purpose::STANDARD.encode(&crc[1..]);
    let body: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    format!(
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: 8F17 7771 18A3 3DDA 9BA4  8E62 AACB 3243 6300 52D9\nComment: Ada Lovelace (work) <ada@analytical.example>\n\n{}\n={crc_line}\n-----END PGP PUBLIC KEY BLOCK-----\n",
        body.join("\n")
    )
}

async fn vks(router: Router) -> OpenPgp {
    let addr = fake::serve(router).await;
    OpenPgp {
        upstream: Upstream::new(reqwest::Client::new(), &format!("http://{addr}")),
    }
}

fn ada() -> Identifier {
    Identifier::Email(Email::parse("ada@analytical.example").expect("valid"))
}

#[test]
fn reads_user_ids_from_old_and_new_format_packets() {
    let ids = user_ids(&key_fixture()).expect("parses");
    assert_eq!(
        ids,
        [
            "Ada Lovelace (work) <ada@analytical.example>",
            "Ada King <ada.king@example.org>"
        ]
    );
}

#[test]
fn splits_user_ids() {
    let cases = [
        (
            "Ada Lovelace (work) <ada@a.example>",
            Some("Ada Lovelace"),
            Some("ada@a.example"),
        ),
        ("<only@a.example>", None, Some("only@a.example")),
        ("bare@a.example", None, Some("bare@a.example")),
        ("Just A Name", Some("Just A Name"), None),
    ];
    for (uid, name, email) in cases {
        let (n, e) = split_user_id(uid);
        assert_eq!((n.as_deref(), e.as_deref()), (name, email), "{uid}");
    }
}

#[test]
fn broken_keys_are_refused() {
    assert_eq!(user_ids("hello"), Err(PgpError::NoArmor));
    let bad_b64 =
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!!\n-----END PGP PUBLIC KEY BLOCK-----";
    assert_eq!(user_ids(bad_b64), Err(PgpError::Base64));
    // A packet claiming 100 bytes with 3 present.
    let truncated = base64::engine::general_purpose::STANDARD.encode([0xCD, 100, b'a', b'b', b'c']);
    let armored = format!(
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n{truncated}\n-----END PGP PUBLIC KEY BLOCK-----"
    );
    assert_eq!(user_ids(&armored), Err(PgpError::Truncated(0)));
}

#[tokio::test]
async fn published_key_yields_names_and_emails() {
    let key = key_fixture();
    let src = vks(Router::new().route(
        "/vks/v1/by-email/{email}",
        get(move |Path(email): Path<String>| {
            let key = key.clone();
            async move {
                if email == "ada@analytical.example" {
                    fake::reply(200, "application/pgp-keys", key)
                } else {
                    fake::reply(404, "text/plain", "No key found for email address")
                }
            }
        }),
    ))
    .await;
    let obs = src.lookup(&ada()).await.expect("answered");
    let has = |f: Field, v: &str| obs.iter().any(|o| o.field == f && o.value == v);
    assert!(has(Field::FullName, "Ada Lovelace"), "{obs:?}");
    assert!(has(Field::FullName, "Ada King"));
    assert!(has(Field::Email, "ada.king@example.org"));
    let other = Identifier::Email(Email::parse("nobody@analytical.example").expect("valid"));
    assert_eq!(src.lookup(&other).await.expect("answered"), []);
}

#[tokio::test]
async fn malformed_slow_and_failing_servers() {
    let src = vks(Router::new()
        .route(
            "/vks/v1/by-email/garbage%40x.example",
            get(|| async { fake::reply(200, "application/pgp-keys", "not a key") }),
        )
        .route(
            "/vks/v1/by-email/html%40x.example",
            get(|| async { fake::reply(200, "text/html", "<html></html>") }),
        )
        .route(
            "/vks/v1/by-email/down%40x.example",
            get(|| async { fake::reply(500, "text/plain", "oops") }),
        ))
    .await;
    let id = |s: &str| Identifier::Email(Email::parse(s).expect("valid"));
    for case in ["garbage@x.example", "html@x.example"] {
        let got = src.lookup(&id(case)).await;
        assert!(
            matches!(got, Err(SourceError::Malformed(_))),
            "{case}: {got:?}"
        );
    }
    assert!(fake::is_status(
        &src.lookup(&id("down@x.example")).await,
        500
    ));
}
