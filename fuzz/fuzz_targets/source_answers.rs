//! Each source's answer parser, chosen by the first byte: the JSON APIs (Gravatar, GitHub, Keybase,
//! WebFinger, RDAP), a company web page, and the free-text extraction behind it.
#![no_main]

use enrichd::sources::{github, gravatar, keybase, rdap, webfinger, website};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 7 {
        0 => drop(gravatar::parse_answer(body)),
        1 => drop(github::parse_answer(body)),
        2 => drop(keybase::parse_answer(body)),
        3 => drop(webfinger::parse_answer(body)),
        4 => drop(rdap::parse_answer(body)),
        5 => drop(website::observations(
            "example.com",
            &String::from_utf8_lossy(body),
        )),
        _ => drop(enrichd::extract::extract(
            &String::from_utf8_lossy(body),
            None,
        )),
    }
});
