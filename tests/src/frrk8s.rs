//! A stand-in for frr-k8s on one node: the FRRConfigurations that select the node, merged and
//! rendered to the frr.conf text frr-k8s would hand to FRR, so that a test can load the operator's
//! objects (and a user's underlay) into a real FRR and check the fabric they make.
//!
//! It follows frr-k8s (github.com/metallb/frr-k8s) for the fields [`evpn_crds::frrk8s`] declares:
//!
//! - node selection: `configsForNode` in `internal/controller/frrconfiguration_controller.go`;
//! - turning one object into routers and its checks (neighbor ASN / dynamic ASN, address or
//!   interface, BFD profile of the same object, timers, passwords from Secrets, prefixes),
//!   `addressFamilies` defaulting to `[unicast]` (the CRD's default, which the apiserver fills
//!   in), the checks after merging (`advertiseVNIs: All` and `l2vnis` need an EVPN neighbor,
//!   `l3vni` no neighbor at all, a VNI in one place only): `internal/controller/api_to_config.go`;
//! - merging routers of one VRF, their neighbors, prefixes and EVPN sections, with the same
//!   conflicts: `internal/controller/merge.go`. frr-k8s also merges every router with itself,
//!   which sorts and deduplicates everything and drops neighbor settings equal to FRR's defaults;
//!   the sets and maps here do the same;
//! - the text: `internal/frr/templates/frr.tmpl` (header, `vrf` stanzas, `router bgp`, BFD
//!   profiles), `neighborsession.tmpl`, `neighboripfamily.tmpl`, `evpn.tmpl` and
//!   `bfdprofile.tmpl`, line for line, without the blank lines the templates leave;
//! - the EVPN fields' meaning: `design/basic-evpn-support.md`.
//!
//! What it does not reproduce: prefix filters (`toAdvertise`, `toReceive`) and everything else
//! our types leave out. frr-k8s puts a route-map on every unicast session, built from those
//! filters; without them a session here announces every route the router has and accepts
//! everything (`mode: all` in both would still limit what frr-k8s announces to the router's own
//! prefixes). A
//! selector Kubernetes refuses (unknown operator, `In` without values) selects nothing, where
//! frr-k8s fails the node's whole conversion.
//!
//! Two [`RenderOptions`] serve the netns lab, where a node differs from a real one:
//! [`RenderOptions::vrf_netns_dir`] binds each `vrf` stanza to its network namespace (FRR's netns
//! VRF backend; a real node has kernel VRF devices and needs no such line), and
//! [`RenderOptions::allowas_in_origin`] accepts routes that carry the node's own AS number.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use evpn_crds::frrk8s::{FrrBfdProfile, FrrConfiguration, FrrEvpn, FrrNeighbor, FrrRouter, FrrVni};

/// frr-k8s' (and FRR's) defaults: a neighbor setting equal to one is dropped.
const DEFAULT_PORT: u16 = 179;
const DEFAULT_HOLD_TIME: u64 = 180;
const DEFAULT_KEEPALIVE_TIME: u64 = 60;
const DEFAULT_CONNECT_TIME: u64 = 60;
/// `advertiseVNIs` when left out.
const ADVERTISE_VNIS_DEFAULT: &str = "Disabled";

/// Why the configurations of a node cannot be merged into one FRR configuration: what frr-k8s
/// reports as its node's `lastConversionResult`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("FRRConfiguration {config}: {reason}")]
    Invalid { config: String, reason: String },
    #[error("vrf {vrf:?}: different AS numbers ({first} != {second})")]
    AsnMismatch { vrf: String, first: u32, second: u32 },
    #[error("vrf {vrf:?}: different router IDs ({first} != {second})")]
    RouterIdMismatch { vrf: String, first: String, second: String },
    #[error("vrf {vrf:?}: neighbor {neighbor}: different {setting}")]
    NeighborMismatch { vrf: String, neighbor: String, setting: &'static str },
    #[error("vrf {vrf:?}: different advertiseVNIs ({first} != {second})")]
    AdvertiseVnisMismatch { vrf: String, first: String, second: String },
    #[error("vrf {vrf:?}: different l3vni numbers ({first} != {second})")]
    L3VniMismatch { vrf: String, first: u32, second: u32 },
    #[error("vrf {vrf:?}: VNI {vni}: {reason}")]
    VniMismatch { vrf: String, vni: u32, reason: &'static str },
    #[error("duplicate VNI {vni}: configured as {first} and as {second}")]
    DuplicateVni { vni: u32, first: String, second: String },
    #[error("invalid EVPN configuration for vrf {vrf:?}: {reason}")]
    EvpnScope { vrf: String, reason: &'static str },
    #[error("BFD profile {name} is defined with different values")]
    BfdProfileMismatch { name: String },
}

/// Whether `config` applies to a node with these labels: its `nodeSelector`, where an empty one
/// selects every node.
pub fn selects(config: &FrrConfiguration, node_labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = &config.spec.node_selector else { return true };
    let valid = selector.match_expressions.iter().flatten().all(|req| {
        let has_values = req.values.as_ref().is_some_and(|v| !v.is_empty());
        match req.operator.as_str() {
            "In" | "NotIn" => has_values,
            "Exists" | "DoesNotExist" => !has_values,
            _ => false,
        }
    });
    valid && evpn_crds::common::selector_matches(selector, node_labels)
}

/// The configurations among `configs` that apply to a node with these labels.
pub fn for_node<'a>(
    configs: &'a [FrrConfiguration],
    node_labels: &BTreeMap<String, String>,
) -> Vec<&'a FrrConfiguration> {
    configs.iter().filter(|c| selects(c, node_labels)).collect()
}

/// What frr-k8s configures on a node once its configurations are merged.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    /// One router per VRF, the default VRF (`""`) first, then by name.
    pub routers: Vec<Router>,
    /// By name.
    pub bfd_profiles: Vec<FrrBfdProfile>,
}

/// The router of one VRF, merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Router {
    pub asn: u32,
    pub id: Option<String>,
    pub vrf: String,
    /// By name (address or interface), frr-k8s' order.
    pub neighbors: BTreeMap<String, Neighbor>,
    pub ipv4_prefixes: BTreeSet<String>,
    pub ipv6_prefixes: BTreeSet<String>,
    pub evpn: Option<Evpn>,
}

/// An IP family of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
    /// An unnumbered session, or `dualStackAddressFamily`.
    Dual,
}

/// A neighbor, merged. Settings equal to FRR's defaults are `None`, as frr-k8s drops them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbor {
    pub address: Option<String>,
    pub interface: Option<String>,
    /// An AS number, `internal` or `external`.
    pub remote_as: String,
    pub family: Family,
    pub port: Option<u16>,
    pub source_address: Option<String>,
    pub password: Option<String>,
    pub bfd_profile: Option<String>,
    pub ebgp_multihop: bool,
    /// Seconds.
    pub hold_time: Option<u64>,
    pub keepalive_time: Option<u64>,
    pub connect_time: Option<u64>,
    pub local_asn: Option<u32>,
    /// `unicast` and/or `evpn`.
    pub address_families: BTreeSet<String>,
}

impl Neighbor {
    /// The name FRR knows the session by.
    pub fn name(&self) -> &str {
        self.address.as_deref().or(self.interface.as_deref()).unwrap_or_default()
    }

    fn is_ebgp(&self, own_asn: u32) -> bool {
        match self.remote_as.as_str() {
            "external" => true,
            "internal" => false,
            asn => asn != own_asn.to_string(),
        }
    }
}

/// A router's EVPN section, merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evpn {
    pub advertise_vnis: Option<String>,
    /// By VNI.
    pub l2vnis: BTreeMap<u32, VniProperties>,
    pub l3vni: Option<L3Vni>,
}

/// Route distinguisher and route targets of a VNI; none given means FRR derives them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VniProperties {
    pub rd: Option<String>,
    pub import_rts: BTreeSet<String>,
    pub export_rts: BTreeSet<String>,
}

/// An IP-VRF's VNI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L3Vni {
    pub vni: u32,
    pub properties: VniProperties,
    pub advertise_prefixes: BTreeSet<String>,
}

/// How the text is rendered beyond what the configurations say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// The `hostname` line (frr-k8s writes the node's host name).
    pub hostname: String,
    /// Passwords by the name of the Secret a neighbor's `passwordSecret` names (frr-k8s reads the
    /// Secrets of its own namespace).
    pub passwords: BTreeMap<String, String>,
    /// With FRR's netns VRF backend, the directory of the VRFs' network namespaces as zebra sees
    /// them (`/run/netns`): each `vrf X` stanza gets `netns <dir>/X`. FRR lists that binding in
    /// its running configuration, so frr-reload.py would remove it from a VRF whose stanza lacks
    /// it, and FRR 8.4.4 cannot bind the VRF again. `None` for kernel VRF devices, as on a real
    /// node.
    pub vrf_netns_dir: Option<String>,
    /// With `vrf_netns_dir`: the VRFs zebra has bound, each of which gets its `vrf` stanza with
    /// the `netns` line whether or not a configuration names it, for the same reason.
    pub bound_vrfs: BTreeSet<String>,
    /// Adds `neighbor X allowas-in origin` for every eBGP neighbor in each address family it is
    /// active in. Lab nodes share one AS number behind one top-of-rack switch, so a sibling's
    /// routes (its VTEP address, its EVPN routes) come back with the node's own AS number as
    /// origin and eBGP drops them as a loop; the direct-mode agent (agent/src/frr/render.rs)
    /// adds the same line for the same reason. frr-k8s has no typed field for it: a real
    /// fabric either gives nodes their own AS numbers or rewrites the path on the switch
    /// (`as-override`), or the user adds the line as raw configuration.
    pub allowas_in_origin: bool,
}

/// Merges `configs` (those that select one node, see [`for_node`]) as frr-k8s does, with the
/// passwords of `passwordSecret`s by Secret name.
pub fn merge(configs: &[&FrrConfiguration], passwords: &BTreeMap<String, String>) -> Result<NodeConfig, Error> {
    let mut routers: BTreeMap<String, Router> = BTreeMap::new();
    let mut bfd_profiles: BTreeMap<String, FrrBfdProfile> = BTreeMap::new();
    for config in configs {
        let name = config.metadata.name.clone().unwrap_or_default();
        let invalid = |reason: String| Error::Invalid { config: name.clone(), reason };
        let mut own_profiles = BTreeSet::new();
        for profile in &config.spec.bgp.bfd_profiles {
            if !own_profiles.insert(profile.name.as_str()) {
                return Err(invalid(format!("duplicate BFD profile name {}", profile.name)));
            }
            match bfd_profiles.get(&profile.name) {
                Some(known) if known != profile => {
                    return Err(Error::BfdProfileMismatch { name: profile.name.clone() });
                }
                Some(_) => {}
                None => {
                    bfd_profiles.insert(profile.name.clone(), profile.clone());
                }
            }
        }
        for router in &config.spec.bgp.routers {
            let converted = convert_router(&name, router, &own_profiles, passwords)?;
            match routers.get_mut(&router.vrf) {
                Some(known) => merge_router(known, converted)?,
                None => {
                    routers.insert(router.vrf.clone(), converted);
                }
            }
        }
    }
    check_evpn(&routers)?;
    Ok(NodeConfig { routers: routers.into_values().collect(), bfd_profiles: bfd_profiles.into_values().collect() })
}

/// The frr.conf text frr-k8s renders for `configs` (those that select one node).
pub fn render(configs: &[&FrrConfiguration], options: &RenderOptions) -> Result<String, Error> {
    Ok(text(&merge(configs, &options.passwords)?, options))
}

/// One router of one configuration. Whatever it lists twice (a neighbor, an L2VNI) merges with
/// itself by the rules of two configurations, as frr-k8s merges every router with itself.
fn convert_router(
    config: &str,
    router: &FrrRouter,
    bfd_profiles: &BTreeSet<&str>,
    passwords: &BTreeMap<String, String>,
) -> Result<Router, Error> {
    let invalid = |reason: String| Error::Invalid { config: config.to_owned(), reason };
    let mut ipv4_prefixes = BTreeSet::new();
    let mut ipv6_prefixes = BTreeSet::new();
    for prefix in &router.prefixes {
        match prefix_family(prefix) {
            Some(Family::V4) => ipv4_prefixes.insert(prefix.clone()),
            Some(_) => ipv6_prefixes.insert(prefix.clone()),
            None => return Err(invalid(format!("unknown ipfamily for {prefix}"))),
        };
    }
    let mut converted = Router {
        asn: router.asn,
        id: router.id.clone().filter(|id| !id.is_empty()),
        vrf: router.vrf.clone(),
        neighbors: BTreeMap::new(),
        ipv4_prefixes,
        ipv6_prefixes,
        evpn: router.evpn.as_ref().map(|e| convert_evpn(e, &router.vrf)).transpose()?,
    };
    for n in &router.neighbors {
        let neighbor = convert_neighbor(n, router.asn, bfd_profiles, passwords).map_err(|e| {
            invalid(format!("neighbor {} of router {}-{}: {e}", n.key().unwrap_or_default(), router.asn, router.vrf))
        })?;
        insert_neighbor(&mut converted.neighbors, neighbor, &router.vrf)?;
    }
    Ok(converted)
}

fn convert_neighbor(
    n: &FrrNeighbor,
    router_asn: u32,
    bfd_profiles: &BTreeSet<&str>,
    passwords: &BTreeMap<String, String>,
) -> Result<Neighbor, String> {
    let family = match (&n.address, &n.interface) {
        (None, None) => return Err("no address and no interface".into()),
        (Some(_), Some(_)) => return Err("both address and interface".into()),
        (Some(address), None) => match address.parse::<IpAddr>() {
            Err(_) => return Err(format!("invalid address {address}")),
            Ok(_) if n.dual_stack_address_family == Some(true) => Family::Dual,
            Ok(IpAddr::V4(_)) => Family::V4,
            Ok(IpAddr::V6(_)) => Family::V6,
        },
        (None, Some(_)) => Family::Dual,
    };
    let remote_as = match (n.asn.filter(|a| *a != 0), n.dynamic_asn.as_deref().filter(|d| !d.is_empty())) {
        (Some(asn), None) => asn.to_string(),
        (None, Some(dynamic @ ("internal" | "external"))) => dynamic.to_owned(),
        (None, Some(other)) => return Err(format!("invalid dynamicASN {other}, must be internal or external")),
        (None, None) => return Err("no ASN or dynamicASN".into()),
        (Some(_), Some(_)) => return Err("both ASN and dynamicASN".into()),
    };
    let local_asn = n.local_asn.filter(|a| *a != 0);
    if local_asn.is_some() && n.asn == Some(router_asn) {
        return Err("localASN is not supported for iBGP sessions".into());
    }
    let bfd_profile = n.bfd_profile.clone().filter(|p| !p.is_empty());
    if let Some(profile) = bfd_profile.as_deref().filter(|p| !bfd_profiles.contains(p)) {
        return Err(format!("referencing non existing BFD profile {profile}"));
    }
    let password = match n.password_secret.as_ref().and_then(|s| s.name.as_deref()).filter(|s| !s.is_empty()) {
        Some(secret) => Some(passwords.get(secret).cloned().ok_or_else(|| format!("secret {secret} not found"))?),
        None => None,
    };
    let (hold_time, keepalive_time) = timers(n.hold_time.as_deref(), n.keepalive_time.as_deref())?;
    let connect_time = match n.connect_time.as_deref() {
        Some(text) => Some(seconds(duration_nanos(text).ok_or_else(|| format!("invalid connectTime {text}"))?)?),
        None => None,
    };
    let address_families: BTreeSet<String> = if n.address_families.is_empty() {
        // The CRD's default, which the apiserver writes into every object that leaves it out.
        BTreeSet::from(["unicast".to_owned()])
    } else {
        n.address_families.iter().cloned().collect()
    };
    Ok(Neighbor {
        address: n.address.clone(),
        interface: n.interface.clone(),
        remote_as,
        family,
        port: n.port.filter(|p| *p != DEFAULT_PORT),
        source_address: n.source_address.clone().filter(|a| !a.is_empty()),
        password,
        bfd_profile,
        ebgp_multihop: n.ebgp_multi_hop == Some(true),
        hold_time: hold_time.filter(|t| *t != DEFAULT_HOLD_TIME),
        keepalive_time: keepalive_time.filter(|t| *t != DEFAULT_KEEPALIVE_TIME),
        connect_time: connect_time.filter(|t| *t != DEFAULT_CONNECT_TIME),
        local_asn,
        address_families,
    })
}

const NANOS: u128 = 1_000_000_000;

/// Hold and keepalive time in seconds: both or neither, hold time 0 or at least 3 s, keepalive
/// not above hold time (frr-k8s' `parseTimers`).
fn timers(hold: Option<&str>, keepalive: Option<&str>) -> Result<(Option<u64>, Option<u64>), String> {
    let (hold, keepalive) = match (hold, keepalive) {
        (None, None) => return Ok((None, None)),
        (Some(hold), Some(keepalive)) => (hold, keepalive),
        _ => return Err("one of keepaliveTime/holdTime specified, both must be set or none".into()),
    };
    let hold_ns = duration_nanos(hold).ok_or_else(|| format!("invalid holdTime {hold}"))?;
    let keepalive_ns = duration_nanos(keepalive).ok_or_else(|| format!("invalid keepaliveTime {keepalive}"))?;
    let hold_s = hold_ns / NANOS;
    if hold_s != 0 && hold_s < 3 {
        return Err(format!("invalid hold time {hold}: must be 0 or >=3s"));
    }
    if keepalive_ns > hold_ns {
        return Err(format!("invalid keepaliveTime {keepalive}, must be lower than holdTime {hold}"));
    }
    Ok((Some(seconds(hold_ns)?), Some(seconds(keepalive_ns)?)))
}

/// Whole seconds, as frr-k8s truncates durations.
fn seconds(nanos: u128) -> Result<u64, String> {
    u64::try_from(nanos / NANOS).map_err(|_| format!("duration out of range: {nanos}ns"))
}

/// A Go duration (`metav1.Duration`: `90s`, `1m30s`, `1.5h`) in nanoseconds; `None` when it is
/// not one or is negative.
fn duration_nanos(text: &str) -> Option<u128> {
    if text == "0" {
        return Some(0);
    }
    let is_number = |c: char| c.is_ascii_digit() || c == '.';
    let mut rest = text;
    let mut total: u128 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !is_number(c)).unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let unit_end = after.find(is_number).unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS,
            "m" => 60 * NANOS,
            "h" => 3600 * NANOS,
            _ => return None,
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
        total = total.checked_add(whole.checked_mul(scale)?)?;
        // Digits beyond the 18th are below a nanosecond for any unit.
        let fraction = &fraction[..fraction.len().min(18)];
        if !fraction.is_empty() {
            let digits: u128 = fraction.parse().ok()?;
            total = total.checked_add(digits * scale / 10u128.pow(u32::try_from(fraction.len()).ok()?))?;
        }
        rest = after;
    }
    Some(total)
}

fn prefix_family(prefix: &str) -> Option<Family> {
    let (address, length) = prefix.split_once('/')?;
    let length: u8 = length.parse().ok()?;
    match address.parse::<IpAddr>().ok()? {
        IpAddr::V4(_) if length <= 32 => Some(Family::V4),
        IpAddr::V6(_) if length <= 128 => Some(Family::V6),
        _ => None,
    }
}

fn convert_evpn(evpn: &FrrEvpn, vrf: &str) -> Result<Evpn, Error> {
    let mut converted = Evpn { advertise_vnis: evpn.advertise_vnis.clone(), ..Default::default() };
    for l2 in &evpn.l2vnis {
        match converted.l2vnis.get_mut(&l2.vni) {
            Some(known) => merge_vni_properties(known, vni_properties(l2), vrf, l2.vni)?,
            None => {
                converted.l2vnis.insert(l2.vni, vni_properties(l2));
            }
        }
    }
    converted.l3vni = evpn.l3vni.as_ref().map(|l3| L3Vni {
        vni: l3.vni.vni,
        properties: vni_properties(&l3.vni),
        advertise_prefixes: l3.advertise_prefixes.iter().cloned().collect(),
    });
    Ok(converted)
}

fn vni_properties(vni: &FrrVni) -> VniProperties {
    VniProperties {
        rd: vni.rd.clone().filter(|rd| !rd.is_empty()),
        import_rts: vni.import_rts.iter().cloned().collect(),
        export_rts: vni.export_rts.iter().cloned().collect(),
    }
}

/// `mergeRouterConfigs`: one AS number per VRF, at most one router ID, everything else united.
fn merge_router(into: &mut Router, from: Router) -> Result<(), Error> {
    let vrf = into.vrf.clone();
    if into.asn != from.asn {
        return Err(Error::AsnMismatch { vrf, first: into.asn, second: from.asn });
    }
    match (&into.id, from.id) {
        (Some(first), Some(second)) if *first != second => {
            return Err(Error::RouterIdMismatch { vrf, first: first.clone(), second });
        }
        (None, id) => into.id = id,
        _ => {}
    }
    into.ipv4_prefixes.extend(from.ipv4_prefixes);
    into.ipv6_prefixes.extend(from.ipv6_prefixes);
    for neighbor in from.neighbors.into_values() {
        insert_neighbor(&mut into.neighbors, neighbor, &vrf)?;
    }
    into.evpn = match (into.evpn.take(), from.evpn) {
        (Some(a), Some(b)) => Some(merge_evpn(a, b, &vrf)?),
        (a, b) => a.or(b),
    };
    Ok(())
}

/// `mergeIntoNeighbor`: the session settings must be equal (a BFD profile may be missing on one
/// side); address families are united.
fn insert_neighbor(neighbors: &mut BTreeMap<String, Neighbor>, new: Neighbor, vrf: &str) -> Result<(), Error> {
    let Some(known) = neighbors.get_mut(new.name()) else {
        neighbors.insert(new.name().to_owned(), new);
        return Ok(());
    };
    let differing = [
        (known.remote_as != new.remote_as, "AS numbers"),
        (known.port != new.port, "ports"),
        (known.source_address != new.source_address, "source addresses"),
        (known.password != new.password, "passwords"),
        (
            known.bfd_profile.is_some() && new.bfd_profile.is_some() && known.bfd_profile != new.bfd_profile,
            "BFD profiles",
        ),
        (known.ebgp_multihop != new.ebgp_multihop, "ebgp-multihop"),
        (known.family != new.family, "dualStackAddressFamily"),
        (known.hold_time != new.hold_time, "hold times"),
        (known.keepalive_time != new.keepalive_time, "keepalive times"),
        (known.connect_time != new.connect_time, "connect times"),
        (known.local_asn != new.local_asn, "localASNs"),
    ];
    if let Some((_, setting)) = differing.into_iter().find(|(differs, _)| *differs) {
        return Err(Error::NeighborMismatch { vrf: vrf.to_owned(), neighbor: new.name().to_owned(), setting });
    }
    known.bfd_profile = known.bfd_profile.take().or(new.bfd_profile);
    known.address_families.extend(new.address_families);
    Ok(())
}

/// `mergeEVPNConfigs`: one `advertiseVNIs` (left out counts as `Disabled`), one L3VNI, and per
/// VNI one RD and route targets either given everywhere or nowhere.
fn merge_evpn(mut into: Evpn, from: Evpn, vrf: &str) -> Result<Evpn, Error> {
    let first = into.advertise_vnis.as_deref().unwrap_or(ADVERTISE_VNIS_DEFAULT);
    let second = from.advertise_vnis.as_deref().unwrap_or(ADVERTISE_VNIS_DEFAULT);
    if first != second {
        return Err(Error::AdvertiseVnisMismatch { vrf: vrf.to_owned(), first: first.into(), second: second.into() });
    }
    into.advertise_vnis = into.advertise_vnis.or(from.advertise_vnis);
    for (vni, properties) in from.l2vnis {
        match into.l2vnis.get_mut(&vni) {
            Some(known) => merge_vni_properties(known, properties, vrf, vni)?,
            None => {
                into.l2vnis.insert(vni, properties);
            }
        }
    }
    into.l3vni = match (into.l3vni.take(), from.l3vni) {
        (Some(mut a), Some(b)) => {
            if a.vni != b.vni {
                return Err(Error::L3VniMismatch { vrf: vrf.to_owned(), first: a.vni, second: b.vni });
            }
            merge_vni_properties(&mut a.properties, b.properties, vrf, a.vni)?;
            a.advertise_prefixes.extend(b.advertise_prefixes);
            Some(a)
        }
        (a, b) => a.or(b),
    };
    Ok(into)
}

fn merge_vni_properties(into: &mut VniProperties, from: VniProperties, vrf: &str, vni: u32) -> Result<(), Error> {
    let conflict = |reason| Err(Error::VniMismatch { vrf: vrf.to_owned(), vni, reason });
    if into.rd.is_some() && from.rd.is_some() && into.rd != from.rd {
        return conflict("different RD values");
    }
    if into.import_rts.is_empty() != from.import_rts.is_empty() {
        return conflict("conflicting import route targets: mixing implicit and explicit route targets");
    }
    if into.export_rts.is_empty() != from.export_rts.is_empty() {
        return conflict("conflicting export route targets: mixing implicit and explicit route targets");
    }
    into.rd = into.rd.take().or(from.rd);
    into.import_rts.extend(from.import_rts);
    into.export_rts.extend(from.export_rts);
    Ok(())
}

/// `validateEVPN`, on the merged routers.
fn check_evpn(routers: &BTreeMap<String, Router>) -> Result<(), Error> {
    let mut seen: BTreeMap<u32, String> = BTreeMap::new();
    for (vrf, router) in routers {
        let Some(evpn) = &router.evpn else { continue };
        let scope = |reason| Err(Error::EvpnScope { vrf: vrf.clone(), reason });
        let has_evpn_neighbor = router.neighbors.values().any(|n| n.address_families.contains("evpn"));
        if (evpn.advertise_vnis.as_deref() == Some("All") || !evpn.l2vnis.is_empty()) && !has_evpn_neighbor {
            return scope("advertiseVNIs=All and l2vnis require at least one neighbor with evpn address family");
        }
        if evpn.l3vni.is_some() && !router.neighbors.is_empty() {
            return scope("l3vni can only be configured on routers with no neighbors");
        }
        let vnis = evpn.l2vnis.keys().map(|vni| (*vni, "l2vni")).chain(evpn.l3vni.iter().map(|l3| (l3.vni, "l3vni")));
        for (vni, kind) in vnis {
            let here = format!("{kind} in vrf {vrf:?}");
            if let Some(first) = seen.insert(vni, here.clone()) {
                return Err(Error::DuplicateVni { vni, first, second: here });
            }
        }
    }
    Ok(())
}

/// Appends one line at an indentation level of two spaces (frr-k8s' templates' indentation).
fn line(out: &mut String, depth: usize, text: impl std::fmt::Display) {
    let _ = writeln!(out, "{:width$}{text}", "", width = 2 * depth);
}

/// frr.tmpl: the header, the `vrf` stanzas of the L3VNIs, the routers, the BFD profiles.
fn text(node: &NodeConfig, options: &RenderOptions) -> String {
    let mut out = String::new();
    line(&mut out, 0, "log stdout informational");
    line(&mut out, 0, "log timestamp precision 3");
    line(&mut out, 0, format_args!("hostname {}", options.hostname));
    line(&mut out, 0, "ip nht resolve-via-default");
    line(&mut out, 0, "ipv6 nht resolve-via-default");
    let l3vnis: BTreeMap<&str, u32> = node
        .routers
        .iter()
        .filter(|r| !r.vrf.is_empty())
        .filter_map(|r| Some((r.vrf.as_str(), r.evpn.as_ref()?.l3vni.as_ref()?.vni)))
        .collect();
    let mut vrfs: BTreeSet<&str> = l3vnis.keys().copied().collect();
    if options.vrf_netns_dir.is_some() {
        vrfs.extend(options.bound_vrfs.iter().map(String::as_str));
    }
    for vrf in vrfs {
        out.push('\n');
        line(&mut out, 0, format_args!("vrf {vrf}"));
        if let Some(vni) = l3vnis.get(vrf) {
            line(&mut out, 1, format_args!("vni {vni}"));
        }
        // After the VNI, as the direct-mode agent writes it for FRR 8.4.4.
        if let Some(dir) = &options.vrf_netns_dir {
            line(&mut out, 1, format_args!("netns {}/{vrf}", dir.trim_end_matches('/')));
        }
        line(&mut out, 0, "exit-vrf");
    }
    for router in &node.routers {
        out.push('\n');
        router_text(&mut out, router, options);
    }
    if !node.bfd_profiles.is_empty() {
        out.push('\n');
        line(&mut out, 0, "bfd");
        for profile in &node.bfd_profiles {
            bfd_profile_text(&mut out, profile);
        }
    }
    out
}

fn router_text(out: &mut String, router: &Router, options: &RenderOptions) {
    let vrf = if router.vrf.is_empty() { String::new() } else { format!(" vrf {}", router.vrf) };
    line(out, 0, format_args!("router bgp {}{vrf}", router.asn));
    line(out, 1, "no bgp ebgp-requires-policy");
    line(out, 1, "no bgp network import-check");
    line(out, 1, "no bgp default ipv4-unicast");
    line(out, 1, "bgp graceful-restart preserve-fw-state");
    if let Some(id) = &router.id {
        line(out, 1, format_args!("bgp router-id {id}"));
    }
    for neighbor in router.neighbors.values() {
        session_text(out, neighbor, router.asn);
    }
    // neighboripfamily.tmpl: one block per neighbor and family it carries unicast in.
    for neighbor in router.neighbors.values().filter(|n| n.address_families.contains("unicast")) {
        for (family, name) in [(Family::V4, "ipv4"), (Family::V6, "ipv6")] {
            if neighbor.family != family && neighbor.family != Family::Dual {
                continue;
            }
            line(out, 1, format_args!("address-family {name} unicast"));
            activate_text(out, neighbor, router.asn, options);
            line(out, 1, "exit-address-family");
        }
    }
    for (name, prefixes) in [("ipv4", &router.ipv4_prefixes), ("ipv6", &router.ipv6_prefixes)] {
        if prefixes.is_empty() {
            continue;
        }
        line(out, 1, format_args!("address-family {name} unicast"));
        for prefix in prefixes {
            line(out, 2, format_args!("network {prefix}"));
        }
        line(out, 1, "exit-address-family");
    }
    if let Some(evpn) = &router.evpn {
        evpn_text(out, router, evpn, options);
    }
}

fn activate_text(out: &mut String, neighbor: &Neighbor, router_asn: u32, options: &RenderOptions) {
    line(out, 2, format_args!("neighbor {} activate", neighbor.name()));
    if options.allowas_in_origin && neighbor.is_ebgp(router_asn) {
        line(out, 2, format_args!("neighbor {} allowas-in origin", neighbor.name()));
    }
}

/// neighborsession.tmpl.
fn session_text(out: &mut String, n: &Neighbor, router_asn: u32) {
    let name = n.name();
    match &n.interface {
        Some(interface) => line(out, 1, format_args!("neighbor {interface} interface remote-as {}", n.remote_as)),
        None => line(out, 1, format_args!("neighbor {name} remote-as {}", n.remote_as)),
    }
    if n.ebgp_multihop {
        line(out, 1, format_args!("neighbor {name} ebgp-multihop"));
    }
    if let Some(local_asn) = n.local_asn {
        line(out, 1, format_args!("neighbor {name} local-as {local_asn} no-prepend replace-as"));
    }
    if let Some(port) = n.port {
        line(out, 1, format_args!("neighbor {name} port {port}"));
    }
    if let (Some(keepalive), Some(hold)) = (n.keepalive_time, n.hold_time) {
        line(out, 1, format_args!("neighbor {name} timers {keepalive} {hold}"));
    }
    if let Some(connect) = n.connect_time {
        line(out, 1, format_args!("neighbor {name} timers connect {connect}"));
    }
    if let Some(password) = &n.password {
        line(out, 1, format_args!("neighbor {name} password {password}"));
    }
    if let Some(source) = &n.source_address {
        line(out, 1, format_args!("neighbor {name} update-source {source}"));
    }
    if let Some(profile) = &n.bfd_profile {
        line(out, 1, format_args!("neighbor {name} bfd"));
        line(out, 1, format_args!("neighbor {name} bfd profile {profile}"));
    }
    // Single-hop eBGP over IPv6 (link-local next hops): frr-k8s' mustDisableConnectedCheck.
    if n.family == Family::V6 && !n.ebgp_multihop && n.is_ebgp(router_asn) {
        line(out, 1, format_args!("neighbor {name} disable-connected-check"));
    }
}

/// evpn.tmpl.
fn evpn_text(out: &mut String, router: &Router, evpn: &Evpn, options: &RenderOptions) {
    line(out, 1, "address-family l2vpn evpn");
    for neighbor in router.neighbors.values().filter(|n| n.address_families.contains("evpn")) {
        activate_text(out, neighbor, router.asn, options);
    }
    if evpn.advertise_vnis.as_deref() == Some("All") {
        line(out, 2, "advertise-all-vni");
    }
    // A VNI with nothing to say is left to advertise-all-vni and FRR's derived RD and RTs.
    for (vni, properties) in &evpn.l2vnis {
        if properties == &VniProperties::default() {
            continue;
        }
        line(out, 2, format_args!("vni {vni}"));
        properties_text(out, 3, properties);
        line(out, 2, "exit-vni");
    }
    if let Some(l3vni) = &evpn.l3vni {
        if l3vni.advertise_prefixes.contains("unicast") {
            line(out, 2, "advertise ipv4 unicast");
            line(out, 2, "advertise ipv6 unicast");
        }
        properties_text(out, 2, &l3vni.properties);
    }
    line(out, 1, "exit-address-family");
}

fn properties_text(out: &mut String, depth: usize, properties: &VniProperties) {
    if let Some(rd) = &properties.rd {
        line(out, depth, format_args!("rd {rd}"));
    }
    for rt in &properties.import_rts {
        line(out, depth, format_args!("route-target import {rt}"));
    }
    for rt in &properties.export_rts {
        line(out, depth, format_args!("route-target export {rt}"));
    }
}

/// bfdprofile.tmpl, for the settings our type has.
fn bfd_profile_text(out: &mut String, profile: &FrrBfdProfile) {
    line(out, 1, format_args!("profile {}", profile.name));
    let settings = [
        ("receive-interval", profile.receive_interval),
        ("transmit-interval", profile.transmit_interval),
        ("detect-multiplier", profile.detect_multiplier),
    ];
    for (setting, value) in settings {
        if let Some(value) = value {
            line(out, 2, format_args!("{setting} {value}"));
        }
    }
}

#[cfg(test)]
mod tests;
