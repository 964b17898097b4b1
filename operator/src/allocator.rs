//! Number pools: VNIs, route-distinguisher indexes, ESI discriminators, VTEP IPs.
//!
//! A pool knows which values are taken and by whom; it never decides who wins a dispute (that is
//! [`crate::plan`]'s job) and it does no I/O, so every property (no value handed out twice, a
//! rebuild from the same claims gives the same pool) is tested on plain data.

use std::collections::BTreeMap;
use std::net::IpAddr;

use evpn_crds::validation::Cidr;

/// Values in inclusive ranges, each held by at most one owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool<O> {
    held: BTreeMap<u32, O>,
}

impl<O> Default for Pool<O> {
    fn default() -> Self {
        Self { held: BTreeMap::new() }
    }
}

impl<O: Clone + Eq> Pool<O> {
    /// Who holds `value`.
    pub fn holder(&self, value: u32) -> Option<&O> {
        self.held.get(&value)
    }

    /// Takes `value` for `owner`; `Err(holder)` when someone else has it.
    pub fn claim(&mut self, value: u32, owner: &O) -> Result<(), O> {
        match self.held.get(&value) {
            Some(holder) if holder != owner => Err(holder.clone()),
            Some(_) => Ok(()),
            None => {
                self.held.insert(value, owner.clone());
                Ok(())
            }
        }
    }

    /// The lowest free value inside `ranges` (inclusive), taken for `owner`.
    pub fn allocate(&mut self, ranges: &[(u32, u32)], owner: &O) -> Option<u32> {
        let value = ranges.iter().find_map(|&(start, end)| self.first_free(start, end))?;
        self.held.insert(value, owner.clone());
        Some(value)
    }

    fn first_free(&self, start: u32, end: u32) -> Option<u32> {
        // Walk the held values inside the range: the first gap is the answer.
        let mut candidate = start;
        for (&held, _) in self.held.range(start..=end) {
            if held != candidate {
                break;
            }
            candidate = candidate.checked_add(1)?;
        }
        (candidate <= end).then_some(candidate)
    }

    /// Releases every value `keep` rejects.
    pub fn retain(&mut self, mut keep: impl FnMut(&O) -> bool) {
        self.held.retain(|_, owner| keep(owner));
    }

    /// Values held, with their owners, in order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &O)> {
        self.held.iter().map(|(v, o)| (*v, o))
    }

    /// How many values are held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// The host addresses of a prefix usable as VTEP IPs, by index: IPv4 skips the network and
/// broadcast addresses of prefixes shorter than /31; IPv6 skips the subnet-router anycast.
pub fn host_address(cidr: &Cidr, index: u32) -> Option<IpAddr> {
    match cidr.addr {
        IpAddr::V4(net) => {
            let size = 1u64 << (32 - u32::from(cidr.prefix));
            let (first, count) = if size > 2 { (1u64, size - 2) } else { (0, size) };
            (u64::from(index) < count).then(|| {
                IpAddr::V4(std::net::Ipv4Addr::from((u64::from(u32::from(net)) + first + u64::from(index)) as u32))
            })
        }
        IpAddr::V6(net) => {
            let bits = 128 - u32::from(cidr.prefix);
            let size = if bits >= 64 { u64::MAX } else { 1u64 << bits };
            (u64::from(index) + 1 < size).then(|| IpAddr::V6((u128::from(net) + 1 + u128::from(index)).into()))
        }
    }
}

/// The index of `addr` among [`host_address`]es of `cidr`, if it is one.
pub fn host_index(cidr: &Cidr, addr: IpAddr) -> Option<u32> {
    match (cidr.addr, addr) {
        (IpAddr::V4(net), IpAddr::V4(a)) => {
            let size = 1u64 << (32 - u32::from(cidr.prefix));
            let offset = u64::from(u32::from(a)).checked_sub(u64::from(u32::from(net)))?;
            let first = if size > 2 { 1 } else { 0 };
            let last = if size > 2 { size - 2 } else { size - 1 };
            (offset >= first && offset <= last).then(|| u32::try_from(offset - first).ok()).flatten()
        }
        (IpAddr::V6(net), IpAddr::V6(a)) => {
            let offset = u128::from(a).checked_sub(u128::from(net))?;
            let bits = 128 - u32::from(cidr.prefix);
            let inside = bits >= 128 || offset >> bits == 0;
            (inside && offset >= 1).then(|| u32::try_from(offset - 1).ok()).flatten()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use evpn_crds::validation::parse_cidr;

    #[test]
    fn allocates_the_lowest_free_value_across_ranges() {
        let mut pool = Pool::default();
        let ranges = [(10, 12), (20, 21)];
        let got: Vec<_> = (0..5).map(|i| pool.allocate(&ranges, &format!("e{i}"))).collect();
        assert_eq!(got, [Some(10), Some(11), Some(12), Some(20), Some(21)]);
        assert_eq!(pool.allocate(&ranges, &"e5".to_owned()), None, "exhausted");
        pool.retain(|o| o != "e1");
        assert_eq!(pool.allocate(&ranges, &"e6".to_owned()), Some(11), "a released value is reused");
    }

    #[test]
    fn claims_are_exclusive() {
        let mut pool = Pool::default();
        assert_eq!(pool.claim(7, &"a"), Ok(()));
        assert_eq!(pool.claim(7, &"a"), Ok(()), "claiming again is idempotent");
        assert_eq!(pool.claim(7, &"b"), Err("a"));
        assert_eq!(pool.allocate(&[(7, 8)], &"c"), Some(8));
    }

    #[test]
    fn ipv4_host_addresses_skip_network_and_broadcast() {
        let c = parse_cidr("198.18.0.0/30").unwrap();
        assert_eq!(host_address(&c, 0), Some("198.18.0.1".parse().unwrap()));
        assert_eq!(host_address(&c, 1), Some("198.18.0.2".parse().unwrap()));
        assert_eq!(host_address(&c, 2), None);
        assert_eq!(host_index(&c, "198.18.0.2".parse().unwrap()), Some(1));
        assert_eq!(host_index(&c, "198.18.0.3".parse().unwrap()), None, "broadcast");
        assert_eq!(host_index(&c, "198.18.0.0".parse().unwrap()), None, "network");
        let p2p = parse_cidr("198.18.0.4/31").unwrap();
        assert_eq!(host_address(&p2p, 1), Some("198.18.0.5".parse().unwrap()));
        let host = parse_cidr("198.18.0.9/32").unwrap();
        assert_eq!(host_address(&host, 0), Some("198.18.0.9".parse().unwrap()));
    }

    #[test]
    fn ipv6_host_addresses() {
        let c = parse_cidr("2001:db8::/126").unwrap();
        assert_eq!(host_address(&c, 0), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(host_address(&c, 2), Some("2001:db8::3".parse().unwrap()));
        assert_eq!(host_address(&c, 3), None);
        assert_eq!(host_index(&c, "2001:db8::3".parse().unwrap()), Some(2));
        assert_eq!(host_index(&c, "2001:db8::4".parse().unwrap()), None);
    }
}
