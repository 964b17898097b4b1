//! The leaf switch of `hack/lab.sh leaf`: a VTEP outside the cluster, configured by hand as a
//! network engineer would, with "legacy" hosts and VMs behind it. Shared by the stories suite
//! (`tests/stories.rs`) and the migration benchmark (`benches/migration.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a fixture that cannot build its input should panic")]

use std::time::Duration;

use evpn_agent::plan::anycast_gateway_mac;
use evpn_crds::validation::colon_hex;
use serde_json::{Value, json};

use crate::lab::{Fabric, MacRoute, NODES, PingRun, mac_vni, ping, ping6, until};

/// The leaf's VTEP address (`hack/lab.sh`).
pub const LEAF_VTEP: &str = "198.18.0.21";

/// A tenant as both sides see it: the cluster's network and EVPN, and the leaf's VRF, MAC-VRF and
/// hosts. The VNIs and route targets are the fabric's plan, which the EVPN pins.
pub struct Tenant {
    /// The network, the EVPN and the VRF on the nodes and on the leaf (VRF names are local to a
    /// switch; the lab uses one name for both).
    pub name: String,
    pub mac_vni: u32,
    pub ip_vni: u32,
    /// The legacy host's MAC: the one bridged on the leaf's MAC-VRF (10.30.0.20, same subnet as
    /// the pods).
    pub legacy_mac: &'static str,
    /// Namespaces of the pods on node 1 and node 2, the bridged legacy host, and the legacy host
    /// routed behind the leaf's VRF (10.40.1.10).
    pub pods: [String; 2],
    pub legacy: String,
    pub routed: String,
}

impl Tenant {
    pub fn new(name: String, mac_vni: u32, ip_vni: u32, tag: &str, legacy_mac: &'static str) -> Self {
        Tenant {
            name,
            mac_vni,
            ip_vni,
            legacy_mac,
            pods: [format!("evl-{tag}-pod1"), format!("evl-{tag}-pod2")],
            legacy: format!("evl-{tag}-legacy"),
            routed: format!("evl-{tag}-lhost"),
        }
    }

    pub fn l2_rt(&self) -> String {
        format!("65000:{}", self.mac_vni - 10000)
    }

    pub fn l3_rt(&self) -> String {
        format!("65000:{}", self.ip_vni - 10000)
    }

    pub fn spec(&self) -> Value {
        let rts = |rt: String| json!({"import": [rt], "export": [rt]});
        json!({"macVRF": {"vni": self.mac_vni, "routeTargets": rts(self.l2_rt())},
               "ipVRF": {"vni": self.ip_vni, "routeTargets": rts(self.l3_rt())}})
    }

    /// Both sides of the tenant: the dual-stack Layer2 network with symmetric IRB and its EVPN,
    /// a pod on each node; on the leaf the same VNIs, route targets and anycast gateway, a legacy
    /// host bridged beside the pods and one routed behind the VRF. Every host then announces
    /// itself to its gateway, as hosts do.
    pub async fn build(&self, f: &Fabric) {
        f.network(&self.name, "Layer2", json!(["10.30.0.0/24", "fd30::/64"])).await;
        for (lab_node, _) in NODES {
            f.lab.ok(&["vrf", lab_node, &self.name]).await;
        }
        let evpn = f.evpn(&self.name, &self.name, self.spec()).await;
        assert_eq!(mac_vni(&evpn), self.mac_vni, "the EVPN got the MAC-VNI it pinned");
        let bridge = format!("evb{}", self.mac_vni);
        for (i, (lab_node, _)) in NODES.iter().enumerate() {
            let n = i + 1;
            let addrs = format!("10.30.0.1{n}/24,fd30::1{n}/64");
            let pod = &self.pods[i];
            f.lab.ok(&["pod", lab_node, pod, &bridge, &addrs, "10.30.0.1,fd30::1", "--in-vrf", &self.name]).await;
        }

        let (l2, l3) = (self.mac_vni.to_string(), self.ip_vni.to_string());
        let gateway_mac = colon_hex(&anycast_gateway_mac(self.ip_vni));
        f.lab.ok(&["vrf", "leaf", &self.name]).await;
        f.lab.ok(&["leaf-l3vni", &self.name, &l3, &self.l3_rt()]).await;
        f.lab.ok(&["leaf-l2vni", &l2, &self.l2_rt(), &self.name, "10.30.0.1/24,fd30::1/64", &gateway_mac]).await;
        let leaf_bridge = format!("lbr{}", self.mac_vni);
        let legacy = &self.legacy;
        let addrs = "10.30.0.20/24,fd30::20/64";
        let options = ["--in-vrf", &self.name, "--mac", self.legacy_mac];
        f.lab.ok(&[&["pod", "leaf", legacy, &leaf_bridge, addrs, "10.30.0.1,fd30::1"][..], &options].concat()).await;
        f.lab
            .ok(&["host", "leaf", &self.name, &self.routed, "10.40.1.10/24,fd40:1::10/64", "10.40.1.1,fd40:1::1"])
            .await;

        for host in [&self.pods[0], &self.pods[1], legacy] {
            until(&format!("{}: {host} reaches its gateway", self.name), || ping(host, "10.30.0.1")).await;
            until(&format!("{}: {host} reaches its IPv6 gateway", self.name), || ping6(host, "fd30::1")).await;
        }
    }
}

impl Tenant {
    /// Waits until the leaf's zebra knows both nodes' router MACs for this tenant's L3VNI. The
    /// leaf runs FRR 8.4.4 with no agent beside it, and adding another tenant's L3VNI there
    /// sometimes leaves this one with its next hops but without the remote router MACs (`show
    /// evpn rmac vni` empty, no VXLAN FDB entry for them): routes stay, routed traffic from the
    /// leaf stops. After 5 s in that state the test does what docs/troubleshooting.md tells a
    /// network engineer, detach and re-attach the L3VNI, and says so.
    pub async fn leaf_knows_the_nodes(&self, f: &Fabric) {
        let command = format!("show evpn rmac vni {}", self.ip_vni);
        // The lab's nodes have VTEP addresses 198.18.0.1 and .2.
        let complete = |rmacs: &str| (1..=NODES.len()).all(|n| rmacs.contains(&format!(" 198.18.0.{n} ")));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !complete(&f.lab.vtysh("evl-leaf", &command).await) {
            if tokio::time::Instant::now() >= deadline {
                eprintln!("repair {}: the leaf's zebra lost the nodes' router MACs; re-attaching its L3VNI", self.name);
                let vrf = format!("vrf {}\n", self.name);
                crate::admin_frr::configure("evl-leaf", &format!("{vrf}no vni {}\nexit-vrf\n", self.ip_vni));
                // Attached again before zebra has let go, the VNI comes back as broken as it was.
                let detached = format!("{}: the leaf's zebra let go of L3VNI {}", self.name, self.ip_vni);
                until(&detached, || async {
                    !f.lab.vtysh("evl-leaf", &format!("show evpn vni {}", self.ip_vni)).await.contains("Type: L3")
                })
                .await;
                crate::admin_frr::configure("evl-leaf", &format!("{vrf}vni {}\nexit-vrf\n", self.ip_vni));
                until(&format!("{}: the leaf knows the nodes' router MACs again", self.name), || async {
                    complete(&f.lab.vtysh("evl-leaf", &command).await)
                })
                .await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Whether every best type-2 route of `mac` at the TOR comes from `vtep`, the MAC-only one with a
/// mobility sequence number above `above`.
pub fn only_from(routes: &[MacRoute], vtep: &str, above: u32) -> bool {
    !routes.is_empty()
        && routes.iter().all(|r| r.next_hop == vtep)
        && routes.iter().any(|r| r.ip.is_none() && r.mobility_seq > above)
}

/// A switch of the lab a VM can sit behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    Leaf,
    /// Lab node N (1-based).
    Node(usize),
}

impl Switch {
    fn namespace(self) -> String {
        match self {
            Switch::Leaf => "evl-leaf".into(),
            Switch::Node(n) => NODES[n - 1].0.into(),
        }
    }

    fn vtep(self) -> String {
        match self {
            Switch::Leaf => LEAF_VTEP.into(),
            Switch::Node(n) => format!("198.18.0.{n}"),
        }
    }

    /// The tenant's MAC-VRF bridge on this switch.
    fn bridge(self, tenant: &Tenant) -> String {
        match self {
            Switch::Leaf => format!("lbr{}", tenant.mac_vni),
            Switch::Node(_) => format!("evb{}", tenant.mac_vni),
        }
    }
}

impl std::fmt::Display for Switch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Switch::Leaf => f.write_str("the leaf"),
            Switch::Node(n) => write!(f, "node {n}"),
        }
    }
}

/// Whether a VM sends a gratuitous ARP after it moved, as hypervisors do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Announce {
    Yes,
    No,
}

/// A VM with a fixed MAC and IPv4 address on a tenant's MAC-VRF.
pub struct Vm {
    pub name: String,
    pub mac: String,
    pub ip: String,
}

/// What one migration did: the longest stretch the peer's pings went unanswered, and the MAC
/// mobility sequence number of the VM's routes afterwards.
pub struct Migration {
    pub gap: Duration,
    pub mobility_seq: u32,
}

impl Vm {
    pub fn new(name: &str, mac: &str, ip: &str) -> Self {
        Vm { name: name.into(), mac: mac.into(), ip: ip.into() }
    }

    /// Starts the VM behind the leaf, on the tenant's MAC-VRF; returns once the fabric knows it.
    pub async fn start_on_leaf(&self, f: &Fabric, tenant: &Tenant) {
        let (bridge, addr) = (Switch::Leaf.bridge(tenant), format!("{}/24", self.ip));
        let gateway = "10.30.0.1";
        f.lab
            .ok(&["pod", "leaf", &self.name, &bridge, &addr, gateway, "--in-vrf", &tenant.name, "--mac", &self.mac])
            .await;
        until(&format!("{}: reaches its gateway behind the leaf", self.name), || ping(&self.name, gateway)).await;
        until(&format!("{}: its MAC route at the TOR, from the leaf", self.name), || async {
            let routes = f.lab.tor_mac_routes(&self.mac).await;
            !routes.is_empty() && routes.iter().all(|r| r.next_hop == LEAF_VTEP)
        })
        .await;
    }

    /// Moves the VM from `from` to `to` while `peer` pings it every 10 ms; returns once the TOR
    /// has the VM's routes from `to` only, with a MAC mobility sequence number above `seq`, and
    /// the pings flow again.
    #[allow(clippy::too_many_arguments, reason = "one migration, spelled out")]
    pub async fn migrate(
        &self,
        f: &Fabric,
        tenant: &Tenant,
        peer: &str,
        from: Switch,
        to: Switch,
        seq: u32,
        announce: Announce,
    ) -> Migration {
        let run = PingRun::start(peer, &self.ip);
        until(&format!("{peer} -> {} flowing before the move to {to}", self.name), || async { run.flowing(20) }).await;
        let before = run.newest().unwrap_or(0);
        let (from_ns, to_ns, bridge) = (from.namespace(), to.namespace(), to.bridge(tenant));
        let mut args = vec!["move", &self.name, &from_ns, &to_ns, &bridge, "--in-vrf", &tenant.name];
        if announce == Announce::No {
            args.push("--quiet");
        }
        f.lab.ok(&args).await;
        let vtep = to.vtep();
        until(&format!("the TOR has {}'s routes from {to} only, MAC mobility above {seq}", self.name), || async {
            only_from(&f.lab.tor_mac_routes(&self.mac).await, &vtep, seq)
        })
        .await;
        until(&format!("{peer} -> {} flowing again after the move to {to}", self.name), || async {
            run.newest().unwrap_or(0) > before + 50 && run.flowing(50)
        })
        .await;
        let gap = run.stop().await;
        let mobility_seq = f.lab.tor_mac_routes(&self.mac).await.iter().map(|r| r.mobility_seq).max().unwrap_or(0);
        Migration { gap, mobility_seq }
    }
}
