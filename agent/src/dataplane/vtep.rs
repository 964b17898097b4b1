//! The VTEP address: put on its device (Managed) or found on the node (Unmanaged).
//!
//! A Managed address goes on a dummy device of our own where the kernel has dummy devices and
//! on the loopback otherwise; either way it is a host route (/32, /128) the underlay announces.
//! Only host addresses inside the VTEP's CIDRs count as earlier VTEP addresses of ours: those
//! are removed when the address changes, anything else on the device is left alone.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use evpn_crds::vtep::VtepMode;
use netlink_packet_route::link::InfoKind;
use nix::errno::Errno;
use rtnetlink::{LinkDummy, LinkUnspec};

use super::error::errno;
use super::requests::{add_address, change_link, link_index, remove_address};
use super::snapshot::Link;
use super::{DataplaneError, Scope, VtepStatus, host_prefix_len, owner_of, parse_prefix};
use crate::plan::VtepPlan;

/// The device that carries a Managed VTEP address where the kernel has dummy devices.
pub const VTEP_DEVICE: &str = "evpn-vtep";
/// Carries the VTEP address where the kernel has no dummy devices.
const LOOPBACK: &str = "lo";

/// The Managed VTEP's address on its device, or the Unmanaged VTEP's address found on the node.
pub(super) async fn ensure_vtep(
    node: &mut Scope<'_>,
    vtep: &VtepPlan,
    dummy_supported: &mut Option<bool>,
    changes: &AtomicUsize,
) -> Result<VtepStatus, DataplaneError> {
    let cidrs = vtep
        .cidrs
        .iter()
        .map(|c| Cidr::parse(c).ok_or_else(|| DataplaneError::InvalidVtepCidr { cidr: c.clone() }))
        .collect::<Result<Vec<_>, _>>()?;
    let in_cidrs = |ip: IpAddr| cidrs.iter().any(|c| c.contains(ip));
    let ip = match (vtep.mode, vtep.ip) {
        (VtepMode::Managed, Some(ip)) => ip,
        (VtepMode::Managed, None) => {
            return Err(DataplaneError::VtepUnavailable(format!("Managed VTEP {:?} has no address", vtep.name)));
        }
        (VtepMode::Unmanaged, _) => {
            // Lowest interface and address first, so the choice is stable between applies; the
            // SVIs of our own bridges are gateways inside the overlay, never the VTEP.
            let ours = |index| node.snap.link_by_index(index).is_some_and(|l| owner_of(l).is_some());
            let found =
                node.snap.all_addrs().filter(|a| in_cidrs(a.ip) && !ours(a.index)).min_by_key(|a| (a.index, a.ip));
            return match found {
                Some(a) => Ok(VtepStatus {
                    ip: a.ip,
                    device: node.snap.link_by_index(a.index).map(|l| l.name.clone()).unwrap_or_default(),
                }),
                None => {
                    Err(DataplaneError::VtepAddressNotFound { cidrs: vtep.cidrs.clone(), ns: node.ns.label.clone() })
                }
            };
        }
    };
    let ns = node.ns;
    let device = vtep_device(node, dummy_supported, changes).await?;
    if !device.up {
        change_link(changes, ns, LinkUnspec::new_with_index(device.index).up().build(), "state", &device.name).await?;
    }
    let host_len = host_prefix_len(ip);
    let mut present = false;
    for a in node.snap.addrs(device.index) {
        if a.ip == ip && a.prefix_len == host_len {
            present = true;
        } else if a.prefix_len == host_prefix_len(a.ip) && in_cidrs(a.ip) {
            // A VTEP address this agent put here before (the node's address changed).
            remove_address(changes, ns, &device.name, a.index, a.ip, a.prefix_len).await?;
        }
    }
    if !present {
        add_address(changes, ns, &device.name, device.index, ip, host_len).await?;
    }
    Ok(VtepStatus { ip, device: device.name })
}

/// The device for a Managed VTEP address: the dummy `evpn-vtep`, made if the kernel can, else
/// the loopback.
async fn vtep_device(
    node: &Scope<'_>,
    dummy_supported: &mut Option<bool>,
    changes: &AtomicUsize,
) -> Result<Link, DataplaneError> {
    if let Some(l) = node.snap.link(VTEP_DEVICE).filter(|l| l.kind == Some(InfoKind::Dummy)) {
        return Ok(l.clone());
    }
    if *dummy_supported != Some(false) {
        let created = node.ns.handle.link().add(LinkDummy::new(VTEP_DEVICE).up().build()).execute().await;
        match created {
            Ok(()) => {
                changes.fetch_add(1, Ordering::Relaxed);
                *dummy_supported = Some(true);
                let index = link_index(node.ns, VTEP_DEVICE).await?;
                return Ok(Link { index, name: VTEP_DEVICE.into(), up: true, ..Link::default() });
            }
            Err(e) if errno(&e) == Some(Errno::EOPNOTSUPP as i32) => {
                tracing::info!("no dummy devices in this kernel: the VTEP address goes on {LOOPBACK}");
                *dummy_supported = Some(false);
            }
            Err(source) => {
                return Err(DataplaneError::CreateLink {
                    kind: "dummy",
                    device: VTEP_DEVICE.into(),
                    ns: node.ns.label.clone(),
                    source: Box::new(source),
                });
            }
        }
    }
    node.snap.link(LOOPBACK).cloned().ok_or_else(|| {
        DataplaneError::VtepUnavailable(format!("no {LOOPBACK} device in {} to carry the address", node.ns.label))
    })
}

/// An IP network, to tell whether an address lies in a VTEP's CIDRs.
#[derive(Clone, Copy, Debug)]
struct Cidr {
    net: IpAddr,
    len: u8,
}

impl Cidr {
    fn parse(s: &str) -> Option<Self> {
        parse_prefix(s).map(|(net, len)| Cidr { net, len })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.len)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_contain_their_addresses_only() {
        let c = Cidr::parse("198.18.0.0/24").unwrap();
        assert!(c.contains("198.18.0.7".parse().unwrap()));
        assert!(!c.contains("198.18.1.7".parse().unwrap()));
        assert!(!c.contains("fd00::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("1.2.3.4".parse().unwrap()));
        assert!(Cidr::parse("fd00::/64").unwrap().contains("fd00::5".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
    }
}
