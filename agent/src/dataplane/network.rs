//! One network's devices: its bridges, VXLAN devices and SVI addresses, compared with the
//! namespace dumps of this apply and brought in line with as few requests as possible.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};

use evpn_crds::validation::vxlan_overhead;
use netlink_packet_route::link::{
    BridgeStpState, InfoBridge, InfoBridgePort, InfoKind, InfoPortData, InfoPortKind, LinkMessage,
};
use rtnetlink::{LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVxlan};

use super::netns::Netns;
use super::requests::{add_address, change_link, create_link, delete_link, link_index, remove_address};
use super::snapshot::{Link, Vxlan};
use super::{DataplaneError, MAX_ALIAS_LEN, NODE, Scope, SegmentWork, is_link_local, parse_prefix};
use crate::plan::{EthernetSegmentPlan, NetworkPlan, SegmentPlan, SviPlan, VtepPlan};

/// What every network's devices share during one apply.
pub(super) struct Ctx<'a> {
    pub(super) scopes: &'a [Scope<'a>],
    pub(super) local: IpAddr,
    pub(super) vtep: &'a VtepPlan,
    pub(super) changes: &'a AtomicUsize,
}

impl Ctx<'_> {
    /// Realises network `n`; `released` names interfaces of its former segments, to be taken
    /// out of its bridge.
    pub(super) async fn network(
        &self,
        n: &NetworkPlan,
        work: &[SegmentWork<'_>],
        released: &[String],
    ) -> Result<(), DataplaneError> {
        let owner = n.owner_alias();
        // Checked before anything is made: a device whose mark the kernel refuses would be left
        // unmarked, and so beyond our cleanup.
        if owner.len() > MAX_ALIAS_LEN {
            return Err(DataplaneError::OwnerMarkTooLong { alias: owner });
        }
        for w in work {
            let scope = &self.scopes[w.scope];
            let bridge = self.bridge(scope, &w.seg.bridge, &owner, w.master, w.svi.map(|s| s.mac)).await?;
            self.vxlan(w.scope, w.seg, bridge, &owner).await?;
            if let Some(svi) = w.svi {
                self.svi_addresses(scope, &w.seg.bridge, bridge, svi).await?;
            }
            if let Some(segments) = w.ethernet_segments {
                self.segment_ports(scope, bridge, segments, released).await?;
            }
        }
        Ok(())
    }

    /// Makes each segment's interface a port of the bridge, and takes the released ones out of
    /// it. The interfaces are not ours: nothing else of them is changed, and only what this
    /// agent's last apply made a port is released (a segment removed while the agent was down
    /// stays a port, since nothing marks the interface as ours).
    async fn segment_ports(
        &self,
        scope: &Scope<'_>,
        bridge: u32,
        segments: &[EthernetSegmentPlan],
        released: &[String],
    ) -> Result<(), DataplaneError> {
        for name in released {
            if let Some(l) = scope.snap.link(name).filter(|l| l.master == bridge) {
                let msg = LinkUnspec::new_with_name(&l.name).nocontroller().build();
                change_link(self.changes, scope.ns, msg, "master (segment removed)", name).await?;
            }
        }
        for segment in segments {
            let Some(l) = scope.snap.link(&segment.interface) else {
                return Err(DataplaneError::SegmentInterfaceNotFound {
                    interface: segment.interface.clone(),
                    segment: segment.name.clone(),
                    ns: scope.ns.label.clone(),
                });
            };
            if l.master != bridge {
                let msg = LinkUnspec::new_with_name(&l.name).controller(bridge).build();
                change_link(self.changes, scope.ns, msg, "master (segment port)", &l.name).await?;
            }
        }
        Ok(())
    }

    /// Ensures the bridge `name` and returns its index.
    async fn bridge(
        &self,
        scope: &Scope<'_>,
        name: &str,
        owner: &str,
        master: u32,
        mac: Option<[u8; 6]>,
    ) -> Result<u32, DataplaneError> {
        let ns = scope.ns;
        if let Some(l) = scope.snap.link(name) {
            let fits = l.kind == Some(InfoKind::Bridge);
            let adopt = claim(l, owner, ns, fits)?;
            if fits {
                let mut b = LinkMessageBuilder::<LinkBridge>::new(name);
                let mut changed = adopt;
                if adopt {
                    b = b.alias(owner);
                }
                if l.master != master {
                    b = if master == 0 { b.nocontroller() } else { b.controller(master) };
                    changed = true;
                }
                if !l.up {
                    b = b.up();
                    changed = true;
                }
                if let Some(mac) = mac.filter(|m| l.mac.as_deref() != Some(m.as_slice())) {
                    b = b.address(mac.to_vec());
                    changed = true;
                }
                if l.bridge.stp != Some(BridgeStpState::Disabled) {
                    b = b.stp_state(BridgeStpState::Disabled);
                    changed = true;
                }
                if l.bridge.mcast_snooping != Some(false) {
                    b = b.append_info_data(InfoBridge::MulticastSnooping(false));
                    changed = true;
                }
                if changed {
                    change_link(self.changes, ns, b.build(), "bridge settings", name).await?;
                }
                return Ok(l.index);
            }
            // Ours, but no longer a bridge.
            delete_link(self.changes, ns, l.index, name).await?;
        }
        let mut b = LinkMessageBuilder::<LinkBridge>::new(name)
            .up()
            .stp_state(BridgeStpState::Disabled)
            .append_info_data(InfoBridge::MulticastSnooping(false));
        if master != 0 {
            b = b.controller(master);
        }
        if let Some(mac) = mac {
            b = b.address(mac.to_vec());
        }
        create_link(self.changes, ns, b.build(), "bridge", name).await?;
        change_link(self.changes, ns, LinkUnspec::new_with_name(name).alias(owner).build(), "alias", name).await?;
        link_index(ns, name).await
    }

    /// Ensures the VXLAN device of `seg` in scope `scope_idx`, enslaved to `bridge`.
    async fn vxlan(&self, scope_idx: usize, seg: &SegmentPlan, bridge: u32, owner: &str) -> Result<(), DataplaneError> {
        let scope = &self.scopes[scope_idx];
        let ns = scope.ns;
        let name = seg.vxlan.as_str();
        let want = Vxlan {
            vni: Some(seg.vni),
            local: Some(self.local),
            port: Some(self.vtep.udp_port),
            learning: Some(false),
        };
        let mtu = vxlan_mtu(self.vtep.mtu, self.local);
        if let Some(l) = scope.snap.link(name) {
            let fits = l.kind == Some(InfoKind::Vxlan) && l.vxlan == want;
            let adopt = claim(l, owner, ns, fits)?;
            if fits {
                let mut b = LinkUnspec::new_with_name(name);
                let mut changed = false;
                if l.master != bridge {
                    b = b.controller(bridge);
                    changed = true;
                }
                if !l.up {
                    b = b.up();
                    changed = true;
                }
                if let Some(m) = mtu.filter(|m| l.mtu != Some(*m)) {
                    b = b.mtu(m);
                    changed = true;
                }
                if changed {
                    change_link(self.changes, ns, b.build(), "master, state and MTU", name).await?;
                }
                // A new master resets the port flags to the bridge's defaults.
                let port_ok =
                    l.master == bridge && l.port.learning == Some(false) && l.port.neigh_suppress == Some(true);
                if adopt || !port_ok {
                    change_link(self.changes, ns, port_settings(name, owner), "bridge-port flags", name).await?;
                }
                return Ok(());
            }
            // Ours, but its VNI, local address or port (fixed at creation) differ.
            delete_link(self.changes, ns, l.index, name).await?;
        }

        let mut b = LinkVxlan::new(name, seg.vni).port(self.vtep.udp_port).learning(false);
        b = match self.local {
            IpAddr::V4(a) => b.local(a),
            IpAddr::V6(a) => b.local6(a),
        };
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        b = b.controller(bridge).up();
        if scope_idx == NODE {
            create_link(self.changes, ns, b.build(), "VXLAN", name).await?;
        } else {
            // Requested from the node namespace but placed in the VRF namespace: the device
            // opens its UDP socket in the namespace the request came from, the underlay. This
            // is lab.sh's create-then-move in one request, so the device never sits in the
            // node namespace, and the master index is resolved in the VRF namespace.
            let node = self.scopes[NODE].ns;
            let target = ns.open_file()?;
            let msg = b.setns_by_fd(target.as_raw_fd()).build();
            node.handle.link().add(msg).execute().await.map_err(|source| DataplaneError::CreateLink {
                kind: "VXLAN",
                device: name.into(),
                ns: format!("{} from {}", ns.label, node.label),
                source: Box::new(source),
            })?;
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
        change_link(self.changes, ns, port_settings(name, owner), "bridge-port flags", name).await
    }

    /// Makes the SVI addresses exactly the bridge's addresses (IPv6 link-local ones aside: the
    /// kernel makes those and IPv6 needs them).
    async fn svi_addresses(
        &self,
        scope: &Scope<'_>,
        device: &str,
        index: u32,
        svi: &SviPlan,
    ) -> Result<(), DataplaneError> {
        let want = svi
            .addresses
            .iter()
            .map(|a| {
                parse_prefix(a)
                    .ok_or_else(|| DataplaneError::InvalidSviAddress { address: a.clone(), device: device.into() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let have = scope.snap.addrs(index);
        for a in have.iter().filter(|a| !is_link_local(a.ip)) {
            if !want.contains(&(a.ip, a.prefix_len)) {
                remove_address(self.changes, scope.ns, device, index, a.ip, a.prefix_len).await?;
            }
        }
        for (ip, len) in want {
            if !have.iter().any(|a| a.ip == ip && a.prefix_len == len) {
                add_address(self.changes, scope.ns, device, index, ip, len).await?;
            }
        }
        Ok(())
    }
}

/// Decides whether an existing device with a name the network needs may be used: `Ok(false)`
/// when it is this network's, `Ok(true)` when it is unmarked but already what the plan asks for
/// (to be marked now), an error when it belongs to someone else.
fn claim(l: &Link, owner: &str, ns: &Netns, fits: bool) -> Result<bool, DataplaneError> {
    match l.alias.as_deref() {
        Some(a) if a == owner => Ok(false),
        None if fits => Ok(true),
        holder => Err(DataplaneError::DeviceConflict {
            device: l.name.clone(),
            ns: ns.label.clone(),
            holder: holder.map_or_else(|| "an unmarked device of another kind".to_owned(), |h| format!("{h:?}")),
        }),
    }
}

/// Bridge-port flags of a VXLAN port (EVPN fills the FDB and answers ARP/ND: no learning,
/// neighbour suppression on) and the owner mark, in one request.
fn port_settings(name: &str, owner: &str) -> LinkMessage {
    LinkUnspec::new_with_name(name)
        .alias(owner)
        .set_port_kind(InfoPortKind::Bridge)
        .set_port_data(InfoPortData::BridgePort(vec![
            InfoBridgePort::Learning(false),
            InfoBridgePort::NeighSupress(true),
        ]))
        .build()
}

/// The VXLAN device's MTU: the underlay's minus the encapsulation of this VTEP's address family.
fn vxlan_mtu(vtep_mtu: Option<u32>, local: IpAddr) -> Option<u32> {
    vtep_mtu.map(|m| m.saturating_sub(vxlan_overhead(local.is_ipv6())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vxlan_mtu_subtracts_the_encapsulation() {
        assert_eq!(vxlan_mtu(Some(9000), "198.18.0.1".parse().unwrap()), Some(8950));
        assert_eq!(vxlan_mtu(Some(9000), "fd00::1".parse().unwrap()), Some(8930));
        assert_eq!(vxlan_mtu(None, "198.18.0.1".parse().unwrap()), None);
    }
}
