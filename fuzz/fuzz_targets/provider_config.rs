//! Configuration text, providers' URL and body templates and field mappings included: any text is
//! a configuration or an error that names the key, never a panic.
#![no_main]

use enrichd::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = Config::from_toml(&text, &[]);
});
