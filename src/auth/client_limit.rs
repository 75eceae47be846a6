//! Per-client-address rate limit for the public, keyless endpoints (the opt-out form and API).

use std::net::IpAddr;
use std::time::Duration;

use super::limit::KeyedLimiter;

/// A per-address limiter. IPv6 addresses are limited per /64, the block one subscriber usually holds,
/// so rotating through one's own addresses does not multiply the budget.
pub struct ClientLimiter(KeyedLimiter<IpAddr>);

impl ClientLimiter {
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self(KeyedLimiter::new(per_minute, burst))
    }

    /// `Ok` if `client` may go on, else how long until it may.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        self.0.check(&bucket(client))
    }
}

/// The key an address is limited under: itself for IPv4 (and IPv4-mapped IPv6), its /64 for IPv6.
fn bucket(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn burst_then_refusal_per_address() {
        let l = ClientLimiter::new(1, 2);
        assert!(l.check(ip("192.0.2.1")).is_ok());
        assert!(l.check(ip("192.0.2.1")).is_ok());
        let wait = l.check(ip("192.0.2.1")).expect_err("over the burst");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(60));
        assert!(l.check(ip("192.0.2.2")).is_ok(), "another address");
    }

    #[test]
    fn ipv6_addresses_share_their_64_and_mapped_ipv4_is_ipv4() {
        let l = ClientLimiter::new(1, 1);
        assert!(l.check(ip("2001:db8:1:2::1")).is_ok());
        assert!(l.check(ip("2001:db8:1:2:ffff::9")).is_err(), "same /64");
        assert!(l.check(ip("2001:db8:1:3::1")).is_ok(), "another /64");
        assert!(l.check(ip("198.51.100.7")).is_ok());
        assert!(l.check(ip("::ffff:198.51.100.7")).is_err(), "mapped form");
    }
}
