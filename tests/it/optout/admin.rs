//! The admin surface: bulk import of identifiers and hash lines, the key check, the audit export.

use reqwest::Method;
use serde_json::{Value, json};

use super::keys;
use crate::both_stores;
use crate::helpers::{Server, Upstreams};

/// The keyed hash lines an admin would prepare offline with the same key.
fn hash_lines(server: &Server, ids: &[enrichd::domain::Identifier]) -> Vec<String> {
    let hex = server.exclusion_key_hex();
    let key = enrichd::exclusion::ExclusionKey::from_hex(&hex).expect("hex key");
    let dir = tempfile::tempdir().expect("temp dir");
    let (list, _) =
        enrichd::exclusion::ExclusionList::open(dir.path(), key, 30, std::time::SystemTime::now())
            .expect("scratch list");
    ids.iter()
        .map(|id| list.hash(id).expect("personal").to_line())
        .collect()
}

both_stores! {
    #[tokio::test]
    async fn admins_import_identifiers_and_hash_lines_and_get_counts(mode) {
        use enrichd::domain::{Email, Identifier, PhoneE164};
        let up = Upstreams::start().await;
        up.gravatar_profile("hashed@example.com", "Hashed Person", "Acme", None);
        let server = Server::start_in(mode, &up.config()).await;
        let import = |body: reqwest::RequestBuilder| async move {
            let resp = body.send().await.expect("import");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.expect("json"))
        };

        let (status, report) = import(server.admin(Method::POST, "/v1/admin/exclusions").json(
            &json!({"identifiers": [
                {"email": "bulk.one@example.com"},
                {"phone": "+44 20 7946 0100"},
                {"email": "broken"},
                "bulk.two@example.com",
                {"name": "Only A Name"},
                {"emial": "typo@example.com"},
                {"name": "Bulk Three", "company": "Acme"}
            ]}),
        ))
        .await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["received"], 7);
        assert_eq!(report["added"], 3);
        assert_eq!(report["already_present"], 0);
        let rejected: Vec<u64> = report["rejected"]
            .as_array()
            .expect("rejected")
            .iter()
            .filter_map(|r| r["index"].as_u64())
            .collect();
        assert_eq!(rejected, [2, 3, 4, 5]);
        assert_eq!(report["rejected"][0]["field"], "email");
        assert!(
            !report.to_string().contains("bulk.two"),
            "bad items are not echoed"
        );

        let (_, again) = import(
            server
                .admin(Method::POST, "/v1/admin/exclusions")
                .json(&json!({"identifiers": [{"email": "BULK.ONE@example.com"}]})),
        )
        .await;
        assert_eq!(
            (again["added"].as_u64(), again["already_present"].as_u64()),
            (Some(0), Some(1))
        );

        let lines = hash_lines(
            &server,
            &[
                Identifier::Email(Email::parse("hashed@example.com").expect("email")),
                Identifier::Phone(PhoneE164::parse("+14155552671", None).expect("phone")),
            ],
        );
        let text = format!(
            "# exported from the old instance\n{}\nhashed@example.com\n{}\nfax:00\n",
            lines[0],
            &lines[1][..6 + 32]
        );
        let (status, report) = import(
            server
                .admin(Method::POST, "/v1/admin/exclusions")
                .header("content-type", "text/plain")
                .body(text),
        )
        .await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(
            (report["received"].as_u64(), report["added"].as_u64()),
            (Some(4), Some(2))
        );
        let lines_rejected: Vec<u64> = report["rejected"]
            .as_array()
            .expect("rejected")
            .iter()
            .filter_map(|r| r["line"].as_u64())
            .collect();
        assert_eq!(lines_rejected, [3, 5]);

        let hits = up.total_hits();
        let (_, body) = server.lookup(json!({"email": "hashed@example.com"})).await;
        assert_eq!(body["found"], false);
        let (_, body) = server.lookup(json!({"phone": "+1 415 555 2671"})).await;
        assert_eq!(body["found"], false);
        assert_eq!(up.total_hits(), hits);
        let stats = server.exclusion_stats().await;
        assert_eq!(stats["entries"], 5);
        assert_eq!(stats["by_origin"]["admin_import"], 5);
        server.stop().await;
}
}

both_stores! {
    #[tokio::test]
    async fn the_admin_surface_wants_an_admin_key(mode) {
        let up = Upstreams::start().await;
        let server = Server::start_in(mode, &up.config()).await;
        for (method, path) in [
            (Method::POST, "/v1/admin/exclusions"),
            (Method::GET, "/v1/admin/exclusions/stats"),
            (Method::GET, "/v1/admin/exclusions/export"),
        ] {
            let tenant = server
                .anon(method.clone(), path)
                .bearer_auth(&server.key)
                .header("content-type", "application/json")
                .body(r#"{"identifiers":[{"email":"x@example.com"}]}"#)
                .send()
                .await
                .expect("request");
            let anonymous = server.anon(method, path).send().await.expect("request");
            assert_eq!(tenant.status(), 403, "{path}");
            assert_eq!(tenant.headers()["content-type"], "application/problem+json");
            assert_eq!(anonymous.status(), 401, "{path}");
        }
        assert_eq!(server.exclusion_stats().await["entries"], 0);
        server.stop().await;
}
}

both_stores! {
    #[tokio::test]
    async fn the_audit_export_lists_every_record_as_hashes_only(mode) {
        let up = Upstreams::start().await;
        up.gravatar_contact(
            "audited@example.com",
            "Audited Person",
            &[],
            None,
            &["https://github.com/auditedperson"],
        );
        let server = Server::start_in(mode, &up.config()).await;
        server.optout(json!({"email": "audited@example.com"})).await;
        server.optout(json!({"email": "audited@example.com"})).await;

        let resp = server
            .admin(Method::GET, "/v1/admin/exclusions/export")
            .send()
            .await
            .expect("export");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
        let key_id = resp.headers()["x-enrichd-exclusion-key-id"]
            .to_str()
            .expect("ascii")
            .to_string();
        let ndjson = resp.text().await.expect("body");
        let hashes = server
            .admin(Method::GET, "/v1/admin/exclusions/export?format=hashes")
            .send()
            .await
            .expect("export")
            .text()
            .await
            .expect("body");
        let bad = server
            .admin(Method::GET, "/v1/admin/exclusions/export?format=csv")
            .send()
            .await
            .expect("export");

        let records: Vec<Value> = ndjson
            .lines()
            .map(|l| serde_json::from_str(l).expect("NDJSON"))
            .collect();
        let origins: Vec<&str> = records
            .iter()
            .map(|r| r["origin"].as_str().expect("origin"))
            .collect();
        assert_eq!(
            origins,
            ["api", "expansion", "api", "expansion"],
            "every record, in order"
        );
        for r in &records {
            assert_eq!(
                keys(r),
                [
                    "hash",
                    "key_version",
                    "kind",
                    "origin",
                    "recorded_at",
                    "truncated"
                ]
            );
            assert_eq!(r["hash"].as_str().expect("hash").len(), 64);
            assert!(r["recorded_at"].as_str().expect("time").ends_with('Z'));
        }
        assert_eq!(records[1]["kind"], "profile_url");
        assert_eq!(key_id, server.exclusion_stats().await["key_id"]);
        let parsed = enrichd::exclusion::parse_hash_lines(&hashes).expect("re-importable");
        assert_eq!(parsed.len(), 4);
        assert_eq!(bad.status(), 422);
        for text in [&ndjson, &hashes] {
            assert!(!text.contains("audited") && !text.contains("2079460100"));
        }
        server.stop().await;
}
}
