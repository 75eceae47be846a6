//! The public opt-out: `GET /optout` (an HTML form), `POST /optout` (the form's submission, answered in
//! HTML) and `POST /v1/optout` (JSON). No API key; limited per client address. Every channel runs the
//! same [`crate::optout::OptOut`] procedure, effective before the answer is sent.
//!
//! Answers never say whether the person was already on the list or what the expansion found: anyone
//! can submit anyone's identifiers, so the answer must not become a lookup.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::api::{BodyErrors, Invalid, Problem};
use super::body::{JsonBody, media_type, rejected_body};
use super::html::{escape, page};
use super::{ApiError, AppState};
use crate::domain::{FieldError, Query, QueryInput};
use crate::exclusion::Origin;
use crate::optout::{OptOut, OptOutError};

/// Seconds a client is asked to wait before resubmitting an opt-out that did not fully finish.
const RETRY_INCOMPLETE_SECS: u64 = 5;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(form, submit_form))
        .routes(routes!(submit_json))
}

impl AppState {
    /// The opt-out procedure over this state's list, pipeline and hooks (also used by `enrichd optout`).
    pub fn optout(&self) -> OptOut {
        OptOut::new(
            self.exclusion.clone(),
            self.pipeline.clone(),
            self.optout_hooks.clone(),
            self.optout_expand_timeout,
            self.audit.clone(),
        )
    }
}

/// The client's address: what the guard resolved (the peer, or the client a trusted proxy named),
/// else the connection's peer. A router served without connection info (an in-process test) puts
/// every client under `0.0.0.0`.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        if let Some(resolved) = parts.extensions.get::<ClientAddr>() {
            return Ok(*resolved);
        }
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip()),
        ))
    }
}

/// The JSON acknowledgement of `POST /v1/optout`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Acknowledgement {
    /// Not linked to the identifiers anywhere.
    #[schema(pattern = "^[0-9a-f]{32}$")]
    receipt_id: String,
    #[schema(value_type = String, pattern = "^recorded$")]
    status: &'static str,
    detail: &'static str,
}

const EFFECT: &str = "The opt-out is in effect: lookups by these identifiers, and by the other emails, \
                      phones and profile URLs the sources hold for this person, are refused without \
                      asking any source, and stored results holding them are deleted.";

/// Opts a person out (no key): in effect before the answer is sent. The answer never says whether the
/// person was already listed.
#[utoipa::path(
    post,
    path = "/v1/optout",
    tag = "opt-out",
    security(()),
    request_body(content = QueryInput, content_type = "application/json",
                 description = "Any of email, phone, profile_url, or name (or first_name and \
                                last_name) with company or domain. A name alone is refused."),
    responses(
        (status = 200, description = "Recorded and in effect.", body = Acknowledgement),
        Invalid, BodyErrors,
        (status = 429, description = "Too many opt-outs (or requests at once) from this address; \
          see `Retry-After`.", body = Problem, content_type = "application/problem+json",
         headers(("Retry-After" = u64))),
        (status = 503, description = "Overloaded; the store cannot be reached right now, so \
          nothing was recorded; or recorded and enforced but the removal from caches or stored \
          results did not finish (resubmitting is safe); see `Retry-After`.",
         body = Problem, content_type = "application/problem+json",
         headers(("Retry-After" = u64))),
    )
)]
async fn submit_json(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    JsonBody(input): JsonBody<QueryInput>,
) -> Result<Response, ApiError> {
    state
        .optout_limiter
        .check(client)
        .map_err(|retry_after| ApiError::RateLimited {
            retry_after,
            policy: None,
        })?;
    let query = Query::parse(&input, state.region).map_err(ApiError::Invalid)?;
    match state.optout().run(&query, Origin::Api).await {
        Ok(ack) => Ok(Json(Acknowledgement {
            receipt_id: ack.receipt_id,
            status: "recorded",
            detail: EFFECT,
        })
        .into_response()),
        Err(OptOutError::Incomplete { receipt_id, what }) => Err(ApiError::OptOutIncomplete {
            receipt_id,
            what,
            retry_after_secs: RETRY_INCOMPLETE_SECS,
        }),
        Err(err @ OptOutError::Unavailable(_)) => Err(ApiError::unavailable(err)),
        Err(err @ OptOutError::NotRecorded(_)) => Err(ApiError::internal(err)),
    }
}

/// The form's fields as typed, kept to fill the form again when it is refused.
#[derive(Debug, Default)]
struct FormValues {
    email: String,
    phone: String,
    profile_url: String,
    name: String,
    company: String,
    domain: String,
}

impl FormValues {
    /// Reads an `application/x-www-form-urlencoded` body; unknown fields (a button's name) are ignored.
    fn parse(body: &[u8]) -> Self {
        let mut v = Self::default();
        for (key, value) in url::form_urlencoded::parse(body) {
            let slot = match key.as_ref() {
                "email" => &mut v.email,
                "phone" => &mut v.phone,
                "profile_url" => &mut v.profile_url,
                "name" => &mut v.name,
                "company" => &mut v.company,
                "domain" => &mut v.domain,
                _ => continue,
            };
            *slot = value.into_owned();
        }
        v
    }

    fn input(&self) -> QueryInput {
        let some = |s: &String| Some(s.clone());
        QueryInput {
            email: some(&self.email),
            phone: some(&self.phone),
            profile_url: some(&self.profile_url),
            name: some(&self.name),
            company: some(&self.company),
            domain: some(&self.domain),
            ..QueryInput::default()
        }
    }
}

/// The opt-out form: plain, accessible HTML that works without JavaScript.
#[utoipa::path(get, path = "/optout", tag = "opt-out", security(()),
    responses((status = 200, description = "The form.", body = String, content_type = "text/html")))]
async fn form() -> Response {
    render_form(StatusCode::OK, &FormValues::default(), &[])
}

/// The form's submission, answered in HTML; in effect before the answer is sent. Only taken from
/// this service's own page (`Sec-Fetch-Site` or `Origin`).
#[utoipa::path(
    post,
    path = "/optout",
    tag = "opt-out",
    security(()),
    request_body(content = QueryInput, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The receipt page.", body = String, content_type = "text/html"),
        (status = 403, description = "Posted from a page on another site; nothing recorded.",
         body = String, content_type = "text/html"),
        (status = 422, description = "The form again, the invalid field named; nothing recorded.",
         body = String, content_type = "text/html"),
        (status = 429, description = "Too many opt-outs from this address; see `Retry-After`.",
         content(("text/html"), (Problem = "application/problem+json")),
         headers(("Retry-After" = u64))),
        (status = 503, description = "Overloaded; the store cannot be reached right now, so \
          nothing was recorded; or recorded and enforced but not yet complete (resubmitting is \
          safe); see `Retry-After`.",
         content(("text/html"), (Problem = "application/problem+json")),
         headers(("Retry-After" = u64))),
        BodyErrors,
    )
)]
async fn submit_form(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    req: Request,
) -> Result<Response, ApiError> {
    if cross_site(req.headers()) {
        return Ok(page(
            StatusCode::FORBIDDEN,
            "Opt out from this site – enrichd",
            "<h1>Please use the form on this site</h1>\n<p>This request came from a page on another \
             site, so nothing was recorded: an opt-out is only taken from this service's own form. \
             <a href=\"/optout\">Open the opt-out form</a> and submit it there.</p>",
        ));
    }
    if media_type(req.headers()) != "application/x-www-form-urlencoded" {
        return Err(ApiError::UnsupportedMediaType {
            expected: "application/x-www-form-urlencoded",
        });
    }
    let body = Bytes::from_request(req, &state)
        .await
        .map_err(|e| rejected_body(e, state.max_json_bytes))?;
    if let Err(wait) = state.optout_limiter.check(client) {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut resp = page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests – opt out",
            &format!(
                "<h1>Too many requests</h1>\n<p>Too many opt-out requests came from your network. \
                 Nothing was recorded from this one. Please wait {secs} seconds, then \
                 <a href=\"/optout\">submit the form again</a>.</p>"
            ),
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return Ok(resp);
    }
    let values = FormValues::parse(&body);
    let query = match Query::parse(&values.input(), state.region) {
        Ok(q) => q,
        Err(errors) => {
            return Ok(render_form(
                StatusCode::UNPROCESSABLE_ENTITY,
                &values,
                &errors,
            ));
        }
    };
    Ok(match state.optout().run(&query, Origin::PublicForm).await {
        Ok(ack) => page(
            StatusCode::OK,
            "You are opted out",
            &format!(
                "<h1>You are opted out</h1>\n<p>{EFFECT}</p>\n<p>Your receipt number is \
                 <strong><code>{id}</code></strong>. Keep it if you want to write to {whom} \
                 about this opt-out; it is not linked to your identifiers anywhere.</p>\n\
                 <p><a href=\"/privacy\">Read the privacy notice</a></p>",
                id = escape(&ack.receipt_id),
                whom = write_to(&state.privacy.operator),
            ),
        ),
        Err(OptOutError::Incomplete { receipt_id, what }) => {
            let mut resp = page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Opt-out recorded, not yet complete",
                &format!(
                    "<h1>Your opt-out is recorded but not yet complete</h1>\n<p>Lookups by what you \
                     gave are already refused (receipt <code>{id}</code>), but {what} did not finish. \
                     Please <a href=\"/optout\">submit the same details again</a> in a few seconds: \
                     submitting twice is safe.</p>",
                    id = escape(&receipt_id),
                    what = escape(&what),
                ),
            );
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(RETRY_INCOMPLETE_SECS),
            );
            resp
        }
        Err(err @ (OptOutError::NotRecorded(_) | OptOutError::Unavailable(_))) => {
            // Rendering the error logs its cause chain, as for every other route.
            let logged = match err {
                OptOutError::Unavailable(_) => ApiError::unavailable(err),
                _ => ApiError::internal(err),
            }
            .into_response();
            let mut resp = page(
                logged.status(),
                "Opt-out failed",
                "<h1>Your opt-out could not be recorded</h1>\n<p>Nothing was saved. This is our \
                 fault, not yours; please <a href=\"/optout\">try again</a> later.</p>",
            );
            if let Some(retry) = logged.headers().get(header::RETRY_AFTER) {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, retry.clone());
            }
            resp
        }
    })
}

/// Whom the receipt tells a person to write to: the operator by name and address as configured
/// (`[operator]`), or, when none is, the privacy notice's section about it.
fn write_to(o: &super::privacy::Operator) -> String {
    let address = o.privacy_contact.as_deref().or(o.contact.as_deref());
    match (o.name.as_deref(), address) {
        (Some(name), Some(address)) => format!(
            "{}, who runs this service, at {}",
            escape(name),
            super::privacy::contact_html(address)
        ),
        (Some(name), None) => format!("{}, who runs this service", escape(name)),
        (None, Some(address)) => format!(
            "the operator of this service at {}",
            super::privacy::contact_html(address)
        ),
        (None, None) => "whoever runs this service (the operator has not published a contact \
                         address; see the privacy notice)"
            .to_string(),
    }
}

/// An error as the public reads it: the form's labels, not the API's field names, and what to
/// type instead.
fn public_message(e: &FieldError) -> String {
    let label = IDENTIFIERS
        .iter()
        .chain(&NAME_WITH)
        .find(|i| i.id == e.field)
        .map_or("Full name", |i| i.label);
    match (e.field, e.problem.as_deref()) {
        ("email", Some(_)) => {
            "Enter an email address in the correct format, like name@example.com".into()
        }
        ("phone", Some(p)) if p.contains("national number") => "Enter the phone number with its \
            country code, like +44 20 7946 0958"
            .into(),
        ("phone", Some(_)) => {
            "Enter a phone number that exists, with its country code, like +44 20 7946 0958".into()
        }
        ("profile_url", Some(p)) => format!(
            "Enter the web address of your profile page, like linkedin.com/in/your-name (this one {p})"
        ),
        (_, Some(p)) => format!("{label} {p}"),
        ("name", None) => "A name alone cannot be blocked, as many people share it: add your \
            company or its website"
            .into(),
        (_, None) => "Give at least one of these: your email address, phone number or profile \
            address, or your full name with your company"
            .into(),
    }
}

/// Whether a browser says this form submission came from a page on another site, which must not be
/// able to submit opt-outs in a visitor's name (and from the visitor's address, spending its quota).
///
/// Browsers send `Sec-Fetch-Site`; only `same-origin` and `none` (typed or bookmarked) pass. Older
/// browsers send `Origin` on a form post instead, which must name the host the request was sent to
/// (`Host`, or `X-Forwarded-Host` behind a proxy: a cross-site form cannot set either). A client that
/// sends neither is not a browser, and no other site can make it post; the JSON API needs no check, as
/// a cross-site page cannot send `application/json` without a CORS preflight this service never
/// grants. The form works without JavaScript: no token is needed.
fn cross_site(headers: &axum::http::HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let Some(origin) = origin.to_str().ok().and_then(authority_of_origin) else {
        // `null` (a sandboxed or privacy-sensitive context) or garbage.
        return true;
    };
    let named = |name: header::HeaderName| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|host| without_default_port(host.trim(), origin.1) == origin.0)
    };
    !(named(header::HOST) || named(header::HeaderName::from_static("x-forwarded-host")))
}

/// `https://example.com:8443` as (`example.com:8443`, `https`), its default port dropped.
fn authority_of_origin(origin: &str) -> Option<(String, &str)> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => "http",
        "https" => "https",
        _ => return None,
    };
    Some((without_default_port(rest, scheme), scheme))
}

fn without_default_port(host: &str, scheme: &str) -> String {
    let host = host.to_ascii_lowercase();
    let default = if scheme == "https" { ":443" } else { ":80" };
    host.strip_suffix(default)
        .map_or(host.clone(), str::to_string)
}

/// One input of the form.
struct Input {
    id: &'static str,
    label: &'static str,
    hint: Option<&'static str>,
    kind: &'static str,
    autocomplete: &'static str,
}

const IDENTIFIERS: [Input; 3] = [
    Input {
        id: "email",
        label: "Email address",
        hint: None,
        kind: "email",
        autocomplete: "email",
    },
    Input {
        id: "phone",
        label: "Phone number",
        hint: Some("Include the country code, for example +44 20 7946 0958."),
        kind: "tel",
        autocomplete: "tel",
    },
    Input {
        id: "profile_url",
        label: "Profile address",
        hint: Some(
            "Your LinkedIn, GitHub, X or Keybase profile, for example linkedin.com/in/your-name.",
        ),
        kind: "url",
        autocomplete: "url",
    },
];

const NAME_WITH: [Input; 3] = [
    Input {
        id: "name",
        label: "Full name",
        hint: None,
        kind: "text",
        autocomplete: "name",
    },
    Input {
        id: "company",
        label: "Company",
        hint: None,
        kind: "text",
        autocomplete: "organization",
    },
    Input {
        id: "domain",
        label: "Company website",
        hint: Some("Instead of, or as well as, the company name: for example example.com."),
        kind: "text",
        autocomplete: "off",
    },
];

fn render_form(status: StatusCode, values: &FormValues, errors: &[FieldError]) -> Response {
    let value_of = |id: &str| match id {
        "email" => &values.email,
        "phone" => &values.phone,
        "profile_url" => &values.profile_url,
        "name" => &values.name,
        "company" => &values.company,
        _ => &values.domain,
    };
    let field = |input: &Input| {
        let error = errors.iter().find(|e| e.field == input.id);
        let mut described = Vec::new();
        let mut html = format!(
            "<label for=\"{id}\">{label}</label>\n",
            id = input.id,
            label = input.label
        );
        if let Some(hint) = input.hint {
            html.push_str(&format!(
                "<p class=\"hint\" id=\"{}-hint\">{}</p>\n",
                input.id,
                escape(hint)
            ));
            described.push(format!("{}-hint", input.id));
        }
        if let Some(e) = error {
            html.push_str(&format!(
                "<p class=\"error\" id=\"{}-error\"><span class=\"visually-hidden\">Error:</span> {}</p>\n",
                input.id,
                escape(&public_message(e))
            ));
            described.push(format!("{}-error", input.id));
        }
        html.push_str(&format!(
            "<input id=\"{id}\" name=\"{id}\" type=\"{kind}\" autocomplete=\"{ac}\" spellcheck=\"false\" \
             value=\"{value}\"{described}{invalid}>\n",
            id = input.id,
            kind = input.kind,
            ac = input.autocomplete,
            value = escape(value_of(input.id)),
            described = if described.is_empty() {
                String::new()
            } else {
                format!(" aria-describedby=\"{}\"", described.join(" "))
            },
            invalid = if error.is_some() {
                " aria-invalid=\"true\""
            } else {
                ""
            },
        ));
        html
    };
    let mut body = String::from("<h1>Opt out of enrichd</h1>\n");
    if !errors.is_empty() {
        body.push_str(
            "<div class=\"summary\" role=\"alert\" aria-labelledby=\"problem\" tabindex=\"-1\">\n\
             <h2 id=\"problem\">There is a problem</h2>\n<ul>\n",
        );
        for e in errors {
            // The form only has these fields; anything else is reported against the first one.
            let target = if IDENTIFIERS
                .iter()
                .chain(&NAME_WITH)
                .any(|i| i.id == e.field)
            {
                e.field
            } else {
                "email"
            };
            body.push_str(&format!(
                "<li><a href=\"#{target}\">{}</a></li>\n",
                escape(&public_message(e))
            ));
        }
        body.push_str("</ul>\n</div>\n");
    }
    body.push_str(
        "<p>This service looks people up in public sources on behalf of its customers. Opting out \
         stops that for you, at once: before this form answers, every lookup by what you give here \
         is refused without asking any source, and any stored results that hold you are deleted.</p>\n\
         <p>To block your other addresses too, enrichd looks you up once, now, and blocks every \
         other email address, phone number and profile the sources know for you. That result is \
         not kept or shown to anyone. What you give is kept only as keyed hashes, never as text.</p>\n\
         <form method=\"post\" action=\"/optout\" novalidate>\n\
         <fieldset>\n<legend>How can we recognise you?</legend>\n\
         <p class=\"hint\">Give at least one of these, or your name with your company below. \
         Give as many as you like: each one is blocked.</p>\n",
    );
    for input in &IDENTIFIERS {
        body.push_str(&field(input));
    }
    body.push_str(
        "</fieldset>\n<fieldset>\n<legend>Or your name at your company</legend>\n\
         <p class=\"hint\">A name alone cannot be blocked, as many people share it: add your \
         company or its website.</p>\n",
    );
    for input in &NAME_WITH {
        body.push_str(&field(input));
    }
    body.push_str(
        "</fieldset>\n<button type=\"submit\">Opt out</button>\n</form>\n\
         <p><a href=\"/privacy\">Read the privacy notice</a></p>",
    );
    let title = if errors.is_empty() {
        "Opt out – enrichd"
    } else {
        "Error: Opt out – enrichd"
    };
    page(status, title, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_ignore_unknown_fields_and_decode() {
        let v = FormValues::parse(b"email=ada%40example.com&submit=Opt+out&name=Ada+Lovelace");
        assert_eq!(v.email, "ada@example.com");
        assert_eq!(v.name, "Ada Lovelace");
        assert!(v.phone.is_empty());
    }

    async fn html_of(resp: Response) -> String {
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        String::from_utf8_lossy(&body).into_owned()
    }

    #[test]
    fn form_posts_from_another_site_are_told_apart() {
        let h = |pairs: &[(&'static str, &str)]| {
            let mut map = axum::http::HeaderMap::new();
            for (k, v) in pairs {
                map.append(*k, v.parse().expect("value"));
            }
            map
        };
        let host = ("host", "optout.example.org");
        let cases: [(&[(&'static str, &str)], bool); 10] = [
            (&[host], false),
            (&[host, ("sec-fetch-site", "same-origin")], false),
            (&[host, ("sec-fetch-site", "none")], false),
            (&[host, ("sec-fetch-site", "cross-site")], true),
            (&[host, ("sec-fetch-site", "same-site")], true),
            (&[host, ("origin", "https://optout.example.org")], false),
            (
                &[
                    ("host", "optout.example.org:443"),
                    ("origin", "https://optout.example.org"),
                ],
                false,
            ),
            (&[host, ("origin", "https://evil.example")], true),
            (&[host, ("origin", "null")], true),
            (
                &[
                    ("host", "10.0.0.5:8080"),
                    ("x-forwarded-host", "optout.example.org"),
                    ("origin", "https://optout.example.org"),
                ],
                false,
            ),
        ];
        for (pairs, want) in cases {
            assert_eq!(cross_site(&h(pairs)), want, "{pairs:?}");
        }
    }

    #[tokio::test]
    async fn a_refused_form_names_the_field_and_keeps_the_values_escaped() {
        let values = FormValues {
            email: "\"><script>".into(),
            ..FormValues::default()
        };
        let errors = Query::parse(&values.input(), None).expect_err("not an email");

        let resp = render_form(StatusCode::UNPROCESSABLE_ENTITY, &values, &errors);

        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let html = html_of(resp).await;
        assert!(html.contains(
            "<a href=\"#email\">Enter an email address in the correct format, like name@example.com</a>"
        ));
        assert!(html.contains("aria-invalid=\"true\""));
        assert!(html.contains("value=\"&quot;&gt;&lt;script&gt;\""));
        assert!(!html.contains("<script>"));
    }

    #[tokio::test]
    async fn errors_on_the_public_form_use_its_labels_not_field_names() {
        let values = FormValues {
            phone: "020 7946 0958".into(),
            profile_url: "ftp://example.com/me".into(),
            domain: "not a domain".into(),
            ..FormValues::default()
        };
        let errors = Query::parse(&values.input(), None).expect_err("three bad fields");

        let html = html_of(render_form(
            StatusCode::UNPROCESSABLE_ENTITY,
            &values,
            &errors,
        ))
        .await;

        let messages: Vec<&str> = html
            .split("<span class=\"visually-hidden\">Error:</span> ")
            .skip(1)
            .filter_map(|rest| rest.split("</p>").next())
            .collect();
        assert_eq!(
            messages,
            [
                "Enter the phone number with its country code, like +44 20 7946 0958",
                "Enter the web address of your profile page, like linkedin.com/in/your-name (this \
                 one must be an http or https URL)",
                "Company website is not a domain name with at least two labels",
            ]
        );
        for field_name in ["profile_url", "default region", "domain is", "phone is"] {
            let shown = html
                .split('<')
                .filter_map(|tag| tag.split_once('>').map(|(_, text)| text))
                .any(|text| text.contains(field_name));
            assert!(!shown, "{field_name} is shown to the public: {html}");
        }
    }
}
