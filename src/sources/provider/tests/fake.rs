//! A loopback server speaking Hunter's, People Data Labs' and Apollo's documented formats, for the
//! provider tests. It answers by test input (a last name or an email) and records the key header it got.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

pub const HUNTER_KEY: &str = "hunter-test-key-0001";
pub const PDL_KEY: &str = "pdl-test-key-0002";
pub const APOLLO_KEY: &str = "apollo-test-key-0003";

/// One request the fake saw: its route and the key header it carried.
type Request = (&'static str, Option<String>);

/// The requests the fake saw.
#[derive(Clone, Default)]
pub struct Seen(Arc<Mutex<Vec<Request>>>);

impl Seen {
    fn record(&self, route: &'static str, headers: &HeaderMap, key_header: &str) {
        let key = headers
            .get(key_header)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.0.lock().expect("test lock").push((route, key));
    }

    pub fn keys(&self, route: &str) -> Vec<Option<String>> {
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

pub struct Fake {
    pub base: String,
    pub seen: Seen,
}

pub async fn fake() -> Fake {
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
