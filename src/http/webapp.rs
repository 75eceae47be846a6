//! `GET /app`: the batch page. Plain HTML and a little JavaScript, embedded in the binary; no build step.
//!
//! The page itself carries no data and needs no key: the user pastes a tenant key, which the script
//! keeps in memory and sends in the `Authorization` header of each API call, never in a URL.

use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};

const PAGE: &str = include_str!("app.html");

/// The batch web page (the key is pasted into the page and kept in memory).
#[utoipa::path(get, path = "/app", tag = "pages", security(()),
    responses((status = 200, description = "The page.", body = String, content_type = "text/html")))]
pub async fn page() -> Response {
    let mut resp = Html(PAGE).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; \
             base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
