//! The client address behind a trusted proxy: `Forwarded` and `X-Forwarded-For` values as a client
//! (or a broken proxy) writes them.
#![no_main]

use enrichd::http::{TrustedProxies, Via, client_of};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, value)) = data.split_first() else {
        return;
    };
    let Ok(value) = axum::http::HeaderValue::from_bytes(value) else {
        return;
    };
    let name = if which % 2 == 0 {
        "forwarded"
    } else {
        "x-forwarded-for"
    };
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(name, value);
    let trusted = TrustedProxies::parse(&["10.0.0.0/8".into(), "::1".into()]).expect("valid");
    let peer = "10.1.2.3".parse().expect("an address");
    let (client, via) = client_of(peer, &headers, &trusted);
    if via == Via::Peer {
        assert_eq!(client, peer, "a client from the connection is its peer");
    }
});
