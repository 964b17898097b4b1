//! Per-object rules as plain functions: everything that can be decided from one object (and, on
//! update, its previous version) without looking at the cluster.
//!
//! These mirror the CEL rules and schema bounds of the CRDs. Apiservers older than v1.25 drop
//! CEL, so the admission webhook calls these on every request; they also report every problem of
//! an object at once, so a user fixes everything in one round.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;

use crate::common::{NetworkKind, NetworkRef, RD_INDEX_RANGE, RouteTargets, VNI_MAX};
use crate::evpn::{AUTO_ESI, EthernetSegment, EvpnSpec, RedundancyMode, Vrf};
use crate::vtep::{Bgp, VtepSpec};

/// One problem with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, e.g. `spec.macVRF.vni`.
    pub field: String,
    /// What is wrong and what to do instead.
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Joins errors into one message, as admission responses carry a single string.
pub fn join(errors: &[FieldError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Characters of a value quoted in a message: enough to recognise it, too few to fill a status.
const QUOTED_CHARS: usize = 32;

/// A value from an object, quoted for a message: escaped (a newline shows as `\n`, never as a
/// line break) and cut to its first characters, so a hostile value neither breaks the message
/// (or the FRR output it ends up next to) nor fills it.
pub fn quote(value: &str) -> String {
    let mut chars = value.chars();
    let head: String = chars.by_ref().take(QUOTED_CHARS).collect();
    let more = chars.count();
    if more == 0 { format!("{head:?}") } else { format!("{head:?} (and {more} more characters)") }
}

/// Whether `name` is 1 to `max` ASCII letters, digits, `_`, `.` or `-`, not starting with `.` or
/// `-`: the one shape [`crate::common::INTERFACE_NAME_PATTERN`] and
/// [`crate::common::FRR_NAME_PATTERN`] describe; the error says so of `what`.
fn check_word(name: &str, max: usize, what: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if first_ok && name.len() <= max && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return Ok(());
    }
    Err(format!(
        "{} is not a usable {what}: 1-{max} letters, digits, '_', '.' or '-', not starting with '.' or '-'",
        quote(name)
    ))
}

/// A Linux interface name that FRR's configuration and the kernel take verbatim (see
/// [`crate::common::INTERFACE_NAME_PATTERN`]).
pub fn check_interface_name(name: &str) -> Result<(), String> {
    check_word(name, 15, "interface name")
}

/// A name FRR's configuration takes as one word (see [`crate::common::FRR_NAME_PATTERN`]).
pub fn check_frr_name(name: &str) -> Result<(), String> {
    check_word(name, 63, "name")
}

/// The longest TCP MD5 key the kernel takes (`TCP_MD5SIG_MAXKEYLEN`).
pub const PASSWORD_MAX_LEN: usize = 80;

/// A BGP (TCP MD5) password FRR's configuration takes as one word: 1-80 printable ASCII
/// characters, no space. The error never contains the password, not even a part of it.
pub fn check_password(password: &[u8]) -> Result<(), String> {
    if password.is_empty() || password.len() > PASSWORD_MAX_LEN {
        return Err(format!("the password is {} bytes long; it must be 1-{PASSWORD_MAX_LEN}", password.len()));
    }
    if let Some(at) = password.iter().position(|b| !b.is_ascii_graphic()) {
        return Err(format!(
            "the password has a space, control or non-ASCII character at byte {at}; it must be printable ASCII without spaces"
        ));
    }
    Ok(())
}

/// A Kubernetes object name (see [`crate::common::OBJECT_NAME_PATTERN`]).
pub fn check_object_name(name: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        return Ok(());
    }
    Err(format!("{} is not an object name: lowercase letters, digits, '-' and '.' (RFC 1123)", quote(name)))
}

/// A key of a Secret's data (see [`crate::vtep::SECRET_KEY_PATTERN`]).
fn check_secret_key(key: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if !key.is_empty() && key.len() <= 253 && key.chars().all(ok) {
        return Ok(());
    }
    Err(format!("{} is not a Secret key: letters, digits, '-', '.' and '_'", quote(key)))
}

/// A BGP route target (extended community), parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteTarget {
    /// 2-byte AS number, 4-byte assigned number.
    As2 { asn: u16, number: u32 },
    /// 4-byte AS number, 2-byte assigned number.
    As4 { asn: u32, number: u16 },
    /// IPv4 address, 2-byte assigned number.
    Ipv4 { addr: Ipv4Addr, number: u16 },
}

impl fmt::Display for RouteTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::As2 { asn, number } => write!(f, "{asn}:{number}"),
            Self::As4 { asn, number } => write!(f, "{asn}:{number}"),
            Self::Ipv4 { addr, number } => write!(f, "{addr}:{number}"),
        }
    }
}

/// Parses `ASN:NN` (2- or 4-byte ASN) or `A.B.C.D:NN`, checking every range.
pub fn parse_route_target(s: &str) -> Result<RouteTarget, String> {
    let q = quote(s);
    let (admin, number) = s.rsplit_once(':').ok_or_else(|| format!("route target {q} is not ASN:NN or A.B.C.D:NN"))?;
    let number: u64 = number.parse().map_err(|_| format!("route target {q}: the part after ':' is not a number"))?;
    if admin.contains('.') {
        let addr: Ipv4Addr =
            admin.parse().map_err(|_| format!("route target {q}: the part before ':' is not an IPv4 address"))?;
        let number = u16::try_from(number)
            .map_err(|_| format!("route target {q}: with an IPv4 address the number must be at most 65535"))?;
        return Ok(RouteTarget::Ipv4 { addr, number });
    }
    let asn: u64 = admin
        .parse()
        .map_err(|_| format!("route target {q}: the part before ':' is not an AS number or IPv4 address"))?;
    if asn == 0 {
        return Err(format!("route target {q}: AS number 0 is reserved"));
    }
    match (u16::try_from(asn), u32::try_from(asn)) {
        (Ok(asn), _) => {
            let number = u32::try_from(number).map_err(|_| {
                format!("route target {q}: with a 2-byte AS number the number must be at most 4294967295")
            })?;
            Ok(RouteTarget::As2 { asn, number })
        }
        (Err(_), Ok(asn)) => {
            let number = u16::try_from(number)
                .map_err(|_| format!("route target {q}: with a 4-byte AS number the number must be at most 65535"))?;
            Ok(RouteTarget::As4 { asn, number })
        }
        _ => Err(format!("route target {q}: AS number {asn} is larger than 4294967295")),
    }
}

/// An Ethernet segment identifier as written in a spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EsiSpec {
    /// Derived by the operator (type 3).
    Auto,
    /// Given by the admin (type 0), or recorded by the operator (type 3).
    Explicit([u8; 10]),
}

/// The ten bytes of an ESI written as ten colon-separated two-digit hex bytes, the one form
/// specs, statuses, node states and FRR use.
pub fn esi_bytes(s: &str) -> Option<[u8; 10]> {
    let mut bytes = [0u8; 10];
    let mut parts = s.split(':');
    for byte in &mut bytes {
        *byte = parts.next().filter(|p| p.len() == 2).and_then(|p| u8::from_str_radix(p, 16).ok())?;
    }
    parts.next().is_none().then_some(bytes)
}

/// Bytes as colon-separated lowercase hex pairs, the way ESIs and MAC addresses are written.
pub fn colon_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Parses `auto` or ten colon-separated hex bytes of a type-0 or type-3 ESI.
pub fn parse_esi(s: &str) -> Result<EsiSpec, String> {
    let q = quote(s);
    if s == "auto" {
        return Ok(EsiSpec::Auto);
    }
    let Some(bytes) = esi_bytes(s) else {
        return Err(if s.split(':').count() > 10 {
            format!("ESI {q} has more than ten bytes")
        } else {
            format!("ESI {q} is not ten colon-separated hex bytes (00:11:22:33:44:55:66:77:88:99) or auto")
        });
    };
    match bytes[0] {
        0 => {}
        // A type-3 ESI is a system MAC and a 3-byte discriminator, and FRR needs both non-zero.
        3 if bytes[1..7].iter().any(|b| *b != 0) && bytes[7..].iter().any(|b| *b != 0) => {}
        3 => return Err(format!("ESI {q} is type 3 with a zero system MAC or discriminator")),
        kind => {
            return Err(format!(
                "ESI {q} is type {kind:#04x}; only types 0 and 3 may be given explicitly, or auto for a derived type-3 ESI"
            ));
        }
    }
    if bytes[1..].iter().all(|b| *b == 0) || bytes[1..].iter().all(|b| *b == 0xff) {
        return Err(format!("ESI {q} is reserved (all zeros or all ones)"));
    }
    Ok(EsiSpec::Explicit(bytes))
}

/// An IP prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network address (host bits are zero).
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

/// Parses `ADDR/LEN`, rejecting host bits, so `10.0.0.1/24` is an error that names `10.0.0.0/24`.
pub fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let q = quote(s);
    let (addr, prefix) = s.split_once('/').ok_or_else(|| format!("{q} is not ADDRESS/PREFIX-LENGTH"))?;
    let addr: IpAddr = addr.parse().map_err(|_| format!("{q}: the address is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix: u8 =
        prefix.parse().ok().filter(|p| *p <= max).ok_or_else(|| format!("{q}: prefix length must be 0..={max}"))?;
    let network = mask(addr, prefix);
    if network != addr {
        return Err(format!("{q} has host bits set; did you mean {network}/{prefix}?"));
    }
    Ok(Cidr { addr, prefix })
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a) & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(bits.into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a) & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(bits.into())
        }
    }
}

fn check_vni(field: &str, vni: u32, errors: &mut Vec<FieldError>) {
    if !(1..=VNI_MAX).contains(&vni) {
        errors.push(FieldError::new(field, format!("VNI {vni} is out of range 1..={VNI_MAX}")));
    }
}

fn check_route_targets(field: &str, rts: &RouteTargets, errors: &mut Vec<FieldError>) {
    for (dir, list) in [("import", &rts.import), ("export", &rts.export)] {
        for (i, rt) in list.iter().enumerate() {
            if let Err(e) = parse_route_target(rt) {
                errors.push(FieldError::new(format!("{field}.{dir}[{i}]"), e));
            }
        }
    }
}

fn check_network(field: &str, network: &NetworkRef, errors: &mut Vec<FieldError>) {
    if let Err(e) = check_object_name(&network.name) {
        errors.push(FieldError::new(format!("{field}.name"), e));
    }
    if let Some(Err(e)) = network.namespace.as_deref().map(check_object_name) {
        errors.push(FieldError::new(format!("{field}.namespace"), e));
    }
    match (network.kind, &network.namespace) {
        (NetworkKind::UserDefinedNetwork, None) => errors.push(FieldError::new(
            format!("{field}.namespace"),
            "is required for a UserDefinedNetwork: name the namespace the network lives in",
        )),
        (NetworkKind::ClusterUserDefinedNetwork, Some(_)) => errors.push(FieldError::new(
            format!("{field}.namespace"),
            "must be empty for a ClusterUserDefinedNetwork, which is cluster-scoped",
        )),
        _ => {}
    }
}

fn check_vrf(field: &str, vrf: &Vrf, errors: &mut Vec<FieldError>) {
    if let Some(vni) = vrf.vni {
        check_vni(&format!("{field}.vni"), vni, errors);
    }
    if let Some(rts) = &vrf.route_targets {
        check_route_targets(&format!("{field}.routeTargets"), rts, errors);
    }
    if let Some(index) = vrf.route_distinguisher_index
        && !RD_INDEX_RANGE.contains(&index)
    {
        errors.push(FieldError::new(
            format!("{field}.routeDistinguisherIndex"),
            format!("{index} is outside {RD_INDEX_RANGE:?}"),
        ));
    }
}

fn check_segments(segments: &[EthernetSegment], errors: &mut Vec<FieldError>) {
    let mut explicit: Vec<([u8; 10], &str)> = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        let field = format!("spec.multiHoming.ethernetSegments[{i}]");
        if segments[..i].iter().any(|s| s.name == seg.name) {
            errors.push(FieldError::new(
                format!("{field}.name"),
                format!("segment name {} is used twice", quote(&seg.name)),
            ));
        }
        if let Err(e) = check_interface_name(&seg.interface) {
            errors.push(FieldError::new(format!("{field}.interface"), e));
        }
        match parse_esi(&seg.esi) {
            Ok(EsiSpec::Explicit([3, ..])) => errors.push(FieldError::new(
                format!("{field}.esi"),
                "an explicit ESI must be type 0 (first byte 00); use auto for a derived type-3 ESI",
            )),
            Ok(EsiSpec::Explicit(esi)) => {
                if let Some((_, other)) = explicit.iter().find(|(e, _)| *e == esi) {
                    errors.push(FieldError::new(
                        format!("{field}.esi"),
                        format!("ESI {} is also used by segment {other:?}; each segment needs its own", seg.esi),
                    ));
                }
                explicit.push((esi, &seg.name));
            }
            Ok(EsiSpec::Auto) => {}
            Err(e) => errors.push(FieldError::new(format!("{field}.esi"), e)),
        }
        if seg.mode == RedundancyMode::SingleActive {
            errors.push(FieldError::new(
                format!("{field}.mode"),
                "SingleActive is not supported yet: FRR 8.4.4 runs every Ethernet segment all-active; use AllActive",
            ));
        }
        if seg.df_preference == Some(0) || seg.df_preference.is_some_and(|p| p > 65535) {
            errors.push(FieldError::new(format!("{field}.dfPreference"), "must be 1..=65535"));
        }
    }
}

impl EvpnSpec {
    /// Every per-object problem of a new or updated EVPN spec.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_network("spec.network", &self.network, &mut errors);
        if let Err(e) = check_object_name(&self.vtep) {
            errors.push(FieldError::new("spec.vtep", format!("must name a VTEP: {e}")));
        }
        if self.mac_vrf.is_none() && self.ip_vrf.is_none() {
            errors.push(FieldError::new(
                "spec",
                "set macVRF (Layer2 network), ipVRF (Layer3 network), or both (Layer2 with IRB)",
            ));
        }
        if let Some(vrf) = &self.mac_vrf {
            check_vrf("spec.macVRF", vrf, &mut errors);
        }
        if let Some(vrf) = &self.ip_vrf {
            check_vrf("spec.ipVRF", vrf, &mut errors);
        }
        if let (Some(Some(mac)), Some(Some(ip))) =
            (self.mac_vrf.as_ref().map(|v| v.vni), self.ip_vrf.as_ref().map(|v| v.vni))
            && mac == ip
        {
            errors.push(FieldError::new(
                "spec.ipVRF.vni",
                format!("VNI {ip} is also the macVRF VNI; MAC-VRFs and IP-VRFs share one VNI space, pick another"),
            ));
        }
        if let Some(mh) = &self.multi_homing {
            check_segments(&mh.ethernet_segments, &mut errors);
            for (segment, esi) in &mh.derived_esis {
                let field = format!("spec.multiHoming.derivedESIs[{}]", quote(segment));
                if !matches!(parse_esi(esi), Ok(EsiSpec::Explicit([3, ..]))) {
                    errors.push(FieldError::new(field, format!("{} is not a type-3 ESI", quote(esi))));
                }
            }
            if self.mac_vrf.is_none() && !mh.ethernet_segments.is_empty() {
                errors.push(FieldError::new(
                    "spec.multiHoming",
                    "Ethernet segments attach to the MAC-VRF's bridge: set macVRF (a Layer2 network) or remove them",
                ));
            }
        }
        errors
    }

    /// The problems of an update: those of the new spec plus the immutable fields that changed.
    pub fn validate_update(&self, old: &EvpnSpec) -> Vec<FieldError> {
        let mut errors = self.validate();
        if self.network != old.network {
            errors.push(FieldError::new(
                "spec.network",
                format!("is immutable (was {}): delete and recreate the EVPN to move it", old.network),
            ));
        }
        if self.vtep != old.vtep {
            errors.push(FieldError::new(
                "spec.vtep",
                format!("is immutable (was {}): delete and recreate the EVPN to move it", quote(&old.vtep)),
            ));
        }
        for (field, new, old) in
            [("spec.macVRF", &self.mac_vrf, &old.mac_vrf), ("spec.ipVRF", &self.ip_vrf, &old.ip_vrf)]
        {
            let kept = [
                (
                    "vni",
                    "FRR cannot change a VRF's VNI in place",
                    new.as_ref().and_then(|v| v.vni),
                    old.as_ref().and_then(|v| v.vni),
                ),
                (
                    "routeDistinguisherIndex",
                    "the fabric knows the VRF's routes by it",
                    new.as_ref().and_then(|v| v.route_distinguisher_index),
                    old.as_ref().and_then(|v| v.route_distinguisher_index),
                ),
            ];
            for (name, why, new, old) in kept {
                if let Some(old) = old
                    && new != Some(old)
                {
                    errors.push(FieldError::new(
                        format!("{field}.{name}"),
                        format!("is immutable once set (was {old}): {why}; delete and recreate the EVPN"),
                    ));
                }
            }
        }
        errors
    }

    /// Whether `self` is `old` with allocations recorded: VNIs and route-distinguisher indexes
    /// that `old` left out, derived ESIs of `auto` segments that had none, and nothing else
    /// changed. The operator's writes of an EVPN spec are exactly these.
    pub fn records_allocations_of(&self, old: &EvpnSpec) -> bool {
        let mut unrecorded = self.clone();
        for (vrf, old_vrf) in [(&mut unrecorded.mac_vrf, &old.mac_vrf), (&mut unrecorded.ip_vrf, &old.ip_vrf)] {
            if let (Some(vrf), Some(old_vrf)) = (vrf.as_mut(), old_vrf) {
                if old_vrf.vni.is_none() {
                    vrf.vni = None;
                }
                if old_vrf.route_distinguisher_index.is_none() {
                    vrf.route_distinguisher_index = None;
                }
            }
        }
        if let (Some(mh), Some(old_mh)) = (unrecorded.multi_homing.as_mut(), &old.multi_homing) {
            // Only ESIs of `auto` segments that had none recorded are new records.
            let is_new_record = |segment: &String| {
                !old_mh.derived_esis.contains_key(segment)
                    && old_mh.ethernet_segments.iter().any(|s| &s.name == segment && s.esi == AUTO_ESI)
            };
            mh.derived_esis.retain(|segment, _| !is_new_record(segment));
        }
        unrecorded == *old
    }
}

impl VtepSpec {
    /// Whether `self` is `old` with only `nodeAddresses` changed: the operator's writes of a VTEP
    /// spec are exactly these.
    pub fn changes_only_node_addresses(&self, old: &VtepSpec) -> bool {
        VtepSpec { node_addresses: old.node_addresses.clone(), ..self.clone() } == *old
    }
}

fn check_bgp(bgp: &Bgp, errors: &mut Vec<FieldError>) {
    if bgp.asn == 0 {
        errors.push(FieldError::new("spec.bgp.asn", "AS number 0 is reserved"));
    }
    if bgp.neighbors.is_empty() {
        errors.push(FieldError::new("spec.bgp.neighbors", "needs at least one fabric peer"));
    }
    for (i, p) in bgp.bfd_profiles.iter().enumerate() {
        if let Err(e) = check_frr_name(&p.name) {
            errors.push(FieldError::new(format!("spec.bgp.bfdProfiles[{i}].name"), e));
        }
        if bgp.bfd_profiles[..i].iter().any(|q| q.name == p.name) {
            errors.push(FieldError::new(
                format!("spec.bgp.bfdProfiles[{i}].name"),
                format!("{} is defined twice", quote(&p.name)),
            ));
        }
    }
    for (i, n) in bgp.neighbors.iter().enumerate() {
        let field = format!("spec.bgp.neighbors[{i}]");
        match (&n.address, &n.interface) {
            (Some(addr), None) => {
                if addr.parse::<IpAddr>().is_err() {
                    errors.push(FieldError::new(
                        format!("{field}.address"),
                        format!("{} is not an IP address", quote(addr)),
                    ));
                }
            }
            (None, Some(interface)) => {
                if let Err(e) = check_interface_name(interface) {
                    errors.push(FieldError::new(format!("{field}.interface"), e));
                }
            }
            _ => errors.push(FieldError::new(field.clone(), "set exactly one of address and interface")),
        }
        if n.asn.is_some() == n.dynamic_asn.is_some() {
            errors.push(FieldError::new(field.clone(), "set exactly one of asn and dynamicASN"));
        }
        if n.asn == Some(0) {
            errors.push(FieldError::new(format!("{field}.asn"), "AS number 0 is reserved"));
        }
        if let Some(secret) = &n.password_secret {
            let checks = [
                ("name", check_object_name(&secret.name)),
                ("namespace", check_object_name(&secret.namespace)),
                ("key", check_secret_key(&secret.key)),
            ];
            for (part, check) in checks {
                if let Err(e) = check {
                    errors.push(FieldError::new(format!("{field}.passwordSecret.{part}"), e));
                }
            }
        }
        if let Some(profile) = &n.bfd_profile
            && !bgp.bfd_profiles.iter().any(|p| &p.name == profile)
        {
            errors.push(FieldError::new(
                format!("{field}.bfdProfile"),
                format!("no BFD profile named {} in spec.bgp.bfdProfiles", quote(profile)),
            ));
        }
    }
}

fn check_node_addresses(spec: &VtepSpec, errors: &mut Vec<FieldError>) {
    let cidrs: Vec<Cidr> = spec.cidrs.iter().filter_map(|c| parse_cidr(c).ok()).collect();
    let mut seen: Vec<(&str, IpAddr)> = Vec::new();
    for (i, entry) in spec.node_addresses.iter().enumerate() {
        let field = format!("spec.nodeAddresses[{i}]");
        if let Err(e) = check_object_name(&entry.node) {
            errors.push(FieldError::new(format!("{field}.node"), e));
        }
        if seen.iter().any(|(node, _)| *node == entry.node) {
            errors.push(FieldError::new(format!("{field}.node"), format!("{} has two entries", quote(&entry.node))));
        }
        let Ok(ip) = entry.ip.parse::<IpAddr>() else {
            errors.push(FieldError::new(format!("{field}.ip"), format!("{} is not an IP address", quote(&entry.ip))));
            continue;
        };
        if !cidrs.iter().any(|c| mask(ip, c.prefix) == c.addr && ip.is_ipv4() == c.addr.is_ipv4()) {
            errors.push(FieldError::new(format!("{field}.ip"), format!("{ip} is inside none of spec.cidrs")));
        }
        if let Some((other, _)) = seen.iter().find(|(_, other_ip)| *other_ip == ip) {
            errors
                .push(FieldError::new(format!("{field}.ip"), format!("{ip} is also node {}'s address", quote(other))));
        }
        seen.push((&entry.node, ip));
    }
}

/// The underlay MTUs a VTEP may set (`spec.mtu`, as the schema bounds it): IPv6's minimum up to
/// what common jumbo-frame switches carry.
pub const VTEP_MTU_RANGE: RangeInclusive<u32> = 1280..=9216;

/// Bytes VXLAN adds to an overlay packet: the inner Ethernet header (14), VXLAN (8), UDP (8) and
/// the outer IPv4 (20) or IPv6 (40) header. The overlay MTU is the underlay's minus this.
pub const fn vxlan_overhead(outer_ipv6: bool) -> u32 {
    if outer_ipv6 { 70 } else { 50 }
}

impl VtepSpec {
    /// Every per-object problem of a new or updated VTEP spec.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.cidrs.is_empty() {
            errors.push(FieldError::new("spec.cidrs", "needs at least one prefix for the VTEP IPs"));
        }
        for (i, c) in self.cidrs.iter().enumerate() {
            if let Err(e) = parse_cidr(c) {
                errors.push(FieldError::new(format!("spec.cidrs[{i}]"), e));
            }
        }
        for (i, r) in self.vni_ranges.iter().enumerate() {
            let field = format!("spec.vniRanges[{i}]");
            check_vni(&format!("{field}.start"), r.start, &mut errors);
            check_vni(&format!("{field}.end"), r.end, &mut errors);
            if r.start > r.end {
                errors.push(FieldError::new(field.clone(), format!("start {} is greater than end {}", r.start, r.end)));
            }
            if let Some(j) = self.vni_ranges[..i].iter().position(|o| o.start <= r.end && r.start <= o.end) {
                errors.push(FieldError::new(field, format!("overlaps spec.vniRanges[{j}]")));
            }
        }
        check_node_addresses(self, &mut errors);
        if self.udp_port == 0 {
            errors.push(FieldError::new("spec.udpPort", "must be 1..=65535"));
        }
        if let Some(mtu) = self.mtu
            && !VTEP_MTU_RANGE.contains(&mtu)
        {
            errors.push(FieldError::new("spec.mtu", format!("{mtu} is outside {VTEP_MTU_RANGE:?}")));
        }
        match (&self.bgp, &self.frr_configuration_selector) {
            (Some(bgp), None) => check_bgp(bgp, &mut errors),
            (None, Some(_)) => {}
            _ => errors.push(FieldError::new(
                "spec",
                "set exactly one of bgp (FRR driven by the agent) and frrConfigurationSelector (frr-k8s)",
            )),
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_target_forms() {
        assert_eq!(parse_route_target("65000:100"), Ok(RouteTarget::As2 { asn: 65000, number: 100 }));
        assert_eq!(parse_route_target("65000:4294967295"), Ok(RouteTarget::As2 { asn: 65000, number: u32::MAX }));
        assert_eq!(parse_route_target("4200000000:7"), Ok(RouteTarget::As4 { asn: 4_200_000_000, number: 7 }));
        assert_eq!(
            parse_route_target("192.0.2.1:65535"),
            Ok(RouteTarget::Ipv4 { addr: Ipv4Addr::new(192, 0, 2, 1), number: 65535 })
        );
        assert_eq!(parse_route_target("4200000000:7").map(|rt| rt.to_string()), Ok("4200000000:7".into()));
    }

    #[test]
    fn route_target_ranges_are_checked() {
        for bad in [
            "65000",
            "65000:",
            ":1",
            "0:1",
            "65000:4294967296",
            "4200000000:65536",
            "4294967296:1",
            "192.0.2.1:65536",
            "300.0.2.1:1",
            "a:b",
        ] {
            assert!(parse_route_target(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn esi_forms() {
        assert_eq!(parse_esi("auto"), Ok(EsiSpec::Auto));
        assert_eq!(
            parse_esi("00:11:22:33:44:55:66:77:88:99"),
            Ok(EsiSpec::Explicit([0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99]))
        );
        assert_eq!(
            parse_esi("03:11:22:33:44:55:66:77:88:99"),
            Ok(EsiSpec::Explicit([3, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99])),
            "type 3, as the operator records a derived one"
        );
        assert!(parse_esi("03:00:00:00:00:00:00:00:00:01").unwrap_err().contains("zero system MAC"));
        let type1 = parse_esi("01:11:22:33:44:55:66:77:88:99").unwrap_err();
        assert!(type1.contains("type 0x01"), "{type1}");
        assert!(parse_esi("00:00:00:00:00:00:00:00:00:00").unwrap_err().contains("reserved"));
        assert!(parse_esi("00:ff:ff:ff:ff:ff:ff:ff:ff:ff").unwrap_err().contains("reserved"));
        assert!(parse_esi("00:11:22:33:44:55:66:77:88").is_err());
        assert!(parse_esi("00:11:22:33:44:55:66:77:88:99:aa").is_err());
        assert!(parse_esi("00:11:22:33:44:55:66:77:88:9").is_err());
    }

    #[test]
    fn quoted_values_are_escaped_and_bounded() {
        assert_eq!(quote("bond0"), "\"bond0\"");
        let hostile = format!("x\nrouter bgp 65099\u{2028}{}", "a".repeat(100));
        let quoted = quote(&hostile);
        assert!(quoted.starts_with("\"x\\nrouter bgp 65099\\u{2028}"), "{quoted}");
        assert!(quoted.ends_with("(and 87 more characters)"), "{quoted}");
        assert!(!quoted.contains('\n') && !quoted.contains('\u{2028}'));
    }

    #[test]
    fn passwords_are_one_word_and_never_echoed() {
        assert_eq!(check_password(b"s3cr#t!pass"), Ok(()));
        for bad in [&b""[..], b"two words", b"line\nrouter bgp 1", b"nul\0", &[b'a'; 81], "p\u{e9}".as_bytes()] {
            let e = check_password(bad).unwrap_err();
            let text = String::from_utf8_lossy(bad);
            assert!(bad.len() < 4 || !e.contains(text.as_ref()), "{e}");
        }
    }

    #[test]
    fn cidr_host_bits_name_the_network() {
        assert!(parse_cidr("198.18.0.0/24").is_ok());
        assert!(parse_cidr("2001:db8::/64").is_ok());
        assert!(parse_cidr("0.0.0.0/0").is_ok());
        let e = parse_cidr("198.18.0.1/24").unwrap_err();
        assert!(e.contains("198.18.0.0/24"), "{e}");
        assert!(parse_cidr("198.18.0.0/33").is_err());
        assert!(parse_cidr("198.18.0.0").is_err());
    }
}
