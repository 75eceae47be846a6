//! The completion webhook: one signed `POST` when a batch is `done` or `failed`.
//!
//! # What is sent
//! `POST <webhook>` with `Content-Type: application/json` and the batch summary as body (`id`,
//! `status`, `rows_total`, `rows_done`, `rows_found`, `created_at`, `expires_at`): counts only, never
//! row contents.
//!
//! # Signature
//! Header `Enrichd-Signature: t=<unix seconds>,v1=<hex>` where `<hex>` is
//! `blake3::keyed_hash(KEY, "<t>." + body)` (64 hex characters) and `KEY` is the 32-byte webhook key
//! (`ENRICHD_WEBHOOK_KEY`, 64 hex characters, or the file named by `batches.webhook_key_file`). The
//! receiver recomputes it over the raw body and refuses a stale `t`. Without a key, uploads that name
//! a webhook are refused (422), so an unsigned notice is never sent.
//!
//! # SSRF
//! The URL is checked at upload ([`check_url`]: scheme, credentials, literal private addresses) and
//! again at delivery, through [`guarded_client`], which resolves the host and refuses private,
//! loopback and link-local addresses, and re-checks every redirect. `batches.webhook_trusted_hosts`
//! lists hosts the operator allows anyway. One delivery, one timeout, up to three attempts.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretBox};

use super::meta::BatchSummary;
use super::seams::Notifier;
use crate::sources::ssrf::{SystemResolver, check_url, guarded_client};

/// Name of the signature header.
pub const SIGNATURE_HEADER: &str = "Enrichd-Signature";

/// The webhook signing key: 32 bytes.
pub struct WebhookKey(SecretBox<[u8; 32]>);

impl WebhookKey {
    /// Parses 64 hex characters (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).ok()?;
        Some(Self(SecretBox::new(Box::new(bytes))))
    }
}

impl std::fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookKey(..)")
    }
}

/// The `Enrichd-Signature` value for `body` sent at `t` (unix seconds).
pub fn signature(key: &WebhookKey, t: u64, body: &[u8]) -> String {
    let mut h = blake3::Hasher::new_keyed(key.0.expose_secret());
    h.update(t.to_string().as_bytes());
    h.update(b".");
    h.update(body);
    format!("t={t},v1={}", h.finalize().to_hex())
}

/// Sends completion notices through the SSRF-guarded client.
pub struct WebhookSender {
    key: WebhookKey,
    client: reqwest::Client,
    trusted: Vec<String>,
}

impl WebhookSender {
    pub fn new(
        key: WebhookKey,
        trusted_hosts: Vec<String>,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let client = guarded_client(Arc::new(SystemResolver), trusted_hosts.clone(), timeout)?;
        Ok(Self {
            key,
            client,
            trusted: trusted_hosts,
        })
    }
}

impl Notifier for WebhookSender {
    fn check(&self, url: &str) -> Result<(), String> {
        let parsed = url::Url::parse(url).map_err(|_| "not a valid absolute URL".to_string())?;
        let trusted = parsed
            .host_str()
            .is_some_and(|h| self.trusted.iter().any(|t| t == h));
        if trusted {
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err("the URL's scheme must be http or https".into());
            }
            return Ok(());
        }
        check_url(url).map(drop).map_err(|e| e.to_string())
    }

    fn finished(&self, url: String, summary: BatchSummary) {
        // Checked again at delivery: the guard's rules may have been tightened since the upload.
        if let Err(reason) = self.check(&url) {
            tracing::warn!(batch = %summary.id, reason = %reason, "Webhook not sent: URL refused.");
            return;
        }
        let body = match serde_json::to_vec(&summary) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(batch = %summary.id, error = %e, "Webhook body could not be built.");
                return;
            }
        };
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let sig = signature(&self.key, t, &body);
        let client = self.client.clone();
        tokio::spawn(async move {
            for attempt in 1..=3u32 {
                let sent = client
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(SIGNATURE_HEADER, &sig)
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {
                        tracing::info!(batch = %summary.id, status = summary.status, "Webhook delivered.");
                        return;
                    }
                    Ok(r) => {
                        tracing::warn!(batch = %summary.id, attempt, http_status = r.status().as_u16(), "Webhook refused.");
                    }
                    Err(e) => {
                        tracing::warn!(batch = %summary.id, attempt, error = %e, "Webhook delivery failed.");
                    }
                }
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_keyed_blake3_over_timestamp_and_body() {
        let key = WebhookKey::from_hex(&"11".repeat(32)).expect("key");
        let sig = signature(&key, 1_700_000_000, b"{}");
        let want = blake3::keyed_hash(&[0x11; 32], b"1700000000.{}");
        assert_eq!(sig, format!("t=1700000000,v1={}", want.to_hex()));
        assert!(WebhookKey::from_hex("abc").is_none());
    }

    #[tokio::test]
    async fn private_and_loopback_urls_are_refused_unless_trusted() {
        let key = WebhookKey::from_hex(&"22".repeat(32)).expect("key");
        let sender = WebhookSender::new(key, vec!["127.0.0.1".into()], Duration::from_secs(1))
            .expect("client");
        assert!(sender.check("http://10.0.0.1/hook").is_err());
        assert!(sender.check("http://localhost/hook").is_err());
        assert!(sender.check("ftp://example.com/").is_err());
        assert!(sender.check("https://hooks.example.com/x").is_ok());
        assert!(sender.check("http://127.0.0.1:9/hook").is_ok());
    }
}
