//! Who the client is: the connection's peer, or — when that peer is a proxy the operator trusts
//! (`server.trusted_proxies`) — the address the proxies recorded in `Forwarded` (RFC 7239) or, when
//! that header is absent, `X-Forwarded-For`.
//!
//! Only trusted hops are believed: the chain is read from the nearest hop outwards and the first
//! address that is not a trusted proxy is the client. Anything a client wrote itself sits further
//! out than that and is never reached. A hop that is not an address (`unknown`, an obfuscated
//! `_identifier`, garbage) ends the walk at the last trusted proxy, so such clients share that
//! proxy's budget instead of escaping the per-address limits.

use std::net::{IpAddr, Ipv6Addr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses addresses (`10.0.0.1`, `::1`) and CIDR blocks (`10.0.0.0/8`); `Err` with the first
    /// item that is neither.
    pub fn parse(items: &[String]) -> Result<Self, String> {
        items
            .iter()
            .map(|item| {
                let text = item.trim();
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| item.clone())
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Where a request's client address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The connection's own peer.
    Peer,
    /// A forwarding header written by a trusted proxy.
    Proxy,
}

/// The client of a request that arrived from `peer` with `headers`.
pub fn client_of(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> (IpAddr, Via) {
    let peer = canonical(peer);
    if trusted.is_empty() || !trusted.contains(peer) {
        return (peer, Via::Peer);
    }
    let mut hops: Vec<Option<IpAddr>> = Vec::new();
    let forwarded = headers.get_all("forwarded");
    if forwarded.iter().next().is_some() {
        for value in forwarded {
            hops.extend(forwarded_for(&String::from_utf8_lossy(value.as_bytes())));
        }
    } else {
        for value in headers.get_all("x-forwarded-for") {
            let text = String::from_utf8_lossy(value.as_bytes());
            hops.extend(text.split(',').map(node_ip));
        }
    }
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        match hop.map(canonical) {
            Some(ip) if trusted.contains(ip) => client = ip,
            Some(ip) => return (ip, Via::Proxy),
            None => break,
        }
    }
    (
        client,
        if client == peer {
            Via::Peer
        } else {
            Via::Proxy
        },
    )
}

/// The `for=` node of each element of a `Forwarded` header value, in order; `None` for an element
/// whose node is missing or not an address.
pub fn forwarded_for(value: &str) -> Vec<Option<IpAddr>> {
    split_outside_quotes(value, ',')
        .into_iter()
        .map(|element| {
            split_outside_quotes(element, ';')
                .into_iter()
                .filter_map(|pair| pair.split_once('='))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
                .and_then(|(_, node)| node_ip(&unquote(node.trim())))
        })
        .collect()
}

/// `text` cut at every `sep` that is not inside a quoted string (RFC 9110 quoted-string, with
/// backslash escapes).
fn split_outside_quotes(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&text[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&text[start..]);
    parts
}

fn unquote(token: &str) -> String {
    let Some(inner) = token.strip_prefix('"').and_then(|t| t.strip_suffix('"')) else {
        return token.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' {
            chars.next().unwrap_or(c)
        } else {
            c
        });
    }
    out
}

/// A node as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:4711`. Anything else (`unknown`, `_hidden`) is `None`.
fn node_ip(node: &str) -> Option<IpAddr> {
    let node = node.trim();
    if let Some(rest) = node.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        return port_ok
            .then(|| ip.parse::<Ipv6Addr>().ok().map(IpAddr::V6))
            .flatten();
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    let (host, port) = node.rsplit_once(':')?;
    is_port(port)
        .then(|| host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4))
        .flatten()
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn trusted(items: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("valid list")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, value.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let h = headers(&[("x-forwarded-for", "198.51.100.9")]);
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            client_of(ip("203.0.113.5"), &h, &t),
            (ip("203.0.113.5"), Via::Peer)
        );
        assert_eq!(
            client_of(ip("203.0.113.5"), &h, &TrustedProxies::default()),
            (ip("203.0.113.5"), Via::Peer)
        );
    }

    #[test]
    fn the_first_untrusted_hop_from_the_right_is_the_client() {
        let t = trusted(&["10.0.0.0/8", "192.0.2.7"]);
        let cases: [(&[(&'static str, &str)], &str); 8] = [
            (&[("x-forwarded-for", "198.51.100.9")], "198.51.100.9"),
            // A client that writes its own header cannot hide behind the part it wrote.
            (
                &[("x-forwarded-for", "1.1.1.1, 198.51.100.9, 10.1.1.1")],
                "198.51.100.9",
            ),
            (
                &[
                    ("x-forwarded-for", "1.1.1.1"),
                    ("x-forwarded-for", "198.51.100.9"),
                ],
                "198.51.100.9",
            ),
            (
                &[("forwarded", "for=198.51.100.9;proto=https, for=10.2.2.2")],
                "198.51.100.9",
            ),
            (
                &[("forwarded", "For=\"[2001:db8:cafe::17]:4711\"")],
                "2001:db8:cafe::17",
            ),
            (&[("forwarded", "for=192.0.2.60:8080")], "192.0.2.60"),
            // `Forwarded` wins over `X-Forwarded-For` when both are present.
            (
                &[
                    ("forwarded", "for=198.51.100.1"),
                    ("x-forwarded-for", "198.51.100.2"),
                ],
                "198.51.100.1",
            ),
            (&[("x-forwarded-for", "[2001:db8::5]:80")], "2001:db8::5"),
        ];
        for (pairs, want) in cases {
            assert_eq!(
                client_of(ip("10.0.0.1"), &headers(pairs), &t),
                (ip(want), Via::Proxy),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn a_hop_that_is_not_an_address_stops_at_the_last_trusted_proxy() {
        let t = trusted(&["10.0.0.0/8"]);
        for value in [
            "for=unknown, for=10.3.3.3",
            "for=_hidden;by=x, for=10.3.3.3",
        ] {
            let h = headers(&[("forwarded", value)]);
            assert_eq!(
                client_of(ip("10.0.0.1"), &h, &t),
                (ip("10.3.3.3"), Via::Proxy)
            );
        }
        let h = headers(&[("x-forwarded-for", "garbage")]);
        assert_eq!(
            client_of(ip("10.0.0.1"), &h, &t),
            (ip("10.0.0.1"), Via::Peer)
        );
        assert_eq!(
            client_of(ip("10.0.0.1"), &HeaderMap::new(), &t),
            (ip("10.0.0.1"), Via::Peer),
            "no header: the proxy itself"
        );
    }

    #[test]
    fn quoted_separators_do_not_split_an_element() {
        assert_eq!(
            forwarded_for("for=\"_a,b;c\";by=x, for=\"198.51.100.3\""),
            vec![None, Some(ip("198.51.100.3"))]
        );
        assert_eq!(forwarded_for("for=\"\\\"\""), vec![None]);
    }

    #[test]
    fn the_list_takes_addresses_and_blocks_and_names_what_it_refuses() {
        let t = trusted(&["10.1.2.3/8", "::1", " 192.0.2.1 "]);
        assert!(t.contains(ip("10.200.0.1")), "host bits are ignored");
        assert!(t.contains(ip("::ffff:10.0.0.1")), "mapped IPv4");
        assert!(t.contains(ip("::1")));
        assert!(t.contains(ip("192.0.2.1")));
        assert!(!t.contains(ip("192.0.2.2")));
        let err = TrustedProxies::parse(&["10.0.0.0/8".into(), "proxy.local".into()])
            .expect_err("a name is refused");
        assert_eq!(err, "proxy.local");
    }
}
