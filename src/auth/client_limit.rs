//! Per-client-address limits: a rate for the public, keyless endpoints (the opt-out form and API),
//! and a cap on what one client holds open at once (connections, or requests through a proxy).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
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

/// How many things (connections, requests) each client address holds open at once, up to a cap.
/// Addresses are grouped as for [`ClientLimiter`]. An address's entry is removed when its count
/// falls to zero, so memory follows the clients connected now, not those ever seen.
pub struct ClientSlots {
    cap: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl ClientSlots {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// One more slot for `client`, or `None` when it holds `cap` already. The slot is given back
    /// when dropped.
    pub fn try_take(self: &Arc<Self>, client: IpAddr) -> Option<ClientSlot> {
        let key = bucket(client);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            slots: self.clone(),
            key,
        })
    }

    /// Slots `client` holds now.
    pub fn held(&self, client: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&bucket(client)).copied().unwrap_or(0)
    }
}

/// One slot of [`ClientSlots`], held until dropped.
pub struct ClientSlot {
    slots: Arc<ClientSlots>,
    key: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
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
    fn slots_are_capped_per_address_and_given_back_on_drop() {
        let slots = ClientSlots::new(2);
        let a = slots.try_take(ip("192.0.2.1")).expect("first");
        let _b = slots.try_take(ip("192.0.2.1")).expect("second");
        assert!(slots.try_take(ip("192.0.2.1")).is_none(), "over the cap");
        assert!(
            slots.try_take(ip("2001:db8::1")).is_some(),
            "another address"
        );
        drop(a);
        assert_eq!(slots.held(ip("192.0.2.1")), 1);
        assert!(
            slots.try_take(ip("192.0.2.1")).is_some(),
            "a slot came back"
        );
        let c = slots
            .try_take(ip("2001:db8:0:0:1::1"))
            .expect("same /64, one left");
        drop(c);
        assert_eq!(slots.held(ip("2001:db8::9")), 0, "the /64's entry is gone");
        assert!(
            slots.open.lock().expect("lock").len() == 1,
            "only the IPv4 client is left"
        );
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
