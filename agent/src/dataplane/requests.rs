//! Single netlink requests. Each one that succeeds is counted as a change (the report's
//! `changes`), and each failure becomes a [`DataplaneError`] naming the operation, the device and
//! the namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use netlink_packet_route::link::LinkMessage;
use rtnetlink::AddressMessageBuilder;

use super::DataplaneError;
use super::netns::Netns;

pub(super) async fn link_index(ns: &Netns, name: &str) -> Result<u32, DataplaneError> {
    let fail = |source: rtnetlink::Error| DataplaneError::Dump {
        what: "a created link",
        ns: ns.label.clone(),
        source: Box::new(source),
    };
    let msg = ns.handle.link().get().match_name(name).execute().try_next().await.map_err(fail)?;
    msg.map(|m| m.header.index).ok_or_else(|| fail(rtnetlink::Error::RequestFailed))
}

/// Runs one mutating request, counting it as a change when it succeeds.
async fn counted<T>(
    changes: &AtomicUsize,
    request: impl Future<Output = Result<T, rtnetlink::Error>>,
    fail: impl FnOnce(Box<rtnetlink::Error>) -> DataplaneError,
) -> Result<(), DataplaneError> {
    request.await.map_err(|e| fail(Box::new(e)))?;
    changes.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

pub(super) async fn create_link(
    changes: &AtomicUsize,
    ns: &Netns,
    msg: LinkMessage,
    kind: &'static str,
    device: &str,
) -> Result<(), DataplaneError> {
    tracing::debug!(device, kind, ns = %ns.label, "creating link");
    counted(changes, ns.handle.link().add(msg).execute(), |source| DataplaneError::CreateLink {
        kind,
        device: device.into(),
        ns: ns.label.clone(),
        source,
    })
    .await
}

pub(super) async fn change_link(
    changes: &AtomicUsize,
    ns: &Netns,
    msg: LinkMessage,
    what: &'static str,
    device: &str,
) -> Result<(), DataplaneError> {
    tracing::debug!(device, what, ns = %ns.label, "changing link");
    counted(changes, ns.handle.link().change(msg).execute(), |source| DataplaneError::ChangeLink {
        what,
        device: device.into(),
        ns: ns.label.clone(),
        source,
    })
    .await
}

pub(super) async fn delete_link(
    changes: &AtomicUsize,
    ns: &Netns,
    index: u32,
    device: &str,
) -> Result<(), DataplaneError> {
    tracing::debug!(device, ns = %ns.label, "deleting link");
    counted(changes, ns.handle.link().del(index).execute(), |source| DataplaneError::DeleteLink {
        device: device.into(),
        ns: ns.label.clone(),
        source,
    })
    .await
}

pub(super) async fn add_address(
    changes: &AtomicUsize,
    ns: &Netns,
    device: &str,
    index: u32,
    ip: IpAddr,
    prefix_len: u8,
) -> Result<(), DataplaneError> {
    let mut req = ns.handle.address().add(index, ip, prefix_len);
    if ip.is_ipv6() {
        // Anycast gateway and VTEP addresses are meant to be unique only per node (or shared on
        // purpose): duplicate address detection would only delay or disable them.
        req.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    counted(changes, req.execute(), |source| DataplaneError::AddAddress {
        address: ip,
        prefix_len,
        device: device.into(),
        ns: ns.label.clone(),
        source,
    })
    .await
}

pub(super) async fn remove_address(
    changes: &AtomicUsize,
    ns: &Netns,
    device: &str,
    index: u32,
    ip: IpAddr,
    prefix_len: u8,
) -> Result<(), DataplaneError> {
    let msg = match ip {
        IpAddr::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new().index(index).address(a, prefix_len).build(),
        IpAddr::V6(a) => AddressMessageBuilder::<Ipv6Addr>::new().index(index).address(a, prefix_len).build(),
    };
    counted(changes, ns.handle.address().del(msg).execute(), |source| DataplaneError::RemoveAddress {
        address: ip,
        prefix_len,
        device: device.into(),
        ns: ns.label.clone(),
        source,
    })
    .await
}
