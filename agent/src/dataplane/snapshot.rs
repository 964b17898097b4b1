//! A namespace's links and addresses, reduced to what the data plane compares: all of them (one
//! dump of each) or only the links of given names.
//!
//! A link message carries everything needed (kind, alias, master, VXLAN attributes and
//! bridge-port flags), so a full apply reads each namespace twice (links, addresses) whatever the
//! number of networks, and decides every change from memory. A targeted apply asks for the few
//! links it compares by name instead, so its cost does not grow with the devices it leaves alone.

use std::collections::HashMap;
use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    BridgeStpState, InfoBridge, InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoVxlan, LinkAttribute,
    LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
};

use nix::errno::Errno;

use super::DataplaneError;
use super::error::errno;
use super::netns::Netns;

/// A link as the kernel reported it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Link {
    pub(crate) index: u32,
    pub(crate) name: String,
    pub(crate) kind: Option<InfoKind>,
    pub(crate) alias: Option<String>,
    /// Index of the master device; 0 when there is none.
    pub(crate) master: u32,
    pub(crate) up: bool,
    pub(crate) mac: Option<Vec<u8>>,
    pub(crate) mtu: Option<u32>,
    pub(crate) vxlan: Vxlan,
    pub(crate) bridge: Bridge,
    pub(crate) port: Port,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Vxlan {
    pub(crate) vni: Option<u32>,
    pub(crate) local: Option<IpAddr>,
    pub(crate) port: Option<u16>,
    pub(crate) learning: Option<bool>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Bridge {
    pub(crate) stp: Option<BridgeStpState>,
    pub(crate) mcast_snooping: Option<bool>,
}

/// Bridge-port flags of a link enslaved to a bridge.
#[derive(Clone, Debug, Default)]
pub(crate) struct Port {
    pub(crate) learning: Option<bool>,
    pub(crate) neigh_suppress: Option<bool>,
}

/// An address as the kernel reported it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Addr {
    pub(crate) index: u32,
    pub(crate) ip: IpAddr,
    pub(crate) prefix_len: u8,
}

#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    links: HashMap<String, Link>,
    names: HashMap<u32, String>,
    addrs: HashMap<u32, Vec<Addr>>,
}

impl Snapshot {
    pub(crate) async fn take(ns: &Netns) -> Result<Self, DataplaneError> {
        let dump_err = |what| {
            move |source: rtnetlink::Error| DataplaneError::Dump {
                what,
                ns: ns.label.clone(),
                source: Box::new(source),
            }
        };
        // Counters are never compared; leaving them out shrinks a large dump noticeably.
        let links = ns.handle.link().get().set_filter_mask(AddressFamily::Unspec, vec![LinkExtentMask::SkipStats]);
        let links: Vec<LinkMessage> = links.execute().try_collect().await.map_err(dump_err("links"))?;
        let addrs: Vec<AddressMessage> =
            ns.handle.address().get().execute().try_collect().await.map_err(dump_err("addresses"))?;
        let mut snap = Snapshot::default();
        for m in links {
            let l = link(m);
            snap.names.insert(l.index, l.name.clone());
            snap.links.insert(l.name.clone(), l);
        }
        for m in addrs {
            if let Some(a) = addr(m) {
                snap.addrs.entry(a.index).or_default().push(a);
            }
        }
        Ok(snap)
    }

    /// Reads only the links named `names` (absent ones are simply missing from the result), and
    /// with `addrs` the addresses of those links.
    pub(crate) async fn read(ns: &Netns, names: &[&str], addrs: bool) -> Result<Self, DataplaneError> {
        let dump_err = |what| {
            move |source: rtnetlink::Error| DataplaneError::Dump {
                what,
                ns: ns.label.clone(),
                source: Box::new(source),
            }
        };
        let mut pending = Vec::with_capacity(names.len());
        for name in names {
            pending.push(async move {
                match ns.handle.link().get().match_name((*name).to_owned()).execute().try_next().await {
                    Ok(m) => Ok(m),
                    Err(e) if errno(&e) == Some(Errno::ENODEV as i32) => Ok(None),
                    Err(e) => Err(e),
                }
            });
        }
        let mut snap = Snapshot::default();
        for m in futures::future::join_all(pending).await {
            if let Some(m) = m.map_err(dump_err("links by name"))? {
                let l = link(m);
                snap.names.insert(l.index, l.name.clone());
                snap.links.insert(l.name.clone(), l);
            }
        }
        if addrs && !snap.links.is_empty() {
            // rtnetlink filters an address dump by link in user space only, so this is one dump
            // of the namespace's addresses; it is done only where an SVI is compared.
            let all: Vec<AddressMessage> =
                ns.handle.address().get().execute().try_collect().await.map_err(dump_err("addresses"))?;
            for a in all.into_iter().filter_map(addr) {
                if snap.names.contains_key(&a.index) {
                    snap.addrs.entry(a.index).or_default().push(a);
                }
            }
        }
        Ok(snap)
    }

    pub(crate) fn link(&self, name: &str) -> Option<&Link> {
        self.links.get(name)
    }

    pub(crate) fn link_by_index(&self, index: u32) -> Option<&Link> {
        self.links.get(self.names.get(&index)?)
    }

    pub(crate) fn links(&self) -> impl Iterator<Item = &Link> {
        self.links.values()
    }

    pub(crate) fn addrs(&self, index: u32) -> &[Addr] {
        self.addrs.get(&index).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn all_addrs(&self) -> impl Iterator<Item = &Addr> {
        self.addrs.values().flatten()
    }

    /// Forgets a link deleted during this apply, so later steps see it gone.
    pub(crate) fn forget(&mut self, name: &str) {
        if let Some(l) = self.links.remove(name) {
            self.names.remove(&l.index);
            self.addrs.remove(&l.index);
        }
    }
}

fn link(m: LinkMessage) -> Link {
    let mut l = Link { index: m.header.index, up: m.header.flags.contains(LinkFlags::Up), ..Link::default() };
    for attr in m.attributes {
        match attr {
            LinkAttribute::IfName(n) => l.name = n,
            LinkAttribute::IfAlias(a) => l.alias = Some(a),
            LinkAttribute::Controller(i) => l.master = i,
            LinkAttribute::Address(mac) => l.mac = Some(mac),
            LinkAttribute::Mtu(mtu) => l.mtu = Some(mtu),
            LinkAttribute::LinkInfo(infos) => link_info(&mut l, infos),
            _ => {}
        }
    }
    l
}

fn link_info(l: &mut Link, infos: Vec<LinkInfo>) {
    for info in infos {
        match info {
            LinkInfo::Kind(k) => l.kind = Some(k),
            LinkInfo::Data(InfoData::Vxlan(attrs)) => {
                for a in attrs {
                    match a {
                        InfoVxlan::Id(v) => l.vxlan.vni = Some(v),
                        InfoVxlan::Local(ip) => l.vxlan.local = Some(ip.into()),
                        InfoVxlan::Local6(ip) => l.vxlan.local = Some(ip.into()),
                        InfoVxlan::Port(p) => l.vxlan.port = Some(p),
                        InfoVxlan::Learning(b) => l.vxlan.learning = Some(b),
                        _ => {}
                    }
                }
            }
            LinkInfo::Data(InfoData::Bridge(attrs)) => {
                for a in attrs {
                    match a {
                        InfoBridge::StpState(s) => l.bridge.stp = Some(s),
                        InfoBridge::MulticastSnooping(b) => l.bridge.mcast_snooping = Some(b),
                        _ => {}
                    }
                }
            }
            LinkInfo::PortData(InfoPortData::BridgePort(attrs)) => {
                for a in attrs {
                    match a {
                        InfoBridgePort::Learning(b) => l.port.learning = Some(b),
                        InfoBridgePort::NeighSupress(b) => l.port.neigh_suppress = Some(b),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

fn addr(m: AddressMessage) -> Option<Addr> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point links
    // and the only one IPv6 sends.
    let mut local = None;
    let mut address = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    let ip = local.or(address)?;
    Some(Addr { index: m.header.index, ip, prefix_len: m.header.prefix_len })
}
