//! Where a setting came from, and what a valid value looks like: the parts of a configuration error
//! that let the reader fix it without reading the code.
//!
//! A setting comes from the file (named by its path and line) or from an `ENRICHD_<SECTION>__<KEY>`
//! variable (named by the variable). Lines come from `toml_edit`'s spans over the file's own text;
//! the values themselves are never quoted back except in a type error, where serde already names
//! the offending value.

use std::ops::Range;
use std::path::Path;

use toml_edit::{ImDocument, Item, TableLike};

/// The file's text, parsed once for its spans, and the variables that may override it.
pub(super) struct Origin<'a> {
    file: Option<&'a Path>,
    text: &'a str,
    doc: Option<ImDocument<&'a str>>,
    vars: &'a [(String, String)],
}

impl<'a> Origin<'a> {
    pub(super) fn new(text: &'a str, file: Option<&'a Path>, vars: &'a [(String, String)]) -> Self {
        Self {
            file,
            text,
            doc: ImDocument::parse(text).ok(),
            vars,
        }
    }

    /// `enrichd.toml:3`, or `line 3` for text that came from no file.
    fn place(&self, offset: usize) -> String {
        let line = 1 + self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|b| *b == b'\n')
            .count();
        match self.file {
            Some(path) => format!("{}:{line}", path.display()),
            None => format!("line {line}"),
        }
    }

    /// Where the dotted `key` was set: the variable that set it, else the file and line, else
    /// `None` (the embedded default).
    pub(super) fn where_set(&self, key: &str) -> Option<String> {
        if let Some(var) = self.vars.iter().map(|(name, _)| name).find(|name| {
            super::env::key_of(name).is_some_and(|k| k == key || k.starts_with(&format!("{key}.")))
        }) {
            return Some(format!("set by {var}"));
        }
        let doc = self.doc.as_ref()?;
        let mut table: &dyn TableLike = doc.as_table();
        let mut span = None;
        for part in key.split('.') {
            let (k, item) = table.get_key_value(part)?;
            span = k.span().or_else(|| item.span());
            match item.as_table_like() {
                Some(t) => table = t,
                None => break,
            }
        }
        span.map(|s| self.place(s.start))
    }

    /// The dotted key whose name or value covers `offset` in the file.
    fn key_at(&self, offset: usize) -> Option<String> {
        fn walk(table: &dyn TableLike, offset: usize, path: &mut Vec<String>) -> bool {
            for (name, item) in table.iter() {
                let key_span = table.get_key_value(name).and_then(|(k, _)| k.span());
                path.push(name.to_string());
                if covers(key_span, offset) || covers(value_span(item), offset) {
                    return true;
                }
                if let Some(inner) = item.as_table_like()
                    && walk(inner, offset, path)
                {
                    return true;
                }
                if let Item::ArrayOfTables(tables) = item {
                    for (i, t) in tables.iter().enumerate() {
                        path.push(i.to_string());
                        if walk(t, offset, path) {
                            return true;
                        }
                        path.pop();
                    }
                }
                path.pop();
            }
            false
        }
        let mut path = Vec::new();
        walk(self.doc.as_ref()?.as_table(), offset, &mut path).then(|| path.join("."))
    }

    /// A serde or syntax error of the file, with the key, the file and line, and what is valid.
    pub(super) fn file_error(&self, e: &toml::de::Error) -> String {
        let message = e.message().replace('\n', "; ");
        let Some(span) = e.span() else {
            return message;
        };
        let place = self.place(span.start);
        match self.key_at(span.start) {
            Some(key) => format!("{key} ({place}) {}", explain(&key, &message)),
            None => format!("{place}: {message}"),
        }
    }
}

/// The value span of an item: a value's own, or a table's header.
fn value_span(item: &Item) -> Option<Range<usize>> {
    match item {
        Item::Value(v) => v.span(),
        _ => None,
    }
}

fn covers(span: Option<Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.contains(&offset))
}

/// Turns serde's `invalid type: string "5s", expected u64` for `key` into `must be a whole number
/// of milliseconds, e.g. 5000, not the string "5s"`; other messages are kept, after the key.
pub(super) fn explain(key: &str, message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let known = rest.split_once(", ").map_or("", |(_, known)| known);
        return format!("is not a setting; {known}");
    }
    let Some((found, expected)) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
        .and_then(|rest| rest.split_once(", expected "))
    else {
        return format!("is not valid: {message}");
    };
    format!("must be {}, not {found}", valid_value(key, expected))
}

/// What a valid value of `key` looks like, given what serde expected.
fn valid_value(key: &str, expected: &str) -> String {
    let name = key.rsplit('.').next().unwrap_or(key);
    let whole = [
        "u8",
        "u16",
        "u32",
        "u64",
        "usize",
        "i32",
        "i64",
        "an integer",
    ];
    if whole.contains(&expected) {
        let unit = [
            ("_ms", " of milliseconds, e.g. 5000"),
            ("_seconds", " of seconds, e.g. 300"),
            ("_days", " of days, e.g. 30"),
            ("_bytes", " of bytes, e.g. 65536"),
            ("_mib", " of MiB, e.g. 16"),
            ("_per_minute", " per minute, e.g. 60"),
        ]
        .iter()
        .find(|(suffix, _)| name.ends_with(suffix))
        .map_or(", e.g. 10", |(_, unit)| unit);
        return format!("a whole number{unit}");
    }
    match expected {
        "a boolean" => "true or false".into(),
        "a string" => "a quoted string, e.g. \"text\"".into(),
        "a sequence" => "a list, e.g. [\"a\", \"b\"]".into(),
        "f32" | "f64" => "a number, e.g. 0.5".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_error_names_the_key_the_file_line_and_a_valid_value() {
        let text = "[server]\nmax_in_flight = 10\n\n[lookup]\ndefault_timeout_ms = \"5s\"\n";
        let path = Path::new("enrichd.toml");
        let origin = Origin::new(text, Some(path), &[]);
        let e = toml::from_str::<crate::config::Config>(text).expect_err("5s");

        assert_eq!(
            origin.file_error(&e),
            "lookup.default_timeout_ms (enrichd.toml:5) must be a whole number of milliseconds, \
             e.g. 5000, not string \"5s\""
        );
    }

    #[test]
    fn settings_are_found_in_the_file_or_in_the_environment() {
        let text = "[lookup]\nmax_hops = 1\n\n[sources.github]\nrate_per_minute = 3\n";
        let vars = vec![(
            "ENRICHD_LOOKUP__DEFAULT_TIMEOUT_MS".to_string(),
            "0".to_string(),
        )];
        let origin = Origin::new(text, Some(Path::new("/etc/enrichd.toml")), &vars);

        assert_eq!(
            origin
                .where_set("sources.github.rate_per_minute")
                .as_deref(),
            Some("/etc/enrichd.toml:5")
        );
        assert_eq!(
            origin.where_set("lookup.default_timeout_ms").as_deref(),
            Some("set by ENRICHD_LOOKUP__DEFAULT_TIMEOUT_MS")
        );
        assert_eq!(origin.where_set("lookup.max_timeout_ms"), None);
    }

    #[test]
    fn valid_values_follow_the_unit_in_the_name() {
        let cases = [
            ("lookup.max_hops", "u32", "a whole number, e.g. 10"),
            (
                "batches.max_bytes",
                "u64",
                "a whole number of bytes, e.g. 65536",
            ),
            (
                "retention.exclusion_days",
                "u32",
                "a whole number of days, e.g. 30",
            ),
            ("sources.github.enabled", "a boolean", "true or false"),
        ];
        for (key, expected, want) in cases {
            assert_eq!(valid_value(key, expected), want, "{key}");
        }
    }
}
