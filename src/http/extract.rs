//! `POST /v1/extract`: identifiers and facts from free text (an email signature, a pasted page), shaped
//! as a lookup query; `?lookup=true` runs that lookup at once.

use axum::body::Bytes;
use axum::extract::{FromRequest, RawQuery, Request, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::api::{BodyErrors, Invalid, KeyErrors};
use super::body::{JsonBody, media_type, query, rejected_body};
use super::lookup::{Asked, timeout_param, validate};
use super::{ApiError, AppState, Tenant};
use crate::domain::is_webmail;
use crate::domain::{DomainName, QueryInput, Region};
use crate::extract::{Extracted, extract};
use crate::pipeline::Lookup;

/// Free text to read, as JSON.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ExtractRequest {
    /// The text to read; not blank.
    #[schema(pattern = "\\S")]
    text: String,
    /// ISO region for national phone numbers in the text; the configured default otherwise.
    region: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ExtractParams {
    /// `true` looks the suggested query up at once.
    #[param(value_type = Option<bool>)]
    lookup: Option<String>,
    /// The lookup's deadline, at most `lookup.max_timeout_ms`.
    #[param(value_type = Option<u64>, minimum = 1)]
    timeout_ms: Option<String>,
}

/// The text, from a JSON `{text, region?}` body or a `text/plain` one.
pub struct Text {
    text: String,
    region: Option<String>,
}

impl FromRequest<AppState> for Text {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        match media_type(req.headers()).as_str() {
            "application/json" => {
                let JsonBody(r) = JsonBody::<ExtractRequest>::from_request(req, state).await?;
                Ok(Self {
                    text: r.text,
                    region: r.region,
                })
            }
            "text/plain" | "text/html" => {
                let bytes = Bytes::from_request(req, state)
                    .await
                    .map_err(|e| rejected_body(e, state.max_json_bytes))?;
                let text = String::from_utf8(bytes.to_vec())
                    .map_err(|_| ApiError::invalid("body", "the text is not valid UTF-8"))?;
                Ok(Self { text, region: None })
            }
            _ => Err(ApiError::UnsupportedMediaType {
                expected: "application/json, text/plain or text/html",
            }),
        }
    }
}

/// What was found, the query it makes, and the lookup's answer when one was asked for.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExtractResponse {
    pub extracted: Found,
    /// The lookup body the extraction suggests: the first of each identifier, the name with the
    /// company. Any of the lookup's fields; empty when the text held no identifier.
    #[schema(value_type = Object)]
    pub query: QueryInput,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lookup: Option<Lookup>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Found {
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    pub profile_urls: Vec<String>,
    pub company_pages: Vec<String>,
    pub websites: Vec<String>,
    pub name: Option<String>,
    pub title: Option<String>,
    pub company: Option<String>,
}

/// Identifiers and facts from free text (an email signature, a pasted page), shaped as a lookup query.
#[utoipa::path(
    post,
    path = "/v1/extract",
    tag = "lookup",
    params(ExtractParams),
    request_body(content(
        (ExtractRequest = "application/json"),
        (String = "text/plain"),
        (String = "text/html"),
    )),
    responses(
        (status = 200, description = "What was found, the query it makes, and the lookup's answer \
          when `lookup=true`.", body = ExtractResponse),
        Invalid, BodyErrors, KeyErrors,
    )
)]
pub async fn post(
    State(state): State<AppState>,
    Tenant(_): Tenant,
    RawQuery(raw): RawQuery,
    body: Text,
) -> Result<Response, ApiError> {
    let params: ExtractParams = query(raw.as_deref())?;
    let timeout_ms = timeout_param(params.timeout_ms.as_deref())?;
    if let Some(ms) = timeout_ms
        && (ms == 0 || ms > state.max_timeout_ms)
    {
        return Err(ApiError::invalid(
            "timeout_ms",
            format!("timeout_ms must be between 1 and {}", state.max_timeout_ms),
        ));
    }
    let run_lookup = match params.lookup.as_deref().map(str::trim) {
        None | Some("false" | "0" | "") => false,
        Some("true" | "1") => true,
        Some(_) => return Err(ApiError::invalid("lookup", "lookup must be true or false")),
    };
    let region =
        match body.region.as_deref() {
            None => state.region,
            Some(code) => Some(code.trim().to_ascii_uppercase().parse::<Region>().map_err(
                |_| ApiError::invalid("region", "region must be an ISO 3166 two-letter code"),
            )?),
        };
    if body.text.trim().is_empty() {
        return Err(ApiError::invalid("text", "text is empty"));
    }
    let found = extract(&body.text, region);
    let suggested = suggest(&found);
    let lookup = if run_lookup {
        let asked = Asked {
            timeout_ms,
            ..Asked::default()
        };
        let (query, opts) = validate(&state, &suggested, asked).map_err(|e| match e {
            // A bad `timeout_ms` is the caller's parameter, not the text's fault.
            ApiError::Invalid(errors) if errors.iter().any(|e| e.field == "timeout_ms") => {
                ApiError::Invalid(errors)
            }
            _ => ApiError::invalid(
                "text",
                "the text holds no email, phone, profile URL or name with a company to look up",
            ),
        })?;
        Some(state.pipeline.lookup(&query, opts).await)
    } else {
        None
    };
    Ok(axum::Json(ExtractResponse {
        extracted: Found::from(&found),
        query: suggested,
        lookup,
    })
    .into_response())
}

impl From<&Extracted> for Found {
    fn from(e: &Extracted) -> Self {
        Self {
            emails: e.emails.iter().map(|x| x.as_str().to_string()).collect(),
            phones: e.phones.iter().map(|x| x.as_str().to_string()).collect(),
            profile_urls: e.profile_urls.iter().map(|x| x.to_url()).collect(),
            company_pages: e.company_pages.clone(),
            websites: e.websites.clone(),
            name: e.name.clone(),
            title: e.title.clone(),
            company: e.company.clone(),
        }
    }
}

/// The first of each identifier; the company's domain from a corporate address or the first website.
fn suggest(e: &Extracted) -> QueryInput {
    let corporate = e
        .emails
        .iter()
        .map(|m| m.domain().to_string())
        .find(|d| !is_webmail(d));
    let site = e
        .websites
        .iter()
        .filter_map(|w| DomainName::parse(w.trim_start_matches("https://")).ok())
        .map(|d| d.as_str().to_string())
        .next();
    QueryInput {
        email: e.emails.first().map(|x| x.as_str().to_string()),
        phone: e.phones.first().map(|x| x.as_str().to_string()),
        profile_url: e.profile_urls.first().map(|x| x.to_url()),
        name: e.name.clone(),
        company: e.name.as_ref().and(e.company.clone()),
        domain: e.name.as_ref().and(corporate.or(site)),
        ..QueryInput::default()
    }
}
