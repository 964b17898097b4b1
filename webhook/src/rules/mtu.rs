//! MTU rules: an EVPN's network must fit through VXLAN over its VTEP's underlay.
//!
//! The agent gives each VXLAN device the VTEP's `spec.mtu` minus the encapsulation; a pod
//! packet bigger than that is dropped at the tunnel, often silently. So the network's MTU must
//! be at most that, checked when an EVPN is written and when its VTEP changes. A VTEP without
//! `spec.mtu` leaves the underlay MTU to the nodes, unknown here, and nothing is checked.

use std::fmt;

use evpn_crds::VtepSpec;
use evpn_crds::common::NetworkRef;
use evpn_crds::validation::{FieldError, VTEP_MTU_RANGE, parse_cidr, vxlan_overhead};

use super::field_error;
use crate::index::{Index, NetworkFacts, OvnkubeConfig};

/// The MTU OVN-Kubernetes gives a network that sets none, when ovnkube.conf does not say
/// otherwise (the CUDN/UDN `mtu` description: "defaults to 1400").
const OVN_KUBERNETES_DEFAULT_MTU: u32 = 1400;

/// The IP family of the VXLAN packets' outer header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UnderlayFamily {
    Ipv4,
    Ipv6,
}

impl UnderlayFamily {
    /// IPv6 when any of a VTEP's cidrs is: a node may get its address from that prefix, and then
    /// the larger overhead must fit too.
    fn of_cidrs(cidrs: &[String]) -> Self {
        if cidrs.iter().filter_map(|c| parse_cidr(c).ok()).any(|c| c.addr.is_ipv6()) { Self::Ipv6 } else { Self::Ipv4 }
    }
}

impl fmt::Display for UnderlayFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ipv4 => "IPv4",
            Self::Ipv6 => "IPv6",
        })
    }
}

/// A VTEP's underlay, as far as its spec tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Underlay {
    /// `spec.mtu`.
    mtu: u32,
    family: UnderlayFamily,
}

impl Underlay {
    /// `None` without `spec.mtu`: the underlay MTU is then whatever the nodes have.
    fn of(vtep: &VtepSpec) -> Option<Self> {
        Some(Self { mtu: vtep.mtu?, family: UnderlayFamily::of_cidrs(&vtep.cidrs) })
    }
}

/// The numbers of an overlay MTU that does not fit, for the denial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shortfall {
    /// Bytes VXLAN adds to each overlay packet.
    overhead: u32,
    /// The largest overlay MTU the underlay carries.
    max_overlay_mtu: u32,
    /// The underlay MTU the overlay MTU would need.
    needed_underlay_mtu: u32,
}

/// Whether overlay packets of `overlay_mtu` bytes fit through VXLAN over `underlay`, with the
/// overhead the agent subtracts for the VXLAN device.
fn vxlan_fit(overlay_mtu: u32, underlay: Underlay) -> Result<(), Shortfall> {
    let overhead = vxlan_overhead(underlay.family == UnderlayFamily::Ipv6);
    let max_overlay_mtu = underlay.mtu.saturating_sub(overhead);
    if overlay_mtu <= max_overlay_mtu {
        Ok(())
    } else {
        Err(Shortfall { overhead, max_overlay_mtu, needed_underlay_mtu: overlay_mtu.saturating_add(overhead) })
    }
}

/// The MTU a network's pods get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NetworkMtu {
    value: u32,
    /// Where the default came from when the spec sets no `mtu`.
    default_from: Option<&'static str>,
}

impl NetworkMtu {
    fn of(network: &NetworkFacts, config: &OvnkubeConfig) -> Self {
        match (network.mtu, config.mtu) {
            (Some(value), _) => Self { value, default_from: None },
            (None, Some(value)) => Self { value, default_from: Some("ovnkube-config's [default] mtu") },
            (None, None) => Self { value: OVN_KUBERNETES_DEFAULT_MTU, default_from: Some("OVN-Kubernetes' default") },
        }
    }
}

/// Denies an EVPN whose network does not fit through its VTEP's underlay.
pub(super) fn check_evpn(
    net: &NetworkRef,
    network: &NetworkFacts,
    vtep_name: &str,
    vtep: &VtepSpec,
    config: &OvnkubeConfig,
    errors: &mut Vec<FieldError>,
) {
    let Some(underlay) = Underlay::of(vtep) else { return };
    let mtu = NetworkMtu::of(network, config);
    let Err(short) = vxlan_fit(mtu.value, underlay) else { return };
    let source = mtu.default_from.map(|d| format!(" (it sets no mtu: {d})")).unwrap_or_default();
    let max = short.max_overlay_mtu;
    // Past the schema's bound, raising the VTEP is no way out.
    let raise = if VTEP_MTU_RANGE.contains(&short.needed_underlay_mtu) {
        format!(", or raise the VTEP's spec.mtu to {}", short.needed_underlay_mtu)
    } else {
        String::new()
    };
    errors.push(field_error(
        "spec.network",
        format!(
            "{net} has MTU {}{source}, but VTEP {vtep_name:?} carries at most {max} (spec.mtu {} minus {} bytes of \
             VXLAN over {}): recreate the network with mtu {max} or less (its mtu is immutable){raise}",
            mtu.value, underlay.mtu, short.overhead, underlay.family
        ),
    ));
}

/// EVPNs a denial lists by name before it only counts the rest.
const LISTED_EVPNS: usize = 3;

/// Denies a VTEP change after which the network of an EVPN using the VTEP no longer fits. An EVPN
/// that did not fit before either is left alone: this change did not break it.
pub(super) fn check_vtep(
    vtep_name: &str,
    new: &VtepSpec,
    old: Option<&VtepSpec>,
    index: &Index,
    errors: &mut Vec<FieldError>,
) {
    let Some(underlay) = Underlay::of(new) else { return };
    let before = old.and_then(Underlay::of);
    let mut broken = Vec::new();
    let mut worst: Option<Shortfall> = None;
    for evpn in index.evpns_using_vtep(vtep_name) {
        let Some(network) = index.evpn(evpn).and_then(|e| index.network(&e.network)) else { continue };
        let mtu = NetworkMtu::of(network, &index.ovnkube_config);
        if let Err(short) = vxlan_fit(mtu.value, underlay)
            && before.is_none_or(|b| vxlan_fit(mtu.value, b).is_ok())
        {
            let source = mtu.default_from.map(|d| format!(", {d}")).unwrap_or_default();
            broken.push(format!("{evpn:?} (network MTU {}{source})", mtu.value));
            if worst.is_none_or(|w| short.needed_underlay_mtu > w.needed_underlay_mtu) {
                worst = Some(short);
            }
        }
    }
    let Some(worst) = worst else { return };
    let more = broken.len().saturating_sub(LISTED_EVPNS);
    broken.truncate(LISTED_EVPNS);
    let more = if more > 0 { format!(" and {more} more") } else { String::new() };
    errors.push(field_error(
        "spec.mtu",
        format!(
            "EVPN(s) {}{more} would no longer fit: VTEP {vtep_name:?} would carry at most {} (spec.mtu {} minus {} bytes \
             of VXLAN over {}): keep spec.mtu at {} or more",
            broken.join(", "),
            worst.max_overlay_mtu,
            underlay.mtu,
            worst.overhead,
            underlay.family,
            worst.needed_underlay_mtu
        ),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn over(mtu: u32, family: UnderlayFamily) -> Underlay {
        Underlay { mtu, family }
    }

    #[test]
    fn vxlan_costs_50_bytes_over_ipv4_and_70_over_ipv6() {
        let ipv4 = over(9000, UnderlayFamily::Ipv4);
        assert_eq!(vxlan_fit(8950, ipv4), Ok(()));
        assert_eq!(
            vxlan_fit(8951, ipv4),
            Err(Shortfall { overhead: 50, max_overlay_mtu: 8950, needed_underlay_mtu: 9001 })
        );
        let ipv6 = over(9000, UnderlayFamily::Ipv6);
        assert_eq!(vxlan_fit(8930, ipv6), Ok(()));
        assert_eq!(
            vxlan_fit(8931, ipv6),
            Err(Shortfall { overhead: 70, max_overlay_mtu: 8930, needed_underlay_mtu: 9001 })
        );
        assert_eq!(vxlan_fit(1400, over(1450, UnderlayFamily::Ipv4)), Ok(()));
    }

    #[test]
    fn any_ipv6_prefix_makes_the_underlay_ipv6() {
        let cidrs = |c: &[&str]| c.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>();
        assert_eq!(UnderlayFamily::of_cidrs(&cidrs(&["198.18.0.0/24"])), UnderlayFamily::Ipv4);
        assert_eq!(UnderlayFamily::of_cidrs(&cidrs(&["198.18.0.0/24", "fd00:18::/64"])), UnderlayFamily::Ipv6);
        assert_eq!(UnderlayFamily::of_cidrs(&cidrs(&["not a prefix"])), UnderlayFamily::Ipv4);
    }
}
