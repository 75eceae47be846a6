//! Declarative providers against a loopback fake that speaks Hunter's, People Data Labs' and Apollo's
//! documented formats, configured from `examples/providers.toml` itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::*;
use crate::config::Config;
use crate::domain::{DomainName, Email, Identifier, PersonName};
use crate::profile::Field;

const EXAMPLES: &str = include_str!("../../../examples/providers.toml");
const HUNTER_KEY: &str = "hunter-test-key-0001";
const PDL_KEY: &str = "pdl-test-key-0002";
const APOLLO_KEY: &str = "apollo-test-key-0003";

/// One request the fake saw: its route and the key header it carried.
type Request = (&'static str, Option<String>);

/// The requests the fake saw.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Request>>>);

impl Seen {
    fn record(&self, route: &'static str, headers: &HeaderMap, key_header: &str) {
        let key = headers
            .get(key_header)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.0.lock().expect("test lock").push((route, key));
    }

    fn keys(&self, route: &str) -> Vec<Option<String>> {
        let seen = self.0.lock().expect("test lock");
        seen.iter()
            .filter(|(r, _)| *r == route)
            .map(|(_, k)| k.clone())
            .collect()
    }
}

type Params = Query<HashMap<String, String>>;

fn hunter_error(status: StatusCode, id: &str, details: &str) -> Response {
    let body = json!({"errors": [{"id": id, "code": status.as_u16(), "details": details}]});
    (status, Json(body)).into_response()
}

async fn hunter_email_finder(
    State(seen): State<Seen>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    seen.record("hunter_email_finder", &headers, "x-api-key");
    if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(HUNTER_KEY) {
        return hunter_error(
            StatusCode::UNAUTHORIZED,
            "authentication_failed",
            "No user found for the API key supplied",
        );
    }
    match q.get("last_name").map(String::as_str) {
        Some("Lovelace") => Json(json!({
            "data": {
                "first_name": "Ada", "last_name": "Lovelace", "email": "ada.lovelace@engines.example",
                "score": 97, "domain": "engines.example", "accept_all": false, "position": "Analyst",
                "twitter": "ada", "linkedin_url": "https://www.linkedin.com/in/ada-lovelace",
                "phone_number": "+44 20 7946 0958", "company": "Analytical Engines",
                "sources": [{"domain": "engines.example", "uri": "http://engines.example/team",
                    "extracted_on": "2024-01-02", "last_seen_on": "2024-06-01", "still_on_page": true}],
                "verification": {"date": "2024-06-01", "status": "valid"}
            },
            "meta": {"params": {"first_name": "Ada", "last_name": "Lovelace", "full_name": null,
                "domain": "engines.example", "company": null, "max_duration": null}}
        }))
        .into_response(),
        Some("Missing") => hunter_error(StatusCode::NOT_FOUND, "not_found", "No result"),
        Some("Objected") => hunter_error(
            StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            "claimed_email",
            "The person behind this address asked us to stop processing it",
        ),
        Some("Broke") => hunter_error(StatusCode::PAYMENT_REQUIRED, "no_credits", "Not enough credits"),
        Some("Busy") => {
            let mut r = hunter_error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", "Slow down");
            r.headers_mut().insert("retry-after", "7".parse().expect("header"));
            r
        }
        Some("Garbage") => (StatusCode::OK, [("content-type", "text/html")], "<html>oops</html>").into_response(),
        Some("Crash") => (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response(),
        _ => hunter_error(StatusCode::BAD_REQUEST, "wrong_params", "unexpected test input"),
    }
}

async fn hunter_people_find(
    State(seen): State<Seen>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    seen.record("hunter_person", &headers, "x-api-key");
    match q.get("email").map(String::as_str) {
        Some("ada@engines.example") => Json(json!({
            "data": {
                "id": "d4a0c1e2", "name": {"fullName": "Ada Lovelace", "givenName": "Ada", "familyName": "Lovelace"},
                "email": "ada@engines.example", "location": "London, England, United Kingdom",
                "timeZone": "Europe/London", "utcOffset": 0,
                "geo": {"city": "London", "state": "England", "country": "United Kingdom"},
                "bio": "Writes programs for engines that do not exist yet", "site": "https://ada.example",
                "avatar": "https://images.example/ada.png",
                "employment": {"domain": "engines.example", "name": "Analytical Engines", "title": "Analyst",
                    "role": "engineering", "seniority": "executive"},
                "facebook": {"handle": null}, "github": {"handle": "ada", "id": 1, "avatar": null},
                "twitter": {"handle": "ada", "id": 2}, "linkedin": {"handle": "in/ada-lovelace"},
                "phone": null, "indexedAt": "2024-06-01", "inactiveAt": null
            },
            "meta": {"email": "ada@engines.example"}
        }))
        .into_response(),
        Some("claimed@engines.example") => hunter_error(
            StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            "claimed_email",
            "The person behind this address asked us to stop processing it",
        ),
        _ => hunter_error(StatusCode::NOT_FOUND, "not_found", "No person"),
    }
}

async fn pdl_enrich(State(seen): State<Seen>, headers: HeaderMap, Query(q): Params) -> Response {
    seen.record("pdl_person", &headers, "x-api-key");
    match q.get("email").map(String::as_str) {
        Some("ada@engines.example") => Json(json!({
            "status": 200, "likelihood": 9,
            "data": {
                "id": "qEnOZ5Oh0poWnQ1luFBfVw_0000", "full_name": "Ada Lovelace", "first_name": "Ada",
                "middle_name": null, "last_name": "Lovelace", "job_title": "Analyst",
                "job_company_name": "Analytical Engines", "job_company_website": "engines.example",
                "location_name": "London, England, United Kingdom", "work_email": "ada@engines.example",
                "personal_emails": ["ada.l@mail.example"], "recommended_personal_email": "ada.l@mail.example",
                "mobile_phone": "+442079460958", "phone_numbers": ["+442079460958"],
                "linkedin_url": "linkedin.com/in/ada-lovelace", "twitter_url": "twitter.com/ada",
                "github_url": null, "emails": [{"address": "ada@engines.example", "type": "current_professional"}]
            }
        }))
        .into_response(),
        _ => (
            StatusCode::NOT_FOUND,
            Json(json!({"status": 404, "error": {"type": "not_found",
                "message": "No records were found matching your request"}})),
        )
            .into_response(),
    }
}

async fn apollo_match(State(seen): State<Seen>, headers: HeaderMap, Query(q): Params) -> Response {
    seen.record("apollo_match", &headers, "x-api-key");
    if q.get("email").map(String::as_str) != Some("ada@engines.example") {
        return Json(json!({"person": null})).into_response();
    }
    Json(json!({
        "person": {
            "id": "5f2a", "first_name": "Ada", "last_name": "Lovelace", "name": "Ada Lovelace",
            "linkedin_url": "http://www.linkedin.com/in/ada-lovelace", "title": "Analyst",
            "email_status": "verified", "photo_url": "https://static.example/ada.jpg",
            "twitter_url": null, "github_url": "https://github.com/ada", "headline": "Analyst",
            "email": "ada@engines.example", "organization_id": "5e1b",
            "organization": {"id": "5e1b", "name": "Analytical Engines",
                "website_url": "http://www.engines.example", "primary_domain": "engines.example"},
            "city": "London", "country": "United Kingdom"
        }
    }))
    .into_response()
}

async fn json_body(Json(body): Json<Value>) -> Response {
    if body["query"]["email"] == "ada@engines.example" {
        Json(json!({"result": {"name": "Ada Lovelace"}})).into_response()
    } else {
        (StatusCode::NOT_FOUND, Json(json!({}))).into_response()
    }
}

struct Fake {
    base: String,
    seen: Seen,
}

async fn fake() -> Fake {
    let seen = Seen::default();
    let app = Router::new()
        .route("/v2/email-finder", get(hunter_email_finder))
        .route("/v2/people/find", get(hunter_people_find))
        .route("/v5/person/enrich", get(pdl_enrich))
        .route("/api/v1/people/match", post(apollo_match))
        .route("/custom/search", post(json_body))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    Fake {
        base: format!("http://{addr}"),
        seen,
    }
}

fn keys(var: &str) -> Option<String> {
    match var {
        "HUNTER_API_KEY" => Some(HUNTER_KEY.into()),
        "PDL_API_KEY" => Some(PDL_KEY.into()),
        "APOLLO_API_KEY" => Some(APOLLO_KEY.into()),
        _ => None,
    }
}

/// The shipped examples, pointed at the fake and switched on.
fn examples_at(base: &str) -> Vec<ProviderConfig> {
    let text = EXAMPLES
        .replace("https://api.hunter.io", base)
        .replace("https://api.peopledatalabs.com", base)
        .replace("https://api.apollo.io", base);
    let mut cfgs = Config::from_toml(&text, &[])
        .expect("examples parse")
        .config
        .providers;
    for c in &mut cfgs {
        c.enabled = true;
    }
    cfgs
}

async fn providers() -> (Fake, HashMap<String, ProviderSource>) {
    let fake = fake().await;
    let built = build_providers(&examples_at(&fake.base), reqwest::Client::new(), &keys)
        .expect("examples build");
    let by_name = built.into_iter().map(|p| (p.name.clone(), p)).collect();
    (fake, by_name)
}

fn email(s: &str) -> Identifier {
    Identifier::Email(Email::parse(s).expect("test email"))
}

fn name_at(name: &str, domain: &str) -> Identifier {
    Identifier::NameAtDomain(
        PersonName::parse(name).expect("name"),
        DomainName::parse(domain).expect("domain"),
    )
}

fn values(obs: &[Observation], field: Field) -> Vec<&str> {
    obs.iter()
        .filter(|o| o.field == field)
        .map(|o| o.value.as_str())
        .collect()
}

#[test]
fn shipped_examples_load_through_the_config_parser_and_stay_disabled() {
    let loaded =
        Config::from_toml(EXAMPLES, &[]).expect("examples/providers.toml is a valid config");
    let built = build_providers(&loaded.config.providers, reqwest::Client::new(), &|_| None)
        .expect("examples build");

    let names: Vec<&str> = built.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "hunter_email_finder",
            "hunter_person",
            "pdl_person",
            "apollo_match",
            "apollo_match_by_name"
        ]
    );
    assert!(built.iter().all(|p| p.paid && !p.is_active()));
    assert!(
        built
            .iter()
            .all(|p| p.disabled.as_deref() == Some("enabled = false"))
    );
}

#[test]
fn a_missing_key_disables_the_provider_with_the_reason() {
    let mut cfgs = examples_at("http://127.0.0.1:9");
    cfgs.truncate(1);

    let built = build_providers(&cfgs, reqwest::Client::new(), &|_| None).expect("builds");

    let reason = built[0].disabled.as_deref().expect("disabled");
    assert!(reason.contains("HUNTER_API_KEY"), "{reason}");
}

#[tokio::test]
async fn hunter_email_finder_hit_maps_documented_fields_and_sends_the_key() {
    let (fake, p) = providers().await;
    let finder = &p["hunter_email_finder"];
    assert!(finder.is_active());

    let obs = finder
        .source
        .lookup(&name_at("Ada Lovelace", "engines.example"))
        .await
        .expect("hit");

    assert_eq!(values(&obs, Field::Email), ["ada.lovelace@engines.example"]);
    assert_eq!(values(&obs, Field::JobTitle), ["Analyst"]);
    assert_eq!(values(&obs, Field::CompanyName), ["Analytical Engines"]);
    assert_eq!(values(&obs, Field::CompanyDomain), ["engines.example"]);
    assert_eq!(values(&obs, Field::Phone), ["+442079460958"]);
    assert_eq!(
        values(&obs, Field::Profile),
        ["https://linkedin.com/in/ada-lovelace", "https://x.com/ada"]
    );
    assert_eq!(
        fake.seen.keys("hunter_email_finder"),
        [Some(HUNTER_KEY.to_string())]
    );
}

#[tokio::test]
async fn hunter_status_answers_map_to_source_outcomes() {
    let (_fake, p) = providers().await;
    let finder = &p["hunter_email_finder"].source;

    type Check = fn(&Result<Vec<Observation>, SourceError>) -> bool;
    let cases: [(&str, Check); 6] = [
        ("Ada Missing", |r| matches!(r, Ok(v) if v.is_empty())),
        ("Ada Objected", |r| matches!(r, Err(SourceError::Objected))),
        (
            "Ada Broke",
            |r| matches!(r, Err(SourceError::RateLimited { retry_after: Some(d) }) if *d == OUT_OF_CREDITS_PAUSE),
        ),
        (
            "Ada Busy",
            |r| matches!(r, Err(SourceError::RateLimited { retry_after: Some(d) }) if *d == Duration::from_secs(7)),
        ),
        ("Ada Garbage", |r| {
            matches!(r, Err(SourceError::Malformed(_)))
        }),
        ("Ada Crash", |r| {
            matches!(r, Err(SourceError::Status { status: 500 }))
        }),
    ];
    for (name, expected) in cases {
        let r = finder.lookup(&name_at(name, "engines.example")).await;
        assert!(expected(&r), "{name}: {r:?}");
    }
}

#[tokio::test]
async fn hunter_person_reads_nested_fields_and_withholds_objections() {
    let (_fake, p) = providers().await;
    let person = &p["hunter_person"].source;

    let obs = person
        .lookup(&email("ada@engines.example"))
        .await
        .expect("hit");
    let objected = person.lookup(&email("claimed@engines.example")).await;

    assert_eq!(values(&obs, Field::FullName), ["Ada Lovelace"]);
    assert_eq!(values(&obs, Field::JobTitle), ["Analyst"]);
    assert_eq!(
        values(&obs, Field::Location),
        ["London, England, United Kingdom"]
    );
    assert_eq!(
        values(&obs, Field::Photo),
        ["https://images.example/ada.png"]
    );
    assert!(values(&obs, Field::Profile).contains(&"https://linkedin.com/in/ada-lovelace"));
    assert!(
        values(&obs, Field::Phone).is_empty(),
        "a null phone is no value"
    );
    assert!(
        matches!(objected, Err(SourceError::Objected)),
        "{objected:?}"
    );
}

#[tokio::test]
async fn pdl_person_reads_scalars_and_arrays_and_404_is_a_miss() {
    let (fake, p) = providers().await;
    let pdl = &p["pdl_person"].source;

    let obs = pdl
        .lookup(&email("ada@engines.example"))
        .await
        .expect("hit");
    let miss = pdl
        .lookup(&email("nobody@engines.example"))
        .await
        .expect("miss");

    assert_eq!(
        values(&obs, Field::Email),
        ["ada@engines.example", "ada.l@mail.example"]
    );
    assert_eq!(values(&obs, Field::Phone), ["+442079460958"]);
    assert_eq!(values(&obs, Field::CompanyDomain), ["engines.example"]);
    assert!(values(&obs, Field::Profile).contains(&"https://x.com/ada"));
    assert!(miss.is_empty());
    assert_eq!(fake.seen.keys("pdl_person")[0].as_deref(), Some(PDL_KEY));
}

#[tokio::test]
async fn apollo_match_posts_and_a_null_person_is_a_miss() {
    let (fake, p) = providers().await;
    let apollo = &p["apollo_match"].source;

    let obs = apollo
        .lookup(&email("ada@engines.example"))
        .await
        .expect("hit");
    let miss = apollo
        .lookup(&email("nobody@engines.example"))
        .await
        .expect("miss");

    assert_eq!(values(&obs, Field::FullName), ["Ada Lovelace"]);
    assert_eq!(values(&obs, Field::CompanyName), ["Analytical Engines"]);
    assert_eq!(
        values(&obs, Field::Profile),
        [
            "https://linkedin.com/in/ada-lovelace",
            "https://github.com/ada"
        ]
    );
    assert!(miss.is_empty());
    assert_eq!(
        fake.seen.keys("apollo_match")[0].as_deref(),
        Some(APOLLO_KEY)
    );
}

#[test]
fn providers_accept_only_identifiers_that_fill_their_placeholders() {
    let built = build_providers(
        &examples_at("http://127.0.0.1:9"),
        reqwest::Client::new(),
        &keys,
    )
    .expect("builds");
    let by_name: HashMap<&str, &ProviderSource> =
        built.iter().map(|p| (p.name.as_str(), p)).collect();
    let an_email = email("ada@engines.example");
    let a_name = name_at("Ada Lovelace", "engines.example");
    let one_word = name_at("Ada", "engines.example");

    assert!(!by_name["hunter_email_finder"].source.accepts(&an_email));
    assert!(by_name["hunter_email_finder"].source.accepts(&a_name));
    assert!(!by_name["hunter_email_finder"].source.accepts(&one_word));
    assert!(by_name["pdl_person"].source.accepts(&an_email));
    assert!(!by_name["pdl_person"].source.accepts(&a_name));
}

#[tokio::test]
async fn a_json_body_template_is_filled_and_posted() {
    let fake = fake().await;
    let toml = format!(
        r#"
        [[providers]]
        name = "custom"
        enabled = true
        url = "{}/custom/search"
        method = "POST"
        body = {{ query = {{ email = "{{email}}" }}, size = 1 }}
        fields = {{ full_name = "/result/name" }}
        "#,
        fake.base
    );
    let cfgs = Config::from_toml(&toml, &[])
        .expect("valid")
        .config
        .providers;
    let built = build_providers(&cfgs, reqwest::Client::new(), &|_| None).expect("builds");

    let obs = built[0]
        .source
        .lookup(&email("ada@engines.example"))
        .await
        .expect("hit");

    assert!(built[0].is_active(), "no auth configured, none needed");
    assert_eq!(values(&obs, Field::FullName), ["Ada Lovelace"]);
}

#[test]
fn keys_never_appear_in_debug_output() {
    let built = build_providers(
        &examples_at("http://127.0.0.1:9"),
        reqwest::Client::new(),
        &keys,
    )
    .expect("builds");
    let debug = format!("{built:?}");
    for key in [HUNTER_KEY, PDL_KEY, APOLLO_KEY] {
        assert!(!debug.contains(key), "{key} leaked");
    }
}

#[test]
fn invalid_entries_are_refused_naming_the_provider_and_key() {
    let entry = |extra: &str| {
        format!(
            "[[providers]]\nname = \"acme\"\nurl = \"https://api.acme.example/p?e={{email}}\"\n\
             fields = {{ email = \"/email\" }}\n{extra}"
        )
    };
    // (config text, text the error must hold, whether the error names the provider: serde's own
    // messages for unknown keys and values do not know which entry they are in, but name the key)
    let cases = [
        (entry("colour = \"red\"\n"), "colour", false),
        (
            entry("status = { \"404\" = \"ignore\" }\n"),
            "ignore",
            false,
        ),
        (entry("auth_header = \"X-Key\"\n"), "auth_env", true),
        (entry("status = { \"abc\" = \"miss\" }\n"), "status", true),
        (entry("weight = 1.5\n"), "weight", true),
        (
            entry("method = \"POST\"\nbody = \"{not json\"\n"),
            "body",
            true,
        ),
        (entry("body = { a = 1 }\n"), "body", true),
        (
            entry("").replace("api.acme.example", "{domain}"),
            "host",
            true,
        ),
        (entry("").replace("{email}", "{mail}"), "{mail}", true),
        (entry("").replace("{email}", "x"), "no placeholder", true),
        (format!("{}{}", entry(""), entry("")), "more than one", true),
    ];
    for (toml, needle, names_provider) in cases {
        let err = Config::from_toml(&toml, &[]).expect_err(needle).to_string();
        assert!(err.contains(needle), "expected '{needle}' in: {err}");
        assert!(
            !names_provider || err.contains("'acme'"),
            "error does not name the provider: {err}"
        );
    }
    let builtin = entry("").replace("\"acme\"", "\"gravatar\"");
    let err = Config::from_toml(&builtin, &[])
        .expect_err("built-in name")
        .to_string();
    assert!(
        err.contains("'gravatar'") && err.contains("built-in"),
        "{err}"
    );
}
