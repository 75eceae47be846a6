//! Invariants of ARCHITECTURE.md that the code's shape keeps, checked on the source text.

use std::path::{Path, PathBuf};

use crate::helpers::files_under;

fn rust_files(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = files_under(&root)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    files
}

/// The lines of `path` that are code (not comments), with their numbers.
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    std::fs::read_to_string(path)
        .expect("read source")
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l.to_string()))
        .collect()
}

fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "tests.rs"
        || name.ends_with("_tests.rs")
        || path.components().any(|c| c.as_os_str() == "tests")
}

/// Handlers never call upstreams directly: nothing under `src/http/` holds an HTTP client, a source
/// or the source set; they reach sources only through the pipeline.
#[test]
fn handlers_never_call_upstreams_directly() {
    let forbidden = [
        "reqwest",
        "hyper_util::client",
        "lookup_shared",
        "SourceSet",
        "Registered",
        "dyn Source",
        "Source::lookup",
        "Upstream",
    ];
    let mut found = Vec::new();
    for path in rust_files("src/http") {
        for (n, line) in code_lines(&path) {
            let uses_sources =
                line.contains("sources::") && !line.contains("sources::SourceStatus");
            if uses_sources || forbidden.iter().any(|f| line.contains(f)) {
                found.push(format!("{}:{n}: {}", path.display(), line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "handlers reaching past the pipeline:\n{}",
        found.join("\n")
    );
}

/// The fan-out is the only caller of a source outside `sources/` itself (where the etiquette guard
/// calls the source it wraps).
#[test]
fn the_fan_out_is_the_only_caller_of_a_source() {
    let fanout = Path::new("src/pipeline/fanout.rs");
    let mut found = Vec::new();
    for path in rust_files("src") {
        let rel = path
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .expect("under the crate")
            .to_path_buf();
        if rel.starts_with("src/sources") || rel == fanout || is_test_file(&rel) {
            continue;
        }
        for (n, line) in code_lines(&path) {
            if line.contains(".lookup_shared(") || line.contains("source.lookup(") {
                found.push(format!("{}:{n}: {}", rel.display(), line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "sources called outside the fan-out:\n{}",
        found.join("\n")
    );
    let fanout_calls = code_lines(&Path::new(env!("CARGO_MANIFEST_DIR")).join(fanout))
        .iter()
        .filter(|(_, l)| l.contains(".lookup_shared("))
        .count();
    assert!(
        fanout_calls > 0,
        "the fan-out calls sources (the check would be vacuous)"
    );
}

/// Plugins import `spec`, never the registry that lists them; `profile/` needs only `domain/`.
#[test]
fn plugins_never_import_the_registry_and_profile_needs_only_domain() {
    let mut found = Vec::new();
    let plugins = [
        "src/sources/github.rs",
        "src/sources/gravatar.rs",
        "src/sources/openpgp.rs",
        "src/sources/rdap.rs",
        "src/sources/keybase.rs",
        "src/sources/webfinger.rs",
        "src/sources/finder.rs",
    ];
    let mut files: Vec<PathBuf> = plugins
        .iter()
        .map(|p| Path::new(env!("CARGO_MANIFEST_DIR")).join(p))
        .collect();
    files.extend(rust_files("src/sources/dns"));
    files.extend(rust_files("src/sources/website"));
    for path in files.into_iter().filter(|p| !is_test_file(p)) {
        for (n, line) in code_lines(&path) {
            if line.contains("registry::") {
                found.push(format!("{}:{n}: {}", path.display(), line.trim()));
            }
        }
    }
    for path in rust_files("src/profile") {
        for (n, line) in code_lines(&path) {
            let mut rest = line.as_str();
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                if !(rest.starts_with("domain") || rest.starts_with("profile")) {
                    found.push(format!("{}:{n}: {}", path.display(), line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "imports against the grain:\n{}",
        found.join("\n")
    );
}

/// The first words of an invariant, to name it in a failure.
fn start_of(bullet: &str) -> String {
    bullet.chars().take(80).collect()
}

/// Every invariant in ARCHITECTURE.md names the tests that guard it, and every test it names
/// exists (as a `fn` in `tests/` or in a `#[cfg(test)]` part of `src/`).
#[test]
fn architecture_names_an_existing_guard_for_every_invariant() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let section = text
        .split("## Invariants")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("an Invariants section");
    let mut bullets: Vec<String> = Vec::new();
    for line in section.lines() {
        if let Some(b) = line.strip_prefix("- ") {
            bullets.push(b.to_string());
        } else if let Some(last) = bullets.last_mut() {
            last.push(' ');
            last.push_str(line.trim());
        }
    }
    assert!(
        bullets.len() >= 15,
        "the invariants were found: {}",
        bullets.len()
    );
    let mut sources = String::new();
    for path in rust_files("tests").into_iter().chain(rust_files("src")) {
        sources.push_str(&std::fs::read_to_string(&path).expect("read source"));
    }
    let mut problems = Vec::new();
    for bullet in &bullets {
        let Some((_, guards)) = bullet.split_once("Guarded by:") else {
            problems.push(format!("names no guard: {}", start_of(bullet)));
            continue;
        };
        let names: Vec<&str> = guards.split('`').skip(1).step_by(2).collect();
        if names.is_empty() {
            problems.push(format!("names no guard: {}", start_of(bullet)));
        }
        for name in names {
            let is_fn = [format!("fn {name}("), format!("fn {name}<")]
                .iter()
                .any(|f| sources.contains(f.as_str()));
            if !is_fn {
                problems.push(format!("no test named {name}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
