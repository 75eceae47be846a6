//! The exclusion log reader on any file: a torn tail is tolerated, anything else is refused with an
//! error, never a panic.
#![no_main]

use std::sync::OnceLock;
use std::time::SystemTime;

use enrichd::exclusion::log::LOG_FILE_NAME;
use enrichd::exclusion::{ExclusionKey, ExclusionSnapshot};
use libfuzzer_sys::fuzz_target;

fn dir() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("enrichd-fuzz-log-{}", std::process::id()));
        std::fs::create_dir_all(&base).expect("a scratch directory");
        base
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = dir();
    std::fs::write(dir.join(LOG_FILE_NAME), data).expect("write the log");
    let key = ExclusionKey::from_bytes([7; 32]);
    let _ = ExclusionSnapshot::load(dir, &key, 1095, SystemTime::now());
});
