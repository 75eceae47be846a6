//! Just enough HTML reading for contact extraction: visible text, link targets and the page's
//! title / site name / description. Not a parser: tags are skipped, scripts and styles dropped,
//! common entities decoded.

use std::sync::LazyLock;

use regex::Regex;

/// What a page says about itself in its head.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PageMeta {
    pub title: Option<String>,
    /// `og:site_name`, else `application-name`.
    pub site_name: Option<String>,
    /// `description`, else `og:description`.
    pub description: Option<String>,
}

static HIDDEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?is)<(script|style|noscript|template|svg)\b.*?</(script|style|noscript|template|svg)\s*>|<!--.*?-->")
        .expect("static regex")
});
static BREAK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)<\s*(br|/p|/div|/li|/tr|/h[1-6]|/td|/th|p|div|li|tr|h[1-6]|/table|/address|address|/footer|hr)\b[^>]*>")
        .expect("static regex")
});
static TAG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?s)<[^>]*>").expect("static regex"));
static HREF: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))"#).expect("static regex")
});
static TITLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?is)<title[^>]*>(.*?)</title>").expect("static regex"));
static META: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?is)<meta\b[^>]*>").expect("static regex"));
static ATTR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?is)([a-z:_-]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))"#).expect("static regex")
});
static ENTITY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[a-zA-Z]{2,8});").expect("static regex")
});

/// Whether `text` is more likely an HTML document or fragment than plain text.
pub fn looks_like_html(text: &str) -> bool {
    let head: String = text
        .chars()
        .take(4096)
        .collect::<String>()
        .to_ascii_lowercase();
    [
        "<html",
        "<body",
        "<br",
        "<p>",
        "<p ",
        "<div",
        "<a ",
        "<table",
        "<!doctype",
    ]
    .iter()
    .any(|t| head.contains(t))
}

/// The visible text of `html`, one line per block element, entities decoded.
pub fn to_text(html: &str) -> String {
    let without_hidden = HIDDEN.replace_all(html, " ");
    let with_breaks = BREAK.replace_all(&without_hidden, "\n");
    let bare = TAG.replace_all(&with_breaks, " ");
    decode_entities(&bare)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `href` target in `html`, entities decoded (`mailto:`, `tel:` and web links alike).
pub fn links(html: &str) -> Vec<String> {
    let visible = HIDDEN.replace_all(html, " ");
    HREF.captures_iter(&visible)
        .filter_map(|c| c.get(1).or_else(|| c.get(2)).or_else(|| c.get(3)))
        .map(|m| decode_entities(m.as_str().trim()))
        .filter(|h| !h.is_empty())
        .collect()
}

/// The page's title, site name and description from its `<title>` and `<meta>` tags.
pub fn page_meta(html: &str) -> PageMeta {
    let clean = |s: &str| {
        let s = decode_entities(s)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        (!s.is_empty()).then_some(s)
    };
    let mut meta = PageMeta {
        title: TITLE.captures(html).and_then(|c| clean(&c[1])),
        ..PageMeta::default()
    };
    let mut og_description = None;
    let mut app_name = None;
    for tag in META.find_iter(html) {
        let mut key = None;
        let mut content = None;
        for a in ATTR.captures_iter(tag.as_str()) {
            let value = a
                .get(2)
                .or_else(|| a.get(3))
                .or_else(|| a.get(4))
                .map_or("", |m| m.as_str());
            match a[1].to_ascii_lowercase().as_str() {
                "name" | "property" => key = Some(value.to_ascii_lowercase()),
                "content" => content = clean(value),
                _ => {}
            }
        }
        match (key.as_deref(), content) {
            (Some("og:site_name"), Some(c)) => meta.site_name = Some(c),
            (Some("application-name"), Some(c)) => app_name = Some(c),
            (Some("description"), Some(c)) => meta.description = Some(c),
            (Some("og:description"), Some(c)) => og_description = Some(c),
            _ => {}
        }
    }
    meta.site_name = meta.site_name.or(app_name);
    meta.description = meta.description.or(og_description);
    meta
}

/// Decodes numeric entities and the named ones that occur in contact details and names.
pub fn decode_entities(s: &str) -> String {
    ENTITY
        .replace_all(s, |c: &regex::Captures<'_>| {
            let e = &c[1];
            let decoded = if let Some(hex) = e.strip_prefix("#x").or_else(|| e.strip_prefix("#X")) {
                u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)
            } else if let Some(dec) = e.strip_prefix('#') {
                dec.parse::<u32>().ok().and_then(char::from_u32)
            } else {
                named_entity(e)
            };
            decoded.map_or_else(|| c[0].to_string(), |ch| ch.to_string())
        })
        .into_owned()
}

fn named_entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "eacute" => 'é',
        "egrave" => 'è',
        "ecirc" => 'ê',
        "agrave" => 'à',
        "acirc" => 'â',
        "ccedil" => 'ç',
        "ocirc" => 'ô',
        "icirc" => 'î',
        "ugrave" => 'ù',
        "uuml" => 'ü',
        "ouml" => 'ö',
        "auml" => 'ä',
        "Uuml" => 'Ü',
        "Ouml" => 'Ö',
        "Auml" => 'Ä',
        "Eacute" => 'É',
        "szlig" => 'ß',
        "ntilde" => 'ñ',
        "aacute" => 'á',
        "iacute" => 'í',
        "oacute" => 'ó',
        "uacute" => 'ú',
        "middot" => '·',
        "ndash" => '–',
        "mdash" => '—',
        "copy" => '©',
        "commat" => '@',
        "period" => '.',
        "rsquo" => '’',
        _ => return None,
    })
}
