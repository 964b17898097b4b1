//! End to end: the lab fabric of `hack/lab.sh` (a top-of-rack and two nodes as network
//! namespaces, each node with its own FRR), the real control plane, the operator, and one real
//! `evpn-agent` process per node. Users' view: objects go in through the API, packets come out
//! of the fabric.
//!
//! Needs root and network namespaces; without them every test says so and passes as skipped.
//! The lab is one set of namespaces, so the tests take turns. With `EVPN_LAB_VRF=kernel` the
//! same scenarios run with kernel VRF devices: `tests/vmlab.rs` runs them so in a VM.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test that cannot build its input should panic")]

use std::time::Duration;

use evpn_crds::frrk8s::FrrConfiguration;
use evpn_crds::nodestate::{DesignatedForwarderRole, FrrDriver};
use evpn_crds::{Evpn, EvpnNodeState};
use evpn_tests::apply;
use evpn_tests::lab::{
    AgentProcess, BgpDriver, Capture, FRR_K8S_NAMESPACE, Fabric, NODES, Scenarios, bonds_unavailable, in_ns, ip_vni,
    link_exists, mac_vni, never, ping, until, vrf_name, vrf_routes,
};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

#[tokio::test]
async fn fabric_with_an_frr_tor() {
    evpn_tests::require_lab!();
    let _turn = evpn_tests::lab::TURN.lock().await;
    let mut s = Scenarios::new(
        "fabric_with_an_frr_tor",
        &[
            "L2",
            "overlapping IPs",
            "L3",
            "symmetric IRB",
            "route targets",
            "route targets, again and again",
            "faults",
            "deletion",
        ],
    );
    let mut f = Fabric::up("frr").await;
    let blue = f.name("blue");
    let cyan = f.name("cyan");
    let red = f.name("red");

    // --- L2: a MAC-VRF across two nodes.
    let l2 = s.run("L2", async {
        f.network(&blue, "Layer2", json!(["10.10.0.0/24"])).await;
        let evpn = f.evpn(&blue, &blue, json!({"macVRF": {}})).await;
        let vni = mac_vni(&evpn);
        let bridge = format!("evb{vni}");
        f.lab.ok(&["pod", "evl-n1", "evl-blue1", &bridge, "10.10.0.11/24"]).await;
        f.lab.ok(&["pod", "evl-n2", "evl-blue2", &bridge, "10.10.0.12/24"]).await;
        until("L2: blue1 -> blue2 ping across the fabric", || ping("evl-blue1", "10.10.0.12")).await;
        let capture = Capture::start("evl-tor", "udp port 4789").await;
        until("L2: blue1 -> blue2 while the TOR captures", || ping("evl-blue1", "10.10.0.12")).await;
        let packet = capture.stop().await.text("udp port 4789").await;
        assert!(packet.contains(&format!("vni {vni}")), "the underlay carries VXLAN with VNI {vni}: {packet}");
        let metrics = f.agents[0].as_ref().unwrap().metrics;
        until("L2: node 1's agent metrics count the network applied and its VNI up in zebra", || async {
            let Ok(scraped) = evpn_tests::http_get(metrics, "/metrics").await else { return false };
            let value = |m: &str| evpn_tests::sample(&scraped.body, m).unwrap_or(0.0);
            value(r#"evpn_agent_networks{phase="Applied"}"#) >= 1.0
                && value(r#"evpn_agent_vnis{type="L2",state="up"}"#) >= 1.0
                && value(r#"evpn_agent_apply_duration_seconds_count{step="frr"}"#) >= 1.0
                && value("evpn_agent_last_success_timestamp_seconds") > 0.0
        })
        .await;
        until("L2: type-3 routes of both VTEPs at the TOR", || async {
            let routes = f.lab.vtysh("evl-tor", "show bgp l2vpn evpn route type multicast").await;
            routes.contains("[3]:[0]:[32]:[198.18.0.1]") && routes.contains("[3]:[0]:[32]:[198.18.0.2]")
        })
        .await;
        let mac2 = String::from_utf8_lossy(&in_ns("evl-blue2", &["cat", "/sys/class/net/eth0/address"]).await.stdout)
            .trim()
            .to_owned();
        until("L2: type-2 route of blue2's MAC at the TOR", || async {
            f.lab.vtysh("evl-tor", "show bgp l2vpn evpn route type macip").await.contains(&format!("[{mac2}]"))
        })
        .await;
        (vni, bridge, mac2)
    });
    let Some((vni, bridge, mac2)) = l2.await else { return s.fail() };

    // --- Overlapping tenants: cyan reuses blue's subnet, on its own MAC-VRF.
    let overlap = s.run("overlapping IPs", async {
        f.network(&cyan, "Layer2", json!(["10.10.0.0/24"])).await;
        let cyan_evpn = f.evpn(&cyan, &cyan, json!({"macVRF": {}})).await;
        let cyan_bridge = format!("evb{}", mac_vni(&cyan_evpn));
        f.lab.ok(&["pod", "evl-n1", "evl-cyan1", &cyan_bridge, "10.10.0.21/24"]).await;
        f.lab.ok(&["pod", "evl-n2", "evl-cyan2", &cyan_bridge, "10.10.0.22/24"]).await;
        until("overlap: cyan1 -> cyan2 inside cyan", || ping("evl-cyan1", "10.10.0.22")).await;
        until("overlap: blue1 -> blue2 inside blue still", || ping("evl-blue1", "10.10.0.12")).await;
        never("overlap: blue1 reaches cyan2 (another tenant)", Duration::from_secs(3), || {
            ping("evl-blue1", "10.10.0.22")
        })
        .await;
        never("overlap: cyan1 reaches blue2 (another tenant)", Duration::from_secs(3), || {
            ping("evl-cyan1", "10.10.0.12")
        })
        .await;
    });
    if overlap.await.is_none() {
        return s.fail();
    }

    // --- L3: an IP-VRF with a routed subnet per node (type-5).
    let l3 = s.run("L3", async {
        let vrf = f.layer3_with_hosts(&red, 20).await;
        let red_evpn = f.evpn(&red, &red, json!({"ipVRF": {}})).await;
        assert_eq!(vrf_name(&red_evpn), vrf);
        until("L3: type-5 routes of both node subnets at the TOR", || async {
            let routes = f.lab.vtysh("evl-tor", "show bgp l2vpn evpn route type prefix").await;
            routes.contains("[5]:[0]:[24]:[10.20.1.0]") && routes.contains("[5]:[0]:[24]:[10.20.2.0]")
        })
        .await;
        until("L3: red-h1 -> red-h2 routed over the L3VNI", || ping("evl-red-f-h1", "10.20.2.10")).await;
        red_evpn
    });
    let Some(red_evpn) = l3.await else { return s.fail() };

    // --- Symmetric IRB: a Layer2 network with an IP-VRF, its bridge the anycast gateway.
    let irb = s.run("symmetric IRB", async {
        let irb = f.name("irb");
        f.network(&irb, "Layer2", json!(["10.70.0.0/24"])).await;
        let irb_vrf = irb.chars().take(15).collect::<String>();
        for (lab_node, _) in NODES {
            f.lab.ok(&["vrf", lab_node, &irb_vrf]).await;
        }
        f.lab.ok(&["host", "evl-n2", &irb_vrf, "evl-irb-h2", "10.71.2.10/24", "10.71.2.1"]).await;
        let irb_evpn = f.evpn(&irb, &irb, json!({"macVRF": {}, "ipVRF": {}})).await;
        let irb_bridge = format!("evb{}", mac_vni(&irb_evpn));
        f.lab.ok(&["pod", "evl-n1", "evl-irb1", &irb_bridge, "10.70.0.11/24", "10.70.0.1", "--in-vrf", &irb_vrf]).await;
        f.lab.ok(&["pod", "evl-n2", "evl-irb2", &irb_bridge, "10.70.0.12/24", "10.70.0.1", "--in-vrf", &irb_vrf]).await;
        until("IRB: irb1 -> irb2 bridged over the MAC-VNI", || ping("evl-irb1", "10.70.0.12")).await;
        until("IRB: irb2 reaches its anycast gateway", || ping("evl-irb2", "10.70.0.1")).await;
        let l3_rt = format!("RT:65001:{}", ip_vni(&irb_evpn));
        until("IRB: irb2's MAC/IP route at the TOR carries the IP-VRF's route target", || async {
            let routes = f.lab.vtysh("evl-tor", "show bgp l2vpn evpn route type macip").await;
            routes.split("Route Distinguisher").any(|rd| rd.contains("[32]:[10.70.0.12]") && rd.contains(&l3_rt))
        })
        .await;
        until("IRB: node 1 routes irb2's /32 over the L3VNI to node 2", || async {
            vrf_routes("evl-n1", &irb_vrf, "10.70.0.12").await.contains("via 198.18.0.2")
        })
        .await;
        until("IRB: irb1 -> host behind node 2, routed through the gateway and the L3VNI", || {
            ping("evl-irb1", "10.71.2.10")
        })
        .await;
    });
    if irb.await.is_none() {
        return s.fail();
    }

    // --- Route targets decide the VPN: changing them moves a network live, traffic follows.
    let vpns = s.run("route targets", async {
        let custom = "65001:777";
        let moved = json!({"ipVRF": {"routeTargets": {"import": [custom], "export": [custom]}}});
        let _ = f.evpn(&red, &red, moved).await;
        until("VPNs: the TOR sees red's type-5 routes with the new route target only", || async {
            let routes = f.lab.vtysh("evl-tor", "show bgp l2vpn evpn route type prefix").await;
            routes.contains(&format!("RT:{custom}")) && !routes.contains(&format!("RT:65001:{} ", ip_vni(&red_evpn)))
        })
        .await;
        until("VPNs: red-h1 -> red-h2 still routed in the new VPN", || ping("evl-red-f-h1", "10.20.2.10")).await;
        let green = f.name("green");
        f.network(&green, "Layer3", json!([{"cidr": "10.30.0.0/16", "hostSubnet": 24}])).await;
        let green_vrf = green.chars().take(15).collect::<String>();
        for (lab_node, _) in NODES {
            f.lab.ok(&["vrf", lab_node, &green_vrf]).await;
        }
        let green_evpn = f.evpn(&green, &green, json!({"ipVRF": {}})).await;
        let has_red_route = || async { !vrf_routes("evl-n1", &green_vrf, "10.20.2.0/24").await.is_empty() };
        never("VPNs: green (its own VPN) learns red's prefixes", Duration::from_secs(2), has_red_route).await;
        let green_rt = format!("65001:{}", ip_vni(&green_evpn));
        let _ = f
            .evpn(
                &green,
                &green,
                json!({"ipVRF": {"routeTargets": {"import": [green_rt, custom], "export": [green_rt]}}}),
            )
            .await;
        until("VPNs: importing red's route target brings red's prefixes into green's VRF", has_red_route).await;
    });
    if vpns.await.is_none() {
        return s.fail();
    }

    // --- Route targets changed back and forth: routed traffic follows every time. FRR 8.4.4
    // sometimes loses a remote VTEP's router MAC on such a change; the agents repair it.
    let flips = s.run("route targets, again and again", async {
        let custom = "65001:777";
        let auto = format!("65001:{}", ip_vni(&red_evpn));
        let repairs = || async {
            let mut total = 0.0;
            for agent in f.agents.iter().flatten() {
                let Ok(scraped) = evpn_tests::http_get(agent.metrics, "/metrics").await else { continue };
                total +=
                    evpn_tests::sample(&scraped.body, r#"evpn_agent_frr_repairs_total{repair="l3vni_reattached"}"#)
                        .unwrap_or(0.0);
            }
            total
        };
        let before = repairs().await;
        for (i, rt) in [auto.as_str(), custom].repeat(6).into_iter().enumerate() {
            let _ = f.evpn(&red, &red, json!({"ipVRF": {"routeTargets": {"import": [rt], "export": [rt]}}})).await;
            until(&format!("VPNs: change {} (to {rt}): red-h1 <-> red-h2 routed both ways", i + 1), || async {
                ping("evl-red-f-h1", "10.20.2.10").await && ping("evl-red-f-h2", "10.20.1.10").await
            })
            .await;
        }
        eprintln!("ok   12 route-target changes; L3VNIs the agents re-attached: {}", repairs().await - before);
    });
    if flips.await.is_none() {
        return s.fail();
    }

    // --- Faults. FRR restarted: the agent puts the configuration back. The second restart
    // starts FRR from a saved configuration that already holds every network, which is when
    // FRR's automatic route distinguishers would collide with ours.
    let faults = s.run("faults", async {
        let n2_type3 = || async {
            let routes = f.lab.vtysh("evl-tor", "show bgp l2vpn evpn route type multicast").await;
            routes.matches("Route Distinguisher: 198.18.0.2:").count()
        };
        assert_eq!(n2_type3().await, 3, "n2 originates a type-3 route for each of blue, cyan and irb");
        for round in ["first", "second"] {
            f.lab.ok(&["restart-frr", "evl-n2"]).await;
            until(&format!("fault: after FRR's {round} restart on n2, blue1 -> blue2 works again"), || {
                ping("evl-blue1", "10.10.0.12")
            })
            .await;
            until(&format!("fault: after FRR's {round} restart on n2, red-h1 -> red-h2 works again"), || {
                ping("evl-red-f-h1", "10.20.2.10")
            })
            .await;
            until(&format!("fault: after FRR's {round} restart on n2, cyan1 -> cyan2 works again"), || {
                ping("evl-cyan1", "10.10.0.22")
            })
            .await;
            until(
                &format!("fault: after FRR's {round} restart, the TOR has n2's type-3 route of every MAC-VRF"),
                || async { n2_type3().await == 3 },
            )
            .await;
        }

        // The agent restarted while traffic flows: not one packet lost.
        let pinger = tokio::spawn(async {
            in_ns("evl-blue1", &["ping", "-c", "60", "-i", "0.05", "-W", "1", "10.10.0.12"]).await
        });
        if let Some(agent) = f.agents[0].take() {
            agent.kill().await;
        }
        f.agents[0] = Some(AgentProcess::start(NODES[0].0, NODES[0].1));
        let out = pinger.await.unwrap();
        let summary = String::from_utf8_lossy(&out.stdout);
        assert!(summary.contains(" 0% packet loss"), "ping during the agent restart lost packets: {summary}");
        eprintln!("ok   fault: agent restarted under traffic, 0% loss");

        // A network that cannot be built on a node fails alone, visibly, and the others keep working.
        let broken = f.name("broken");
        f.network(&broken, "Layer3", json!([{"cidr": "10.40.0.0/16", "hostSubnet": 24}])).await;
        apply(
            &f.client,
            &json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPN", "metadata": {"name": broken},
        "spec": {"network": {"kind": "ClusterUserDefinedNetwork", "name": broken}, "vtep": f.vtep, "ipVRF": {}}}),
        )
        .await
        .unwrap();
        let evpns: Api<Evpn> = Api::all(f.client.clone());
        until("fault: the EVPN whose VRF exists nowhere is not Ready and names the nodes and the reason", || async {
            let Ok(e) = evpns.get(&broken).await else { return false };
            e.status.is_some_and(|s| {
                s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "False")
                    && s.failed_nodes.iter().any(|n| n.reason == "VrfNotFound")
            })
        })
        .await;
        until("fault: blue still forwards beside the broken network", || ping("evl-blue1", "10.10.0.12")).await;
        until("fault: red still routes beside the broken network", || ping("evl-red-f-h1", "10.20.2.10")).await;
        f.delete_evpn(&broken).await;
    });
    if faults.await.is_none() {
        return s.fail();
    }

    // --- Deletion removes devices, FRR configuration and routes everywhere.
    let deletion = s.run("deletion", async {
        f.delete_evpn(&blue).await;
        for (lab_node, _) in NODES {
            until(&format!("delete: {bridge} gone on {lab_node}"), || async { !link_exists(lab_node, &bridge).await })
                .await;
            until(&format!("delete: VNI {vni} gone from FRR on {lab_node}"), || async {
                !f.lab.vtysh(lab_node, "show running-config").await.contains(&format!(" vni {vni}\n"))
            })
            .await;
        }
        until("delete: no route of VNI's VTEPs left at the TOR for blue's MACs", || async {
            !f.lab.vtysh("evl-tor", "show bgp l2vpn evpn route type macip").await.contains(&format!("[{mac2}]"))
        })
        .await;
        until("delete: cyan unaffected", || ping("evl-cyan1", "10.10.0.22")).await;
    });
    if deletion.await.is_none() {
        return s.fail();
    }
    f.remove_leftovers().await;
}

#[tokio::test]
async fn fabric_with_a_gobgp_tor() {
    evpn_tests::require_lab!();
    let _turn = evpn_tests::lab::TURN.lock().await;
    let f = Fabric::up("gobgp").await;

    let blue = f.name("blue");
    f.network(&blue, "Layer2", json!(["10.50.0.0/24"])).await;
    let evpn = f.evpn(&blue, &blue, json!({"macVRF": {}})).await;
    let bridge = format!("evb{}", mac_vni(&evpn));
    f.lab.ok(&["pod", "evl-n1", "evl-gblue1", &bridge, "10.50.0.11/24"]).await;
    f.lab.ok(&["pod", "evl-n2", "evl-gblue2", &bridge, "10.50.0.12/24"]).await;
    until("GoBGP L2: gblue1 -> gblue2", || ping("evl-gblue1", "10.50.0.12")).await;
    let mac2 = String::from_utf8_lossy(&in_ns("evl-gblue2", &["cat", "/sys/class/net/eth0/address"]).await.stdout)
        .trim()
        .to_owned();
    until("GoBGP L2: type-3 of both VTEPs and type-2 of gblue2 in the TOR's RIB", || async {
        let rib =
            String::from_utf8_lossy(&f.lab.sh(&["gobgp", "global", "rib", "-a", "evpn"]).await.stdout).into_owned();
        rib.contains("[type:multicast][rd:198.18.0.1:")
            && rib.contains("[type:multicast][rd:198.18.0.2:")
            && rib.contains(&format!("[mac:{mac2}]"))
    })
    .await;

    let red = f.name("red");
    f.layer3_with_hosts(&red, 60).await;
    f.evpn(&red, &red, json!({"ipVRF": {}})).await;
    until("GoBGP L3: type-5 routes in the TOR's RIB", || async {
        let rib =
            String::from_utf8_lossy(&f.lab.sh(&["gobgp", "global", "rib", "-a", "evpn"]).await.stdout).into_owned();
        rib.contains("10.60.1.0/24") && rib.contains("10.60.2.0/24")
    })
    .await;
    until("GoBGP L3: gred-h1 -> gred-h2", || ping("evl-red-g-h1", "10.60.2.10")).await;
    f.remove_leftovers().await;
}

/// frr-k8s mode: the VTEP leaves BGP to frr-k8s, the agents build devices only, and FRR gets its
/// configuration from the user's underlay FRRConfigurations plus the operator's, merged and
/// rendered as frr-k8s would (the harness' stand-in for frr-k8s). The same fabric as with the
/// agents driving FRR: pods bridged over a MAC-VRF, hosts routed over an IP-VRF, the same routes
/// at the TOR; and a node whose configurations frr-k8s cannot merge fails the EVPN by name.
#[tokio::test]
async fn fabric_in_frr_k8s_mode() {
    evpn_tests::require_lab!();
    let _turn = evpn_tests::lab::TURN.lock().await;
    let mut s = Scenarios::new("fabric_in_frr_k8s_mode", &["L2", "L3", "merge failure", "deletion"]);
    let f = Fabric::up_with("frr", BgpDriver::FrrK8s).await;
    let blue = f.name("blue");
    let red = f.name("red");

    let l2 = s.run("L2", async {
        f.network(&blue, "Layer2", json!(["10.70.0.0/24"])).await;
        let evpn = f.evpn(&blue, &blue, json!({"macVRF": {}})).await;
        let vni = mac_vni(&evpn);
        let bridge = format!("evb{vni}");
        f.lab.ok(&["pod", "evl-n1", "evl-kblue1", &bridge, "10.70.0.11/24"]).await;
        f.lab.ok(&["pod", "evl-n2", "evl-kblue2", &bridge, "10.70.0.12/24"]).await;
        until("frr-k8s L2: kblue1 -> kblue2 across the fabric", || ping("evl-kblue1", "10.70.0.12")).await;
        let mac2 = String::from_utf8_lossy(&in_ns("evl-kblue2", &["cat", "/sys/class/net/eth0/address"]).await.stdout)
            .trim()
            .to_owned();
        until("frr-k8s L2: type-3 routes of both VTEPs and type-2 of kblue2 at the TOR", || async {
            let routes = f.lab.vtysh("evl-tor", "show bgp l2vpn evpn route").await;
            routes.contains("[3]:[0]:[32]:[198.18.0.1]")
                && routes.contains("[3]:[0]:[32]:[198.18.0.2]")
                && routes.contains(&format!("[{mac2}]"))
        })
        .await;
        // FRR's configuration is frr-k8s' (RDs left to FRR), not the agent's (RD <VTEP IP>:<index>).
        let running = f.lab.vtysh("evl-n1", "show running-config").await;
        assert!(running.contains("advertise-all-vni") && !running.contains("rd 198.18.0.1:"), "{running}");
        let states: Api<EvpnNodeState> = Api::all(f.client.clone());
        for (_, node) in NODES {
            let agent = states.get(node).await.unwrap().status.and_then(|s| s.agent).unwrap();
            assert_eq!(agent.frr_driver, FrrDriver::FrrK8s, "{node}'s agent leaves FRR to frr-k8s");
        }
        eprintln!("ok   frr-k8s L2: FRR configured by frr-k8s' rendering, the agents report frr-k8s mode");
        (bridge, mac2)
    });
    let Some((bridge, mac2)) = l2.await else { return s.fail() };

    let l3 = s.run("L3", async {
        // The subnet OVN-Kubernetes gives each node, which the operator announces from that node.
        // A merge patch: an apply by the harness' field manager would drop the labels it set.
        let nodes: Api<Node> = Api::all(f.client.clone());
        for (i, (_, node)) in NODES.iter().enumerate() {
            let subnets = json!({format!("cluster_udn_{red}"): [format!("10.80.{}.0/24", i + 1)]}).to_string();
            let patch = json!({"metadata": {"annotations": {"k8s.ovn.org/node-subnets": subnets}}});
            nodes.patch(node, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        }
        f.layer3_with_hosts(&red, 80).await;
        f.evpn(&red, &red, json!({"ipVRF": {}})).await;
        until("frr-k8s L3: type-5 routes of both node subnets at the TOR", || async {
            let routes = f.lab.vtysh("evl-tor", "show bgp l2vpn evpn route type prefix").await;
            routes.contains("[10.80.1.0]") && routes.contains("[10.80.2.0]")
        })
        .await;
        until("frr-k8s L3: red-h1 -> red-h2 routed over the L3VNI", || ping("evl-red-k-h1", "10.80.2.10")).await;
    });
    if l3.await.is_none() {
        return s.fail();
    }

    let failure = s.run("merge failure", async {
        // A configuration of the user's that gives worker-2's default VRF another AS number:
        // frr-k8s cannot merge it with the underlay, reports the conversion failed, and keeps the
        // node's FRR as it was.
        let conflict = format!("{}-conflict", f.vtep);
        let configs: Api<FrrConfiguration> = Api::namespaced(f.client.clone(), FRR_K8S_NAMESPACE);
        apply(
            &f.client,
            &json!({"apiVersion": "frrk8s.metallb.io/v1beta1", "kind": "FRRConfiguration",
            "metadata": {"name": conflict, "namespace": FRR_K8S_NAMESPACE},
            "spec": {"nodeSelector": {"matchLabels": {"kubernetes.io/hostname": "worker-2"}},
                "bgp": {"routers": [{"asn": 65099}]}}}),
        )
        .await
        .unwrap();
        let evpns: Api<Evpn> = Api::all(f.client.clone());
        until("frr-k8s failure: the EVPN names worker-2, FrrK8sFailed, with frr-k8s' reason", || async {
            let Ok(e) = evpns.get(&blue).await else { return false };
            e.status.is_some_and(|s| {
                s.failed_nodes.iter().any(|n| {
                    n.node == "worker-2" && n.reason == "FrrK8sFailed" && n.message.contains("different AS numbers")
                })
            })
        })
        .await;
        until("frr-k8s failure: the fabric keeps forwarding meanwhile", || ping("evl-kblue1", "10.70.0.12")).await;
        configs.delete(&conflict, &DeleteParams::default()).await.unwrap();
        f.ready(&blue).await;
    });
    if failure.await.is_none() {
        return s.fail();
    }

    let deletion = s.run("deletion", async {
        f.delete_evpn(&blue).await;
        f.delete_evpn(&red).await;
        for (lab_node, _) in NODES {
            until(&format!("frr-k8s delete: {bridge} gone on {lab_node}"), || async {
                !link_exists(lab_node, &bridge).await
            })
            .await;
            until(&format!("frr-k8s delete: red's BGP instance gone from FRR on {lab_node}"), || async {
                !f.lab.vtysh(lab_node, "show running-config").await.contains(&format!("router bgp 65001 vrf {red}"))
            })
            .await;
        }
        until("frr-k8s delete: no route of kblue2's MAC or red's subnets left at the TOR", || async {
            let routes = f.lab.vtysh("evl-tor", "show bgp l2vpn evpn route").await;
            !routes.contains(&format!("[{mac2}]")) && !routes.contains("[10.80.1.0]") && !routes.contains("[10.80.2.0]")
        })
        .await;
    });
    if deletion.await.is_none() {
        return s.fail();
    }
    f.remove_leftovers().await;
}

/// Multi-homing: an external host on an LACP bond with a leg to each node, the legs ending in one
/// Ethernet segment. Both nodes advertise it (type-4 and type-1 routes), agree on the designated
/// forwarder, and the host reaches pods on both nodes. With BFD on the underlay sessions, cutting
/// one node's uplink withdraws its type-1 routes at the TOR (mass withdrawal), and that node's
/// zebra holds its segment down for want of an uplink. Ethernet segments must be bonds in FRR
/// 8.4.4, so this runs where the kernel makes bonds: in the VM lab.
#[tokio::test]
async fn fabric_with_a_multihomed_host() {
    evpn_tests::require_lab!();
    if let Some(why) = bonds_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let _turn = evpn_tests::lab::TURN.lock().await;
    let mut s =
        Scenarios::new("fabric_with_a_multihomed_host", &["segment", "designated forwarder", "mass withdrawal"]);
    let mut f = Fabric::up("frr").await;
    let blue = f.name("mh");

    let segment = s.run("segment", async {
        f.network(&blue, "Layer2", json!(["10.90.0.0/24"])).await;
        let segments = json!({"ethernetSegments": [{"name": "host1", "interface": "esh1", "nodeSelector": {}}]});
        apply(
            &f.client,
            &json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPN", "metadata": {"name": blue},
            "spec": {"network": {"kind": "ClusterUserDefinedNetwork", "name": blue}, "vtep": f.vtep,
                "macVRF": {}, "multiHoming": segments}}),
        )
        .await
        .unwrap();
        let evpns: Api<Evpn> = Api::all(f.client.clone());
        let esi = || async {
            let e = evpns.get(&blue).await.ok()?;
            e.status?.ethernet_segments.first().map(|s| s.esi.clone())
        };
        until("MH: the segment's ESI allocated (type 3)", || async {
            esi().await.is_some_and(|e| e.starts_with("03:"))
        })
        .await;
        let esi = esi().await.unwrap();
        // A type-3 ESI is 03, the system MAC (the LACP system ID of the segment), a discriminator.
        let sysmac = esi[3..20].to_owned();
        f.lab.ok(&["mh-host", "evl-mh1", "esh1", &sysmac, "10.90.0.100/24", "evl-n1", "evl-n2"]).await;
        let evpn = f.ready(&blue).await;
        let bridge = format!("evb{}", mac_vni(&evpn));
        f.lab.ok(&["pod", "evl-n1", "evl-mhpod1", &bridge, "10.90.0.11/24"]).await;
        f.lab.ok(&["pod", "evl-n2", "evl-mhpod2", &bridge, "10.90.0.12/24"]).await;
        until("MH: the host reaches the pod on node 1", || ping("evl-mh1", "10.90.0.11")).await;
        until("MH: the host reaches the pod on node 2", || ping("evl-mh1", "10.90.0.12")).await;
        until("MH: the TOR has the segment's type-4 route from both nodes", || async {
            let routes = f.lab.vtysh("evl-tor", "show bgp l2vpn evpn route type es").await;
            routes.contains(&esi) && routes.contains("198.18.0.1") && routes.contains("198.18.0.2")
        })
        .await;
        until("MH: the TOR has the segment's type-1 routes from both nodes", || async {
            tor_has_type1(&f, "198.18.0.1", &esi).await && tor_has_type1(&f, "198.18.0.2", &esi).await
        })
        .await;
        esi
    });
    let Some(esi) = segment.await else { return s.fail() };

    let df = s.run("designated forwarder", async {
        let states: Api<EvpnNodeState> = Api::all(f.client.clone());
        until("MH: both nodes report the segment up, exactly one of them the designated forwarder", || async {
            let mut roles = Vec::new();
            for (_, node) in NODES {
                let Ok(state) = states.get(node).await else { return false };
                let segment = state.status.and_then(|s| s.ethernet_segments.into_iter().find(|seg| seg.esi == esi));
                match segment {
                    Some(seg) if seg.state.as_deref() == Some("Up") => roles.push(seg.role),
                    _ => return false,
                }
            }
            roles.iter().filter(|r| **r == Some(DesignatedForwarderRole::DF)).count() == 1
                && roles.iter().filter(|r| **r == Some(DesignatedForwarderRole::NonDF)).count() == 1
        })
        .await;
        let evpns: Api<Evpn> = Api::all(f.client.clone());
        until("MH: the EVPN's status shows the segment up on both nodes and one designated forwarder", || async {
            let Ok(e) = evpns.get(&blue).await else { return false };
            e.status.is_some_and(|s| {
                s.ethernet_segments
                    .iter()
                    .any(|seg| seg.esi == esi && seg.up_nodes.len() == 2 && seg.designated_forwarders.len() == 1)
            })
        })
        .await;
    });
    if df.await.is_none() {
        return s.fail();
    }

    let withdrawal = s.run("mass withdrawal", async {
        f.underlay_bfd(true).await;
        until("MH: the underlay sessions run BFD, up at the TOR", || f.bfd_up_at_tor()).await;
        let type1_from_n1 = || tor_has_type1(&f, "198.18.0.1", &esi);
        let cut = std::time::Instant::now();
        f.lab.ok(&["uplink", "evl-n1", "down"]).await;
        until("MH: node 1's uplink cut, the TOR withdraws its type-1 routes of the segment", || async {
            !type1_from_n1().await
        })
        .await;
        eprintln!("measured: type-1 withdrawn at the TOR {:?} after the cut, with BFD 300 ms x 3", cut.elapsed());
        assert!(
            tor_has_type1(&f, "198.18.0.2", &esi).await,
            "the TOR keeps node 2's type-1 routes of the segment, its way to the host now"
        );
        eprintln!("ok   MH: the TOR keeps node 2's type-1 routes of the segment");
        // Node 1 keeps `evpn mh uplink` on the interface that went down, so zebra knows it is cut
        // off and wants its segment links down (protodown). The lab's segment links are veths,
        // which take no protodown ("Protodown not supported by device"): which leg the host's
        // bond sends on is left to its hash, so the test does not ping across here.
        until("MH: node 1's zebra counts its uplink down and wants the segment down (protodown)", || async {
            let evpn = f.lab.vtysh("evl-n1", "show evpn json").await;
            let Ok(evpn) = serde_json::from_str::<serde_json::Value>(&evpn) else { return false };
            let down = evpn["protodownReasons"].as_array().is_some_and(|r| r.iter().any(|r| r == "uplinkDown"));
            evpn["uplinkConfigCount"] == 1 && evpn["uplinkActiveCount"] == 0 && down
        })
        .await;
        f.lab.ok(&["uplink", "evl-n1", "up"]).await;
        until("MH: uplink back, the TOR has node 1's type-1 routes again", type1_from_n1).await;
    });
    if withdrawal.await.is_none() {
        return s.fail();
    }
    f.remove_leftovers().await;
}

/// Whether the TOR has a type-1 route of segment `esi` from the VTEP `vtep` (its RDs are
/// `<VTEP IP>:<n>`).
async fn tor_has_type1(f: &Fabric, vtep: &str, esi: &str) -> bool {
    let routes = f.lab.vtysh("evl-tor", "show bgp l2vpn evpn route type ead").await;
    routes.split("Route Distinguisher: ").any(|rd| rd.starts_with(&format!("{vtep}:")) && rd.contains(esi))
}
