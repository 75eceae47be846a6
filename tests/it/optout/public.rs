//! The public channels: the HTML form, the JSON endpoint, validation and the per-address limit.

use reqwest::Method;
use serde_json::{Value, json};

use super::keys;
use crate::helpers::{Server, Upstreams};

#[tokio::test]
async fn the_public_form_is_plain_accessible_html_and_opts_out() {
    let up = Upstreams::start().await;
    up.gravatar_profile("form.user@example.com", "Form User", "Acme", None);
    let server = Server::start(&up.config()).await;

    let form = server
        .anon(Method::GET, "/optout")
        .send()
        .await
        .expect("form");
    assert_eq!(form.status(), 200);
    assert_eq!(form.headers()["content-type"], "text/html; charset=utf-8");
    let html = form.text().await.expect("html");
    assert!(html.contains("<html lang=\"en\">"));
    assert!(html.contains("<form method=\"post\" action=\"/optout\""));
    for field in ["email", "phone", "profile_url", "name", "company", "domain"] {
        assert!(
            html.contains(&format!("<label for=\"{field}\">")),
            "{field} has a label"
        );
        assert!(html.contains(&format!("<input id=\"{field}\" name=\"{field}\"")));
    }
    assert!(!html.contains("<script"), "works without JavaScript");
    assert!(html.contains("href=\"/privacy\""));

    let receipt = server
        .anon(Method::POST, "/optout")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email=Form.User%40example.com&phone=&submit=Opt+out")
        .send()
        .await
        .expect("submit");
    assert_eq!(receipt.status(), 200);
    let page = receipt.text().await.expect("html");
    assert!(page.contains("You are opted out"), "{page}");
    let id = page
        .split("<code>")
        .nth(1)
        .and_then(|s| s.split("</code>").next())
        .expect("a receipt id");
    assert_eq!(id.len(), 32);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(
        !page.contains("form.user"),
        "the receipt does not echo the person"
    );
    let hits = up.total_hits();
    let (_, body) = server
        .lookup(json!({"email": "form.user@example.com"}))
        .await;
    assert_eq!(body["found"], false);
    assert_eq!(up.total_hits(), hits);
    assert_eq!(
        server.exclusion_stats().await["by_origin"]["public_form"],
        1
    );
    server.stop().await;
}

#[tokio::test]
async fn the_json_answer_is_a_receipt_that_does_not_say_whether_the_person_was_listed() {
    let up = Upstreams::start().await;
    let server = Server::start(&up.config()).await;

    let (first_status, first) = server
        .optout(json!({"email": "twice@example.com", "name": "Ada Lovelace", "company": "Acme"}))
        .await;
    let (second_status, second) = server.optout(json!({"email": "TWICE@example.com"})).await;

    assert_eq!((first_status, second_status), (200, 200));
    assert_eq!(keys(&first), ["detail", "receipt_id", "status"]);
    assert_eq!(keys(&first), keys(&second));
    assert_eq!(first["status"], second["status"]);
    assert_eq!(first["detail"], second["detail"]);
    let (a, b) = (
        first["receipt_id"].as_str().expect("id"),
        second["receipt_id"].as_str().expect("id"),
    );
    assert!(a.len() == 32 && b.len() == 32 && a != b);
    let stats = server.exclusion_stats().await;
    assert_eq!(stats["entries"], 2, "email and name + company: {stats}");
    assert_eq!(stats["by_kind"]["name_company"], 1);
    server.stop().await;
}

#[tokio::test]
async fn invalid_opt_outs_are_422_naming_the_field_and_change_nothing() {
    let up = Upstreams::start().await;
    let server = Server::start(&format!(
        "{}\n[exclusion]\noptout_burst = 100\n",
        up.config()
    ))
    .await;
    let before = server.exclusion_stats().await;
    let cases = [
        (json!({"email": "not-an-email"}), "email"),
        (json!({"email": "a@b.com", "phone": "12345"}), "phone"),
        (json!({"phone": "020 7946 0958"}), "phone"),
        (
            json!({"profile_url": "https://github.com/org/repo"}),
            "profile_url",
        ),
        (json!({"name": "Ada Lovelace"}), "name"),
        (json!({"domain": "example.com"}), "email"),
        (
            json!({"name": "Ada Lovelace", "domain": "not a domain"}),
            "domain",
        ),
        (json!({"email": "ok@example.com", "emial": "typo"}), "body"),
        (json!({}), "email"),
    ];
    for (body, field) in cases {
        let resp = server
            .anon(Method::POST, "/v1/optout")
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 422, "{body}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let problem: Value = resp.json().await.expect("json");
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert!(fields.contains(&field), "{body}: {fields:?}");
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let form = server
        .anon(Method::POST, "/optout")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=Ada+%3CLovelace%3E")
        .send()
        .await
        .expect("form");
    assert_eq!(form.status(), 422);
    let html = form.text().await.expect("html");
    assert!(html.contains("There is a problem"));
    assert!(html.contains("A name alone cannot be blocked"), "{html}");
    assert!(html.contains("<a href=\"#name\">"));
    assert!(
        html.contains("value=\"Ada &lt;Lovelace&gt;\""),
        "kept, escaped"
    );
    let wrong_type = server
        .anon(Method::POST, "/v1/optout")
        .header("content-type", "text/plain")
        .body("email=a@b.com")
        .send()
        .await
        .expect("request");
    assert_eq!(wrong_type.status(), 415);

    assert_eq!(
        server.exclusion_stats().await,
        before,
        "nothing was written"
    );
    assert_eq!(before["entries"], 0);
    assert_eq!(up.total_hits(), 0, "no expansion ran");
    server.stop().await;
}

#[tokio::test]
async fn opt_outs_are_rate_limited_per_client_address() {
    let up = Upstreams::start().await;
    let server = Server::start(&format!(
        "{}\n[exclusion]\noptout_per_minute = 1\noptout_burst = 2\n",
        up.config()
    ))
    .await;

    let mut statuses = Vec::new();
    let mut last = None;
    for i in 0..3 {
        let resp = server
            .anon(Method::POST, "/v1/optout")
            .json(&json!({"email": format!("limited{i}@example.com")}))
            .send()
            .await
            .expect("request");
        statuses.push(resp.status().as_u16());
        last = Some(resp);
    }
    let form = server
        .anon(Method::POST, "/optout")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email=limited3%40example.com")
        .send()
        .await
        .expect("form");

    assert_eq!(statuses, [200, 200, 429]);
    let last = last.expect("a response");
    let retry: u64 = last.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry));
    assert_eq!(last.headers()["content-type"], "application/problem+json");
    assert_eq!(form.status(), 429);
    assert!(form.headers().contains_key("retry-after"));
    assert!(
        form.text()
            .await
            .expect("html")
            .contains("Nothing was recorded")
    );
    assert_eq!(server.exclusion_stats().await["entries"], 2);
    server.stop().await;
}

#[tokio::test]
async fn the_public_form_answers_in_its_own_words_not_in_field_names() {
    let server = Server::start("").await;

    let page = server
        .anon(Method::POST, "/optout")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("phone=020+7946+0958&profile_url=ftp%3A%2F%2Fexample.com%2Fme")
        .send()
        .await
        .expect("submit");

    assert_eq!(page.status(), 422);
    let html = page.text().await.expect("html");
    assert!(
        html.contains(
            "<a href=\"#phone\">Enter the phone number with its country code, like +44 20 7946 \
             0958</a>"
        ) && html.contains(
            "<a href=\"#profile_url\">Enter the web address of your profile page, like \
             linkedin.com/in/your-name (this one must be an http or https URL)</a>"
        ),
        "{html}"
    );
    assert!(!html.contains("profile_url must"), "{html}");
    assert!(!html.contains("default region"), "{html}");
    server.stop().await;
}
