//! `/openapi.json`: generated from the handlers' `#[utoipa::path]` attributes and the request and
//! response types, and assembled together with the routes (`utoipa-axum`), so that no route exists
//! without its entry. Every status a route can answer is listed, the guard's included (408, 413, 503).
//! At start the limits of the running configuration are written in (the largest `timeout_ms`, the
//! enabled source names), so the document states what this server enforces.

use serde::Serialize;
use utoipa::openapi::schema::{AllOfBuilder, ArrayBuilder, ObjectBuilder, Schema};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi, PartialSchema, ToSchema};

use super::AppState;
use crate::domain::FieldError;
use crate::pipeline::Want;
use crate::profile::{Ranked, Sourced};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "enrichd",
        description = "Self-hosted, real-time OSINT contact enrichment. No contact database: every lookup \
                       is answered live and filtered through the opt-out exclusion list. Errors are \
                       application/problem+json (RFC 9457); 429 and 503 carry Retry-After."
    ),
    modifiers(&Security),
    components(schemas(Problem, FieldError)),
    security(("bearer" = []), ("apiKey" = []))
)]
pub struct ApiDoc;

/// The two ways to present a key.
struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// An error, as every route writes it ([`super::ApiError`]).
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// `/problems/<slug>`, one per kind of error.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    /// A sentence naming what is wrong; never personal data.
    pub detail: String,
    /// With 422: each invalid field and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// What every route that takes a key may answer besides its own outcomes.
#[allow(dead_code)]
#[derive(IntoResponses)]
pub enum KeyErrors {
    /// Missing or invalid API key.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The tenant's rate limit, or too many requests at once from one client; see `Retry-After`.
    #[response(status = 429, content_type = "application/problem+json",
               headers(("Retry-After" = u64, description = "Seconds to wait"),
                       ("RateLimit-Policy" = String,
                        description = "The tenant's limit (draft-ietf-httpapi-ratelimit-headers): `\"tenant\";q=<requests>;w=60`"),
                       ("RateLimit" = String,
                        description = "What is left of it: `\"tenant\";r=0;t=<seconds until more>`")))]
    RateLimited(Problem),
    /// Too many requests in flight or, on a route that reads or writes the store, the store cannot
    /// be reached right now (nothing was changed); see `Retry-After`.
    #[response(status = 503, content_type = "application/problem+json",
               headers(("Retry-After" = u64, description = "Seconds to wait")))]
    Overloaded(Problem),
}

/// What the admin routes may answer besides their own outcomes.
#[allow(dead_code)]
#[derive(IntoResponses)]
pub enum AdminErrors {
    /// Missing or invalid API key.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// A key that is not an admin key.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// The key's rate limit; see `Retry-After`.
    #[response(status = 429, content_type = "application/problem+json",
               headers(("Retry-After" = u64, description = "Seconds to wait"),
                       ("RateLimit-Policy" = String,
                        description = "The tenant's limit (draft-ietf-httpapi-ratelimit-headers): `\"tenant\";q=<requests>;w=60`"),
                       ("RateLimit" = String,
                        description = "What is left of it: `\"tenant\";r=0;t=<seconds until more>`")))]
    RateLimited(Problem),
    /// Too many requests in flight or, on a route that reads or writes the store, the store cannot
    /// be reached right now (nothing was changed); see `Retry-After`.
    #[response(status = 503, content_type = "application/problem+json",
               headers(("Retry-After" = u64, description = "Seconds to wait")))]
    Overloaded(Problem),
}

/// What a route that reads a body may answer about the body itself.
#[allow(dead_code)]
#[derive(IntoResponses)]
pub enum BodyErrors {
    /// The body arrived slower than `server.body_min_bytes_per_second` after the grace period.
    #[response(status = 408, content_type = "application/problem+json")]
    TooSlow(Problem),
    /// The body is larger than the route's limit (`server.max_json_bytes` for JSON); `detail`
    /// names the limit.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// The body's media type is not one the route takes.
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
}

/// 422: a field is invalid; `errors[].field` names each one.
#[allow(dead_code)]
#[derive(IntoResponses)]
#[response(status = 422, content_type = "application/problem+json")]
pub struct Invalid(Problem);

impl PartialSchema for Ranked {
    /// The best value's fields, and `alternatives` when values conflict.
    fn schema() -> RefOr<Schema> {
        AllOfBuilder::new()
            .item(Ref::from_schema_name("Sourced"))
            .item(ObjectBuilder::new().property(
                "alternatives",
                ArrayBuilder::new().items(Ref::from_schema_name("Sourced")),
            ))
            .into()
    }
}

impl ToSchema for Ranked {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push(("Sourced".into(), <Sourced as PartialSchema>::schema()));
        <Sourced as ToSchema>::schemas(schemas);
    }
}

/// Constraints of the identifier fields that JSON Schema can state exactly; each parser refuses what
/// they refuse. Beyond them: a phone number must be valid for its country's numbering plan, a name
/// must hold a letter, and a profile URL must name a supported service's profile.
const IDENTIFIER_FORMATS: [(&str, &str, &str); 3] = [
    (
        "email",
        "email",
        "^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@\
         ([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\\.)+[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*$",
    ),
    (
        "phone",
        "E.164, or national with lookup.default_region set",
        "^(\\+|00)?[0-9 ().-]{4,24}$",
    ),
    (
        "domain",
        "hostname",
        "^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\\.)+[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*$",
    ),
];

/// What makes a query (a lookup or an opt-out) name a person: one of these sets of fields, each
/// non-empty.
const PERSON: [&[&str]; 7] = [
    &["email"],
    &["phone"],
    &["profile_url"],
    &["name", "company"],
    &["name", "domain"],
    &["first_name", "last_name", "company"],
    &["first_name", "last_name", "domain"],
];

/// Writes the identifier formats and the "names a person" rule into a query schema.
fn constrain_query(schema: &mut serde_json::Value) {
    let Some(props) = schema.get_mut("properties") else {
        return;
    };
    for (field, format, pattern) in IDENTIFIER_FORMATS {
        if let Some(p) = props.get_mut(field) {
            p["description"] = format!("Format: {format}. An empty value counts as absent.").into();
            p["pattern"] = format!("^$|{pattern}").into();
        }
    }
    let any_of: Vec<serde_json::Value> = PERSON
        .iter()
        .map(|fields| {
            let props: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|f| {
                    let non_empty = serde_json::json!({"type": "string", "pattern": "\\S"});
                    (f.to_string(), non_empty)
                })
                .collect();
            serde_json::json!({"required": fields, "properties": props})
        })
        .collect();
    schema["anyOf"] = any_of.into();
}

/// The document as served: `api` with the running configuration's limits written in.
pub fn document(mut api: utoipa::openapi::OpenApi, state: &AppState) -> String {
    api.info.version = env!("CARGO_PKG_VERSION").to_string();
    let mut doc = match serde_json::to_value(&api) {
        Ok(doc) => doc,
        Err(e) => {
            tracing::error!(error = %e, "The OpenAPI document could not be written.");
            return "{}".into();
        }
    };
    let sources: Vec<String> = state.pipeline.source_names();
    let wants: Vec<&str> = Want::ALL.iter().map(|w| w.as_str()).collect();
    let max = state.max_timeout_ms;
    for name in ["LookupRequest", "QueryInput"] {
        if let Some(schema) = doc.pointer_mut(&format!("/components/schemas/{name}")) {
            constrain_query(schema);
        }
    }
    // The request flattens the person in, so its own properties may sit in one part of an `allOf`.
    let own = ["/components/schemas/LookupRequest/properties"]
        .into_iter()
        .map(String::from)
        .chain((0..4).map(|i| format!("/components/schemas/LookupRequest/allOf/{i}/properties")))
        .find(|p| {
            doc.pointer(p)
                .is_some_and(|v| v.get("timeout_ms").is_some())
        });
    if let Some(props) = own.and_then(|p| doc.pointer_mut(&p)) {
        props["timeout_ms"]["maximum"] = max.into();
        props["sources"]["items"]["enum"] = sources.clone().into();
        props["want"]["items"]["enum"] = wants.clone().into();
    }
    if let Some(params) = doc
        .pointer_mut("/paths/~1v1~1lookup/get/parameters")
        .and_then(serde_json::Value::as_array_mut)
    {
        for p in params {
            if p["name"] == "timeout_ms" {
                p["schema"]["maximum"] = max.into();
            }
        }
    }
    if let Some(params) = doc
        .pointer_mut("/paths/~1v1~1extract/post/parameters")
        .and_then(serde_json::Value::as_array_mut)
    {
        for p in params {
            if p["name"] == "timeout_ms" {
                p["schema"]["maximum"] = max.into();
            }
        }
    }
    doc.to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;
    use crate::pipeline::{Lookup, SourceReport};
    use crate::profile::{Company, EmailStatus, Profile};
    use crate::sources::SourceStatus;

    async fn document_of_default_app() -> (Value, tempfile::TempDir) {
        let loaded = crate::config::Config::from_toml("", &[]).expect("defaults");
        let dir = tempfile::tempdir().expect("temp dir");
        let app = crate::app::App::build(&loaded, dir.path())
            .await
            .expect("app builds");
        let doc = crate::http::openapi_document(&app.state);
        (
            serde_json::from_str(&doc).expect("the document is JSON"),
            dir,
        )
    }

    /// The schema `schema` names, following `$ref`s.
    fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => resolve(
                doc,
                doc.pointer(&r.replacen('#', "", 1)).expect("ref resolves"),
            ),
            None => schema,
        }
    }

    /// Every member of `value` is declared by `schema` (recursively), and every required one is there.
    fn conforms(doc: &Value, schema: &Value, value: &Value, path: &str) {
        let mut parts: Vec<&Value> = Vec::new();
        let mut todo = vec![resolve(doc, schema)];
        while let Some(part) = todo.pop() {
            parts.push(part);
            for key in ["allOf", "oneOf", "anyOf"] {
                if let Some(list) = part.get(key).and_then(Value::as_array) {
                    todo.extend(list.iter().map(|s| resolve(doc, s)));
                }
            }
        }
        match value {
            Value::Object(members) => {
                for (name, member) in members {
                    let declared = parts
                        .iter()
                        .find_map(|p| p.get("properties").and_then(|ps| ps.get(name)))
                        .or_else(|| {
                            parts
                                .iter()
                                .find_map(|p| p.get("additionalProperties"))
                                .filter(|a| a.is_object())
                        })
                        .unwrap_or_else(|| panic!("{path}.{name} is not in the schema"));
                    conforms(doc, declared, member, &format!("{path}.{name}"));
                }
                for part in &parts {
                    for req in part
                        .get("required")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let req = req.as_str().expect("names");
                        assert!(members.contains_key(req), "{path}.{req} is required");
                    }
                }
            }
            Value::Array(items) => {
                let item = parts
                    .iter()
                    .find_map(|p| p.get("items"))
                    .unwrap_or_else(|| panic!("{path} is not an array in the schema"));
                for (i, v) in items.iter().enumerate() {
                    conforms(doc, item, v, &format!("{path}[{i}]"));
                }
            }
            _ => {}
        }
    }

    fn sourced(value: &str) -> Sourced {
        Sourced {
            value: value.into(),
            confidence: 0.7,
            sources: Arc::from(vec![Arc::<str>::from("gravatar")]),
            detail: Some("detail".into()),
            status: None,
            evidence: None,
        }
    }

    #[tokio::test]
    async fn a_full_answer_is_what_the_document_describes() {
        let (doc, _dir) = document_of_default_app().await;
        let ranked = Ranked {
            best: sourced("Ada Lovelace"),
            alternatives: vec![sourced("A. Lovelace")],
        };
        let mut email = sourced("ada@example.com");
        email.status = Some(EmailStatus::Valid);
        email.evidence = Some("known to gravatar".into());
        let profile = Profile {
            name: Some(ranked.clone()),
            job_title: Some(ranked.clone()),
            company: Some(Company {
                name: Some(ranked.clone()),
                domain: Some(ranked.clone()),
            }),
            emails: vec![email],
            phones: vec![sourced("+442079460958")],
            profiles: vec![sourced("https://github.com/adalove")],
            ..Profile::default()
        };
        let lookup = Lookup {
            found: true,
            profile: Some(Box::new(profile)),
            facts: [("mail_provider", ranked)].into_iter().collect(),
            sources: vec![SourceReport {
                name: Arc::from("gravatar"),
                status: SourceStatus::Hit,
                latency_ms: 12,
            }],
            took_ms: 13,
            cost: 0.0,
            hints: vec!["no enabled source can look up a phone number".into()],
            withheld: false,
            capped: Vec::new(),
        };
        let schema = json!({"$ref": "#/components/schemas/Lookup"});
        conforms(
            &doc,
            &schema,
            &serde_json::to_value(&lookup).expect("json"),
            "answer",
        );
    }

    #[tokio::test]
    async fn a_batch_summary_is_what_the_document_describes() {
        let (doc, _dir) = document_of_default_app().await;
        let summary = crate::batch::BatchSummary {
            id: "0".repeat(32),
            status: "done",
            rows_total: 3,
            rows_done: 3,
            rows_found: 1,
            rows_error: 1,
            rows_error_reason: Some("every source asked failed (gravatar error)".into()),
            error: None,
            eta_seconds: Some(12),
            rows_waiting_for_budget: 2,
            cost: 0.3,
            cost_per_found: Some(0.3),
            max_cost: Some(1.0),
            created_at: "2026-01-01T00:00:00Z".into(),
            expires_at: "2026-01-31T00:00:00Z".into(),
        };
        let value = serde_json::to_value(&summary).expect("json");

        conforms(
            &doc,
            &json!({"$ref": "#/components/schemas/BatchSummary"}),
            &value,
            "summary",
        );
        let listed = json!({ "batches": [value] });
        conforms(
            &doc,
            &json!({"$ref": "#/components/schemas/BatchList"}),
            &listed,
            "list",
        );
    }

    #[tokio::test]
    async fn the_document_states_the_configured_limits() {
        let (doc, _dir) = document_of_default_app().await;
        let request = &doc["components"]["schemas"]["LookupRequest"];
        let props = std::iter::once(&request["properties"])
            .chain(
                request["allOf"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| &p["properties"]),
            )
            .find(|p| p.get("timeout_ms").is_some())
            .expect("timeout_ms in the request's schema");
        assert_eq!(props["timeout_ms"]["maximum"], 15_000);
        assert_eq!(props["timeout_ms"]["minimum"], 1);
        assert!(
            props["sources"]["items"]["enum"]
                .as_array()
                .is_some_and(|s| !s.is_empty())
        );
        assert!(doc["paths"]["/v1/lookup"]["post"]["responses"]["503"].is_object());
        assert!(doc["paths"]["/v1/optout"]["post"]["responses"]["408"].is_object());
    }

    #[tokio::test]
    async fn every_route_that_writes_the_store_documents_503_with_retry_after() {
        let (doc, _dir) = document_of_default_app().await;
        for (path, method) in [
            ("/v1/optout", "post"),
            ("/optout", "post"),
            ("/v1/admin/exclusions", "post"),
            ("/v1/batches", "post"),
            ("/v1/batches/{id}", "delete"),
        ] {
            let refused = &doc["paths"][path][method]["responses"]["503"];
            assert!(
                refused["headers"]["Retry-After"].is_object(),
                "{method} {path}: {refused}"
            );
        }
    }
}
