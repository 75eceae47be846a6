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
