//! The privacy notice and the OpenAPI document, and that opted-out identifiers are nowhere at rest.

use reqwest::Method;
use serde_json::{Value, json};

use crate::both_stores;
use crate::helpers::{Server, Upstreams, captured_logs};

#[tokio::test]
async fn the_privacy_notice_is_rendered_from_the_running_configuration() {
    let up = Upstreams::start().await;
    let server = Server::start(&format!(
        "{}\n[retention]\nbatch_results_days = 7\nsource_cache_seconds = 120\nexclusion_days = 400\n",
        up.config()
    ))
    .await;

    let (notice, html) = notice(&server).await;

    let stored = notice["stored"].as_array().expect("stored");
    let seconds: Vec<Option<u64>> = stored
        .iter()
        .map(|s| s["kept_for_seconds"].as_u64())
        .collect();
    assert_eq!(
        &seconds[..3],
        [Some(7 * 86_400), Some(400 * 86_400), Some(120)]
    );
    let sources: Vec<&str> = notice["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert_eq!(sources, ["gravatar", "github"], "only the enabled sources");
    assert_eq!(notice["sources"][0]["asked_about"], json!(["email"]));
    assert_eq!(
        notice["sources"][1]["asked_about"],
        json!(["email", "profile_url:github"])
    );
    assert_eq!(notice["sources"][0]["recipient"], up.gravatar.url.as_str());
    assert_eq!(notice["opt_out"]["form"], "/optout");
    assert_eq!(notice["opt_out"]["list_retention_days"], 400);
    assert!(html.contains("7 days after the batch was created"));
    assert!(html.contains("400 days"));
    assert!(html.contains("<td>gravatar</td><td>email address</td>"));
    assert!(html.contains("href=\"/optout\""));
    assert!(
        !html.contains("keys.openpgp.org"),
        "disabled sources are not listed"
    );
    server.stop().await;
}

both_stores! {
    #[tokio::test]
    async fn after_opting_out_no_raw_identifier_is_in_the_data_dir_or_the_logs(mode) {
        let up = Upstreams::start().await;
        up.gravatar_contact(
            "zqgrep.target@example.com",
            "Zqgrep Target",
            &["+44 20 7946 0444"],
            Some("zqgrep.work@zqworks.example"),
            &["https://github.com/zqgreptarget"],
        );
        let server = Server::start_in(mode, &up.config()).await;

        server
            .optout(json!({"email": "zqgrep.target@example.com", "name": "Zqgrep Target", "company": "Zqcorp"}))
            .await;
        server
            .anon(Method::POST, "/optout")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("profile_url=https%3A%2F%2Fx.com%2Fzqgrephandle")
            .send()
            .await
            .expect("form");
        server
            .admin(Method::POST, "/v1/admin/exclusions")
            .json(&json!({"identifiers": [{"email": "zqgrep.admin@example.com"}]}))
            .send()
            .await
            .expect("import");
        server
            .lookup(json!({"email": "zqgrep.target@example.com"}))
            .await;

        let needles: Vec<String> = [
            "zqgrep",
            "zqworks",
            "zqcorp",
            "+442079460444",
            "20 7946 0444",
            "79460444",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let in_files = server.grep_stored(&needles).await;
        assert!(in_files.is_empty(), "found in the store: {in_files:?}");
        let stats = server.exclusion_stats().await;
        assert_eq!(
            stats["entries"], 5,
            "given 2 + expanded 1 (the verified GitHub account) + form 1 + admin 1: {stats}"
        );
        let logs = captured_logs().to_lowercase();
        assert!(
            logs.contains("opt-out recorded"),
            "the capture sees the opt-outs"
        );
        for n in &needles {
            assert!(!logs.contains(n.as_str()), "a log line carries '{n}'");
        }
        server.stop().await;
}
}

#[tokio::test]
async fn openapi_documents_the_opt_out_admin_and_privacy_routes() {
    let up = Upstreams::start().await;
    let server = Server::start(&up.config()).await;

    let doc: Value = server
        .anon(Method::GET, "/openapi.json")
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");

    for (path, method) in [
        ("/optout", "get"),
        ("/optout", "post"),
        ("/v1/optout", "post"),
        ("/privacy", "get"),
        ("/privacy.json", "get"),
        ("/v1/admin/exclusions", "post"),
        ("/v1/admin/exclusions/stats", "get"),
        ("/v1/admin/exclusions/export", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    // One empty requirement: no key is needed.
    assert_eq!(doc["paths"]["/v1/optout"]["post"]["security"], json!([{}]));
    server.stop().await;
}

/// `/privacy.json` and `/privacy`, which is HTML.
async fn notice(server: &Server) -> (Value, String) {
    let json = server
        .anon(Method::GET, "/privacy.json")
        .send()
        .await
        .expect("json")
        .json()
        .await
        .expect("json");
    let html = server
        .anon(Method::GET, "/privacy")
        .send()
        .await
        .expect("html");
    assert_eq!(html.headers()["content-type"], "text/html; charset=utf-8");
    (json, html.text().await.expect("html"))
}

#[tokio::test]
async fn the_operator_is_named_on_the_notice_and_the_receipt() {
    let up = Upstreams::start().await;
    let server = Server::start(&format!(
        "{}\n[operator]\nname = \"Example Ltd\"\ncontact = \"https://example.com/contact\"\n\
         privacy_contact = \"dpo@example.com\"\n",
        up.config()
    ))
    .await;

    let (notice, html) = notice(&server).await;
    let receipt = server
        .anon(Method::POST, "/optout")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email=someone%40example.org")
        .send()
        .await
        .expect("submit")
        .text()
        .await
        .expect("html");

    assert_eq!(
        notice["operator"],
        json!({"name": "Example Ltd", "contact": "https://example.com/contact",
               "privacy_contact": "dpo@example.com"})
    );
    assert!(
        html.contains("This service is run by <strong>Example Ltd</strong>")
            && html.contains("<a href=\"https://example.com/contact\">")
            && html.contains("write to <a href=\"mailto:dpo@example.com\">dpo@example.com</a>"),
        "{html}"
    );
    assert!(
        receipt.contains(
            "Keep it if you want to write to Example Ltd, who runs this service, at \
             <a href=\"mailto:dpo@example.com\">dpo@example.com</a> about this opt-out"
        ),
        "{receipt}"
    );
    server.stop().await;
}

#[tokio::test]
async fn without_an_operator_the_notice_says_so_instead_of_naming_no_one() {
    let server = Server::start("").await;

    let (notice, html) = notice(&server).await;

    assert_eq!(
        notice["operator"],
        json!({"name": null, "contact": null, "privacy_contact": null})
    );
    assert!(
        html.contains("The operator of this service has not given their name here."),
        "{html}"
    );
    server.stop().await;
}
