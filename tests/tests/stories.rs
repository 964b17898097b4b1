//! The user stories of docs/stories/, end to end on the lab fabric: what a user writes, and what
//! comes out of the fabric. A leaf switch outside the cluster (`hack/lab.sh leaf`, configured by
//! hand as a network engineer would) carries "legacy" hosts beside the cluster's pods.
//!
//! Needs root and network namespaces; without them every test says so and passes as skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test that cannot build its input should panic")]

use std::time::Duration;

use evpn_tests::lab::{
    AgentProcess, BgpDriver, Lab, Operator, apply_evpn, apply_network, apply_vtep, never, operator, session_established,
};
use evpn_tests::lab::{
    Capture, Fabric, NODES, Scenarios, in_ns, mac_vni, ms, ping, ping6, until, vrf_netns, vrf_routes,
};
use evpn_tests::leaf::{Announce, LEAF_VTEP, Switch, Tenant, Vm};
use evpn_tests::{another_control_plane, apply};
use serde_json::{Value, json};

/// The MAC a host's neighbour table holds for `ip`, if any.
async fn neighbour_mac(host: &str, ip: &str) -> Option<String> {
    let out = in_ns(host, &["ip", "neigh", "show", ip]).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = text.split_whitespace();
    words.find(|w| *w == "lladdr").and_then(|_| words.next()).map(str::to_owned)
}

/// ICMP echo requests a namespace has received over IPv4 or IPv6 (its own /proc/net counters).
async fn echo_requests_received(ns: &str, family: u8) -> u64 {
    let (file, counter) = if family == 6 { ("/proc/net/snmp6", "Icmp6InEchos") } else { ("/proc/net/snmp", "InEchos") };
    let text = String::from_utf8_lossy(&in_ns(ns, &["cat", file]).await.stdout).into_owned();
    let count = if family == 6 {
        text.lines().find_map(|l| l.strip_prefix(counter)).map(str::trim).and_then(|v| v.parse().ok())
    } else {
        // Two `Icmp:` lines: the column names, then the values.
        let mut icmp = text.lines().filter(|l| l.starts_with("Icmp:"));
        let (names, values) = (icmp.next().unwrap_or_default(), icmp.next().unwrap_or_default());
        let column = names.split_whitespace().position(|n| n == counter);
        column.and_then(|c| values.split_whitespace().nth(c)).and_then(|v| v.parse().ok())
    };
    count.unwrap_or_else(|| panic!("no {counter} counter in {ns}'s {file}"))
}

#[tokio::test]
async fn fabric_with_a_legacy_leaf() {
    evpn_tests::require_lab!();
    let _turn = evpn_tests::lab::TURN.lock().await;
    let mut s = Scenarios::new(
        "fabric_with_a_legacy_leaf",
        &["legacy L2", "legacy L3", "tenants on the leaf", "dual-stack", "VM migration", "MTU"],
    );
    let mut f = Fabric::up("frr").await;
    f.vtep_mtu(9000).await;
    f.lab.ok(&["leaf"]).await;
    let red = Tenant::new(f.name("tred"), 13001, 13002, "r", "02:00:00:00:03:20");
    let blue = Tenant::new(f.name("tblue"), 13011, 13012, "b", "02:00:00:00:04:20");

    // --- L2: a pod and a legacy host share a subnet; ARP is answered from the EVPN table.
    let l2 = s.run("legacy L2", async {
        red.build(&f).await;
        until("L2: the TOR has the leaf's and both nodes' type-3 routes", || async {
            let routes = f.lab.vtysh("evl-tor", "show bgp l2vpn evpn route type multicast").await;
            [LEAF_VTEP, "198.18.0.1", "198.18.0.2"].iter().all(|v| routes.contains(&format!("[32]:[{v}]")))
        })
        .await;
        until("L2: the legacy host's MAC/IP route from the leaf at the TOR", || async {
            f.lab
                .tor_mac_routes(red.legacy_mac)
                .await
                .iter()
                .any(|r| r.next_hop == LEAF_VTEP && r.ip.as_deref() == Some("10.30.0.20"))
        })
        .await;
        let node_ns = vrf_netns("evl-n1", &red.name);
        until("L2: node 1 holds the legacy host's IP/MAC, from EVPN, for ARP suppression", || async {
            neighbour_mac(&node_ns, "10.30.0.20").await.as_deref() == Some(red.legacy_mac)
        })
        .await;

        // Both hosts forget each other and ARP again; the fabric must carry the pings but no ARP.
        let capture = Capture::start("evl-tor", "udp dst port 4789").await;
        for (host, peer) in [(&red.pods[0], "10.30.0.20"), (&red.legacy, "10.30.0.11")] {
            let _ = in_ns(host, &["ip", "-4", "neigh", "flush", "all"]).await;
            until(&format!("L2: {host} -> {peer} bridged over VNI {}", red.mac_vni), || ping(host, peer)).await;
        }
        let capture = capture.stop().await;
        let arp = capture.count("udp[28:2] = 0x0806").await;
        let ipv4 = capture.count("udp[28:2] = 0x0800").await;
        assert!(ipv4 > 0, "the pings crossed the fabric in VXLAN (captured {ipv4} packets)");
        assert_eq!(arp, 0, "no ARP crossed the fabric: each side's switch answered from the EVPN table");
        assert_eq!(
            neighbour_mac(&red.pods[0], "10.30.0.20").await.as_deref(),
            Some(red.legacy_mac),
            "the pod resolved the legacy host to its real MAC"
        );
        eprintln!("ok   L2: {ipv4} VXLAN packets of the pings captured at the TOR, 0 ARP across the fabric");
    });
    if l2.await.is_none() {
        return s.fail();
    }

    // --- L3: the subnet behind the leaf's VRF is reached through type-5 routes.
    let l3 = s.run("legacy L3", async {
        until("L3: the leaf's type-5 route of 10.40.1.0/24 at the TOR, in the tenant's VPN", || async {
            let routes = f.lab.vtysh("evl-tor", "show bgp l2vpn evpn route type prefix").await;
            routes.split("Route Distinguisher").any(|rd| {
                rd.contains("[5]:[0]:[24]:[10.40.1.0]") && rd.contains(LEAF_VTEP) && rd.contains(&red.l3_rt())
            })
        })
        .await;
        until("L3: node 1 routes 10.40.1.0/24 to the leaf's VTEP", || async {
            vrf_routes("evl-n1", &red.name, "10.40.1.0/24").await.contains(&format!("via {LEAF_VTEP}"))
        })
        .await;
        until("L3: pod1 -> legacy subnet, routed over the L3VNI", || ping(&red.pods[0], "10.40.1.10")).await;
        until("L3: legacy routed host -> pod2 on node 2", || ping(&red.routed, "10.30.0.12")).await;
    });
    if l3.await.is_none() {
        return s.fail();
    }

    // --- Two tenants with one IP plan on the same leaf: each reaches its own hosts only.
    let tenants = s.run("tenants on the leaf", async {
        blue.build(&f).await;
        until("tenants: blue pod1 -> blue's legacy host", || ping(&blue.pods[0], "10.30.0.20")).await;
        assert_eq!(neighbour_mac(&blue.pods[0], "10.30.0.20").await.as_deref(), Some(blue.legacy_mac));
        until("tenants: red pod1 still -> red's legacy host", || ping(&red.pods[0], "10.30.0.20")).await;
        assert_eq!(neighbour_mac(&red.pods[0], "10.30.0.20").await.as_deref(), Some(red.legacy_mac));
        for (from, own, other) in [(&red, &red, &blue), (&blue, &blue, &red)] {
            from.leaf_knows_the_nodes(&f).await;
            // Blue's routes to the leaf arrive after its bridged path works: count once routed.
            until(&format!("tenants: node 1 routes {}'s 10.40.1.0/24 to the leaf's VTEP", from.name), || async {
                vrf_routes("evl-n1", &from.name, "10.40.1.0/24").await.contains(&format!("via {LEAF_VTEP}"))
            })
            .await;
            until(&format!("tenants: {} pod1 -> 10.40.1.10, routed", from.name), || ping(&from.pods[0], "10.40.1.10"))
                .await;
            let (own_before, other_before) =
                (echo_requests_received(&own.routed, 4).await, echo_requests_received(&other.routed, 4).await);
            let out = in_ns(&from.pods[0], &["ping", "-c", "5", "-i", "0.1", "-W", "1", "10.40.1.10"]).await;
            assert!(out.status.success(), "{} pod1 -> 10.40.1.10: {}", from.name, String::from_utf8_lossy(&out.stdout));
            let own_got = echo_requests_received(&own.routed, 4).await - own_before;
            let other_got = echo_requests_received(&other.routed, 4).await - other_before;
            assert!(own_got >= 5, "{}'s routed legacy host got {own_got} of 5 echo requests", own.name);
            assert_eq!(other_got, 0, "{}'s pings reached the other tenant's host", from.name);
            eprintln!("ok   tenants: {} -> 10.40.1.10 reached its own host only ({own_got} vs 0)", from.name);
        }
    });
    if tenants.await.is_none() {
        return s.fail();
    }

    // --- Dual-stack: IPv6 on the overlay, IPv4 underlay.
    let dual = s.run("dual-stack", async {
        // Hosts talk to their gateway now and then, which keeps their addresses known to EVPN.
        for host in [&red.pods[0], &red.pods[1], &red.legacy] {
            until(&format!("IPv6: {host} announces itself to its gateway"), || ping6(host, "fd30::1")).await;
        }
        until("IPv6: the legacy host's MAC/IPv6 route at the TOR", || async {
            f.lab.tor_mac_routes(red.legacy_mac).await.iter().any(|r| r.ip.as_deref() == Some("fd30::20"))
        })
        .await;
        until("IPv6: pod1 -> pod2 across the nodes", || ping6(&red.pods[0], "fd30::12")).await;
        until("IPv6: pod1 -> legacy host, bridged", || ping6(&red.pods[0], "fd30::20")).await;

        // Routed IPv6 over type-5 routes: a dual-stack Layer3 network whose VPN holds a VRF of
        // the leaf (same L3VNI and route target).
        let v6 = f.name("tv6");
        let subnets = json!([{"cidr": "10.50.0.0/16", "hostSubnet": 24}, {"cidr": "fd50::/60", "hostSubnet": 64}]);
        f.network(&v6, "Layer3", subnets).await;
        for (i, (lab_node, _)) in NODES.iter().enumerate() {
            let n = i + 1;
            f.lab.ok(&["vrf", lab_node, &v6]).await;
            let (addrs, gateways) =
                (format!("10.50.{n}.10/24,fd50:0:0:{n}::10/64"), format!("10.50.{n}.1,fd50:0:0:{n}::1"));
            f.lab.ok(&["host", lab_node, &v6, &format!("evl-v6-h{n}"), &addrs, &gateways]).await;
        }
        f.lab.ok(&["vrf", "leaf", &v6]).await;
        f.lab.ok(&["leaf-l3vni", &v6, "13022", "65000:3022"]).await;
        f.lab.ok(&["host", "leaf", &v6, "evl-v6-lhost", "10.40.2.10/24,fd40:2::10/64", "10.40.2.1,fd40:2::1"]).await;
        let rt = json!({"import": ["65000:3022"], "export": ["65000:3022"]});
        f.evpn(&v6, &v6, json!({"ipVRF": {"vni": 13022, "routeTargets": rt}})).await;
        until("IPv6: type-5 routes of node 1's and the leaf's IPv6 subnets at the TOR", || async {
            let routes = f.lab.vtysh("evl-tor", "show bgp l2vpn evpn route type prefix").await;
            routes.contains("[5]:[0]:[64]:[fd50:0:0:1::]") && routes.contains("[5]:[0]:[64]:[fd40:2::]")
        })
        .await;
        until("IPv6: node 1 routes fd40:2::/64 to the leaf's IPv4 VTEP", || async {
            vrf_routes("evl-n1", &v6, "fd40:2::/64").await.contains(LEAF_VTEP)
        })
        .await;
        until("IPv6: host behind node 1 -> host behind node 2, routed", || ping6("evl-v6-h1", "fd50:0:0:2::10")).await;
        until("IPv6: host behind node 1 -> legacy host behind the leaf, routed", || ping6("evl-v6-h1", "fd40:2::10"))
            .await;
        until("IPv4 beside it: host behind node 1 -> legacy host behind the leaf", || ping("evl-v6-h1", "10.40.2.10"))
            .await;
    });
    if dual.await.is_none() {
        return s.fail();
    }

    // --- A VM with fixed IP and MAC moves from behind the leaf into the cluster and around.
    let migration = s.run("VM migration", async {
        let vm = Vm::new("evl-vm", "02:00:00:00:05:50", "10.30.0.50");
        vm.start_on_leaf(&f, &red).await;
        let peer = &red.pods[1];
        let mut seq = 0;
        for (from, to) in
            [(Switch::Leaf, Switch::Node(1)), (Switch::Node(1), Switch::Node(2)), (Switch::Node(2), Switch::Leaf)]
        {
            let moved = vm.migrate(&f, &red, peer, from, to, seq, Announce::Yes).await;
            assert!(moved.mobility_seq > seq, "the MAC mobility sequence number grew");
            seq = moved.mobility_seq;
            eprintln!(
                "ok   migration {from} -> {to}: traffic gap {:.0} ms, MAC mobility sequence {seq}",
                ms(moved.gap)
            );
        }
    });
    if migration.await.is_none() {
        return s.fail();
    }

    // --- MTU: the largest packet that fits the 9000-byte underlay passes whole; one byte more
    // is refused at the sender with DF set, fragmented by the sender without.
    let mtu = s.run("MTU", async {
        let jumbo = f.name("tjumbo");
        apply(
            &f.client,
            &json!({"apiVersion": "k8s.ovn.org/v1", "kind": "ClusterUserDefinedNetwork",
            "metadata": {"name": jumbo}, "spec": {"namespaceSelector": {}, "network": {"topology": "Layer2",
            "layer2": {"role": "Primary", "subnets": ["10.60.0.0/24"], "mtu": 8950}}}}),
        )
        .await
        .unwrap();
        let evpn = f.evpn(&jumbo, &jumbo, json!({"macVRF": {}})).await;
        let vni = mac_vni(&evpn);
        let bridge = format!("evb{vni}");
        f.lab.ok(&["pod", "evl-n1", "evl-jumbo1", &bridge, "10.60.0.11/24", "--mtu", "8950"]).await;
        f.lab.ok(&["pod", "evl-n2", "evl-jumbo2", &bridge, "10.60.0.12/24", "--mtu", "8950"]).await;
        until("MTU: jumbo1 -> jumbo2", || ping("evl-jumbo1", "10.60.0.12")).await;
        let vxlan_mtu = in_ns("evl-n1", &["cat", &format!("/sys/class/net/evx{vni}/mtu")]).await;
        assert_eq!(String::from_utf8_lossy(&vxlan_mtu.stdout).trim(), "8950", "VXLAN MTU = VTEP MTU 9000 - 50");

        let capture = Capture::start("evl-tor", "udp dst port 4789").await;
        let largest = in_ns("evl-jumbo1", &["ping", "-c1", "-W2", "-M", "do", "-s", "8922", "10.60.0.12"]).await;
        assert!(largest.status.success(), "8950-byte packet with DF: {}", String::from_utf8_lossy(&largest.stdout));
        let over = in_ns("evl-jumbo1", &["ping", "-c1", "-W2", "-M", "do", "-s", "8923", "10.60.0.12"]).await;
        let said = String::from_utf8_lossy(&over.stderr).into_owned() + &String::from_utf8_lossy(&over.stdout);
        assert!(!over.status.success() && said.contains("message too long"), "8951 bytes with DF: {said}");
        let fragmented = in_ns("evl-jumbo1", &["ping", "-c1", "-W2", "-M", "dont", "-s", "8923", "10.60.0.12"]).await;
        assert!(fragmented.status.success(), "8951 bytes without DF: {}", String::from_utf8_lossy(&fragmented.stdout));
        let capture = capture.stop().await;
        let full = capture.count("ip[2:2] = 9000").await;
        let outer_fragments = capture.count("ip[6:2] & 0x3fff != 0").await;
        let inner_fragments = capture.count("udp[28:2] = 0x0800 and udp[36:2] & 0x3fff != 0").await;
        assert!(full > 0, "the largest packet filled the 9000-byte underlay exactly in one VXLAN packet");
        assert_eq!(outer_fragments, 0, "the underlay fragmented nothing");
        assert!(inner_fragments > 0, "the 8951-byte ping without DF crossed as the sender's fragments");
        eprintln!(
            "ok   MTU: {full} full-size VXLAN packets captured, 0 underlay fragments, {inner_fragments} inner fragments"
        );
        f.delete_evpn(&jumbo).await;
    });
    if mtu.await.is_none() {
        return s.fail();
    }
    f.remove_leftovers().await;
}

/// A second cluster on the same fabric: its own control plane, operator and AS, with lab node 3
/// as its only node. Gone with the test process.
struct OtherCluster {
    client: kube::Client,
    vtep: &'static str,
    _operator: Operator,
    _agent: AgentProcess,
}

impl OtherCluster {
    const NODE: (&str, &str) = ("evl-n3", "worker-3");

    async fn up() -> Self {
        let cp = another_control_plane("b").await.unwrap();
        let client = cp.admin().await.unwrap();
        let (lab_node, node) = Self::NODE;
        let labels = json!({"evpn-lab": "cluster-b", "kubernetes.io/hostname": node});
        apply(&client, &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": labels}}))
            .await
            .unwrap();
        let vtep = "cluster-b";
        let spec = json!({
            "cidrs": ["198.18.1.0/24"], "mode": "Managed", "nodeSelector": {"matchLabels": {"evpn-lab": "cluster-b"}},
            "vniRanges": [{"start": 10000, "end": 19999}],
            "bgp": {"asn": 65003, "neighbors": [{"address": "198.18.255.1", "asn": 65000}]}});
        apply_vtep(&client, vtep, &spec).await;
        let operator = operator(&client);
        let agent = AgentProcess::start_with(lab_node, node, &cp.node_kubeconfig(node));
        session_established(&client, node).await;
        OtherCluster { client, vtep, _operator: operator, _agent: agent }
    }
}

/// The IP-VRF part of an EVPN spec: IP-VNI `vni` in VPN `rt`.
fn in_vpn(vni: u32, rt: &str) -> Value {
    json!({"ipVRF": {"vni": vni, "routeTargets": {"import": [rt], "export": [rt]}}})
}

#[tokio::test]
async fn two_clusters_one_vpn() {
    evpn_tests::require_lab!();
    let _turn = evpn_tests::lab::TURN.lock().await;
    let mut s = Scenarios::new(
        "two_clusters_one_vpn",
        &["two clusters", "separate VPNs", "joined by route targets", "moved back"],
    );
    let a = Fabric::up_in(Lab::up("frr", 3).await, "frr", BgpDriver::Agent).await;
    let (shared, other) = (a.name("ic1"), a.name("ic2"));
    let b_net = "icb";
    let b_host = "evl-icb-h";

    // Cluster A (AS 65001, worker-1 and -2): one network in VPN 65000:4001, one in 65000:4002.
    // Cluster B (AS 65003, worker-3): a network with the IP-VNI of the first, in a VPN of its own.
    let up = s.run("two clusters", async {
        a.layer3_with_hosts(&shared, 81).await;
        a.layer3_with_hosts(&other, 82).await;
        a.evpn(&shared, &shared, in_vpn(14001, "65000:4001")).await;
        a.evpn(&other, &other, in_vpn(14002, "65000:4002")).await;
        let b = OtherCluster::up().await;
        apply_network(&b.client, b_net, "Layer3", json!([{"cidr": "10.91.0.0/16", "hostSubnet": 24}])).await;
        a.lab.ok(&["vrf", OtherCluster::NODE.0, b_net]).await;
        a.lab.ok(&["host", OtherCluster::NODE.0, b_net, b_host, "10.91.1.10/24", "10.91.1.1"]).await;
        apply_evpn(&b.client, b_net, b_net, b.vtep, in_vpn(14001, "65000:4009")).await;
        b
    });
    let Some(b) = up.await else { return s.fail() };

    let separate = s.run("separate VPNs", async {
        until("VPNs: the TOR has cluster B's type-5 route (AS 65003, VPN 4009) beside cluster A's", || async {
            let routes = a.lab.vtysh("evl-tor", "show bgp l2vpn evpn route type prefix").await;
            let from_b =
                routes.split("Route Distinguisher").any(|rd| rd.contains("[10.91.1.0]") && rd.contains("65003"));
            from_b && routes.contains("[5]:[0]:[24]:[10.81.1.0]")
        })
        .await;
        never("VPNs: cluster B reaches cluster A's hosts from another VPN", Duration::from_secs(2), || {
            ping(b_host, "10.81.1.10")
        })
        .await;
        assert!(vrf_routes("evl-n1", &shared, "10.91.1.0/24").await.is_empty(), "A imports nothing of VPN 4009");
    });
    if separate.await.is_none() {
        return s.fail();
    }

    let joined = s.run("joined by route targets", async {
        apply_evpn(&b.client, b_net, b_net, b.vtep, in_vpn(14001, "65000:4001")).await;
        until("VPNs: node 1 of A routes cluster B's subnet to worker-3's VTEP", || async {
            vrf_routes("evl-n1", &shared, "10.91.1.0/24").await.contains("via 198.18.1.")
        })
        .await;
        until("VPNs: cluster B's host -> cluster A's host behind node 1", || ping(b_host, "10.81.1.10")).await;
        until("VPNs: cluster B's host -> cluster A's host behind node 2", || ping(b_host, "10.81.2.10")).await;
        let a_host = format!("evl-{shared}-h1");
        until("VPNs: cluster A's host -> cluster B's host", || ping(&a_host, "10.91.1.10")).await;
        never("VPNs: cluster B reaches A's network in VPN 4002", Duration::from_secs(2), || ping(b_host, "10.82.1.10"))
            .await;
        assert!(vrf_routes(OtherCluster::NODE.0, b_net, "10.82.1.0/24").await.is_empty(), "B imports nothing of 4002");
    });
    if joined.await.is_none() {
        return s.fail();
    }

    let moved_back = s.run("moved back", async {
        apply_evpn(&b.client, b_net, b_net, b.vtep, in_vpn(14001, "65000:4009")).await;
        until("VPNs: node 1 of A drops cluster B's subnet", || async {
            vrf_routes("evl-n1", &shared, "10.91.1.0/24").await.is_empty()
        })
        .await;
        until("VPNs: worker-3 drops cluster A's subnets", || async {
            vrf_routes(OtherCluster::NODE.0, b_net, "10.81.1.0/24").await.is_empty()
        })
        .await;
        never("VPNs: cluster B reaches cluster A after leaving the VPN", Duration::from_secs(2), || {
            ping(b_host, "10.81.1.10")
        })
        .await;
    });
    if moved_back.await.is_none() {
        return s.fail();
    }
    a.remove_leftovers().await;
}
