//! `GET /privacy` (HTML) and `GET /privacy.json`: the privacy notice, built once at start from the
//! running configuration, so it always says what this instance actually does: what it stores and for
//! how long (from the retention policy), which sources are enabled, what each is asked about and where
//! that goes, who runs it and how to reach them (`[operator]`), and how to opt out.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::html::{escape, page};
use crate::config::Loaded;
use crate::domain::{DomainName, Email, Identifier, OrgName, PersonName, PhoneE164, ProfileUrl};
use crate::pipeline::Pipeline;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(html))
        .routes(routes!(json))
}

/// The notice, as served at `/privacy.json`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PrivacyNotice {
    pub summary: &'static str,
    /// Who runs this instance and how to reach them; every field `null` when not configured.
    pub operator: Operator,
    /// Everything the service keeps, personal or not, and for how long.
    pub stored: Vec<Stored>,
    /// The enabled sources, in the order they are asked.
    pub sources: Vec<SourceUse>,
    pub opt_out: OptOutNotice,
}

#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Operator {
    pub name: Option<String>,
    pub contact: Option<String>,
    pub privacy_contact: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Stored {
    pub what: &'static str,
    /// `disk` or `memory`.
    pub kept_in: &'static str,
    /// Whether it is personal data about the people looked up.
    pub personal: bool,
    /// How long it is kept, in seconds (`null`: not at all past the request).
    pub kept_for_seconds: Option<u64>,
    pub kept_for: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SourceUse {
    pub name: String,
    /// Identifier kinds this source is asked about (`email`, `phone`, `profile_url:github`, ...).
    pub asked_about: Vec<String>,
    /// Where the question goes: the API's origin, the identifier's own domain, or nowhere.
    pub recipient: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OptOutNotice {
    pub form: &'static str,
    pub api: &'static str,
    pub effective: &'static str,
    pub expansion: &'static str,
    pub list_retention_days: u32,
}

const SUMMARY: &str = "enrichd looks people up in public sources, live, when a customer asks. It keeps \
    no contact database: answers are merged in memory and returned, then forgotten. The only personal \
    data it stores is the customers' CSV batch results, for a limited time, and the opt-out list, which \
    holds keyed hashes of identifiers, never the identifiers themselves.";

impl PrivacyNotice {
    /// Builds the notice from the loaded configuration and the running pipeline's sources.
    pub fn build(loaded: &Loaded, pipeline: &Pipeline) -> Self {
        let r = &loaded.config.retention;
        let days = |d: u32| u64::from(d) * 86_400;
        let stored = vec![
            Stored {
                what: "CSV batch results: the uploaded rows and what was found for them",
                kept_in: "disk",
                personal: true,
                kept_for_seconds: Some(days(r.batch_results_days)),
                kept_for: format!(
                    "{} days after the batch was created, or until its owner deletes it; rows about a \
                     person who opts out are deleted at once",
                    r.batch_results_days
                ),
            },
            Stored {
                what: "The opt-out list: keyed BLAKE3 hashes of opted-out identifiers, with their kind, \
                       how the opt-out arrived and when",
                kept_in: "disk",
                personal: true,
                kept_for_seconds: Some(days(r.exclusion_days)),
                kept_for: format!(
                    "{} days after the opt-out was last submitted",
                    r.exclusion_days
                ),
            },
            Stored {
                what: "Recent answers from the sources, so the same question is not asked twice at once",
                kept_in: "memory",
                personal: true,
                kept_for_seconds: Some(r.source_cache_seconds),
                kept_for: format!(
                    "{} seconds, at most {} MiB in all; cleared at once by any opt-out",
                    r.source_cache_seconds, r.source_cache_mib
                ),
            },
            Stored {
                what: "Lookup requests and their results",
                kept_in: "memory",
                personal: true,
                kept_for_seconds: None,
                kept_for: "only while the request is answered".into(),
            },
            Stored {
                what: "Logs and metrics: request counts, timings, source names and statuses, short hash \
                       prefixes; no email, phone, name or URL",
                kept_in: "disk",
                personal: false,
                kept_for_seconds: None,
                kept_for: "as long as the operator keeps logs".into(),
            },
        ];
        let sources = pipeline
            .sources()
            .iter()
            .map(|s| SourceUse {
                name: s.name().to_string(),
                asked_about: samples()
                    .into_iter()
                    .filter(|(_, id)| s.source.accepts(id))
                    .map(|(kind, _)| kind)
                    .collect(),
                recipient: recipient(loaded, s.name()),
            })
            .collect();
        let o = &loaded.config.operator;
        let trimmed = |v: &Option<String>| v.as_deref().map(|s| s.trim().to_string());
        Self {
            summary: SUMMARY,
            operator: Operator {
                name: trimmed(&o.name),
                contact: trimmed(&o.contact),
                privacy_contact: trimmed(&o.privacy_contact),
            },
            stored,
            sources,
            opt_out: OptOutNotice {
                form: "/optout",
                api: "/v1/optout",
                effective: "before the opt-out is answered: from then on no source is asked about the \
                            person and no answer about them is returned",
                expansion: "the opt-out looks the person up once, live, and also blocks every other \
                            email address, phone number and profile URL the sources return; that result \
                            is not kept",
                list_retention_days: r.exclusion_days,
            },
        }
    }
}

/// One example identifier of each kind a source may accept, labelled with the kind.
fn samples() -> Vec<(String, Identifier)> {
    let mut out = Vec::new();
    if let Ok(e) = Email::parse("person@example.com") {
        out.push(("email".to_string(), Identifier::Email(e)));
    }
    if let Ok(p) = PhoneE164::parse("+442079460958", None) {
        out.push(("phone".to_string(), Identifier::Phone(p)));
    }
    for url in [
        "https://linkedin.com/in/person",
        "https://github.com/person",
        "https://x.com/person",
        "https://keybase.io/person",
        "https://mastodon.social/@person",
        "https://example.com/person",
    ] {
        if let Ok(p) = ProfileUrl::parse(url) {
            out.push((
                format!("profile_url:{}", p.service().as_str()),
                Identifier::Profile(p),
            ));
        }
    }
    if let (Ok(name), Ok(company), Ok(domain)) = (
        PersonName::parse("Ada Lovelace"),
        OrgName::parse("Example Ltd"),
        DomainName::parse("example.com"),
    ) {
        out.push((
            "name_company".to_string(),
            Identifier::NameAtCompany(name.clone(), company),
        ));
        out.push((
            "name_domain".to_string(),
            Identifier::NameAtDomain(name, domain.clone()),
        ));
        out.push(("domain".to_string(), Identifier::Domain(domain)));
    }
    out
}

/// Where a built-in source's questions go, from its `base_url`; only scheme, host and port are shown.
fn recipient(loaded: &Loaded, name: &str) -> String {
    let Some(base) = loaded.sources.get(name).map(|c| c.base_url.as_str()) else {
        return "the provider's API, as configured".into();
    };
    if base.is_empty() {
        return "none: computed inside enrichd".into();
    }
    if base.contains('{') {
        return "the web or mail servers of the domain in the identifier".into();
    }
    match url::Url::parse(base) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}", u.scheme()),
            (Some(host), None) => format!("{}://{host}", u.scheme()),
            (None, _) => u.scheme().to_string(),
        },
        Err(_) => "the source's API, as configured".into(),
    }
}

/// An email address as a `mailto:` link, a web address as a link, anything else as text.
pub(super) fn contact_html(contact: &str) -> String {
    let text = escape(contact);
    if contact.starts_with("https://") || contact.starts_with("http://") {
        format!("<a href=\"{text}\">{text}</a>")
    } else if contact.contains('@') && !contact.contains(char::is_whitespace) {
        format!("<a href=\"mailto:{text}\">{text}</a>")
    } else {
        text
    }
}

fn operator_html(o: &Operator) -> String {
    let mut out = String::from("<h2>Who runs this service</h2>\n<p>");
    match &o.name {
        Some(name) => out.push_str(&format!(
            "This service is run by <strong>{}</strong>, who decides what it is used for.",
            escape(name)
        )),
        None => out.push_str("The operator of this service has not given their name here."),
    }
    if let Some(contact) = &o.contact {
        out.push_str(&format!(" Contact: {}.", contact_html(contact)));
    }
    match o.privacy_contact.as_deref().or(o.contact.as_deref()) {
        Some(address) => out.push_str(&format!(
            " For questions about your data, or to ask what is held about you, write to {}.",
            contact_html(address)
        )),
        None => out.push_str(" No contact address was given; the opt-out below works without one."),
    }
    out.push_str("</p>\n");
    out
}

fn kind_label(kind: &str) -> String {
    match kind {
        "email" => "email address".into(),
        "phone" => "phone number".into(),
        "name_company" => "name with company".into(),
        "name_domain" => "name with company domain".into(),
        "domain" => "company domain".into(),
        other => match other.strip_prefix("profile_url:") {
            Some("linkedin") => "LinkedIn profile".into(),
            Some("github") => "GitHub profile".into(),
            Some("x") => "X profile".into(),
            Some("keybase") => "Keybase profile".into(),
            Some("mastodon") => "Mastodon profile".into(),
            Some(_) => "other profile URL".into(),
            None => other.to_string(),
        },
    }
}

/// The privacy notice as JSON: what is stored and for how long, the enabled sources and what each is
/// asked about, how to opt out.
#[utoipa::path(get, path = "/privacy.json", tag = "privacy", security(()),
    responses((status = 200, description = "The notice.", body = PrivacyNotice)))]
async fn json(State(state): State<AppState>) -> Json<PrivacyNotice> {
    Json(state.privacy.as_ref().clone())
}

/// The privacy notice, rendered from the running configuration.
#[utoipa::path(get, path = "/privacy", tag = "privacy", security(()),
    responses((status = 200, description = "The notice.", body = String, content_type = "text/html")))]
async fn html(State(state): State<AppState>) -> Response {
    let n = &state.privacy;
    let mut body = format!(
        "<h1>Privacy notice</h1>\n<p>{}</p>\n<p><strong>Do not want to be looked up?</strong> \
         <a href=\"{}\">Opt out here</a>. It takes effect {}.</p>\n",
        escape(n.summary),
        n.opt_out.form,
        escape(n.opt_out.effective)
    );
    body.push_str(&operator_html(&n.operator));
    body.push_str(
        "<h2>What is kept, and for how long</h2>\n<table>\n<thead><tr><th scope=\"col\">What</th>\
         <th scope=\"col\">Where</th><th scope=\"col\">Personal data</th><th scope=\"col\">How long</th>\
         </tr></thead>\n<tbody>\n",
    );
    for s in &n.stored {
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(s.what),
            s.kept_in,
            if s.personal { "yes" } else { "no" },
            escape(&s.kept_for)
        ));
    }
    body.push_str("</tbody>\n</table>\n<h2>Sources asked during a lookup</h2>\n");
    if n.sources.is_empty() {
        body.push_str("<p>No source is enabled: lookups ask no one.</p>\n");
    } else {
        body.push_str(
            "<p>A source may use only part of an identifier (the domain of an email address) or a \
             hash of it.</p>\n<table>\n<thead><tr><th scope=\"col\">Source</th>\
             <th scope=\"col\">Asked about</th><th scope=\"col\">Sent to</th></tr></thead>\n<tbody>\n",
        );
        for s in &n.sources {
            let kinds: Vec<String> = s.asked_about.iter().map(|k| kind_label(k)).collect();
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(&s.name),
                escape(&kinds.join(", ")),
                escape(&s.recipient)
            ));
        }
        body.push_str("</tbody>\n</table>\n");
    }
    body.push_str(&format!(
        "<h2>Opting out</h2>\n<p>Use <a href=\"{form}\">the opt-out form</a>, or send JSON to \
         <code>POST {api}</code> with any of <code>email</code>, <code>phone</code>, \
         <code>profile_url</code>, or <code>name</code> with <code>company</code> or \
         <code>domain</code>. No account is needed. The opt-out takes effect {effective}. To be \
         thorough, {expansion}. The list keeps an opt-out for {days} days after it was last submitted; \
         submit again to renew it.</p>\n<p>This notice is also available as \
         <a href=\"/privacy.json\">JSON</a>.</p>",
        form = n.opt_out.form,
        api = n.opt_out.api,
        effective = escape(n.opt_out.effective),
        expansion = escape(n.opt_out.expansion),
        days = n.opt_out.list_retention_days,
    ));
    page(StatusCode::OK, "Privacy notice – enrichd", &body)
}
