//! The S3 lifecycle configuration that backs up enrichd's own expiry sweep, as JSON for
//! `aws s3api put-bucket-lifecycle-configuration --lifecycle-configuration file://rule.json` (or the
//! equivalent of another S3-compatible server). Pure.
//!
//! S3 expires an object at the first midnight (UTC) after its age passes `Days`, so a rule of `Days`
//! removes an object between `Days` and `Days + 1` days after it was written. The sweeper deletes a
//! batch at exactly `batch_results_days`; the rules are the safety net behind it:
//! - `batch-keys/` expire after `batch_results_days`: losing the key makes the batch unreadable
//!   (crypto-shredding), so this one rule already ends every batch within a day of its retention;
//! - `batches/` and `indexes/` expire a day later (parts are written after the key, while a job runs);
//! - on a versioned bucket, replaced and deleted versions go a day after they stop being current, so
//!   an old version of a key cannot outlive its batch;
//! - multipart uploads left incomplete (an upload cut off) are aborted after a day.

use serde_json::{Value, json};

/// The lifecycle configuration for a store under `prefix` (empty, or without a trailing `/`) whose
/// batches live `days` days.
pub fn rules(prefix: &str, days: u32) -> Value {
    let under = |dir: &str| {
        if prefix.is_empty() {
            format!("{dir}/")
        } else {
            format!("{prefix}/{dir}/")
        }
    };
    let expire = |id: &str, dir: &str, days: u32| {
        json!({
            "ID": id,
            "Status": "Enabled",
            "Filter": {"Prefix": under(dir)},
            "Expiration": {"Days": days},
            "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
        })
    };
    let all = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    json!({
        "Rules": [
            expire("enrichd-batch-keys", "batch-keys", days),
            expire("enrichd-batches", "batches", days + 1),
            expire("enrichd-indexes", "indexes", days + 1),
            {
                "ID": "enrichd-abort-incomplete-uploads",
                "Status": "Enabled",
                "Filter": {"Prefix": all},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
            },
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_expire_with_the_retention_data_a_day_later_and_uploads_are_aborted() {
        let r = rules("eu/prod", 30);
        let rules = r["Rules"].as_array().expect("rules");
        let by_id = |id: &str| rules.iter().find(|x| x["ID"] == id).expect(id);
        assert_eq!(
            by_id("enrichd-batch-keys")["Filter"]["Prefix"],
            "eu/prod/batch-keys/"
        );
        assert_eq!(by_id("enrichd-batch-keys")["Expiration"]["Days"], 30);
        assert_eq!(by_id("enrichd-batches")["Expiration"]["Days"], 31);
        assert_eq!(
            by_id("enrichd-indexes")["Filter"]["Prefix"],
            "eu/prod/indexes/"
        );
        let abort = by_id("enrichd-abort-incomplete-uploads");
        assert_eq!(
            abort["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"],
            1
        );
        assert_eq!(abort["Filter"]["Prefix"], "eu/prod/");
        assert_eq!(
            super::rules("", 7)["Rules"][0]["Filter"]["Prefix"],
            "batch-keys/"
        );
    }
}
