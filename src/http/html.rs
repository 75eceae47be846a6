//! The few HTML pages enrichd serves (opt-out form, receipt, privacy notice): escaping and one plain,
//! accessible page shell. No scripts, no external resources; works in any browser and screen reader.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Escapes text for an HTML element body or a double-quoted attribute value.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;line-height:1.5;margin:0;padding:1rem;\
color:#111;background:#fff}main{max-width:40rem;margin:0 auto}label{display:block;font-weight:600;\
margin-top:1rem}input{font-size:1rem;padding:.4rem;width:100%;max-width:30rem;box-sizing:border-box;\
border:2px solid #333}input:focus,button:focus,a:focus{outline:3px solid #fd0;outline-offset:0}\
fieldset{border:0;padding:0;margin:1.5rem 0 0}legend{font-size:1.2rem;font-weight:700}\
.hint{color:#444;margin:.2rem 0}.error{color:#b00020;font-weight:600;margin:.2rem 0}\
.summary{border:4px solid #b00020;padding:1rem;margin:1rem 0}button{font-size:1rem;margin-top:1.5rem;\
padding:.6rem 1.2rem;border:0;background:#0b5;color:#fff;font-weight:700;cursor:pointer}\
table{border-collapse:collapse}th,td{text-align:left;border-bottom:1px solid #ccc;padding:.3rem .6rem;\
vertical-align:top}code{overflow-wrap:anywhere}.visually-hidden{position:absolute;width:1px;\
height:1px;overflow:hidden;clip-path:inset(50%);white-space:nowrap}";

/// A complete page: `title` (already plain text) and `body` (already escaped HTML).
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n\
         </body>\n</html>\n",
        title = escape(title),
    );
    let mut resp = (status, html).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // The form may echo what a person typed: never cache it, never frame it, send no referrer.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">O'Brien & co</a>"#),
            "&lt;a href=&quot;x&quot;&gt;O&#39;Brien &amp; co&lt;/a&gt;"
        );
        assert_eq!(escape("plain"), "plain");
    }
}
