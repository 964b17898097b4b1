//! Remote VTEPs an IP-VRF's routes go through but zebra holds no router MAC for.
//!
//! FRR 8.4.4 now and then drops a remote VTEP from an L3VNI's next-hop table when the VRF's
//! route targets change and its routes are imported again: the routes stay installed via the
//! VTEP, but with no router MAC behind them the kernel's neighbour entry for the VTEP never
//! resolves and routed traffic to those prefixes is dropped. Zebra rebuilds the table when the
//! L3VNI is detached from the VRF and attached again. Only IPv4 routes count: an IPv6 route over
//! an IPv4 VTEP has a next-hop entry of its own that FRR 8.4.4 only makes for installed type-5
//! routes (docs/stories/dual-stack.md), which no re-attachment changes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use serde_json::Value;

/// For each VRF of `l3vnis` (VRF name -> L3VNI), the VTEPs its installed EVPN routes go through
/// that the L3VNI's next hops lack; VRFs with none are left out.
///
/// `routes`: the JSON documents of `show ip route vrf all json`, which FRR 8.4.4 prints one per
/// VRF, each a map of prefixes to route lists (later versions print one map of VRF names to
/// those; each route names its VRF either way). `next_hops`: `show evpn next-hops vni all json`,
/// a map of VNIs to maps keyed by next-hop address.
pub fn stranded_vteps(
    routes: &[Value],
    next_hops: &Value,
    l3vnis: &BTreeMap<String, u32>,
) -> BTreeMap<String, BTreeSet<Ipv4Addr>> {
    let mut stranded: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for route in route_entries(routes) {
        let Some(vrf) = route.get("vrfName").and_then(Value::as_str) else { continue };
        let Some(vni) = l3vnis.get(vrf) else { continue };
        let installed = route.get("protocol").and_then(Value::as_str) == Some("bgp")
            && route.get("selected").and_then(Value::as_bool) == Some(true);
        if !installed {
            continue;
        }
        let known = vni_next_hops(next_hops, *vni);
        // EVPN routes point on-link at the VTEP through the VRF's L3VNI bridge.
        for hop in route.get("nexthops").and_then(Value::as_array).into_iter().flatten() {
            let on_link = hop.get("onLink").and_then(Value::as_bool) == Some(true);
            let Some(vtep) = hop.get("ip").and_then(Value::as_str).and_then(|ip| ip.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            if on_link && !known.contains(&IpAddr::V4(vtep)) {
                stranded.entry(vrf.to_owned()).or_default().insert(vtep);
            }
        }
    }
    stranded
}

/// Every route object of `show ip route ... json`, whether VRFs are a level above the prefixes
/// or not.
fn route_entries(routes: &[Value]) -> impl Iterator<Item = &Value> {
    let prefix_maps = routes.iter().filter_map(Value::as_object).flat_map(|top| {
        top.values().flat_map(|v| match v {
            Value::Array(_) => vec![v],
            Value::Object(prefixes) => prefixes.values().collect(),
            _ => Vec::new(),
        })
    });
    prefix_maps.flat_map(|list| list.as_array().into_iter().flatten())
}

/// The next-hop addresses zebra lists for `vni`: the keys that are addresses (the entries'
/// `nexthopIp` says the same).
fn vni_next_hops(next_hops: &Value, vni: u32) -> BTreeSet<IpAddr> {
    let Some(entries) = next_hops.get(vni.to_string()).and_then(Value::as_object) else { return BTreeSet::new() };
    entries
        .iter()
        .filter_map(|(key, entry)| {
            key.parse().ok().or_else(|| entry.get("nexthopIp").and_then(Value::as_str).and_then(|ip| ip.parse().ok()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(vrf: &str, protocol: &str, via: &str) -> Value {
        json!({"prefix": "10.20.1.0/24", "protocol": protocol, "vrfName": vrf, "selected": true, "installed": true,
               "nexthops": [{"ip": via, "afi": "ipv4", "interfaceName": "evb10000", "active": true, "onLink": true}]})
    }

    fn l3vnis() -> BTreeMap<String, u32> {
        BTreeMap::from([("red".to_owned(), 10000)])
    }

    #[test]
    fn a_route_via_a_vtep_without_a_next_hop_entry_is_stranded() {
        let routes = json!({"red": {"10.20.1.0/24": [route("red", "bgp", "198.18.0.1")],
                                    "10.20.2.0/24": [route("red", "bgp", "198.18.0.2")]}});
        let next_hops = json!({"10000": {"numNextHops": 1,
                                         "198.18.0.2": {"nexthopIp": "198.18.0.2", "routerMac": "b6:d4:07:6e:ad:07"}}});
        let stranded = stranded_vteps(&[routes], &next_hops, &l3vnis());
        assert_eq!(stranded, BTreeMap::from([("red".to_owned(), BTreeSet::from(["198.18.0.1".parse().unwrap()]))]));
    }

    #[test]
    fn known_next_hops_other_vrfs_and_other_protocols_are_not() {
        let routes = json!({
            "red": {"10.20.1.0/24": [route("red", "bgp", "198.18.0.1")], "10.20.9.0/24": [route("red", "static", "10.0.0.1")]},
            "blue": {"10.30.1.0/24": [route("blue", "bgp", "198.18.0.7")]},
        });
        let next_hops = json!({"10000": {"198.18.0.1": {"nexthopIp": "198.18.0.1"}}});
        assert!(stranded_vteps(&[routes], &next_hops, &l3vnis()).is_empty());
    }

    #[test]
    fn one_prefix_map_per_vrf_and_missing_tables_are_read_too() {
        let default = json!({"198.18.0.2/32": [route("default", "bgp", "198.18.255.1")]});
        let red = json!({"10.20.1.0/24": [route("red", "bgp", "198.18.0.1")]});
        assert_eq!(stranded_vteps(&[default, red], &Value::Null, &l3vnis()).len(), 1);
        assert!(stranded_vteps(&[], &Value::Null, &l3vnis()).is_empty());
    }

    #[test]
    fn ipv6_routes_over_ipv4_vteps_are_left_alone() {
        let mut v6 = route("red", "bgp", "::ffff:198.18.0.1");
        v6["prefix"] = json!("fd40::/64");
        let routes = json!({"red": {"fd40::/64": [v6]}});
        assert!(stranded_vteps(&[routes], &json!({}), &l3vnis()).is_empty());
    }
}
