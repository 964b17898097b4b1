//! Why a part of the data plane could not be realised.
//!
//! Each variant is named for the action that failed and carries the device and namespace, so the
//! message alone tells an operator what to look at; [`DataplaneError::reason`] is the stable,
//! machine-readable part that goes into the node state's status. The type is `Clone` because one
//! failure (a namespace that cannot be read, an unusable VTEP) is reported for every network it
//! affects.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;

/// A data-plane operation that failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("opening network namespace {ns}: {source}")]
    OpenNamespace {
        ns: String,
        #[source]
        source: Arc<io::Error>,
    },
    #[error("listing {what} in {ns}: {source}")]
    Dump {
        what: &'static str,
        ns: String,
        #[source]
        source: Box<rtnetlink::Error>,
    },
    #[error("probing for kernel VRF support in {ns}: {source}")]
    ProbeVrf {
        ns: String,
        #[source]
        source: Box<rtnetlink::Error>,
    },
    #[error("creating {kind} {device} in {ns}: {source}")]
    CreateLink {
        kind: &'static str,
        device: String,
        ns: String,
        #[source]
        source: Box<rtnetlink::Error>,
    },
    #[error("changing {what} of {device} in {ns}: {source}")]
    ChangeLink {
        what: &'static str,
        device: String,
        ns: String,
        #[source]
        source: Box<rtnetlink::Error>,
    },
    #[error("deleting {device} in {ns}: {source}")]
    DeleteLink {
        device: String,
        ns: String,
        #[source]
        source: Box<rtnetlink::Error>,
    },
    #[error("adding address {address}/{prefix_len} to {device} in {ns}: {source}")]
    AddAddress {
        address: IpAddr,
        prefix_len: u8,
        device: String,
        ns: String,
        #[source]
        source: Box<rtnetlink::Error>,
    },
    #[error("removing address {address}/{prefix_len} from {device} in {ns}: {source}")]
    RemoveAddress {
        address: IpAddr,
        prefix_len: u8,
        device: String,
        ns: String,
        #[source]
        source: Box<rtnetlink::Error>,
    },
    #[error("VRF {vrf:?} not found: {detail}")]
    VrfNotFound { vrf: String, detail: String },
    #[error("no address inside the VTEP CIDRs {cidrs:?} on any interface in {ns}")]
    VtepAddressNotFound { cidrs: Vec<String>, ns: String },
    #[error("VTEP CIDR {cidr:?} is not a valid CIDR")]
    InvalidVtepCidr { cidr: String },
    #[error("SVI address {address:?} of {device} is not a valid address with prefix length")]
    InvalidSviAddress { address: String, device: String },
    #[error("{device} in {ns} is not this network's ({holder}); refusing to change it")]
    DeviceConflict { device: String, ns: String, holder: String },
    #[error("the owner mark {alias:?} is longer than the kernel's limit for an interface alias")]
    OwnerMarkTooLong { alias: String },
    #[error("the VTEP is not usable, so no tunnel can be built: {0}")]
    VtepUnavailable(String),
    #[error(
        "interface {interface} of Ethernet segment {segment:?} does not exist in {ns}, where the network's bridge is"
    )]
    SegmentInterfaceNotFound { interface: String, segment: String, ns: String },
    #[error("looking up the route to {address} in {ns}: {source}")]
    RouteLookup {
        address: IpAddr,
        ns: String,
        #[source]
        source: Box<rtnetlink::Error>,
    },
}

impl DataplaneError {
    /// Machine-readable reason for the node state's status (UpperCamelCase).
    pub fn reason(&self) -> &'static str {
        match self {
            DataplaneError::OpenNamespace { .. } => "NamespaceUnavailable",
            DataplaneError::Dump { .. }
            | DataplaneError::ProbeVrf { .. }
            | DataplaneError::CreateLink { .. }
            | DataplaneError::ChangeLink { .. }
            | DataplaneError::DeleteLink { .. }
            | DataplaneError::AddAddress { .. }
            | DataplaneError::RemoveAddress { .. } => "NetlinkFailed",
            DataplaneError::VrfNotFound { .. } => "VrfNotFound",
            DataplaneError::VtepAddressNotFound { .. } => "VtepAddressNotFound",
            DataplaneError::InvalidVtepCidr { .. } => "VtepCidrInvalid",
            DataplaneError::InvalidSviAddress { .. } => "SviAddressInvalid",
            DataplaneError::DeviceConflict { .. } => "DeviceConflict",
            DataplaneError::OwnerMarkTooLong { .. } => "NetworkNameTooLong",
            DataplaneError::VtepUnavailable(_) => "VtepUnavailable",
            DataplaneError::SegmentInterfaceNotFound { .. } => "SegmentInterfaceNotFound",
            DataplaneError::RouteLookup { .. } => "RouteLookupFailed",
        }
    }

    pub(crate) fn open_namespace(ns: impl Into<String>, source: io::Error) -> Self {
        DataplaneError::OpenNamespace { ns: ns.into(), source: Arc::new(source) }
    }
}

/// The errno of a failed netlink request, if the kernel answered with one.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}
