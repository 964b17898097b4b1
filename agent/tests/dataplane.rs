//! The netlink data plane against the real kernel, each test in its own scratch network
//! namespaces (made and checked with `ip`, independently of the code under test). Needs root;
//! skips with a message otherwise. Tests that need a kernel feature (VRF devices) skip saying so
//! where it is missing; they run where it exists: the VM lab (`tests/tests/vmlab.rs`) runs this
//! binary on Debian's kernel.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use evpn_agent::dataplane::{ApplyScope, BackendChoice, Dataplane, DataplaneReport};
use evpn_agent::plan::{
    EsiConfig, EthernetSegmentPlan, NetworkPlan, NodePlan, PlanError, SegmentPlan, SviPlan, VtepPlan,
    anycast_gateway_mac, bridge_name, vxlan_name,
};
use evpn_crds::common::RouteTargets;
use evpn_crds::nodestate::VrfBackend;
use evpn_crds::vtep::VtepMode;
use serde_json::Value;

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipping: needs root to create network namespaces and links");
            return;
        }
    };
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("run command");
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Scratch namespaces: the node, and VRF namespaces exposed in a private directory the way
/// the lab exposes them to FRR (a bind mount per VRF). Removed on drop.
struct Lab {
    node: String,
    dir: PathBuf,
    vrfs: Vec<String>,
}

static LABS: AtomicUsize = AtomicUsize::new(0);

impl Lab {
    fn new() -> Lab {
        let node = format!("evdp{}-{}", std::process::id(), LABS.fetch_add(1, Ordering::Relaxed));
        run(&["ip", "netns", "add", &node]);
        let dir = PathBuf::from(format!("/run/evpn-dataplane-test/{node}"));
        std::fs::create_dir_all(&dir).expect("create VRF dir");
        let lab = Lab { node, dir, vrfs: Vec::new() };
        lab.ip(&["link", "set", "lo", "up"]);
        lab
    }

    fn node_path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.node))
    }

    fn netns_backend(&self) -> BackendChoice {
        BackendChoice::Netns { dir: self.dir.clone() }
    }

    async fn dataplane(&self) -> Dataplane {
        Dataplane::new(Some(self.node_path()), self.netns_backend()).await.expect("open the data plane")
    }

    /// Stands in for OVN-Kubernetes: makes the netns of VRF `vrf`.
    fn add_vrf(&mut self, vrf: &str) {
        let ns = self.vrf_ns(vrf);
        run(&["ip", "netns", "add", &ns]);
        let file = self.dir.join(vrf);
        std::fs::write(&file, b"").expect("create mount point");
        run(&["mount", "--bind", &format!("/run/netns/{ns}"), &file.to_string_lossy()]);
        self.vrfs.push(vrf.to_owned());
    }

    fn vrf_ns(&self, vrf: &str) -> String {
        format!("{}-{vrf}", self.node)
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "-n", &self.node];
        full.extend_from_slice(args);
        run(&full)
    }

    fn ip_vrf(&self, vrf: &str, args: &[&str]) -> String {
        let ns = self.vrf_ns(vrf);
        let mut full = vec!["ip", "-n", &ns];
        full.extend_from_slice(args);
        run(&full)
    }

    /// `ip -d -j link show` of `dev` in the node netns (`vrf: None`) or a VRF netns.
    fn link(&self, vrf: Option<&str>, dev: &str) -> Option<Value> {
        let ns = vrf.map_or_else(|| self.node.clone(), |v| self.vrf_ns(v));
        let out = Command::new("ip").args(["-n", &ns, "-d", "-j", "link", "show", "dev", dev]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v.get(0).cloned()
    }

    fn addresses(&self, vrf: Option<&str>, dev: &str) -> Vec<String> {
        let ns = vrf.map_or_else(|| self.node.clone(), |v| self.vrf_ns(v));
        let out = run(&["ip", "-n", &ns, "-j", "addr", "show", "dev", dev]);
        let v: Value = serde_json::from_str(&out).expect("ip -j addr");
        v[0]["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
            .collect()
    }

    fn udp_sockets(&self, ns: &str, port: u16) -> String {
        run(&["ip", "netns", "exec", ns, "ss", "-Hunl", &format!("sport = :{port}")])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for vrf in &self.vrfs {
            let file = self.dir.join(vrf);
            let _ = Command::new("umount").arg(&file).status();
            let _ = Command::new("ip").args(["netns", "del", &self.vrf_ns(vrf)]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = Command::new("ip").args(["netns", "del", &self.node]).status();
    }
}

fn vtep(ip: &str) -> VtepPlan {
    VtepPlan {
        name: "fabric".into(),
        mode: VtepMode::Managed,
        ip: Some(ip.parse().expect("test VTEP address")),
        cidrs: vec!["198.18.0.0/24".into()],
        udp_port: 4789,
        mtu: Some(9000),
        bgp: None,
    }
}

fn segment(vni: u32) -> SegmentPlan {
    SegmentPlan {
        vni,
        bridge: bridge_name(vni),
        vxlan: vxlan_name(vni),
        route_targets: RouteTargets::default(),
        rd_index: 1,
    }
}

fn l2(evpn: &str, vni: u32) -> NetworkPlan {
    NetworkPlan {
        evpn: evpn.into(),
        generation: 1,
        vrf: evpn.into(),
        mac_vrf: Some(segment(vni)),
        ip_vrf: None,
        svi: None,
        ethernet_segments: Vec::new(),
    }
}

fn irb(evpn: &str, vrf: &str, mac_vni: u32, ip_vni: u32, gateways: &[&str]) -> NetworkPlan {
    NetworkPlan {
        evpn: evpn.into(),
        generation: 1,
        vrf: vrf.into(),
        mac_vrf: Some(segment(mac_vni)),
        ip_vrf: Some(segment(ip_vni)),
        svi: Some(SviPlan {
            addresses: gateways.iter().map(|g| (*g).to_owned()).collect(),
            mac: anycast_gateway_mac(ip_vni),
        }),
        ethernet_segments: Vec::new(),
    }
}

fn l3(evpn: &str, vrf: &str, ip_vni: u32) -> NetworkPlan {
    NetworkPlan {
        evpn: evpn.into(),
        generation: 1,
        vrf: vrf.into(),
        mac_vrf: None,
        ip_vrf: Some(segment(ip_vni)),
        svi: None,
        ethernet_segments: Vec::new(),
    }
}

fn node_plan(networks: Vec<NetworkPlan>) -> NodePlan {
    NodePlan { vtep: Some(vtep("198.18.0.1")), networks, rejected: Vec::new() }
}

fn assert_all_ok(report: &DataplaneReport) {
    assert!(report.vtep.as_ref().is_some_and(Result::is_ok), "VTEP: {:?}", report.vtep);
    for (evpn, r) in &report.networks {
        assert!(r.is_ok(), "{evpn}: {r:?}");
    }
    assert!(report.removals.is_empty(), "removals: {:?}", report.removals);
}

fn is_up(link: &Value) -> bool {
    link["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "UP"))
}

/// Checks a VXLAN device the way the lab's recipe builds it.
fn assert_vxlan(link: &Value, vni: u32, bridge: &str, owner: &str) {
    let info = &link["linkinfo"];
    assert_eq!(info["info_kind"], "vxlan");
    assert_eq!(info["info_data"]["id"], vni);
    assert_eq!(info["info_data"]["local"], "198.18.0.1");
    assert_eq!(info["info_data"]["port"], 4789);
    assert_eq!(info["info_data"]["learning"], false);
    assert_eq!(info["info_slave_kind"], "bridge");
    assert_eq!(info["info_slave_data"]["learning"], false);
    assert_eq!(info["info_slave_data"]["neigh_suppress"], true);
    assert_eq!(link["master"], bridge);
    assert_eq!(link["ifalias"], owner);
    assert_eq!(link["mtu"], 8950, "VTEP MTU 9000 minus the IPv4 VXLAN overhead");
    assert!(is_up(link), "{} is down", link["ifname"]);
}

fn assert_bridge(link: &Value, owner: &str) {
    let info = &link["linkinfo"];
    assert_eq!(info["info_kind"], "bridge");
    assert_eq!(info["info_data"]["stp_state"], 0);
    assert_eq!(info["info_data"]["mcast_snooping"], 0);
    assert_eq!(link["ifalias"], owner);
    assert!(is_up(link), "{} is down", link["ifname"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l2_network_gets_bridge_and_vxlan_and_a_second_apply_changes_nothing() {
    require_root!();
    let lab = Lab::new();
    let mut dp = lab.dataplane().await;
    let plan = node_plan(vec![l2("blue", 100)]);

    let report = dp.apply(&plan).await;
    assert_all_ok(&report);
    assert!(report.changes > 0);
    let vtep = report.vtep.as_ref().unwrap().as_ref().unwrap();
    assert_eq!(vtep.ip, "198.18.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(vtep.device, vtep_device(&lab));

    assert_bridge(&lab.link(None, "evb100").expect("bridge in the node netns"), "evpn-agent:blue");
    assert_vxlan(&lab.link(None, "evx100").expect("vxlan in the node netns"), 100, "evb100", "evpn-agent:blue");

    let again = dp.apply(&plan).await;
    assert_all_ok(&again);
    assert_eq!(again.changes, 0, "a second apply of the same plan must not touch the kernel");

    // Drift is repaired with one request per device, whoever caused it.
    lab.ip(&["link", "set", "evb100", "down", "type", "bridge", "mcast_snooping", "1"]);
    lab.ip(&["link", "set", "evx100", "type", "bridge_slave", "learning", "on", "neigh_suppress", "off"]);
    let report = dp.apply(&plan).await;
    assert_all_ok(&report);
    assert_eq!(report.changes, 2);
    assert_bridge(&lab.link(None, "evb100").expect("bridge"), "evpn-agent:blue");
    assert_vxlan(&lab.link(None, "evx100").expect("vxlan"), 100, "evb100", "evpn-agent:blue");

    // A fresh agent (after a restart) sees the same state as done, too.
    let mut restarted = lab.dataplane().await;
    assert_eq!(restarted.apply(&plan).await.changes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_backend_puts_irb_and_l3_bridges_in_the_vrf_netns() {
    require_root!();
    let mut lab = Lab::new();
    lab.add_vrf("red");
    lab.add_vrf("green");
    let mut dp = lab.dataplane().await;
    assert_eq!(dp.backend(), VrfBackend::NetnsVrf);
    let plan = node_plan(vec![
        irb("purple", "red", 300, 4000, &["10.30.0.1/24", "fd00:30::1/64"]),
        l3("green", "green", 5000),
    ]);

    let report = dp.apply(&plan).await;
    assert_all_ok(&report);

    for dev in ["evb300", "evx300", "evb4000", "evx4000", "evb5000", "evx5000"] {
        assert!(lab.link(None, dev).is_none(), "{dev} must not stay in the node netns");
    }
    let svi = lab.link(Some("red"), "evb300").expect("IRB bridge in VRF red");
    assert_bridge(&svi, "evpn-agent:purple");
    assert_eq!(svi["address"], "02:65:76:00:0f:a0", "anycast gateway MAC of IP-VNI 4000");
    let mut addrs = lab.addresses(Some("red"), "evb300");
    addrs.retain(|a| !a.starts_with("fe80:"));
    addrs.sort();
    assert_eq!(addrs, ["10.30.0.1/24", "fd00:30::1/64"]);

    for (vrf, vni, owner) in [("red", 300, "purple"), ("red", 4000, "purple"), ("green", 5000, "green")] {
        let owner = format!("evpn-agent:{owner}");
        assert_bridge(&lab.link(Some(vrf), &format!("evb{vni}")).expect("bridge"), &owner);
        let vx = lab.link(Some(vrf), &format!("evx{vni}")).expect("vxlan in the VRF netns");
        assert_vxlan(&vx, vni, &format!("evb{vni}"), &owner);
        assert!(vx.get("link_netnsid").is_some(), "evx{vni}'s UDP socket must be in another netns: {vx}");
        // `ip -d link` names the peer namespace the way the lab recipe expects.
        let shown = lab.ip_vrf(vrf, &["-d", "link", "show", "dev", &format!("evx{vni}")]);
        assert!(shown.contains("link-netns"), "{shown}");
    }
    assert!(!lab.udp_sockets(&lab.node, 4789).is_empty(), "the VXLAN UDP socket lives in the node netns");
    assert!(lab.udp_sockets(&lab.vrf_ns("red"), 4789).is_empty(), "no VXLAN socket inside the VRF");

    assert_eq!(dp.apply(&plan).await.changes, 0);

    // A stale SVI address goes; the planned ones stay.
    lab.ip_vrf("red", &["addr", "add", "10.99.0.1/24", "dev", "evb300"]);
    let report = dp.apply(&plan).await;
    assert_all_ok(&report);
    assert_eq!(report.changes, 1);
    assert!(!lab.addresses(Some("red"), "evb300").contains(&"10.99.0.1/24".to_owned()));

    // The IRB network leaves: its devices go from the VRF netns, the other network's stay.
    let report = dp.apply(&node_plan(vec![l3("green", "green", 5000)])).await;
    assert_all_ok(&report);
    for dev in ["evb300", "evx300", "evb4000", "evx4000"] {
        assert!(lab.link(Some("red"), dev).is_none(), "{dev} must be removed");
    }
    assert!(lab.link(Some("green"), "evx5000").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_vrf_netns_or_overlong_name_fails_only_that_network() {
    require_root!();
    let lab = Lab::new();
    let mut dp = lab.dataplane().await;
    let long = "x".repeat(250);
    let report = dp.apply(&node_plan(vec![l3("lost", "nowhere", 6000), l2("blue", 100), l2(&long, 300)])).await;

    assert_eq!(report.networks[&long].as_ref().unwrap_err().reason(), "NetworkNameTooLong");
    assert!(lab.link(None, "evb300").is_none(), "nothing is made that could not be marked");

    let lost = report.networks["lost"].as_ref().expect_err("VRF nowhere does not exist");
    assert_eq!(lost.reason(), "VrfNotFound");
    assert!(lost.to_string().contains("nowhere"), "{lost}");
    assert!(report.networks["blue"].is_ok(), "{:?}", report.networks["blue"]);
    assert!(lab.link(None, "evx100").is_some());
    assert!(lab.link(None, "evx6000").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_network_deletes_only_its_devices() {
    require_root!();
    let lab = Lab::new();
    // Devices the agent did not make: one with a name it would use, one with a foreign alias.
    lab.ip(&["link", "add", "evb999", "type", "bridge"]);
    lab.ip(&["link", "add", "admin-br", "type", "bridge"]);
    lab.ip(&["link", "set", "admin-br", "alias", "made by hand"]);
    let mut dp = lab.dataplane().await;

    assert_all_ok(&dp.apply(&node_plan(vec![l2("blue", 100), l2("red", 200)])).await);
    assert!(lab.link(None, "evx200").is_some());

    let report = dp.apply(&node_plan(vec![l2("blue", 100)])).await;
    assert_all_ok(&report);
    assert_eq!(report.changes, 2, "exactly red's bridge and VXLAN are deleted");
    assert!(lab.link(None, "evb200").is_none());
    assert!(lab.link(None, "evx200").is_none());
    assert!(lab.link(None, "evx100").is_some());
    assert!(lab.link(None, "evb999").is_some(), "a bridge without our alias survives");
    assert!(lab.link(None, "admin-br").is_some(), "a bridge with a foreign alias survives");

    // A network the plan rejects (say its VNI clashes) keeps its devices untouched.
    let mut with_rejected = node_plan(vec![l2("blue", 100)]);
    with_rejected.networks.push(l2("red", 200));
    assert_all_ok(&dp.apply(&with_rejected).await);
    with_rejected.networks.pop();
    with_rejected.rejected.push(("red".into(), PlanError::VtepNotFound("elsewhere".into())));
    let report = dp.apply(&with_rejected).await;
    assert_eq!(report.changes, 0);
    assert!(!report.networks.contains_key("red"), "rejected networks are the caller's to report");
    assert!(lab.link(None, "evx200").is_some());

    // Nothing planned at all: every device of ours goes, the foreign ones stay.
    let report = dp.apply(&node_plan(Vec::new())).await;
    assert_eq!(report.changes, 4);
    assert!(lab.link(None, "evb100").is_none());
    assert!(lab.link(None, "evb999").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_device_with_a_planned_name_fails_the_network_and_survives() {
    require_root!();
    let lab = Lab::new();
    // Same name, wrong kind: it cannot be adopted.
    lab.ip(&["link", "add", "evb100", "type", "veth", "peer", "name", "peer100"]);
    let mut dp = lab.dataplane().await;
    let report = dp.apply(&node_plan(vec![l2("blue", 100), l2("red", 200)])).await;
    let blue = report.networks["blue"].as_ref().expect_err("evb100 is not ours");
    assert_eq!(blue.reason(), "DeviceConflict");
    assert!(report.networks["red"].is_ok());
    assert_eq!(lab.link(None, "evb100").expect("survives")["linkinfo"]["info_kind"], "veth");

    // An unmarked bridge that is exactly what the plan asks for (left by an apply interrupted
    // before marking it) is adopted rather than refused.
    lab.ip(&["link", "add", "evb300", "type", "bridge", "stp_state", "0", "mcast_snooping", "0"]);
    let report = dp.apply(&node_plan(vec![l2("green", 300)])).await;
    assert_all_ok(&report);
    assert_bridge(&lab.link(None, "evb300").expect("adopted"), "evpn-agent:green");
}

fn multihomed(evpn: &str, vni: u32, interfaces: &[&str]) -> NetworkPlan {
    let mut n = l2(evpn, vni);
    n.ethernet_segments = interfaces
        .iter()
        .map(|i| EthernetSegmentPlan {
            name: format!("to-{i}"),
            interface: (*i).to_owned(),
            esi: "00:11:22:33:44:55:66:77:88:99".into(),
            esi_config: EsiConfig::Type0,
            df_preference: None,
        })
        .collect();
    n
}

fn master(lab: &Lab, dev: &str) -> Option<String> {
    lab.link(None, dev).expect("the interface exists")["master"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_interfaces_join_the_bridge_and_are_released_not_deleted() {
    require_root!();
    let lab = Lab::new();
    let mut dp = lab.dataplane().await;
    let plan = |interfaces: &[&str]| node_plan(vec![multihomed("blue", 100, interfaces), l2("red", 200)]);

    let report = dp.apply(&plan(&["bond1"])).await;
    let blue = report.networks["blue"].as_ref().expect_err("bond1 does not exist yet");
    assert_eq!(blue.reason(), "SegmentInterfaceNotFound");
    assert!(blue.to_string().contains("bond1"), "{blue}");
    assert!(report.networks["red"].is_ok());

    // The admin's interfaces appear (veths stand in for bonds, which this kernel may lack).
    lab.ip(&["link", "add", "bond1", "type", "veth", "peer", "name", "bond1-peer"]);
    lab.ip(&["link", "add", "bond2", "type", "veth", "peer", "name", "bond2-peer"]);
    let report = dp.apply_scoped(&plan(&["bond1", "bond2"]), ApplyScope::Changes).await;
    assert_all_ok(&report);
    assert_eq!(master(&lab, "bond1").as_deref(), Some("evb100"));
    assert_eq!(master(&lab, "bond2").as_deref(), Some("evb100"));
    assert_eq!(dp.apply(&plan(&["bond1", "bond2"])).await.changes, 0);

    let report = dp.apply_scoped(&plan(&["bond2"]), ApplyScope::Changes).await;
    assert_all_ok(&report);
    assert_eq!(report.changes, 1, "only bond1 leaves the bridge");
    assert_eq!(master(&lab, "bond1"), None);
    assert_eq!(master(&lab, "bond2").as_deref(), Some("evb100"));

    // Removing the network deletes its bridge, never the interface the bridge had as a port.
    let report = dp.apply(&node_plan(vec![l2("red", 200)])).await;
    assert_all_ok(&report);
    assert!(lab.link(None, "evb100").is_none());
    assert_eq!(master(&lab, "bond2"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uplinks_are_the_interfaces_of_the_routes_to_the_neighbors() {
    require_root!();
    let lab = Lab::new();
    lab.ip(&["link", "add", "uplink0", "type", "veth", "peer", "name", "uplink0-peer"]);
    lab.ip(&["link", "set", "uplink0", "up"]);
    lab.ip(&["link", "set", "uplink0-peer", "up"]);
    lab.ip(&["addr", "add", "192.0.2.1/31", "dev", "uplink0"]);
    lab.ip(&["route", "add", "203.0.113.0/24", "via", "192.0.2.0"]);
    let dp = lab.dataplane().await;
    let neighbors: Vec<IpAddr> =
        ["192.0.2.0", "203.0.113.9", "198.51.100.1"].iter().map(|a| a.parse().unwrap()).collect();
    let uplinks = dp.route_interfaces(&neighbors).await.expect("route lookups");
    let uplinks: Vec<(String, String)> = uplinks.into_iter().map(|(a, i)| (a.to_string(), i)).collect();
    assert_eq!(
        uplinks,
        [("192.0.2.0".to_owned(), "uplink0".to_owned()), ("203.0.113.9".to_owned(), "uplink0".to_owned())],
        "no route, no uplink"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l2_network_turned_irb_moves_into_the_vrf_and_back() {
    require_root!();
    let mut lab = Lab::new();
    lab.add_vrf("red");
    let mut dp = lab.dataplane().await;

    assert_all_ok(&dp.apply(&node_plan(vec![l2("blue", 100)])).await);
    assert!(lab.link(None, "evb100").is_some());

    let irb_plan = node_plan(vec![irb("blue", "red", 100, 4000, &["10.10.0.1/24"])]);
    assert_all_ok(&dp.apply(&irb_plan).await);
    assert!(lab.link(None, "evb100").is_none());
    assert!(lab.link(None, "evx100").is_none());
    assert_bridge(&lab.link(Some("red"), "evb100").expect("moved bridge"), "evpn-agent:blue");
    assert_vxlan(&lab.link(Some("red"), "evx100").expect("moved vxlan"), 100, "evb100", "evpn-agent:blue");
    assert_eq!(lab.addresses(Some("red"), "evb100").first().map(String::as_str), Some("10.10.0.1/24"));
    assert_eq!(dp.apply(&irb_plan).await.changes, 0);

    assert_all_ok(&dp.apply(&node_plan(vec![l2("blue", 100)])).await);
    assert!(lab.link(Some("red"), "evb100").is_none());
    assert!(lab.link(Some("red"), "evb4000").is_none());
    assert_vxlan(&lab.link(None, "evx100").expect("back in the node"), 100, "evb100", "evpn-agent:blue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vxlan_with_another_port_is_recreated() {
    require_root!();
    let lab = Lab::new();
    let mut dp = lab.dataplane().await;
    let mut plan = node_plan(vec![l2("blue", 100)]);
    assert_all_ok(&dp.apply(&plan).await);
    let before = lab.link(None, "evx100").unwrap()["ifindex"].clone();

    plan.vtep.as_mut().unwrap().udp_port = 4790;
    let report = dp.apply(&plan).await;
    assert_all_ok(&report);
    let after = lab.link(None, "evx100").unwrap();
    assert_eq!(after["linkinfo"]["info_data"]["port"], 4790);
    assert_ne!(after["ifindex"], before, "the port is fixed at creation: a new device");
    assert_eq!(after["master"], "evb100");
    assert_eq!(after["linkinfo"]["info_slave_data"]["neigh_suppress"], true);
    assert_eq!(dp.apply(&plan).await.changes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_vtep_address_replaces_only_our_old_one() {
    require_root!();
    let lab = Lab::new();
    // lo where the kernel has no dummy devices (as here), else the agent's dummy, made up front
    // to hold the older addresses.
    let dev = vtep_device(&lab);
    if dev != "lo" {
        lab.ip(&["link", "add", dev, "up", "type", "dummy"]);
    }
    lab.ip(&["addr", "add", "198.18.0.9/32", "dev", dev]); // an earlier VTEP address
    lab.ip(&["addr", "add", "198.18.0.10/24", "dev", dev]); // in the CIDRs, but not a VTEP address
    lab.ip(&["addr", "add", "10.0.0.5/32", "dev", dev]); // not in the VTEP CIDRs
    let mut dp = lab.dataplane().await;
    let plan = NodePlan { vtep: Some(vtep("198.18.0.1")), networks: Vec::new(), rejected: Vec::new() };

    let report = dp.apply(&plan).await;
    let status = report.vtep.unwrap().unwrap();
    assert_eq!((status.ip.to_string().as_str(), status.device.as_str()), ("198.18.0.1", dev));
    let addrs = lab.addresses(None, dev);
    assert!(addrs.contains(&"198.18.0.1/32".to_owned()), "{addrs:?}");
    assert!(!addrs.contains(&"198.18.0.9/32".to_owned()), "{addrs:?}");
    assert!(addrs.contains(&"198.18.0.10/24".to_owned()), "{addrs:?}");
    assert!(addrs.contains(&"10.0.0.5/32".to_owned()), "{addrs:?}");
    assert_eq!(dp.apply(&plan).await.changes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmanaged_vtep_address_is_discovered_or_reported_missing() {
    require_root!();
    let lab = Lab::new();
    let mut dp = lab.dataplane().await;
    let mut v = vtep("198.18.0.1");
    v.mode = VtepMode::Unmanaged;
    v.ip = None;
    let plan = NodePlan { vtep: Some(v), networks: vec![l2("blue", 100)], rejected: Vec::new() };

    let report = dp.apply(&plan).await;
    let err = report.vtep.unwrap().unwrap_err();
    assert_eq!(err.reason(), "VtepAddressNotFound");
    assert_eq!(report.networks["blue"].as_ref().unwrap_err().reason(), "VtepUnavailable");
    assert!(lab.link(None, "evx100").is_none());

    lab.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth1"]);
    lab.ip(&["addr", "add", "198.18.0.7/24", "dev", "eth0"]);
    let report = dp.apply(&plan).await;
    let status = report.vtep.unwrap().unwrap();
    assert_eq!((status.ip.to_string().as_str(), status.device.as_str()), ("198.18.0.7", "eth0"));
    let vx = lab.link(None, "evx100").expect("built with the discovered address");
    assert_eq!(vx["linkinfo"]["info_data"]["local"], "198.18.0.7");
}

/// Whether this kernel can make a link of `kind`, checked with `ip` in the lab's netns.
fn kernel_has(lab: &Lab, kind: &str) -> bool {
    let name = format!("check-{kind}");
    let mut args = vec!["-n", &lab.node, "link", "add", &name, "type", kind];
    if kind == "vrf" {
        args.extend(["table", "10"]);
    }
    let made = Command::new("ip").args(&args).output().is_ok_and(|o| o.status.success());
    if made {
        lab.ip(&["link", "del", &name]);
    }
    made
}

/// The device a Managed VTEP address goes on with this kernel.
fn vtep_device(lab: &Lab) -> &'static str {
    if kernel_has(lab, "dummy") { "evpn-vtep" } else { "lo" }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_backend_follows_kernel_vrf_support() {
    require_root!();
    let lab = Lab::new();
    let has_vrf = kernel_has(&lab, "vrf");
    let dp = Dataplane::new(Some(lab.node_path()), BackendChoice::Auto).await.expect("probe");
    let want = if has_vrf { VrfBackend::KernelVrf } else { VrfBackend::NetnsVrf };
    assert_eq!(dp.backend(), want);
    assert!(lab.link(None, "evpn-vrfprobe").is_none(), "the probe device is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_backend_enslaves_vrf_bridges_to_the_vrf_device() {
    require_root!();
    let lab = Lab::new();
    if !kernel_has(&lab, "vrf") {
        eprintln!(
            "skipping: this kernel cannot create VRF devices (no CONFIG_NET_VRF); the kernel backend is untestable here"
        );
        return;
    }
    lab.ip(&["link", "add", "red", "type", "vrf", "table", "100"]);
    let mut dp = Dataplane::new(Some(lab.node_path()), BackendChoice::Kernel).await.expect("open");
    assert_eq!(dp.backend(), VrfBackend::KernelVrf);
    let plan = node_plan(vec![irb("purple", "red", 300, 4000, &["10.30.0.1/24"]), l3("lost", "nowhere", 5000)]);
    let report = dp.apply(&plan).await;
    assert!(report.networks["purple"].is_ok(), "{:?}", report.networks["purple"]);
    assert_eq!(report.networks["lost"].as_ref().unwrap_err().reason(), "VrfNotFound");
    for (bridge, vxlan, vni) in [("evb300", "evx300", 300), ("evb4000", "evx4000", 4000)] {
        let b = lab.link(None, bridge).expect("bridge in the node netns");
        assert_eq!(b["master"], "red");
        assert_vxlan(&lab.link(None, vxlan).expect("vxlan"), vni, bridge, "evpn-agent:purple");
    }
    assert_eq!(lab.addresses(None, "evb300").first().map(String::as_str), Some("10.30.0.1/24"));
    assert_eq!(dp.apply(&plan).await.changes, 0);

    // A targeted apply reads the VRF device by name: the missing one is found once it is made.
    lab.ip(&["link", "add", "nowhere", "type", "vrf", "table", "200"]);
    let report = dp.apply_scoped(&plan, ApplyScope::Changes).await;
    assert_all_ok(&report);
    assert_eq!(lab.link(None, "evb5000").expect("bridge in the node netns")["master"], "nowhere");
    assert_eq!(dp.apply_scoped(&plan, ApplyScope::Changes).await.changes, 0);

    // IRB turned L2: the same bridge leaves the VRF, the IP-VRF's devices go.
    let report = dp.apply(&node_plan(vec![l2("purple", 300)])).await;
    assert_all_ok(&report);
    assert!(lab.link(None, "evb300").expect("kept")["master"].is_null());
    assert!(lab.link(None, "evb4000").is_none());
    eprintln!("kernel VRF backend verified on this kernel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_l2_networks_timing() {
    require_root!();
    let lab = Lab::new();
    let mut dp = lab.dataplane().await;
    let mut plan = node_plan((0..1000).map(|i| l2(&format!("net{i}"), 10_000 + i)).collect());

    let t = Instant::now();
    let report = dp.apply(&plan).await;
    let initial = t.elapsed();
    assert_all_ok(&report);
    let created = report.changes;

    let t = Instant::now();
    let report = dp.apply(&plan).await;
    let noop = t.elapsed();
    assert_eq!(report.changes, 0);

    plan.networks[500] = l2("net500", 20_500);
    let t = Instant::now();
    let report = dp.apply(&plan).await;
    let one_vni = t.elapsed();
    assert_all_ok(&report);
    assert!(lab.link(None, "evx10500").is_none());
    assert!(lab.link(None, "evx20500").is_some());
    let changed = report.changes;
    assert_eq!(changed, 6, "two deletions, then bridge, its mark, VXLAN, its port flags and mark");

    // The same change as a targeted apply, which reads only the devices of the changed network.
    plan.networks[501] = l2("net501", 20_501);
    let t = Instant::now();
    let report = dp.apply_scoped(&plan, ApplyScope::Changes).await;
    let one_vni_targeted = t.elapsed();
    assert_all_ok(&report);
    assert_eq!(report.changes, 6);
    assert_eq!(report.networks.len(), 1000);
    assert!(lab.link(None, "evx20501").is_some());
    let t = Instant::now();
    assert_eq!(dp.apply_scoped(&plan, ApplyScope::Changes).await.changes, 0);
    let noop_targeted = t.elapsed();

    eprintln!(
        "1,000 L2 networks: initial apply {initial:?} ({created} changes), \
         unchanged re-apply {noop:?} (0 changes), one VNI changed {one_vni:?} ({changed} changes); \
         targeted: one VNI changed {one_vni_targeted:?}, unchanged {noop_targeted:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_apply_touches_only_the_networks_that_changed() {
    require_root!();
    let mut lab = Lab::new();
    lab.add_vrf("vrf1");
    let mut dp = lab.dataplane().await;
    let mut networks: Vec<NetworkPlan> = (0..20).map(|i| l2(&format!("net{i}"), 100 + i)).collect();
    networks.push(irb("tenant", "vrf1", 5000, 6000, &["10.0.0.1/24"]));
    let mut plan = node_plan(networks);
    // The first apply has nothing to compare with: it runs in full.
    assert_all_ok(&dp.apply_scoped(&plan, ApplyScope::Changes).await);
    let changes = dp.apply_scoped(&plan, ApplyScope::Changes).await;
    assert_all_ok(&changes);
    assert_eq!(changes.changes, 0);
    assert_eq!(changes.networks.len(), 21, "untouched networks are reported too");

    // Added: its bridge, the bridge's mark, its VXLAN device, the port flags with the mark.
    plan.networks.push(l2("added", 300));
    let report = dp.apply_scoped(&plan, ApplyScope::Changes).await;
    assert_all_ok(&report);
    assert_eq!(report.changes, 4);
    assert_bridge(&lab.link(None, "evb300").expect("bridge"), "evpn-agent:added");
    assert_vxlan(&lab.link(None, "evx300").expect("vxlan"), 300, "evb300", "evpn-agent:added");

    // Changed VNI: the old pair is deleted and the new one made.
    plan.networks[5] = l2("net5", 405);
    let report = dp.apply_scoped(&plan, ApplyScope::Changes).await;
    assert_all_ok(&report);
    assert_eq!(report.changes, 6);
    assert!(lab.link(None, "evx105").is_none() && lab.link(None, "evb105").is_none());
    assert_vxlan(&lab.link(None, "evx405").expect("vxlan"), 405, "evb405", "evpn-agent:net5");

    // Changed SVI address: one address out, one in, nothing else.
    plan.networks[20] = irb("tenant", "vrf1", 5000, 6000, &["10.0.1.1/24"]);
    let report = dp.apply_scoped(&plan, ApplyScope::Changes).await;
    assert_all_ok(&report);
    assert_eq!(report.changes, 2);
    let addrs = lab.addresses(Some("vrf1"), "evb5000");
    assert!(addrs.contains(&"10.0.1.1/24".to_owned()) && !addrs.contains(&"10.0.0.1/24".to_owned()), "{addrs:?}");

    // Moved from the node into a VRF namespace: deleted there, made again here.
    // And a network gone from the VRF namespace whose VNI a new one takes in the node's.
    plan.networks[7] = irb("net7", "vrf1", 107, 6007, &["10.7.0.1/24"]);
    plan.networks[20] = l2("tenant-l2", 5000);
    let report = dp.apply_scoped(&plan, ApplyScope::Changes).await;
    assert_all_ok(&report);
    assert!(lab.link(None, "evb107").is_none() && lab.link(None, "evx107").is_none());
    assert_vxlan(&lab.link(Some("vrf1"), "evx107").expect("vxlan moved"), 107, "evb107", "evpn-agent:net7");
    assert_vxlan(&lab.link(Some("vrf1"), "evx6007").expect("IP-VRF vxlan"), 6007, "evb6007", "evpn-agent:net7");
    assert!(lab.addresses(Some("vrf1"), "evb107").contains(&"10.7.0.1/24".to_owned()));
    for dev in ["evb5000", "evx5000", "evb6000", "evx6000"] {
        assert!(lab.link(Some("vrf1"), dev).is_none(), "the departed tenant's {dev} is left in the VRF");
    }
    assert_vxlan(&lab.link(None, "evx5000").expect("new network"), 5000, "evb5000", "evpn-agent:tenant-l2");

    // Removed: only its devices that still carry its mark go.
    lab.ip(&["link", "set", "evx110", "alias", "made by hand"]);
    let gone = plan.networks.remove(10);
    assert_eq!(gone.evpn, "net10");
    let report = dp.apply_scoped(&plan, ApplyScope::Changes).await;
    assert_all_ok(&report);
    assert_eq!(report.changes, 1);
    assert!(lab.link(None, "evb110").is_none());
    assert!(lab.link(None, "evx110").is_some(), "a device that lost our mark survives");
    assert!(!report.networks.contains_key("net10"));

    // Nothing more to do, by either kind of apply.
    assert_eq!(dp.apply_scoped(&plan, ApplyScope::Changes).await.changes, 0);
    let full = dp.apply(&plan).await;
    assert_all_ok(&full);
    assert_eq!(full.changes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_repaired_by_a_full_apply_not_by_a_changes_apply() {
    require_root!();
    let lab = Lab::new();
    let mut dp = lab.dataplane().await;
    let mut plan = node_plan((0..10).map(|i| l2(&format!("net{i}"), 100 + i)).collect());
    assert_all_ok(&dp.apply(&plan).await);

    lab.ip(&["link", "del", "evx105"]);
    plan.networks.push(l2("added", 300));
    let report = dp.apply_scoped(&plan, ApplyScope::Changes).await;
    assert_all_ok(&report);
    assert_eq!(report.changes, 4, "only the added network is looked at");
    assert!(lab.link(None, "evx105").is_none(), "net5 is not read, so its loss goes unseen");
    assert!(lab.link(None, "evx300").is_some());

    let report = dp.apply_scoped(&plan, ApplyScope::Full).await;
    assert_all_ok(&report);
    assert_eq!(report.changes, 2, "the VXLAN device and its port flags");
    assert_vxlan(&lab.link(None, "evx105").expect("repaired"), 105, "evb105", "evpn-agent:net5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_apply_retries_a_network_until_its_vrf_appears() {
    require_root!();
    let mut lab = Lab::new();
    let mut dp = lab.dataplane().await;
    let plan = node_plan(vec![l2("blue", 100), l3("late", "vrf9", 6000)]);
    let report = dp.apply(&plan).await;
    assert_eq!(report.networks["late"].as_ref().map_err(|e| e.reason()), Err("VrfNotFound"));
    assert!(report.networks["blue"].is_ok());

    let report = dp.apply_scoped(&plan, ApplyScope::Changes).await;
    assert_eq!(report.networks["late"].as_ref().map_err(|e| e.reason()), Err("VrfNotFound"));
    assert!(report.networks["blue"].is_ok());
    assert_eq!(report.changes, 0);

    lab.add_vrf("vrf9");
    let report = dp.apply_scoped(&plan, ApplyScope::Changes).await;
    assert_all_ok(&report);
    assert_eq!(report.changes, 4);
    assert_vxlan(&lab.link(Some("vrf9"), "evx6000").expect("vxlan"), 6000, "evb6000", "evpn-agent:late");
    assert_eq!(dp.apply_scoped(&plan, ApplyScope::Changes).await.changes, 0);
}

/// The agent runs applies on tokio tasks, so the data plane and its futures must be `Send`.
#[test]
fn apply_can_run_on_a_tokio_task() {
    fn send<T: Send>(_: &T) {}
    fn check(dp: &mut Dataplane, plan: &NodePlan) {
        send(&Dataplane::new(None, BackendChoice::Auto));
        send(&dp.apply(plan));
    }
    let _ = check;
}

/// A VTEP whose BGP belongs to frr-k8s: the agent builds the devices and reports them applied,
/// but must not touch FRR (a reload of its partial configuration would wipe what frr-k8s wrote);
/// frr-k8s' own report completes the node's readiness on the operator's side.
#[tokio::test]
async fn an_frr_k8s_vtep_gets_its_devices_and_frr_is_left_to_frr_k8s() {
    require_root!();
    let lab = Lab::new();
    let spec: evpn_crds::nodestate::DesiredNode = serde_json::from_value(serde_json::json!({
        "vteps": [{"name": "fabric", "mode": "Managed", "ip": "198.18.0.9", "cidrs": ["198.18.0.0/24"], "udpPort": 4789}],
        "networks": [{"evpn": "blue", "generation": 1, "revision": 1, "vtep": "fabric", "vrf": "blue",
            "network": {"kind": "ClusterUserDefinedNetwork", "name": "blue"},
            "macVRF": {"vni": 10100, "routeTargets": {}, "routeDistinguisherIndex": 1}}]
    }))
    .expect("a node spec");
    let render = evpn_agent::frr::RenderOptions {
        hostname: "n".into(),
        vrf_backend: VrfBackend::NetnsVrf,
        vrf_netns_dir: "/run/netns".into(),
        passwords: Default::default(),
        uplinks: Default::default(),
    };
    // No FRR runs under this pathspace: any attempt to drive it would fail differently.
    let frr = evpn_agent::frr::Frr::new(Some(format!("{}-absent", lab.node)));
    let mut agent =
        evpn_agent::reconcile::Agent::new("n".into(), lab.dataplane().await, frr, render, std::time::Duration::ZERO);
    let observed = agent.reconcile(&spec, Some(1), ApplyScope::Full).await;

    assert!(lab.link(None, &bridge_name(10100)).is_some(), "the data plane is still built");
    match &observed.networks[..] {
        [(evpn, evpn_agent::report::Outcome::Applied { generation: 1 })] => assert_eq!(evpn, "blue"),
        other => panic!("expected one applied network, got {other:?}"),
    }
    assert_eq!(observed.agent.map(|a| a.frr_driver), Some(evpn_crds::nodestate::FrrDriver::FrrK8s));
    assert!(agent.frr.baseline().is_none(), "FRR was never synced");
}
