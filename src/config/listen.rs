//! [`ListenAddr`]: where the service listens, as an IP address or a host name, with a port.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// What a valid listen address looks like, for error messages.
pub const LISTEN_EXAMPLES: &str =
    "an address with a port, e.g. 127.0.0.1:8080, [::1]:8080, 0.0.0.0:8080 or localhost:8080";

/// `127.0.0.1:8080`, `[::1]:8080` or `localhost:8080`: checked when read, resolved when bound (a
/// host name binds the first of its addresses that can be bound).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenAddr(String);

impl ListenAddr {
    /// The text to bind, as `tokio::net::TcpListener::bind` takes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The port, the part after the last `:`.
    pub fn port(&self) -> Option<u16> {
        self.0
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(addr: SocketAddr) -> Self {
        Self(addr.to_string())
    }
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.parse::<SocketAddr>().is_ok() {
            return Ok(Self(s.to_string()));
        }
        let valid = s.rsplit_once(':').is_some_and(|(host, port)| {
            port.parse::<u16>().is_ok() && url::Host::parse(host).is_ok_and(is_name)
        });
        if valid {
            Ok(Self(s.to_string()))
        } else {
            Err(format!("'{s}' is not {LISTEN_EXAMPLES}"))
        }
    }
}

/// A DNS name, as opposed to an address `url` also accepts (a bare IPv4 it would have parsed above).
fn is_name(host: url::Host) -> bool {
    matches!(host, url::Host::Domain(d) if !d.is_empty() && !d.contains(['/', '[', ']']))
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_host_names_with_a_port_are_accepted() {
        for ok in [
            "127.0.0.1:8080",
            "[::1]:0",
            "0.0.0.0:80",
            "localhost:8080",
            "api.internal:9000",
        ] {
            assert_eq!(
                ok.parse::<ListenAddr>().map(|a| a.to_string()),
                Ok(ok.into()),
                "{ok}"
            );
        }
        for bad in [
            "localhost",
            "localhost:http",
            ":8080",
            "127.0.0.1",
            "a b:80",
            "x:99999",
        ] {
            let err = bad.parse::<ListenAddr>().expect_err(bad);
            assert!(err.contains("localhost:8080"), "{err}");
        }
    }
}
